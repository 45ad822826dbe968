//! Group commit (issue 27): batches of messages that wait for the database
//! together commit in one transaction, and each is answered, and its
//! messages deleted, only after the transaction holding its rows
//! committed. The database is held still by taking the pipeline's ledger
//! lock from the test, as a long commit of another batch would.

use crate::common;
use crate::run::{count, item_rows, items_table, run_once, sink_for};
use crate::services::{self, pg, queue, send, unique};
use std::sync::Arc;
use std::time::Duration;

/// Holds pipeline `name`'s ledger lock (`sql::LEDGER_LOCK`) in an open
/// transaction until the returned client commits.
async fn hold_ledger(name: &str) -> tokio_postgres::Client {
    let blocker = pg().await;
    blocker.batch_execute("BEGIN").await.unwrap();
    blocker.execute("SELECT pg_advisory_xact_lock(hashtext('etl.receipts'), hashtext($1))", &[&name]).await.unwrap();
    blocker
}

/// Sessions waiting for pipeline `name`'s ledger lock.
async fn waiting_for_ledger(name: &str) -> i64 {
    let sql = "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND NOT granted \
               AND classid = hashtext('etl.receipts')::oid AND objid = hashtext($1)::oid";
    pg().await.query_one(sql, &[&name]).await.unwrap().get(0)
}

/// Transactions committed for pipeline `name` (a lineage row each).
async fn transactions(name: &str) -> i64 {
    pg().await.query_one("SELECT count(*) FROM etl.batches WHERE pipeline = $1", &[&name]).await.unwrap().get(0)
}

#[tokio::test(flavor = "multi_thread")]
async fn batches_that_wait_together_commit_together_and_each_is_answered_after_its_commit() {
    let (name, schema) = (unique("group"), unique("s"));
    items_table(&schema).await;
    let sink = Arc::new(sink_for(&name, &crate::run::items("unused", &schema, &name, "append")));
    let blocker = hold_ledger(&name).await;
    // Six batches of three messages: batch 4 brings again a message of
    // batch 3 (a redelivery), batch 5 a row the table refuses (a name too
    // long for varchar(8)).
    let batch = |b: i32| -> Vec<host::sink::Unit> {
        (0..3)
            .map(|m| {
                let id = if b == 4 && m == 0 { "m-3-0".to_string() } else { format!("m-{b}-{m}") };
                let name = if b == 5 && m == 2 { "far-too-long" } else { "ok" };
                item_rows(&id, &format!("{}\t{name}\n", b * 10 + m))
            })
            .collect()
    };
    let table = format!("{schema}.items");
    let spawn = |b: i32| {
        let (sink, units, table) = (sink.clone(), batch(b), table.clone());
        tokio::spawn(async move {
            let report = sink.commit(units, &host::sink::Lineage::default()).await;
            // What a fresh session sees the moment the answer came.
            let ids = format!("id BETWEEN {} AND {}", b * 10, b * 10 + 2);
            let visible = count(&format!("SELECT count(*) FROM {table} WHERE {ids}")).await;
            (report, visible)
        })
    };
    // Batches 1 and 2 take the sink's two committers, which wait for the
    // lock; batches 3 to 6 queue behind them, in that order.
    let mut handles = vec![spawn(1), spawn(2)];
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while waiting_for_ledger(&name).await < 2 {
        assert!(tokio::time::Instant::now() < deadline, "the two committers never reached the ledger lock");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // Each queued before the next is spawned, so the queue's order (and
    // which batch's copy of the redelivered message counts) is fixed
    // however slowly the machine schedules the tasks.
    for b in 3..=6 {
        handles.push(spawn(b));
        while sink.waiting_batches() < (b - 2) as usize {
            assert!(tokio::time::Instant::now() < deadline + Duration::from_secs(30), "batch {b} never queued");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(handles.iter().all(|h| !h.is_finished()), "no batch is answered before its commit");
    assert_eq!(count(&format!("SELECT count(*) FROM {table}")).await, 0);

    blocker.batch_execute("COMMIT").await.unwrap();
    let mut reports = Vec::new();
    for (b, h) in (1..=6).zip(handles) {
        let (report, visible) = tokio::time::timeout(Duration::from_secs(60), h).await.unwrap().unwrap();
        let report = report.unwrap_or_else(|e| panic!("batch {b}: {e}"));
        assert_eq!(visible as usize, report.rows, "batch {b}: answered before its rows were visible: {report:?}");
        reports.push(report);
    }
    // Each batch's own report: batch 4's redelivered message adds nothing,
    // batch 5's refused row is its dead letter.
    let rows: Vec<usize> = reports.iter().map(|r| r.rows).collect();
    assert_eq!(rows, [3, 3, 3, 2, 2, 3], "{reports:?}");
    let duplicates: Vec<usize> = reports.iter().map(|r| r.duplicates).collect();
    assert_eq!(duplicates, [0, 0, 0, 1, 0, 0], "{reports:?}");
    let dead: Vec<usize> = reports.iter().map(|r| r.dead_letters).collect();
    assert_eq!(dead, [0, 0, 0, 0, 1, 0], "{reports:?}");
    assert_eq!(count(&format!("SELECT count(*) FROM {table}")).await, 16);
    // Batches 3 to 6 went as one group: its first try met the refused row
    // and was halved; the half of batches 3 and 4 committed as one
    // transaction of 5 messages (m-3-0 once).
    let db = pg().await;
    let sql = "SELECT count(*), max(messages) FROM etl.batches WHERE pipeline = $1";
    let row = db.query_one(sql, &[&name]).await.unwrap();
    let (committed, largest): (i64, i32) = (row.get(0), row.get(1));
    assert_eq!(largest, 5, "the group's first half holds batches 3 and 4");
    let commits: usize = reports.iter().map(|r| r.commits).sum();
    assert_eq!(commits as i64, committed, "each transaction is counted once, in its first batch: {reports:?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_run_deletes_no_message_before_the_transaction_holding_its_rows_commits() {
    // Through `host run`: while the database holds every commit still,
    // the workers go on preparing batches, and none of the messages is
    // deleted; once it lets go, the waiting batches commit in fewer
    // transactions than batches, and only then leave the queue.
    let (name, schema) = (unique("groupq"), unique("s"));
    items_table(&schema).await;
    let sqs = services::sqs().await;
    let url = queue(&sqs, &name).await;
    let p = common::pipeline(&format!(
        "name = \"{name}\"\n[source.sqs]\nqueue = \"{name}\"\nreceivers = 1\nwait_time_s = 1\n\
         [batch]\nmax_records = 5\nmax_wait_ms = 200\nworkers = 2\n\
         [sink]\ntable = \"items\"\nschema = \"{schema}\"\nmode = \"append\"\n\
         [sink.columns]\nid = \"id\"\nname = \"name\"\n"
    ));
    let bodies: Vec<String> = (0..30).map(|i| format!(r#"{{"id":{i},"name":"n{i}"}}"#)).collect();
    send(&sqs, &url, &bodies).await;
    let blocker = hold_ledger(&name).await;
    let run = tokio::spawn(run_once(p));
    // Every message received and held (in flight), none deleted.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    while services::in_flight(&sqs, &url).await < 30 {
        assert!(tokio::time::Instant::now() < deadline, "the run never held all 30 messages");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(services::queue_depth(&sqs, &url).await, 30, "a message left the queue before its commit");
    assert_eq!(services::in_flight(&sqs, &url).await, 30);
    assert_eq!(count(&format!("SELECT count(*) FROM {schema}.items")).await, 0);
    assert!(!run.is_finished());

    blocker.batch_execute("COMMIT").await.unwrap();
    let summary = tokio::time::timeout(Duration::from_secs(120), run).await.expect("the run ends").unwrap();
    assert_eq!((summary.messages, summary.rows, summary.failed_batches), (30, 30, 0), "{summary}");
    assert_eq!(services::queue_depth(&sqs, &url).await, 0, "every message deleted after its commit");
    assert_eq!(count(&format!("SELECT count(*) FROM {schema}.items")).await, 30);
    let committed = transactions(&name).await;
    assert!(committed < 6, "6 batches of 5 waited together, yet {committed} transactions");
    assert_eq!(summary.batches as i64, committed, "the summary counts transactions: {summary}");
}
