//! Python plugins: the SDK (componentize-py 0.25.1 and pytest, pinned in
//! `sdk/python/requirements-dev.txt`).

use super::{edit, host, ok, tools};
use crate::common::{self, batch, chain, results};
use crate::services::unique;
use serde_json::json;
use std::path::Path;
use std::process::Command;

fn pytest(dir: &Path) -> String {
    let out = Command::new(tools("venv").join("bin/pytest"))
        .current_dir(dir)
        .args(["-q", "-p", "no:cacheprovider"])
        .env("PYTHONDONTWRITEBYTECODE", "1")
        .output()
        .unwrap();
    ok(&format!("pytest in {}", dir.display()), &out)
}

#[test]
fn the_sdk_and_its_examples_pass_their_own_tests() {
    let sdk = common::workspace().join("sdk/python");
    for dir in [sdk.clone(), sdk.join("examples/mask"), sdk.join("examples/filter")] {
        let said = pytest(&dir);
        assert!(said.contains(" passed") && !said.contains("failed"), "{}: {said}", dir.display());
    }
}

#[test]
fn the_examples_pass_their_pipelines_cases_through_the_component() {
    let sdk = common::workspace().join("sdk/python");
    for example in ["mask", "filter"] {
        let pipeline = sdk.join("examples").join(example).join("pipeline.toml");
        let said = ok("host test", &host(&sdk, &["test", pipeline.to_str().unwrap()]));
        assert!(said.contains(" passed, 0 failed"), "{example}: {said}");
    }
}

#[test]
fn the_python_mask_gives_the_rust_masks_rows_byte_for_byte() {
    super::mask_gives_the_rust_masks_rows("py-mask", "");
}

#[test]
fn the_python_ports_pass_the_rust_plugins_fixtures() {
    super::ports_pass_the_rust_fixtures("py", "");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_new_python_plugin_tests_builds_and_loads_rows() {
    let parent = std::env::temp_dir().join(unique("py-author"));
    let said = ok(
        "plugins new",
        &host(
            Path::new("/"),
            &["plugins", "new", "upper-locale", "--lang", "python", "--dir", parent.to_str().unwrap()],
        ),
    );
    assert!(said.contains("pytest") && said.contains("componentize-py"), "{said}");
    let dir = parent.join("upper-locale");

    // The author's two lines, and the expectations that follow from them.
    edit(
        &dir.join("plugin.py"),
        "            record[self.field] = value  # change the text here",
        "            # Locales in capitals, as the country codes are.\n            record[self.field] = value.upper()",
    );
    edit(
        &dir.join("test_plugin.py"),
        r#"[emit({"locale": "en-US", "n": 1})]"#,
        r#"[emit({"locale": "EN-US", "n": 1})]"#,
    );
    edit(
        &dir.join("pipeline.toml"),
        r#"expect = '{"locale": "en-US", "n": 1}'"#,
        r#"expect = '{"locale": "EN-US", "n": 1}'"#,
    );

    let tested = pytest(&dir);
    assert!(tested.contains("3 passed"), "{tested}");
    let venv = tools("venv");
    let built = Command::new(venv.join("bin/componentize-py"))
        .current_dir(&dir)
        .args(["-d", "wit", "-w", "projecting-plugin", "componentize", "plugin", "-o", "upper-locale.wasm"])
        .output()
        .unwrap();
    ok("componentize-py", &built);

    let cases = ok("host test", &host(&dir, &["test", "pipeline.toml"]));
    assert!(cases.contains("1 passed, 0 failed"), "{cases}");
    let checked = ok("host check", &host(&dir, &["check", "pipeline.toml"]));
    assert!(checked.starts_with("ok: pipeline.toml"), "{checked}");
    let inspected = ok("inspect", &host(&dir, &["plugins", "inspect", "upper-locale.wasm"]));
    assert!(inspected.contains("upper-locale") && inspected.contains("\"field\""), "{inspected}");
    // A misspelt param is named by the schema the dataclass made.
    edit(&dir.join("pipeline.toml"), "params = { field = \"locale\" }", "params = { feild = \"locale\" }");
    let refused = host(&dir, &["check", "pipeline.toml"]);
    let err = String::from_utf8_lossy(&refused.stderr);
    assert!(!refused.status.success() && err.contains("feild"), "{err}");
    edit(&dir.join("pipeline.toml"), "params = { feild = \"locale\" }", "params = { field = \"locale\" }");

    super::loads_rows(&dir, "upper_locale", &["en-US", "ru", "pt-BR"], &["EN-US", "RU", "PT-BR"]).await;
    let _ = std::fs::remove_dir_all(&parent);
}

fn hostile(mode: &str, extra: &str) -> String {
    format!(
        "[[transforms]]\nuses = \"py-hostile\"\nmax_call_ms = 500\n{extra}\nparams = {{ mode = \"{mode}\", trigger = \"bad\" }}\n"
    )
}

/// Runs `mode` on eight records, the fourth of which sets it off, then a
/// clean batch; the fourth's rejection reason.
fn isolate(mode: &str, extra: &str) -> String {
    let mut c = chain(&hostile(mode, extra));
    let lines: Vec<String> =
        (0..8).map(|i| if i == 3 { json!({"i": i, "bad": true}) } else { json!({"i": i}) }.to_string()).collect();
    let out = c.run(&batch(&lines)).expect("a failing call costs records, not the chain");
    let res = results(8, &out);
    for (i, r) in res.iter().enumerate() {
        if i != 3 {
            assert_eq!(r, &json!({"emit": [{"i": i}]}), "{mode}: record {i} is unharmed");
        }
    }
    let reason = res[3]["reject"].as_str().unwrap_or_else(|| panic!("{mode}: record 3 rejected, got {}", res[3]));
    let clean: Vec<String> = (0..3).map(|i| json!({"i": i}).to_string()).collect();
    assert_eq!(c.run(&batch(&clean)).expect("next batch").batch.records.len(), 3, "{mode}: the next batch runs");
    reason.to_string()
}

#[test]
fn a_python_endless_loop_is_interrupted_at_its_budget() {
    assert_eq!(isolate("loop", ""), "step 1 (`py-hostile`): exceeded its time budget of 500 ms per call");
}

#[test]
fn a_python_hoard_is_stopped_by_the_memory_cap() {
    assert_eq!(isolate("alloc", ""), "step 1 (`py-hostile`): ran out of memory (cap 64 MiB)");
}

#[test]
fn a_python_sleep_is_refused_not_waited_for() {
    let reason = isolate("sleep", "");
    assert!(reason.contains(host::transform::BLOCKED), "{reason}");
}

#[test]
fn a_python_exit_costs_only_its_record() {
    let reason = isolate("exit", "");
    assert!(reason.starts_with("step 1 (`py-hostile`): "), "{reason}");
}

fn seen(mode: &str, extra: &str) -> String {
    seen_with(&format!("mode = \"{mode}\""), extra)
}

fn seen_with(params: &str, extra: &str) -> String {
    let mode = params.to_string();
    let body = format!("[[transforms]]\nuses = \"py-hostile\"\n{extra}\nparams = {{ {params} }}\n");
    let out = chain(&body).run(&batch(&[json!({"i": 1}).to_string()])).unwrap();
    let res = results(1, &out);
    res[0]["emit"][0]["seen"].as_str().unwrap_or_else(|| panic!("{mode}: {}", res[0])).to_string()
}

#[test]
fn python_sees_no_files_network_environment_or_clock_unless_granted() {
    assert!(seen("read-file", "").starts_with("file=false"), "no files");
    assert!(seen("list-dir", "").starts_with("dir=false"), "no folders");
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.set_nonblocking(true).unwrap();
    let port = listener.local_addr().unwrap().port();
    let connect = seen_with(&format!("mode = \"connect\", port = {port}"), "");
    assert!(connect.starts_with("connect=false"), "{connect}");
    assert!(listener.accept().is_err(), "nothing reached the listener");
    assert_eq!(seen("read-env", ""), "env=0");
    assert_eq!(seen("clock", ""), "clock=0");
    assert_eq!(seen("read-env", "grants = { env = [\"PATH\"] }"), "env=1");
    let granted = seen("clock", "grants = { clock = true }");
    assert!(granted.trim_start_matches("clock=").parse::<u64>().unwrap() > 1_700_000_000, "{granted}");
}

#[test]
fn a_python_plugin_that_refuses_its_params_is_named() {
    let p = common::pipeline("[[transforms]]\nuses = \"py-hostile\"\nparams = { mode = \"configure-fails\" }\n");
    let err = host::transform::TransformChain::build(&common::engine(), &p).err().expect("refused");
    assert_eq!(err.to_string(), "test.toml:2: step 1 (`py-hostile`) refused its params: configure failed on purpose");
}

#[test]
fn python_and_js_masks_run_a_steady_stream_within_their_memory_caps() {
    // 200,000 Fetch records in batches of 1,000 through one instance of
    // each port: Python within the default cap (64 MiB); JavaScript within
    // the 128 MiB its template and examples set (SpiderMonkey collects
    // lazily and ran out at 64 twice in 200 batches).
    let ws = common::workspace();
    let lines: Vec<String> = std::fs::read_to_string(ws.join("tests/data/fetch_login_queue_bodies.jsonl"))
        .unwrap()
        .lines()
        .filter(|l| l.contains("user_id"))
        .map(str::to_string)
        .collect();
    let input = std::env::temp_dir().join(format!("{}.jsonl", unique("batches")));
    let text: String = lines.iter().cycle().take(200_000).map(|l| format!("{l}\n")).collect();
    std::fs::write(&input, text).unwrap();
    for (port, cap) in [("py-mask", ""), ("js-mask", "\nmax_memory_mb = 128")] {
        let body = std::fs::read_to_string(ws.join("pipelines/logins.toml"))
            .unwrap()
            .replace("max_records = 500", "max_records = 1000")
            .replace("uses = \"mask\"", &format!("uses = \"{port}\"{cap}"));
        assert!(body.contains("max_records = 1000"), "{body}");
        let file = std::env::temp_dir().join(format!("{}.toml", unique("batches")));
        std::fs::write(&file, body).unwrap();
        let out = host(Path::new("/"), &["test", file.to_str().unwrap(), "--input", input.to_str().unwrap()]);
        let _ = std::fs::remove_file(&file);
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success() && err.contains("read 200000, written 200000, rejected 0"), "{port}: {err}");
        assert!(!err.contains("ran out of memory"), "{port}: {err}");
    }
    let _ = std::fs::remove_file(&input);
}
