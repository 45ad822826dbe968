//! Golden fixtures: `fixtures/<case>/pipeline.toml` (transforms), its
//! `input.jsonl`, and `expected.jsonl` (one result per input line), run
//! through the built components by the real engine. `BLESS=1` rewrites the
//! expected files; review the diff before committing.

use crate::common;

fn run_case(dir: &std::path::Path) -> (Vec<serde_json::Value>, Vec<serde_json::Value>) {
    run_case_with(dir, &std::fs::read_to_string(dir.join("pipeline.toml")).unwrap())
}

/// The case in `dir` with `body` as its pipeline: (got, want).
pub fn run_case_with(dir: &std::path::Path, body: &str) -> (Vec<serde_json::Value>, Vec<serde_json::Value>) {
    let p = common::pipeline(body);
    let mut chain = host::transform::TransformChain::build(&common::engine(), &p).expect("chain");
    let lines: Vec<String> =
        std::fs::read_to_string(dir.join("input.jsonl")).unwrap().lines().map(str::to_string).collect();
    let (batch, kept, refused) = common::decode(&p, &lines);
    let out = chain.run(&batch).expect("chain runs");
    let mut got = vec![serde_json::Value::Null; lines.len()];
    for (i, r) in common::results(kept.len(), &out).into_iter().enumerate() {
        got[kept[i]] = r;
    }
    for (i, reason) in refused {
        got[i] = serde_json::json!({"reject": format!("input: {reason}")});
    }
    let want_path = dir.join("expected.jsonl");
    if std::env::var_os("BLESS").is_some() && body == std::fs::read_to_string(dir.join("pipeline.toml")).unwrap() {
        let text: String = got.iter().map(|v| format!("{v}\n")).collect();
        std::fs::write(&want_path, text).unwrap();
    }
    let want = std::fs::read_to_string(&want_path)
        .unwrap_or_else(|_| panic!("{} is missing (BLESS=1 writes it)", want_path.display()))
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    (got, want)
}

#[test]
fn fixtures_match() {
    let root = common::workspace().join("tests/fixtures");
    let mut cases: Vec<_> = std::fs::read_dir(&root).unwrap().map(|e| e.unwrap().path()).collect();
    cases.sort();
    assert!(cases.len() >= 4, "fixtures are missing");
    for dir in cases {
        let (got, want) = run_case(&dir);
        assert_eq!(got.len(), want.len(), "{}: line count", dir.display());
        for (i, (g, w)) in got.iter().zip(&want).enumerate() {
            assert_eq!(g, w, "{} line {}", dir.display(), i + 1);
        }
    }
}
