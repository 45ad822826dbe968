//! Scale-out (issue 28): three `host` processes on one queue and one
//! bucket, as replicas of one Deployment would run. One is SIGKILLed
//! mid-way, one SIGTERMed (a scale-in: it drains), one added later; every
//! message and every object's row still loads exactly once.

use crate::faults::{Host, good_bodies, pipeline_file};
use crate::run::{count, schema_with_user_logins};
use crate::services::{self, queue, queue_depth, send, unique};
use std::path::PathBuf;
use std::time::{Duration, Instant};

/// Objects in the bucket, and rows in each (unique user ids throughout).
const OBJECTS: usize = 8;
const ROWS: usize = 4_000;

/// The logins pipeline reading every object under `logins/` of `bucket`
/// (a reconcile pass each second), into `schema`, committing every 500
/// rows: an object is loaded in several transactions, so a replica
/// killed mid-object leaves it part-loaded.
pub(crate) fn bucket_pipeline(name: &str, schema: &str, bucket: &str) -> PathBuf {
    let source = format!(
        "mode = \"reconcile\"\ninterval_s = 1\nbucket = \"{bucket}\"\nprefix = \"logins/\"\n\
         format = \"json-lines\"\nrows_per_commit = 500"
    );
    let text = crate::objects::logins_from_s3(name, schema, &source).replace(
        "create_date = { generated = \"load-date\" }",
        "create_date = { generated = \"load-date\" }\nsource_file = { generated = \"source-file\" }",
    );
    assert!(text.contains("source-file"), "the logins pipeline maps its columns where this expects it");
    let file = std::env::temp_dir().join(format!("{name}.toml"));
    std::fs::write(&file, text).unwrap();
    file
}

/// Polls `sql` (a count) until `done` holds for it, up to `limit`.
async fn until(sql: &str, limit: Duration, done: impl Fn(i64) -> bool, hosts: &[&Host]) -> i64 {
    let start = Instant::now();
    loop {
        let n = count(sql).await;
        if done(n) {
            return n;
        }
        let logs: Vec<String> = hosts.iter().map(|h| h.log()).collect();
        assert!(start.elapsed() < limit, "{sql}: {n} after {limit:?}\n{}", logs.join("\n-----\n"));
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn three_replicas_one_killed_one_drained_one_added_load_every_message_and_row_once() {
    let (queued, listed) = (unique("replq"), unique("replb"));
    let (queue_schema, bucket_schema) = (unique("s"), unique("s"));
    schema_with_user_logins(&queue_schema).await;
    schema_with_user_logins(&bucket_schema).await;
    // Reconcile finds a file's rows by the file they came from.
    crate::services::pg()
        .await
        .batch_execute(&format!("ALTER TABLE {bucket_schema}.user_logins ADD COLUMN source_file text"))
        .await
        .unwrap();
    let endpoint = services::private_endpoint();
    let sqs = services::sqs_at(&endpoint).await;
    let url = queue(&sqs, &queued).await;
    let s3 = services::s3_at(&endpoint).await;
    let bucket = listed.replace('_', "-");
    s3.create_bucket().bucket(&bucket).send().await.unwrap();
    let lines = crate::objects::logins_lines(OBJECTS * ROWS);
    let mut start = 0;
    for i in 0..OBJECTS {
        // Whole lines: the cut after the ROWS-th newline from `start`.
        let end = (start..lines.len()).filter(|&b| lines[b] == b'\n').nth(ROWS - 1).unwrap() + 1;
        services::put(&s3, &bucket, &format!("logins/part-{i}.jsonl"), lines[start..end].to_vec()).await;
        start = end;
    }
    let messages = 300;
    send(&sqs, &url, &good_bodies(messages)).await;
    // A short visibility: what the killed replica held comes back soon.
    let from_queue = pipeline_file(&queued, &queue_schema, "visibility_timeout_s = 10\nwait_time_s = 1");
    let from_bucket = bucket_pipeline(&listed, &bucket_schema, &bucket);
    let database = services::database_url();
    let replica = |name: &str| {
        // A killed replica's object leases expire after 3 s.
        let envs = [("HOST_DRAIN_S", "6"), ("HOST_NAME", name), ("HOST_LEASE_S", "3")];
        Host::run_all(&[&from_queue, &from_bucket], &[], &envs, &database, &endpoint)
    };
    let queue_rows = format!("SELECT count(*) FROM {queue_schema}.user_logins");
    let bucket_rows = format!("SELECT count(*) FROM {bucket_schema}.user_logins");
    let limit = Duration::from_secs(240);

    let mut a = replica("replica-a");
    let mut b = replica("replica-b");
    // Both at work on both sources, then A dies without a word.
    until(&queue_rows, limit, |n| n >= 60, &[&a, &b]).await;
    until(&bucket_rows, limit, |n| n >= 2_000, &[&a, &b]).await;
    a.signal("KILL");
    a.wait(Duration::from_secs(10)).await.expect("SIGKILL ends it");
    let c = replica("replica-c");
    // B is scaled in: it drains and exits within HOST_DRAIN_S.
    let seen = count(&queue_rows).await;
    until(&queue_rows, limit, |n| n >= seen + 40, &[&b, &c]).await;
    let stopping = Instant::now();
    b.term();
    let (status, out) = b.wait(Duration::from_secs(30)).await.expect("SIGTERM ends it");
    let took = stopping.elapsed();
    assert!(status.success(), "{status}: {out}\n{}", b.log());
    assert!(took < Duration::from_secs(8), "the drain took {took:?}:\n{}", b.log());
    // C alone finishes both: the killed replica's messages come back after
    // their visibility timeout, its part-loaded objects resume where their
    // last commit left them.
    let mut c = c;
    until(&queue_rows, limit, |n| n >= messages as i64, &[&c]).await;
    until(&bucket_rows, limit, |n| n >= (OBJECTS * ROWS) as i64, &[&c]).await;
    // Until the queue is empty: a message A committed but had not deleted
    // comes back after its timeout, and C deletes it (adding nothing).
    let start = Instant::now();
    while queue_depth(&sqs, &url).await > 0 {
        assert!(start.elapsed() < limit, "the queue never emptied:\n{}", c.log());
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    // A little longer: nothing more may arrive (a message or a chunk
    // loaded twice would).
    tokio::time::sleep(Duration::from_secs(3)).await;
    c.term();
    let (status, out) = c.wait(Duration::from_secs(30)).await.expect("C stops");
    assert!(status.success(), "{status}: {out}\n{}", c.log());

    assert_eq!(count(&queue_rows).await, messages as i64, "every message once");
    assert_eq!(queue_depth(&sqs, &url).await, 0, "the queue is empty");
    let distinct = count(&format!("SELECT count(DISTINCT user_id) FROM {bucket_schema}.user_logins")).await;
    assert_eq!(
        (count(&bucket_rows).await, distinct),
        ((OBJECTS * ROWS) as i64, (OBJECTS * ROWS) as i64),
        "every row once"
    );
    let done = count(&format!("SELECT count(*) FROM etl.files WHERE pipeline = '{listed}' AND done")).await;
    assert_eq!(done, OBJECTS as i64, "every object recorded as loaded");
    for pipeline in [&queued, &listed] {
        let dead = count(&format!("SELECT count(*) FROM etl.dead_letters WHERE pipeline = '{pipeline}'")).await;
        assert_eq!(dead, 0, "{pipeline}: no dead letters");
    }
}
