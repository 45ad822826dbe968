//! The words of the main errors an operator meets (issue 24), each cause
//! once. Each `errors/<case>.cmd` (the `host` arguments, run in `tests/`,
//! after `VAR=value` words for its environment; `$ENDPOINT` is moto's)
//! sits beside
//! `errors/<case>.err`, its exact stderr; `BLESS=1` rewrites
//! the `.err` files. Inline: the warning of a row the database refuses,
//! and `/readyz` with the database down.

use crate::common;
use crate::faults::{Host, authority, pipeline_file};
use crate::proxy::{Mode, Proxy};
use crate::run::{count, schema_with_user_logins};
use crate::services::{self, pg, queue, unique};
use std::time::{Duration, Instant};

/// `host ARGS` in `tests/` as a case file says (`VAR=value` words first
/// are its environment); its stderr, with the machine's folders as
/// `$PLUGINS` and `$TEST_PLUGINS`.
fn stderr_of(line: &str) -> String {
    let endpoint = services::endpoint();
    let line = line.replace("$ENDPOINT", endpoint);
    let words: Vec<&str> = line.split_whitespace().collect();
    let env_words = words.iter().take_while(|w| w.contains('=') && !w.starts_with('-')).count();
    let mut cmd = std::process::Command::new(crate::objects::host_binary());
    cmd.current_dir(common::workspace().join("tests"))
        .env("DATABASE_URL", services::database_url())
        .env_remove("RUST_LOG")
        .env_remove("PGSSLMODE")
        .env_remove("PGSSLROOTCERT")
        .env("AWS_REGION", "us-east-1")
        .env("AWS_ACCESS_KEY_ID", "test")
        .env("AWS_SECRET_ACCESS_KEY", "test");
    for word in &words[..env_words] {
        let (name, value) = word.split_once('=').expect("a `VAR=value` word");
        cmd.env(name, value);
    }
    // Through the environment: the flags are each command's own, and not
    // every command takes them.
    cmd.env("HOST_PLUGIN_PATH", common::PLUGIN_DIR).env("HOST_CACHE_DIR", common::cache_dir());
    let out = cmd.args(&words[env_words..]).output().unwrap();
    assert!(!out.status.success(), "host {line} succeeded");
    let text = String::from_utf8_lossy(&out.stderr)
        .replace(common::TEST_PLUGIN_DIR, "$TEST_PLUGINS")
        .replace(common::PLUGIN_DIR, "$PLUGINS")
        .replace(endpoint, "$ENDPOINT");
    // Request ids differ each time.
    let (mut out, mut rest) = (String::new(), text.as_str());
    while let Some(at) = rest.find("(request ") {
        out.push_str(&rest[..at]);
        out.push_str("(request …)");
        rest = rest[at..].split_once(')').map_or("", |(_, after)| after);
    }
    out.push_str(rest);
    out
}

#[test]
fn each_main_error_reads_as_its_file_says() {
    let root = common::workspace().join("tests/errors");
    let mut cases: Vec<_> = std::fs::read_dir(&root)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "cmd"))
        .collect();
    cases.sort();
    assert!(cases.len() >= 3, "error cases are missing");
    let mut failures = Vec::new();
    for case in cases {
        let args = std::fs::read_to_string(&case).unwrap();
        let got = stderr_of(args.trim());
        let err_file = case.with_extension("err");
        if std::env::var_os("BLESS").is_some() {
            std::fs::write(&err_file, &got).unwrap();
        }
        let want = std::fs::read_to_string(&err_file).unwrap_or_default();
        if got != want {
            failures.push(format!("{}:\n  want: {want}  got:  {got}", case.display()));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

/// A row the database refuses: its warning names the pipeline, where the
/// row came from (the queue and the message), the column, and the
/// SQLSTATE in words; the value is nowhere in the log.
#[tokio::test(flavor = "multi_thread")]
async fn a_refused_row_is_named_by_its_message_and_column_never_its_value() {
    let (name, schema) = (unique("err_refuse"), unique("s"));
    schema_with_user_logins(&schema).await;
    // A column whose type takes the test cases' locales ("RU") but not
    // every value (so the check at the start lets the pipeline run).
    pg().await
        .batch_execute(&format!(
            "CREATE DOMAIN {schema}.short_locale AS text CHECK (length(VALUE) <= 5); \
             ALTER TABLE {schema}.user_logins ALTER COLUMN locale TYPE {schema}.short_locale"
        ))
        .await
        .unwrap();
    let sqs = services::sqs().await;
    let url = queue(&sqs, &name).await;
    let body = |locale: &str| {
        format!(
            r#"{{"user_id":"u","app_version":"2.3.0","device_type":"ios","ip":"1.2.3.4","locale":{locale},"device_id":"d"}}"#
        )
    };
    let refused = sqs.send_message().queue_url(&url).message_body(body("\"Klingon\"")).send().await.unwrap();
    let id = refused.message_id.unwrap();
    sqs.send_message().queue_url(&url).message_body(body("null")).send().await.unwrap();

    let file = pipeline_file(&name, &schema, "wait_time_s = 1");
    let mut host = Host::run(&file, true, &services::database_url(), services::endpoint());
    let (_, out) = host.wait(Duration::from_secs(90)).await.unwrap_or_else(|| panic!("--once ends: {}", host.log()));
    let log = host.log();
    assert_eq!(count(&format!("SELECT count(*) FROM {schema}.user_logins")).await, 1, "{out}\n{log}");
    let warnings: Vec<serde_json::Value> = log
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter(|l| l["fields"]["message"] == "the database refuses a row; it is a dead letter")
        .map(|l| l["fields"].clone())
        .collect();
    let want = serde_json::json!({
        "message": "the database refuses a row; it is a dead letter",
        "pipeline": name,
        "from": format!("sqs:{name}"),
        "unit": id,
        "column": "locale",
        "sqlstate": "check_violation (23514)",
        "error": format!("column \"locale\": value for domain {schema}.short_locale violates check constraint \"short_locale_check\" (check_violation, SQLSTATE 23514)"),
    });
    assert_eq!(warnings, vec![want], "{log}");
    assert!(!log.contains("Klingon"), "a value in the log: {log}");
}

/// `/readyz` with the database down: one short line naming it.
#[tokio::test(flavor = "multi_thread")]
async fn readyz_with_the_database_down_is_one_short_line() {
    let (name, schema) = (unique("err_ready"), unique("s"));
    schema_with_user_logins(&schema).await;
    queue(&services::sqs().await, &name).await;
    let file = pipeline_file(&name, &schema, "wait_time_s = 1");
    let db = services::database_url();
    let proxy = Proxy::start(&authority(&db)).await;
    let through = proxy.url(&db, &authority(&db));
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let admin = format!("127.0.0.1:{port}");
    let host = Host::run_all(&[&file], &["--admin", &admin], &[], &through, services::endpoint());
    let ready = readyz_until(port, Duration::from_secs(60), |status, _| status == 200).await;
    assert_eq!(ready.0, 200, "{}\n{}", ready.1, host.log());

    // Open connections cut, then nothing listening there at all.
    proxy.set(Mode::Refuse);
    drop(proxy);
    let want = format!("{name}: not ready: database: error connecting to server: Connection refused (os error 111)\n");
    let (status, body) = readyz_until(port, Duration::from_secs(30), |_, body| body == want).await;
    assert_eq!((status, body.as_str()), (503, want.as_str()), "{}", host.log());
}

/// `GET /readyz` until `ok` holds of its status and body, or `limit`
/// passes: the last answer.
async fn readyz_until(port: u16, limit: Duration, ok: impl Fn(u16, &str) -> bool) -> (u16, String) {
    let start = Instant::now();
    loop {
        if let Ok(a) = crate::admin::http(port, "GET", "/readyz", None).await
            && (ok(a.status, &a.body) || start.elapsed() > limit)
        {
            return (a.status, a.body);
        }
        assert!(start.elapsed() < limit + Duration::from_secs(10), "GET /readyz: no answer");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}
