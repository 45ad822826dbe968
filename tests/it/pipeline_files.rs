//! Bad pipeline files, each `ui/<case>.toml` beside `ui/<case>.err` holding
//! the exact error. `BLESS=1` rewrites the `.err` files.

use crate::common;
use std::path::Path;

/// The error `host check` would print for `path` (config, then plugins).
fn check(path: &Path) -> String {
    let engine = common::engine();
    match host::config::load(path) {
        Err(e) => e.to_string(),
        Ok(p) => match host::transform::TransformChain::build(&engine, &p) {
            Err(e) => {
                let msg = e.to_string();
                // The search path and build folders differ between machines.
                let msg = msg.split(" in: ").next().unwrap_or(&msg);
                msg.replace(common::TEST_PLUGIN_DIR, "$TEST_PLUGINS").replace(common::PLUGIN_DIR, "$PLUGINS")
            }
            Ok(_) => "ok".into(),
        },
    }
}

#[test]
fn each_bad_pipeline_gets_its_exact_error() {
    let root = common::workspace().join("tests");
    let mut cases: Vec<_> = std::fs::read_dir(root.join("ui"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "toml"))
        .collect();
    cases.sort();
    assert!(cases.len() >= 10, "ui cases are missing");
    let mut failures = Vec::new();
    for case in cases {
        let rel = case.strip_prefix(&root).unwrap();
        let got = check(rel);
        let err_file = case.with_extension("err");
        if std::env::var_os("BLESS").is_some() {
            std::fs::write(&err_file, format!("{got}\n")).unwrap();
        }
        let want = std::fs::read_to_string(&err_file).unwrap_or_default();
        if got != want.trim_end() {
            failures.push(format!("{}:\n  want: {}\n  got:  {got}", rel.display(), want.trim_end()));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}
