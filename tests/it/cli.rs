//! `host test` on the real Fetch data and pipeline (the acceptance run), and
//! the `host` binary itself.

use crate::common;
use host::commands::{EngineOptions, test::run_file};
use sha2::{Digest, Sha256};

fn options() -> EngineOptions {
    EngineOptions { cache_dir: Some(common::cache_dir()), plugin_path: common::plugin_path() }
}

#[test]
fn host_test_on_the_fetch_queue_writes_99_rows_and_one_rejection() {
    let ws = common::workspace();
    let input = ws.join("tests/data/fetch_login_queue_bodies.jsonl");
    let (mut rows, mut rejects) = (Vec::new(), Vec::new());
    let summary = run_file(&ws.join("pipelines/logins.toml"), &input, &mut rows, &mut rejects, &options()).unwrap();
    assert_eq!(summary.to_string(), "read 100, written 99, rejected 1, dropped 0");

    let rejects: Vec<serde_json::Value> =
        String::from_utf8(rejects).unwrap().lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert_eq!(rejects.len(), 1);
    assert_eq!(rejects[0]["line"], 13);
    assert_eq!(
        rejects[0]["reason"],
        "missing required fields: user_id, app_version, device_type, ip, locale, device_id"
    );

    let rows: Vec<serde_json::Value> =
        String::from_utf8(rows).unwrap().lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert_eq!(rows.len(), 99);
    let raw: Vec<serde_json::Value> = std::fs::read_to_string(&input)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .filter(|v: &serde_json::Value| v.get("user_id").is_some())
        .collect();
    let sha = |v: &serde_json::Value| format!("{:x}", Sha256::digest(v.as_str().unwrap().as_bytes()));
    let columns = ["user_id", "device_type", "masked_ip", "masked_device_id", "locale", "app_version", "create_date"];
    for (row, raw) in rows.iter().zip(&raw) {
        let keys: Vec<&str> = row.as_object().unwrap().keys().map(String::as_str).collect();
        let mut sorted = columns.to_vec();
        sorted.sort();
        assert_eq!(keys, sorted, "exactly the table's columns");
        assert_eq!(row["user_id"], raw["user_id"]);
        assert_eq!(row["masked_ip"].as_str().unwrap(), sha(&raw["ip"]));
        assert_eq!(row["masked_device_id"].as_str().unwrap(), sha(&raw["device_id"]));
        let major: i64 = raw["app_version"].as_str().unwrap().split('.').next().unwrap().parse().unwrap();
        assert_eq!(row["app_version"], major);
        assert_eq!(row["create_date"].as_str().unwrap().len(), 10);
    }
    assert_eq!(rows[0]["app_version"], 2, "\"2.3.0\" gives 2");
    assert_eq!(rows.iter().filter(|r| r["locale"].is_null()).count(), 29);
}

/// The built binary, next to the test executable's folder
/// (`target/release/host`); `cargo xtask test` builds it first.
fn host_binary() -> std::path::PathBuf {
    let exe = std::env::current_exe().unwrap();
    let bin = exe.parent().unwrap().parent().unwrap().join("host");
    assert!(bin.is_file(), "{} is missing: run `cargo xtask test` (it builds the host first)", bin.display());
    bin
}

#[test]
fn the_binary_runs_the_pipeline_test_cases_and_checks_pipelines() {
    let ws = common::workspace();
    let run = |args: &[&str]| {
        std::process::Command::new(host_binary())
            .current_dir(&ws)
            .args(["--plugin-path", common::PLUGIN_DIR, "--cache-dir"])
            .arg(common::cache_dir())
            .args(args)
            .output()
            .unwrap()
    };
    let out = run(&["test", "pipelines/logins.toml"]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}{}", String::from_utf8_lossy(&out.stderr));
    assert!(stdout.contains("4 passed, 0 failed"), "{stdout}");

    let out = run(&["check", "pipelines/logins.toml"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(String::from_utf8_lossy(&out.stdout).starts_with("ok: pipelines/logins.toml (3 steps: flatten sha256:"));

    let out = run(&["check", "tests/ui/plugin-bad-params.toml"]);
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(
        String::from_utf8_lossy(&out.stderr).trim(),
        "error: tests/ui/plugin-bad-params.toml:2: step 1 (`mask`) refused its params: `fields` must name at least one field"
    );

    for cmd in ["run", "test", "check"] {
        let out = run(&[cmd, "--help"]);
        assert!(out.status.success() && !out.stdout.is_empty(), "{cmd} --help");
    }
}
