//! Dead letters keep what they were kept for (issue 23): a malformed row
//! keeps its raw text, a failed replay stays the same dead letter, the
//! binary says so in its exit code, replay pages through a pipeline's dead
//! letters, and a row of a replaced object version is not replayed.

use crate::common;
use crate::files::{bucket_name, schema_with_customers};
use crate::run::{items, items_table, run_once};
use crate::services::{self, pg, put, s3_at, unique};
use host::config::Pipeline;
use std::path::Path;

/// The shipped customers pipeline (headerless CSV, reconcile) named `name`,
/// into `schema`, reading `bucket`, its text changed by `edit`.
fn customers(schema: &str, name: &str, bucket: &str, edit: impl Fn(String) -> String) -> Pipeline {
    let text = std::fs::read_to_string(common::workspace().join("pipelines/customers.toml")).unwrap();
    let text = edit(
        text.replace("name = \"customers\"", &format!("name = \"{name}\""))
            .replace("table = \"customers\"", &format!("table = \"customers\"\nschema = \"{schema}\"")),
    );
    let path = Path::new("pipelines/customers.toml");
    let parsed = host::config::parse_str(path, &text, |v| (v == "CUSTOMER_BUCKET").then(|| bucket.to_string()));
    host::config::validate(path, parsed.unwrap()).unwrap()
}

/// What a replay of all of `p`'s dead letters did: (loaded, failed,
/// skipped) and each dead letter's result in the order reported.
async fn replay(p: Pipeline) -> ((usize, usize, usize), Vec<(i64, String)>) {
    let aws = host::aws::Aws::new(services::aws_at(services::endpoint()).await);
    let mut results = Vec::new();
    let url = services::database_url();
    let report = |id: i64, r: &str| results.push((id, r.to_string()));
    let done = host::source::dead_letters::replay(p, common::engine(), &url, &aws, &[], report).await.unwrap();
    ((done.loaded, done.failed, done.skipped), results)
}

/// A dead letter of `p` with `payload` from `source`, made the way the
/// sink makes them; its id.
async fn dead_letter(p: &Pipeline, source: &str, payload: &str) -> i64 {
    let sink = host::sink::PostgresSink::new(
        host::sink::pool(&services::database_url(), 1).unwrap(),
        &p.name,
        source,
        p.sink.as_ref().unwrap(),
        None,
    );
    let message_id = unique("m");
    let unit = host::sink::Unit {
        message_id: message_id.clone(),
        payload: payload.as_bytes().to_vec(),
        dead: vec![host::sink::dead_letter::DeadLetter::input("as it was refused".into())],
        ..Default::default()
    };
    assert_eq!(sink.commit(vec![unit], &host::sink::Lineage::default()).await.unwrap().dead_letters, 1);
    let sql = "SELECT id FROM etl.dead_letters WHERE pipeline = $1 AND message_id = $2";
    pg().await.query_one(sql, &[&p.name, &message_id]).await.unwrap().get(0)
}

/// (source, message, replayed, attempts, last reason) of dead letter `id`.
async fn state(id: i64) -> (String, String, bool, i32, Option<String>) {
    let r = pg()
        .await
        .query_one(
            "SELECT source, message_id, replayed_at IS NOT NULL, replay_attempts, last_replay_reason \
             FROM etl.dead_letters WHERE id = $1",
            &[&id],
        )
        .await
        .unwrap();
    (r.get(0), r.get(1), r.get(2), r.get(3), r.get(4))
}

async fn count(sql: &str, name: &str) -> i64 {
    pg().await.query_one(sql, &[&name]).await.unwrap().get(0)
}

const DEAD_LETTERS: &str = "SELECT count(*) FROM etl.dead_letters WHERE pipeline = $1";

#[tokio::test(flavor = "multi_thread")]
async fn a_malformed_csv_line_keeps_its_text_and_replays_through_a_fixed_pipeline() {
    let (name, schema, bucket) = (unique("dlraw"), unique("s"), bucket_name("dlraw"));
    schema_with_customers(&schema).await;
    // Rows keep their line, a replayed one too.
    pg().await.batch_execute(&format!("ALTER TABLE {schema}.customers ADD COLUMN line bigint")).await.unwrap();
    let line = |t: String| {
        let file = "source_file = { generated = \"source-file\" }";
        t.replace(file, &format!("{file}\nline = {{ generated = \"source-line\" }}"))
    };
    let s3 = s3_at(services::endpoint()).await;
    s3.create_bucket().bucket(&bucket).send().await.unwrap();
    let bad = "3,33101,Miami,FL,2023-01-05 10:00:00,2023-01-05 10:00:00,vip";
    let long = format!("4,33101,{},FL,2023-01-05 10:00:00,2023-01-05 10:00:00", "x".repeat(100));
    let file = format!(
        "1,33301,Fort Lauderdale,FL,2023-01-01 10:00:00,2023-01-02 10:00:00\n{bad}\r\n\
         2,10001,New York,NY,2023-01-03 09:30:00,2023-01-03 09:30:00\n{long}\n"
    );
    put(&s3, &bucket, "customers/a.csv", file).await;
    // At most 100 bytes a row: the fourth line is too long.
    let small = |t: String| line(t).replace("[input]\n", "[input]\nmax_record_bytes = 100\n");
    let s = run_once(customers(&schema, &name, &bucket, small)).await;
    assert_eq!((s.rows, s.dead_letters), (2, 2), "{s}");
    let cut: Vec<u8> = pg()
        .await
        .query_one(
            "SELECT p.payload FROM etl.dead_letters d JOIN etl.dead_letter_payloads p ON p.dead_letter_id = d.id \
             WHERE d.pipeline = $1 AND p.form = 'cut-row'",
            &[&name],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(cut, long.as_bytes()[..100], "its first max_record_bytes");
    let cut_result = "skipped: line 4: longer than max_record_bytes and only its start was kept; not replayed";
    let (id, reason, payload): (i64, String, Vec<u8>) = {
        let r = pg()
            .await
            .query_one(
                "SELECT d.id, d.reason, p.payload FROM etl.dead_letters d \
                 JOIN etl.dead_letter_payloads p ON p.dead_letter_id = d.id WHERE d.pipeline = $1 AND p.form = 'row'",
                &[&name],
            )
            .await
            .unwrap();
        (r.get(0), r.get(1), r.get(2))
    };
    assert_eq!(reason, "line 2: expected 6 fields, found 7");
    assert_eq!(String::from_utf8_lossy(&payload), bad, "the line as the file held it");

    // As it is: the same clear reason again, on the same dead letter.
    let (done, results) = replay(customers(&schema, &name, &bucket, line)).await;
    assert_eq!(done, (0, 1, 1), "{results:?}");
    assert_eq!(results[0], (id, format!("failed again: {reason}")));
    assert_eq!(results[1].1, cut_result);
    assert_eq!(state(id).await.4.as_deref(), Some(reason.as_str()));

    // Fixed by hand: the new seventh column is named.
    let fixed = |t: String| line(t).replace("\"datetime_updated\"] }", "\"datetime_updated\", \"tier\"] }");
    let (done, results) = replay(customers(&schema, &name, &bucket, fixed)).await;
    assert_eq!(done, (1, 0, 1), "{results:?}");
    let sql = format!("SELECT count(*) FROM {schema}.customers WHERE city = 'Miami' AND source_file = $1 AND line = 2");
    assert_eq!(count(&sql, &format!("s3://{bucket}/customers/a.csv")).await, 1);
    assert!(state(id).await.2, "replayed");
    let lines = pg().await.query(&format!("SELECT line FROM {schema}.customers ORDER BY line"), &[]).await.unwrap();
    assert_eq!(lines.iter().map(|r| r.get::<_, i64>(0)).collect::<Vec<_>>(), [1, 2, 3]);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_failed_replay_updates_its_dead_letter_and_makes_no_new_one() {
    let (name, schema) = (unique("dlsame"), unique("s"));
    items_table(&schema).await;
    let p = || items(&name, &schema, &name, "append");
    let not_json = dead_letter(&p(), "sqs:q", "not json").await;
    let refused = dead_letter(&p(), "sqs:q", r#"{"id": 1, "name": "far too long"}"#).await;
    let good = dead_letter(&p(), "sqs:q", r#"{"id": 2, "name": "ok"}"#).await;
    let (done, results) = replay(p()).await;
    assert_eq!(done, (1, 2, 0), "{results:?}");
    assert_eq!(count(DEAD_LETTERS, &name).await, 3, "no new dead letters: {results:?}");
    for attempt in [1, 2] {
        let (source, message, replayed, attempts, reason) = state(not_json).await;
        assert_eq!((source.as_str(), replayed, attempts), ("sqs:q", false, attempt));
        assert!(message.starts_with("m_"), "{message}");
        assert!(reason.unwrap().starts_with("invalid JSON"));
        let (_, _, replayed, attempts, reason) = state(refused).await;
        assert_eq!((replayed, attempts), (false, attempt));
        let reason = reason.unwrap();
        assert!(
            reason.starts_with("database refused the row: ")
                && reason.ends_with("string_data_right_truncation, SQLSTATE 22001)"),
            "{reason}"
        );
        if attempt == 1 {
            let (done, results) = replay(p()).await;
            assert_eq!(done, (0, 2, 0), "only those not replayed: {results:?}");
        }
    }
    assert_eq!(count(DEAD_LETTERS, &name).await, 3);
    assert!(state(good).await.2);
    assert_eq!(count(&format!("SELECT count(*) FROM {schema}.items WHERE name <> $1"), "").await, 1);
}

/// The built `host` binary.
fn host_binary() -> std::path::PathBuf {
    let exe = std::env::current_exe().unwrap();
    let bin = exe.parent().unwrap().parent().unwrap().join("host");
    assert!(bin.is_file(), "{} is missing: build it first (`cargo build --release -p host`)", bin.display());
    bin
}

#[tokio::test(flavor = "multi_thread")]
async fn the_binary_exits_non_zero_when_a_replay_fails() {
    let (name, schema) = (unique("dlexit"), unique("s"));
    items_table(&schema).await;
    let p = items(&name, &schema, &name, "append");
    let good = dead_letter(&p, "sqs:q", r#"{"id": 1, "name": "ok"}"#).await;
    dead_letter(&p, "sqs:q", "not json").await;
    let text = format!(
        "name = \"{name}\"\n[source.sqs]\nqueue = \"{name}\"\n\
         [sink]\ntable = \"items\"\nschema = \"{schema}\"\n[sink.columns]\nid = \"id\"\nname = \"name\"\n"
    );
    let file = std::env::temp_dir().join(format!("{name}.toml"));
    std::fs::write(&file, text).unwrap();
    let replay = |ids: &[i64]| {
        let mut cmd = std::process::Command::new(host_binary());
        cmd.args(["dead-letters", "replay"]).arg(&file);
        for id in ids {
            cmd.args(["--id", &id.to_string()]);
        }
        cmd.env("DATABASE_URL", services::database_url())
            .env("AWS_ENDPOINT_URL", services::endpoint())
            .env("AWS_REGION", "us-east-1")
            .env("AWS_ACCESS_KEY_ID", "test")
            .env("AWS_SECRET_ACCESS_KEY", "test")
            .env_remove("HOST_DEAD_LETTER_KEY")
            .output()
            .unwrap()
    };
    let out = replay(&[good]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{stdout}{}", String::from_utf8_lossy(&out.stderr));
    assert!(stdout.contains("1 loaded, 0 failed again"), "{stdout}");
    let out = replay(&[]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{stdout}{}", String::from_utf8_lossy(&out.stderr));
    assert!(stdout.contains("0 loaded, 1 failed again"), "{stdout}");
}

#[tokio::test(flavor = "multi_thread")]
async fn replay_pages_through_many_dead_letters_each_once() {
    // 1,200 dead letters: three pages; every third fails again and stays
    // behind while the pages move on.
    let (name, schema) = (unique("dlpages"), unique("s"));
    items_table(&schema).await;
    pg().await
        .execute(
            "WITH d AS (INSERT INTO etl.dead_letters (pipeline, source, message_id, stage, reason) \
             SELECT $1, 'sqs:q', 'm' || i, 'input', 'test' FROM generate_series(1, 1200) i RETURNING id, message_id) \
             INSERT INTO etl.dead_letter_payloads (dead_letter_id, payload, bound) \
             SELECT id, convert_to(CASE WHEN substr(message_id, 2)::int % 3 = 0 THEN 'not json' \
             ELSE format('{\"id\": %s, \"name\": \"n\"}', substr(message_id, 2)) END, 'UTF8'), true FROM d",
            &[&name],
        )
        .await
        .unwrap();
    let (done, results) = replay(items(&name, &schema, &name, "append")).await;
    assert_eq!(done, (800, 400, 0));
    let ids: Vec<i64> = results.iter().map(|(id, _)| *id).collect();
    assert_eq!(ids.len(), 1200);
    assert!(ids.windows(2).all(|w| w[0] < w[1]), "each once, in order");
    assert_eq!(count(&format!("SELECT count(*) FROM {schema}.items WHERE name = $1"), "n").await, 800);
    let (done, _) = replay(items(&name, &schema, &name, "append")).await;
    assert_eq!(done, (0, 400, 0), "those that failed are tried again");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_row_of_a_replaced_object_version_is_not_replayed() {
    let (name, schema, bucket) = (unique("dlver"), unique("s"), bucket_name("dlver"));
    schema_with_customers(&schema).await;
    let p = || customers(&schema, &name, &bucket, |t| t);
    let row = |id: &str| {
        format!(
            r#"{{"customer_id": "{id}", "zipcode": "33301", "city": "Tampa", "state_code": "FL", "datetime_created": "2023-01-01 10:00:00", "datetime_updated": "2023-01-02 10:00:00"}}"#
        )
    };
    let uri = |key: &str| format!("s3://{bucket}/customers/{key}");
    let replaced = dead_letter(&p(), &format!("{}#v1", uri("a.csv")), &row("1")).await;
    let gone = dead_letter(&p(), &format!("{}#e1", uri("b.csv")), &row("2")).await;
    let current = dead_letter(&p(), &format!("{}#e3", uri("c.csv")), &row("3")).await;
    // What loading left in `etl.files`: a.csv's v2 replaced v1 (and
    // forgot it), b.csv is gone, c.csv's e3 is the version loaded.
    pg().await
        .execute(
            "INSERT INTO etl.files (pipeline, bucket, key, version, done) VALUES \
             ($1, $2, 'customers/a.csv', 'v2', true), ($1, $2, 'customers/c.csv', 'e3', true)",
            &[&name, &bucket],
        )
        .await
        .unwrap();
    let (done, results) = replay(p()).await;
    assert_eq!(done, (1, 0, 2), "{results:?}");
    assert_eq!(
        results,
        [
            (replaced, format!("skipped: object version v1 of {} was replaced by v2; not replayed", uri("a.csv"))),
            (
                gone,
                format!(
                    "skipped: object version e1 of {} is no longer loaded (the key is gone); not replayed",
                    uri("b.csv")
                )
            ),
            (current, "loaded 1 rows".to_string()),
        ]
    );
    let got = count(&format!("SELECT count(*) FROM {schema}.customers WHERE customer_id::text <> $1"), "3").await;
    assert_eq!(got, 0, "nothing of the replaced or gone versions");
    let (source, _, replayed, attempts, reason) = state(replaced).await;
    assert_eq!((source, replayed, attempts), (format!("{}#v1", uri("a.csv")), false, 1));
    assert!(reason.unwrap().contains("was replaced by v2"));
    assert!(state(current).await.2);
}
