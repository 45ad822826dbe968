//! Hostile input and faults that must not wedge the host or turn good
//! messages into dead letters (issue 12), against moto and the local
//! PostgreSQL.

use crate::run::{
    count, fetch_bodies, item_rows, items, items_table, logins, run_once, schema_with_user_logins, sink_for,
};
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
    let lineage = host::sink::Lineage::default();
    let commit = sink.commit(vec![unit("good-1"), unit("bad\0id"), unit("good-2")], &lineage);
    let e = tokio::time::timeout(Duration::from_secs(60), commit).await.expect("no loop").unwrap_err();
    assert!(e.retryable(), "{e}");
    assert!(e.to_string().contains("refuses it even as a dead letter"), "{e}");
    assert_eq!(count(&format!("SELECT count(*) FROM {schema}.user_logins")).await, 2);
}

#[tokio::test(flavor = "multi_thread")]
async fn delete_insert_under_concurrent_commits_keeps_one_row_per_key() {
    // Two hosts (two sinks, two pools) commit the same keys at once, again
    // and again: each round must end as one of the two serial orders
    // would, one row per key. The table has no unique index (a
    // delete-insert target needs none).
    let (name, schema) = (unique("di"), unique("s"));
    items_table(&schema).await;
    pg().await.batch_execute(&format!("ALTER TABLE {schema}.items DROP CONSTRAINT items_pkey")).await.unwrap();
    let p = items("unused", &schema, &name, "delete-insert");
    let (a, b) = (sink_for(&name, &p), sink_for(&name, &p));
    for round in 0..20 {
        let rows = |host: &str| (0..50).map(|k| format!("{k}\t{host}{round}\n")).collect::<String>();
        let lineage = host::sink::Lineage::default();
        let (ra, rb) = tokio::join!(
            a.commit(vec![item_rows(&format!("a-{round}"), &rows("a"))], &lineage),
            b.commit(vec![item_rows(&format!("b-{round}"), &rows("b"))], &lineage),
        );
        ra.unwrap();
        rb.unwrap();
        let table = format!("{schema}.items");
        let twice = count(&format!("SELECT count(*) - count(DISTINCT id) FROM {table}")).await;
        assert_eq!(twice, 0, "round {round}: keys inserted twice");
        // One host's rows whole: never a mix of the two within a round.
        let hosts = count(&format!("SELECT count(DISTINCT left(name, 1)) FROM {table}")).await;
        assert_eq!((count(&format!("SELECT count(*) FROM {table}")).await, hosts), (50, 1), "round {round}");
    }
}

/// Every kind of bad message a queue can hold, as JSON text.
fn hostile_corpus() -> Vec<String> {
    let good = fetch_bodies()[1].clone();
    let deep = |n: usize| format!("{}{}", "[".repeat(n), "]".repeat(n));
    let mut corpus: Vec<String> = [
        // Not JSON, or not one object.
        "",
        " ",
        "{",
        "}",
        "[]",
        "null",
        "42",
        "\"text\"",
        "{\"a\":}",
        "{\"a\":1,}",
        "{'a':1}",
        "{\"a\":1} trailing",
        "{\"a\":1}{\"b\":2}",
        "\u{feff}{\"a\":1}",
        "{\"a\":\"\\ud800\"}",
        "{\"a\":\"\\x41\"}",
        "{\"a\":1e99999}",
        "{\"a\":-}",
        "{\"a\":01}",
        "{\"a\":NaN}",
        "{\"a\":tru}",
        "{\"a\":\"unterminated}",
    ]
    .map(String::from)
    .to_vec();
    // NUL and control characters in keys and values, duplicate keys.
    corpus.push(login_with("k\\u0000ey", "1"));
    corpus.push(login_with("x", "\"v\\u0000al\""));
    corpus.push(good.replacen("\"locale\": \"", "\"locale\": \"\\u0001\\u001f\\u007f", 1));
    corpus.push(good.replacen("\"user_id\": \"", "\"user_id\": \"\\u0000", 1));
    corpus.push(login_with("user_id", "\"again\""));
    corpus.push(r#"{"a":1,"a":2,"a":3}"#.to_string());
    // Deep nesting, in a field and as the whole body.
    corpus.push(login_with("deep", &deep(100)));
    corpus.push(login_with("deeper", &deep(100_000)));
    corpus.push(deep(100_000));
    corpus.push(format!("{}1{}", "{\"a\":".repeat(30_000), "}".repeat(30_000)));
    // Values too long for their column, of the wrong type, huge.
    corpus.push(good.replacen("\"device_type\": \"", &format!("\"device_type\": \"{}", "d".repeat(10_000)), 1));
    corpus.push(good.replacen("\"locale\": \"", &format!("\"locale\": \"{}", "ü".repeat(40)), 1));
    corpus.push(login_with("app_version", "{\"major\":1}"));
    corpus.push(login_with("user_id", "[1,2,3]"));
    corpus.push(login_with("app_version", "\"99999999999.1\""));
    corpus.push(login_with("padding", &format!("\"{}\"", "p".repeat(250_000))));
    corpus
}

#[tokio::test(flavor = "multi_thread")]
async fn a_corpus_of_hostile_messages_ends_as_rows_or_dead_letters_and_an_empty_queue() {
    let (name, schema) = (unique("hostile"), unique("s"));
    schema_with_user_logins(&schema).await;
    let endpoint = services::private_endpoint();
    let sqs = services::sqs_at(&endpoint).await;
    let url = queue(&sqs, &name).await;
    let mut corpus = hostile_corpus();
    // SQS refuses an empty body: those two go as one space and a tab.
    corpus.retain(|b| !b.is_empty());
    corpus.push("\t".into());
    let n = corpus.len() as i64;
    // One a call: a batch call carries 256 KiB at most.
    for body in &corpus {
        send(&sqs, &url, std::slice::from_ref(body)).await;
    }
    let file = crate::faults::pipeline_file(&name, &schema, "");
    let mut host = crate::faults::Host::run(&file, true, &services::database_url(), &endpoint);
    let (status, out) = host.wait(Duration::from_secs(300)).await.expect("the run ends by itself");
    let log = host.log();
    assert!(status.success(), "{status}: {out}\n{log}");
    let rows = count(&format!("SELECT count(*) FROM {schema}.user_logins")).await;
    let dead = count(&format!("SELECT count(*) FROM etl.dead_letters WHERE pipeline = '{name}'")).await;
    assert_eq!(rows + dead, n, "each of {n} messages a row or a dead letter: {out}");
    assert!(rows >= 4, "the good ones among them load: {out}");
    assert_eq!(services::queue_depth(&sqs, &url).await, 0, "{out}\n{log}");
    // Reasons name what was wrong, never the values.
    let reasons: Vec<String> = pg()
        .await
        .query("SELECT reason FROM etl.dead_letters WHERE pipeline = $1", &[&name])
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert!(reasons.iter().all(|r| !r.contains("ddddd") && !r.contains("ppppp")), "{reasons:?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_held_message_stays_invisible_past_its_timeout_and_an_abandoned_one_comes_back_at_once() {
    // Whatever a held message waits for (a channel, a worker, the
    // database), its visibility is kept; a hold dropped unsettled (a unit
    // abandoned, a worker that panicked) gives the message back at once.
    let name = unique("hold");
    let sqs = services::sqs().await;
    let url = queue(&sqs, &name).await;
    send(&sqs, &url, &["one".to_string(), "two".to_string()]).await;
    let aws = services::aws_at(services::endpoint()).await;
    let source = host::queue::SqsSource::with_config(&aws, &name).await.unwrap();
    let visibility = Duration::from_secs(2);
    let holder = host::flow::Holder::start(source.clone(), visibility);
    let mut holds = Vec::new();
    let mut ids = Vec::new();
    while holds.len() < 2 {
        let asked = tokio::time::Instant::now();
        for m in source.receive_up_to(10, Duration::from_secs(1), visibility).await.unwrap() {
            holds.push(holder.hold(&m, asked));
            ids.push(m.id.clone());
        }
    }
    // Three visibility timeouts later, nothing is visible.
    tokio::time::sleep(visibility * 3).await;
    let seen = source.receive_up_to(10, Duration::ZERO, visibility).await.unwrap();
    assert!(seen.is_empty(), "held messages came back: {:?}", seen.iter().map(|m| &m.body).collect::<Vec<_>>());
    drop(holds.pop());
    let start = std::time::Instant::now();
    let back = loop {
        let got = source.receive_up_to(10, Duration::from_secs(1), Duration::from_secs(30)).await.unwrap();
        if !got.is_empty() {
            break got;
        }
        assert!(start.elapsed() < visibility * 3, "the abandoned message did not come back");
    };
    assert_eq!(back.iter().map(|m| m.id.clone()).collect::<Vec<_>>(), vec![ids[1].clone()]);
    holds.into_iter().for_each(host::flow::Hold::settle);
}
