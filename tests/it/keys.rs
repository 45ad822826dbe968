//! Upsert keys in real PostgreSQL tables (issue 23): rows whose key is
//! NULL load alike whether a batch goes straight in or through the merge,
//! and a deferrable unique key never takes the direct path.

use crate::run::{item_rows, items, sink_for};
use crate::services::{migrated, pg, unique};

/// A schema with an `items` table whose key is `key_sql` (a table
/// constraint on `id`).
async fn items_keyed(schema: &str, key_sql: &str) {
    migrated().await;
    pg().await
        .batch_execute(&format!(
            "CREATE SCHEMA {schema}; CREATE TABLE {schema}.items (id integer, name varchar(8), {key_sql})"
        ))
        .await
        .unwrap();
}

async fn count(sql: &str) -> i64 {
    pg().await.query_one(sql, &[]).await.unwrap().get(0)
}

#[tokio::test(flavor = "multi_thread")]
async fn rows_with_a_null_key_load_alike_straight_in_and_through_the_merge() {
    let (name, schema) = (unique("nullkey"), unique("s"));
    items_keyed(&schema, "UNIQUE (id)").await;
    let sink = sink_for(&name, &items("unused", &schema, &name, "upsert"));
    // New keys: straight in.
    sink.commit(vec![item_rows("a", "1\tone\n\\N\tn1\n\\N\tn2\n")], &host::sink::Lineage::default()).await.unwrap();
    // A key already there: through staging and the merge.
    let r =
        sink.commit(vec![item_rows("b", "1\tuno\n\\N\tn3\n\\N\tn4\n")], &host::sink::Lineage::default()).await.unwrap();
    assert_eq!((r.rows, r.dead_letters), (3, 0));
    let nulls = count(&format!("SELECT count(*) FROM {schema}.items WHERE id IS NULL")).await;
    assert_eq!(nulls, 4, "every row whose key is NULL is kept, as PostgreSQL's unique key keeps them");
    assert_eq!(count(&format!("SELECT count(*) FROM {schema}.items WHERE id = 1 AND name = 'uno'")).await, 1);
}

#[tokio::test(flavor = "multi_thread")]
async fn an_upsert_on_a_deferrable_key_is_refused_without_dead_letters_or_duplicates() {
    let (name, schema) = (unique("defer"), unique("s"));
    items_keyed(&schema, "CONSTRAINT items_key UNIQUE (id) DEFERRABLE INITIALLY DEFERRED").await;
    pg().await.batch_execute(&format!("INSERT INTO {schema}.items VALUES (1, 'one')")).await.unwrap();
    let sink = sink_for(&name, &items("unused", &schema, &name, "upsert"));
    let e = sink.commit(vec![item_rows("a", "1\tuno\n")], &host::sink::Lineage::default()).await.expect_err("refused");
    assert!(!e.retryable(), "{e}");
    assert!(e.to_string().contains("deferrable"), "{e}");
    let dead = count(&format!("SELECT count(*) FROM etl.dead_letters WHERE pipeline = '{name}'")).await;
    assert_eq!(dead, 0, "the row is not the problem: the key is");
    assert_eq!(count(&format!("SELECT count(*) FROM {schema}.items")).await, 1);
}
