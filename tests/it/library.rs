//! The standard library's one-to-many path end to end: `explode` turns an
//! order into a row per line item through the real engine, sink and
//! ledger; dropped and rejected orders are counted as such.

use crate::run::{count, run_once};
use crate::services::{self, migrated, pg, queue, queue_depth, send, unique};
use std::path::Path;

#[tokio::test(flavor = "multi_thread")]
async fn an_exploded_order_loads_a_row_per_item_and_the_ledger_counts_each_message_once() {
    let (name, schema) = (unique("orders"), unique("s"));
    migrated().await;
    pg().await
        .batch_execute(&format!(
            "CREATE SCHEMA {schema}; CREATE TABLE {schema}.order_items \
             (order_id bigint, line bigint, sku text, qty bigint, PRIMARY KEY (order_id, line))"
        ))
        .await
        .unwrap();
    let text = format!(
        r#"
name = "{name}"
[source.sqs]
queue = "{name}"
[input]
format = "json"
[[transforms]]
uses = "explode"
params = {{ field = "items", as = "item", index = "line" }}
[[transforms]]
uses = "flatten"
params = {{ separator = "_" }}
[sink]
table = "order_items"
schema = "{schema}"
mode = "append"
[sink.columns]
order_id = "order"
line = "line"
sku = "item_sku"
qty = "item_qty"
"#
    );
    let path = Path::new("orders.toml");
    let p = host::config::validate(path, host::config::parse_str(path, &text, |_| None).unwrap()).unwrap();
    let sqs = services::sqs().await;
    let url = queue(&sqs, &name).await;
    let bodies = [
        r#"{"order": 1, "items": [{"sku": "A", "qty": 2}, {"sku": "B", "qty": 1}, {"sku": "C", "qty": 5}]}"#,
        r#"{"order": 2, "items": []}"#,
        r#"{"order": 3, "items": [{"sku": "A", "qty": 1}]}"#,
        r#"{"order": 4, "items": "none"}"#,
        r#"{"order": 5, "items": [{"sku": "D", "qty": 3}, {"sku": "E", "qty": 4}]}"#,
    ];
    send(&sqs, &url, &bodies.map(str::to_string)).await;

    let s = run_once(p).await;
    assert_eq!((s.messages, s.rows, s.dead_letters), (5, 6, 1), "{s}");
    let rows: Vec<(i64, i64, String, i64)> = pg()
        .await
        .query(&format!("SELECT order_id, line, sku, qty FROM {schema}.order_items ORDER BY 1, 2"), &[])
        .await
        .unwrap()
        .iter()
        .map(|r| (r.get(0), r.get(1), r.get(2), r.get(3)))
        .collect();
    let want = [(1, 0, "A", 2), (1, 1, "B", 1), (1, 2, "C", 5), (3, 0, "A", 1), (5, 0, "D", 3), (5, 1, "E", 4)];
    assert_eq!(rows, want.map(|(o, l, s, q)| (o, l, s.to_string(), q)).to_vec());
    // The ledger (SQS ids are UUIDs, kept as such): every message once
    // (the empty order too, with no rows; the bad one with its dead letter),
    // the six rows in the batches' lineage.
    let db = pg().await;
    let ids: i64 = db
        .query_one(
            "SELECT (coalesce(sum(cardinality(message_ids)), 0) + coalesce(sum(cardinality(message_uuids)), 0))::bigint \
             FROM etl.receipts WHERE pipeline = $1",
            &[&name],
        )
        .await
        .unwrap()
        .get(0);
    let written = count(&format!("SELECT sum(rows_written)::bigint FROM etl.batches WHERE pipeline = '{name}'")).await;
    let reason: String =
        db.query_one("SELECT reason FROM etl.dead_letters WHERE pipeline = $1", &[&name]).await.unwrap().get(0);
    assert_eq!((ids, written), (5, 6), "each message once (the rejected one with its dead letter), six rows");
    assert!(reason.contains("`items` is not an array"), "{reason}");
    assert_eq!(queue_depth(&sqs, &url).await, 0, "every message deleted");
}
