//! Hostile input and faults that must not wedge the host or turn good
//! messages into dead letters (issue 12), against moto and the local
//! PostgreSQL.

use crate::run::{count, fetch_bodies, logins, run_once, schema_with_user_logins, sink_for};
use crate::services::{self, pg, queue, send, unique};
use std::time::Duration;

/// A login body from the Fetch data with `field` set to the raw JSON `value`.
fn login_with(field: &str, value: &str) -> String {
    let body = &fetch_bodies()[0];
    let end = body.rfind('}').unwrap();
    format!("{},\"{field}\":{value}}}", &body[..end])
}

#[tokio::test(flavor = "multi_thread")]
async fn text_postgres_refuses_in_a_reason_makes_a_dead_letter_not_a_loop() {
    // U+0000 is valid JSON and no PostgreSQL `text` value may hold it. It
    // reaches a dead letter's reason through a duplicate key (input) and a
    // flatten collision (transform), and the table through a value (sink).
    let (name, schema) = (unique("nul"), unique("s"));
    schema_with_user_logins(&schema).await;
    let sqs = services::sqs().await;
    let url = queue(&sqs, &name).await;
    let mut bodies: Vec<String> = fetch_bodies()[1..6].to_vec();
    bodies.push(r#"{"k\u0000":1,"k\u0000":2}"#.to_string());
    bodies.push(login_with("x", r#"{"y\u0000":1},"x_y\u0000":2"#));
    bodies.push(fetch_bodies()[7].replacen("\"user_id\": \"", "\"user_id\": \"nul\\u0000", 1));
    assert!(bodies[7].contains("nul\\u0000"), "{}", bodies[7]);
    send(&sqs, &url, &bodies).await;
    let run = run_once(logins(&name, &schema, &name));
    let s = tokio::time::timeout(Duration::from_secs(120), run).await.expect("the run ends: no commit loops");
    assert_eq!((s.rows, s.dead_letters, s.failed_batches), (5, 3, 0), "{s}");
    assert_eq!(count(&format!("SELECT count(*) FROM {schema}.user_logins")).await, 5);
    let reasons: Vec<(String, String)> = pg()
        .await
        .query("SELECT stage, reason FROM etl.dead_letters WHERE pipeline = $1 ORDER BY stage", &[&name])
        .await
        .unwrap()
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect();
    let stages: Vec<&str> = reasons.iter().map(|(s, _)| s.as_str()).collect();
    assert_eq!(stages, ["input", "sink", "transform"], "{reasons:?}");
    assert!(reasons[0].1.starts_with("duplicate key `k\u{fffd}`"), "{reasons:?}");
    assert!(reasons[2].1.contains("flatten to the same key `x_y\u{fffd}`"), "{reasons:?}");
    assert!(reasons[1].1.contains("SQLSTATE 22021"), "{reasons:?}");
    assert_eq!(services::queue_depth(&sqs, &url).await, 0, "every message acknowledged");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_message_refused_even_as_a_dead_letter_stays_unacknowledged_and_the_rest_commits() {
    // The safety net behind storable dead letters: a unit the database
    // refuses without its rows (here its ledger id) is left out with an
    // error; the others commit, and nothing loops.
    let (name, schema) = (unique("unstorable"), unique("s"));
    schema_with_user_logins(&schema).await;
    let sink = sink_for(&name, &logins("unused", &schema, &name));
    let unit = |id: &str| host::sink::Unit {
        message_id: id.into(),
        rows: b"u\tios\tm\td\tRU\t2\t2026-01-01\n".to_vec(),
        row_count: 1,
        ..Default::default()
    };
    let commit = sink.commit(vec![unit("good-1"), unit("bad\0id"), unit("good-2")], "[]");
    let e = tokio::time::timeout(Duration::from_secs(60), commit).await.expect("no loop").unwrap_err();
    assert!(e.retryable(), "{e}");
    assert!(e.to_string().contains("refuses it even as a dead letter"), "{e}");
    assert_eq!(count(&format!("SELECT count(*) FROM {schema}.user_logins")).await, 2);
}
