//! Plugins in Python (and the tools they are built with): each SDK's own
//! tests in its language's runner, a new project from `host plugins new
//! --lang` that tests, builds and loads rows, the shipped examples against
//! the Rust plugins they port, and the sandbox against a hostile one.
//!
//! The tools are pinned and installed by `cargo xtask polyglot` (which
//! `cargo xtask test` runs) into `target/polyglot/`.

mod js;
mod python;

use crate::common::{self, edit, ok};
use crate::services::{self, pg, queue, send, unique};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// `target/polyglot/NAME`, which `cargo xtask polyglot` makes.
fn tools(name: &str) -> PathBuf {
    let dir = Path::new(common::PLUGIN_DIR).parent().unwrap().join("polyglot").join(name);
    assert!(dir.is_dir(), "{} is missing: run `cargo xtask polyglot` (or `cargo xtask test`)", dir.display());
    dir
}

fn host(dir: &Path, args: &[&str]) -> Output {
    Command::new(crate::objects::host_binary())
        .current_dir(dir)
        .args(args)
        .env("HOST_PLUGIN_PATH", common::PLUGIN_DIR)
        .env("HOST_CACHE_DIR", common::cache_dir())
        .output()
        .unwrap()
}

/// What `host test PIPELINE --input` makes of the 100 Fetch messages.
fn fetch_results(pipeline: &Path) -> String {
    let input = common::workspace().join("tests/data/fetch_login_queue_bodies.jsonl");
    let out =
        host(pipeline.parent().unwrap(), &["test", pipeline.to_str().unwrap(), "--input", input.to_str().unwrap()]);
    ok("host test --input", &out)
}

/// pipelines/logins.toml with its `mask` step replaced by `port` (the step
/// given `extra`) gives the same rows on the 100 Fetch messages.
fn mask_gives_the_rust_masks_rows(port: &str, extra: &str) {
    let ws = common::workspace();
    let logins = ws.join("pipelines/logins.toml");
    let rust = fetch_results(&logins);
    assert_eq!(rust.lines().count(), 99, "99 rows (one message is not a login): {rust}");
    let body = std::fs::read_to_string(&logins).unwrap();
    let ported = body.replace("uses = \"mask\"", &format!("uses = \"{port}\"\n{extra}"));
    assert_ne!(ported, body);
    let file = std::env::temp_dir().join(format!("{}.toml", unique("ported-logins")));
    std::fs::write(&file, ported).unwrap();
    let got = fetch_results(&file);
    let _ = std::fs::remove_file(&file);
    assert_eq!(got, rust);
}

/// The golden fixtures of the Rust `mask` and `filter` through the ports
/// (`{prefix}-mask`, `{prefix}-filter`, each step given `extra`): the same
/// results (reasons name the step's plugin, so its name is put back
/// before comparing).
fn ports_pass_the_rust_fixtures(prefix: &str, extra: &str) {
    let fixtures = common::workspace().join("tests/fixtures");
    for (case, rust) in [("mask-sha512", "mask"), ("filter-conditions", "filter")] {
        let port = format!("{prefix}-{rust}");
        let dir = fixtures.join(case);
        let body = std::fs::read_to_string(dir.join("pipeline.toml")).unwrap();
        let ported = body.replace(&format!("uses = \"{rust}\""), &format!("uses = \"{port}\"\n{extra}"));
        assert_ne!(ported, body, "{case} uses {rust}");
        let (got, want) = crate::golden::run_case_with(&dir, &ported);
        let got: Vec<serde_json::Value> = got
            .into_iter()
            .map(|v| {
                serde_json::from_str(&v.to_string().replace(&format!("(`{port}`)"), &format!("(`{rust}`)"))).unwrap()
            })
            .collect();
        assert_eq!(got, want, "{case} through {port}");
    }
}

/// Three messages through a new project's `pipeline.toml` by `host run
/// --once` against moto and PostgreSQL: `locales` in, `want` in the
/// table's `locale` column (also the Rust scaffold test's last step).
pub async fn loads_rows(dir: &Path, table: &str, locales: &[&str], want: &[&str]) {
    let (schema, q) = (unique("s"), unique("polyglot"));
    services::migrated().await;
    pg().await
        .batch_execute(&format!("CREATE SCHEMA {schema}; CREATE TABLE {schema}.{table} (locale text, n bigint)"))
        .await
        .unwrap();
    let sqs = services::sqs().await;
    let url = queue(&sqs, &q).await;
    let bodies: Vec<String> =
        locales.iter().enumerate().map(|(i, l)| format!(r#"{{"locale": "{l}", "n": {i}}}"#)).collect();
    send(&sqs, &url, &bodies).await;
    let run = Command::new(crate::objects::host_binary())
        .current_dir(dir)
        .args(["run", "pipeline.toml", "--once"])
        .env("HOST_CACHE_DIR", common::cache_dir())
        .env("QUEUE", &q)
        .env("SCHEMA", &schema)
        .env("DATABASE_URL", services::database_url())
        .env("AWS_ENDPOINT_URL", services::endpoint())
        .env("AWS_REGION", "us-east-1")
        .env("AWS_ACCESS_KEY_ID", "test")
        .env("AWS_SECRET_ACCESS_KEY", "test")
        .output()
        .unwrap();
    ok("host run --once", &run);
    let rows = pg().await.query(&format!("SELECT locale, n FROM {schema}.{table} ORDER BY n"), &[]).await.unwrap();
    let rows: Vec<(String, i64)> = rows.iter().map(|r| (r.get(0), r.get(1))).collect();
    let want: Vec<(String, i64)> = want.iter().enumerate().map(|(i, l)| (l.to_string(), i as i64)).collect();
    assert_eq!(rows, want);
}
