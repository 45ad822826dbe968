//! Bad pipeline files, each `ui/<case>.toml` beside `ui/<case>.err` holding
//! the exact error. `BLESS=1` rewrites the `.err` files.

use crate::common;
use std::path::Path;

/// The error `host check` would print for `path` (config, then plugins).
fn check(path: &Path) -> String {
    let engine = common::engine();
    let candidate = |p: &host::config::Pipeline| match p.candidate() {
        Some(c) => host::transform::TransformChain::build(&engine, &c)
            .map(|_| ())
            .map_err(|e| format!("the candidate in shadow: {e}")),
        None => Ok(()),
    };
    match host::config::load(path) {
        Err(e) => e.to_string(),
        Ok(p) => match host::transform::TransformChain::build(&engine, &p)
            .map_err(|e| e.to_string())
            .and_then(|_| candidate(&p))
        {
            Err(msg) => {
                // The search path and build folders differ between machines.
                let msg = msg.split(" in: ").next().unwrap_or(&msg);
                // A component's digest changes with the toolchain and the
                // build's settings: the message's shape is what is checked.
                let msg = match msg.split_once("has digest sha256:") {
                    Some((head, tail)) if tail.len() >= 64 => format!("{head}has digest sha256:$DIGEST{}", &tail[64..]),
                    _ => msg.to_string(),
                };
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

/// The keyed logins pipeline: without its key it does not start, naming
/// the variable; with it, the masked columns are HMAC-SHA-256 of the
/// values under that key (so whoever holds the key can find a value's rows).
#[test]
fn the_keyed_logins_pipeline_masks_with_the_key_from_the_environment() {
    use hmac::Mac;
    let ws = common::workspace();
    let host = |key: Option<&str>, args: &[&str]| {
        let mut cmd = std::process::Command::new(crate::objects::host_binary());
        cmd.current_dir(&ws).args(args).args(["--plugin-path", common::PLUGIN_DIR, "--cache-dir"]);
        cmd.arg(common::cache_dir()).env_remove("LOGIN_MASK_KEY");
        if let Some(k) = key {
            cmd.env("LOGIN_MASK_KEY", k);
        }
        cmd.output().unwrap()
    };
    let out = host(None, &["check", "pipelines/logins-keyed.toml"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("environment variable `LOGIN_MASK_KEY` is not set"), "{stderr}");

    let key = "a key of the team's";
    let out = host(Some(key), &["check", "pipelines/logins-keyed.toml"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let input = ws.join("tests/data/fetch_login_queue_bodies.jsonl");
    let out = host(Some(key), &["test", "pipelines/logins-keyed.toml", "--input", input.to_str().unwrap()]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let first_body: serde_json::Value =
        serde_json::from_str(std::fs::read_to_string(&input).unwrap().lines().next().unwrap()).unwrap();
    let first_row: serde_json::Value =
        serde_json::from_str(String::from_utf8_lossy(&out.stdout).lines().next().unwrap()).unwrap();
    let mut mac = hmac::Hmac::<sha2::Sha256>::new_from_slice(key.as_bytes()).unwrap();
    mac.update(first_body["ip"].as_str().unwrap().as_bytes());
    assert_eq!(first_row["masked_ip"], hex::encode(mac.finalize().into_bytes()), "{first_row}");
}
