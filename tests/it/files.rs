//! S3 sources against moto and the local PostgreSQL: CSV files announced by
//! real S3 notifications (the transactions pipeline), and the reconciling
//! source (the customers pipeline).

use crate::common;
use crate::services::{self, migrated, pg, put, queue, queue_depth, s3_at, unique};
use host::config::Pipeline;
use host::run::{RunOptions, Summary};
use std::path::Path;
use std::time::Duration;

/// A shipped pipeline with its names pointed at this test's queue, bucket,
/// schema and pipeline name.
fn shipped(file: &str, table: &str, schema: &str, name: &str, vars: &[(&str, &str)]) -> Pipeline {
    let text = std::fs::read_to_string(common::workspace().join("pipelines").join(file)).unwrap();
    let stem = file.trim_end_matches(".toml");
    let text = text
        .replace(&format!("name = \"{stem}\""), &format!("name = \"{name}\""))
        .replace(&format!("table = \"{table}\""), &format!("table = \"{table}\"\nschema = \"{schema}\""));
    let path = Path::new("pipelines").join(file);
    let vars: Vec<(String, String)> = vars.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
    let parsed =
        host::config::parse_str(&path, &text, |v| vars.iter().find(|(k, _)| k == v).map(|(_, x)| x.clone())).unwrap();
    host::config::validate(&path, parsed).unwrap()
}

async fn run_once(p: Pipeline) -> Summary {
    let opts = RunOptions { once: true, idle: Duration::from_millis(1500), ..Default::default() };
    let aws = services::aws_at(services::endpoint()).await;
    host::run::run(p, common::engine(), &services::database_url(), &aws, opts, std::future::pending())
        .await
        .expect("run completes")
}

async fn rows(sql: &str) -> Vec<Vec<Option<String>>> {
    let rows = pg().await.query(sql, &[]).await.unwrap();
    rows.iter().map(|r| (0..r.len()).map(|i| r.get::<_, Option<String>>(i)).collect()).collect()
}

pub(crate) fn bucket_name(prefix: &str) -> String {
    unique(prefix).replace('_', "-")
}

/// A schema of its own holding a `customers` table like the shipped one
/// (the migrations applied first).
pub(crate) async fn schema_with_customers(schema: &str) {
    migrated().await;
    pg().await
        .batch_execute(&format!(
            "CREATE SCHEMA {schema}; CREATE TABLE {schema}.customers (LIKE public.customers INCLUDING ALL)"
        ))
        .await
        .unwrap();
}

/// Object-created notification bodies waiting on the queue, left there.
async fn peek_notifications(sqs: &aws_sdk_sqs::Client, url: &str) -> Vec<String> {
    let mut bodies = Vec::new();
    for _ in 0..5 {
        let out = sqs.receive_message().queue_url(url).max_number_of_messages(10).visibility_timeout(0).send().await;
        for m in out.unwrap().messages() {
            let body = m.body().unwrap_or_default().to_string();
            if body.contains("ObjectCreated") && !bodies.contains(&body) {
                bodies.push(body);
            }
        }
        if !bodies.is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    bodies
}

#[tokio::test(flavor = "multi_thread")]
async fn transaction_files_load_on_notification_replace_by_id_and_a_redelivery_changes_nothing() {
    migrated().await;
    let (name, schema, q, bucket) = (unique("tx"), unique("s"), unique("txq"), bucket_name("tx"));
    let db = pg().await;
    db.batch_execute(&format!(
        "CREATE SCHEMA {schema}; CREATE TABLE {schema}.transactions (LIKE public.transactions INCLUDING ALL)"
    ))
    .await
    .unwrap();
    let endpoint = services::endpoint();
    let (sqs, s3) = (services::sqs().await, s3_at(endpoint).await);
    let url = queue(&sqs, &q).await;
    services::bucket_notifying(&s3, &bucket, &q).await;
    let first = std::fs::read(common::workspace().join("tests/data/s3/transactions.csv")).unwrap();
    put(&s3, &bucket, "in/2023-01.csv", first.clone()).await;
    let first_event = peek_notifications(&sqs, &url).await;
    assert_eq!(first_event.len(), 1, "moto sends one event for the upload");
    let pipeline = || {
        shipped(
            "transactions.toml",
            "transactions",
            &schema,
            &name,
            &[("TRANSACTION_QUEUE", q.as_str()), ("TRANSACTION_BUCKET", bucket.as_str())],
        )
    };

    let summary = run_once(pipeline()).await;
    assert_eq!((summary.objects, summary.rows, summary.dead_letters), (1, 3, 0), "{summary}");
    let table = format!(
        "SELECT id::text, property_address, buyer, transaction_amount::text, loan_amount::text, lender \
         FROM {schema}.transactions ORDER BY id"
    );
    let s = |v: &str| Some(v.to_string());
    assert_eq!(
        rows(&table).await,
        vec![
            vec![
                s("1"),
                s("12 Main St, Springfield, IL"),
                s("Alice Moore"),
                s("250000.0"),
                s("200000.0"),
                s("First Bank")
            ],
            vec![s("2"), s("7 \"Old\" Mill Rd, Apt 3"), s("Carla Diaz"), s("180500.5"), None, None],
            vec![s("3"), s("400 Lake Ave"), s("Eve Park"), s("520000.0"), s("416000.0"), s("Credit Union, North")],
        ],
        "quoted fields with commas and quotes survive; empty fields are NULL"
    );
    assert_eq!(queue_depth(&sqs, &url).await, 0, "the notification is deleted after the commit");

    // A changed file: id 2 changes, id 4 is new; ids 1 and 3 stay as they are.
    let changed = String::from_utf8(first).unwrap().replace("180500.5", "181000.0")
        + "4,\"1 Hill Rd, Unit 9\",Gus Hale,Hana Ito,2023-03-01,104,condo,99000.0,,,640,2015\n";
    put(&s3, &bucket, "in/2023-01.csv", changed).await;
    let second_event = peek_notifications(&sqs, &url).await;
    let summary = run_once(pipeline()).await;
    assert_eq!((summary.objects, summary.rows), (1, 4), "{summary}");
    let amounts = format!("SELECT id::text, transaction_amount::text FROM {schema}.transactions ORDER BY id");
    let expected = vec![
        vec![s("1"), s("250000.0")],
        vec![s("2"), s("181000.0")],
        vec![s("3"), s("520000.0")],
        vec![s("4"), s("99000.0")],
    ];
    assert_eq!(rows(&amounts).await, expected);

    // Both notifications again (a redelivery, and a stale one for the old
    // content), and a plain s3:// body: nothing changes.
    let mut again = first_event.clone();
    again.extend(second_event);
    again.push(format!("s3://{bucket}/in/2023-01.csv"));
    services::send(&sqs, &url, &again).await;
    let summary = run_once(pipeline()).await;
    assert_eq!((summary.messages, summary.objects, summary.rows, summary.dead_letters), (3, 0, 0, 0), "{summary}");
    assert_eq!(rows(&amounts).await, expected);
    assert_eq!(queue_depth(&sqs, &url).await, 0);
    let loads: i64 =
        db.query_one("SELECT count(*) FROM etl.batches WHERE pipeline = $1", &[&name]).await.unwrap().get(0);
    assert_eq!(loads, 2, "one commit per version of the file");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_notification_that_is_not_one_is_a_dead_letter_and_a_missing_object_is_skipped() {
    migrated().await;
    let (name, schema, q, bucket) = (unique("txbad"), unique("s"), unique("txbadq"), bucket_name("txbad"));
    pg().await
        .batch_execute(&format!(
            "CREATE SCHEMA {schema}; CREATE TABLE {schema}.transactions (LIKE public.transactions INCLUDING ALL)"
        ))
        .await
        .unwrap();
    let (sqs, s3) = (services::sqs().await, s3_at(services::endpoint()).await);
    let url = queue(&sqs, &q).await;
    s3.create_bucket().bucket(&bucket).send().await.unwrap();
    let bodies = vec![
        "{\"not\": \"an event\"}".to_string(),
        "this is not JSON".to_string(),
        format!("s3://{bucket}/never-uploaded.csv"),
        format!("s3://other-bucket-{bucket}/x.csv"),
    ];
    services::send(&sqs, &url, &bodies).await;
    let p = shipped(
        "transactions.toml",
        "transactions",
        &schema,
        &name,
        &[("TRANSACTION_QUEUE", q.as_str()), ("TRANSACTION_BUCKET", bucket.as_str())],
    );
    let summary = run_once(p).await;
    assert_eq!((summary.messages, summary.rows, summary.dead_letters), (4, 0, 2), "{summary}");
    assert_eq!(queue_depth(&sqs, &url).await, 0);
    let reasons =
        rows(&format!("SELECT stage, reason FROM etl.dead_letters WHERE pipeline = '{name}' ORDER BY reason")).await;
    assert_eq!(reasons.len(), 2);
    assert!(reasons.iter().all(|r| r[0].as_deref() == Some("source")), "{reasons:?}");
    assert!(reasons.iter().all(|r| r[1].as_deref().unwrap().starts_with("not an S3 notification: ")), "{reasons:?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn reconcile_loads_replaces_and_removes_files_and_keeps_bad_rows_as_dead_letters() {
    migrated().await;
    let (name, schema, bucket) = (unique("cust"), unique("s"), bucket_name("landing"));
    schema_with_customers(&schema).await;
    let s3 = s3_at(services::endpoint()).await;
    s3.create_bucket().bucket(&bucket).send().await.unwrap();
    let a = std::fs::read(common::workspace().join("tests/data/s3/customers_a.csv")).unwrap();
    put(&s3, &bucket, "customers/a.csv", a).await;
    put(&s3, &bucket, "customers/b.csv", "3,60601,Chicago,IL,2023-02-01 08:00:00,2023-02-01 08:00:00\n").await;
    put(&s3, &bucket, "customers/c.csv", "4,73301,Austin,TX,2023-02-02 08:00:00,2023-02-02 08:00:00\n").await;
    put(&s3, &bucket, "elsewhere/z.csv", "9,1,Nowhere,ZZ,2023-02-02 08:00:00,2023-02-02 08:00:00\n").await;
    let pipeline = || shipped("customers.toml", "customers", &schema, &name, &[("CUSTOMER_BUCKET", bucket.as_str())]);
    let table = format!("SELECT customer_id::text, city, source_file FROM {schema}.customers ORDER BY customer_id");
    let s = |v: &str| Some(v.to_string());
    let file = |k: &str| s(&format!("s3://{bucket}/customers/{k}"));

    let summary = run_once(pipeline()).await;
    assert_eq!((summary.objects, summary.rows, summary.objects_removed), (3, 4, 0), "{summary}");
    let loaded = vec![
        vec![s("1"), s("Fort Lauderdale"), file("a.csv")],
        vec![s("2"), s("New York"), file("a.csv")],
        vec![s("3"), s("Chicago"), file("b.csv")],
        vec![s("4"), s("Austin"), file("c.csv")],
    ];
    assert_eq!(rows(&table).await, loaded, "the last line without a newline loads too");

    let summary = run_once(pipeline()).await;
    assert_eq!((summary.objects, summary.rows, summary.objects_removed), (0, 0, 0), "nothing changed: {summary}");
    assert_eq!(rows(&table).await, loaded);

    // A new version of b (two rows instead of one), c deleted, and a new
    // file whose second line is malformed.
    put(
        &s3,
        &bucket,
        "customers/b.csv",
        "3,60601,Evanston,IL,2023-02-01 08:00:00,2023-03-01 08:00:00\n5,60602,Chicago,IL,2023-03-01 08:00:00,2023-03-01 08:00:00\n",
    )
    .await;
    s3.delete_object().bucket(&bucket).key("customers/c.csv").send().await.unwrap();
    put(
        &s3,
        &bucket,
        "customers/d.csv",
        "6,02101,Boston,MA,2023-04-01 08:00:00,2023-04-01 08:00:00\n7,02102,Boston\n8,02103,Boston,MA,2023-04-01 08:00:00,2023-04-01 08:00:00\n",
    )
    .await;
    let summary = run_once(pipeline()).await;
    assert_eq!(
        (summary.objects, summary.rows, summary.dead_letters, summary.objects_removed),
        (2, 4, 1, 1),
        "{summary}"
    );
    assert_eq!(
        rows(&table).await,
        vec![
            vec![s("1"), s("Fort Lauderdale"), file("a.csv")],
            vec![s("2"), s("New York"), file("a.csv")],
            vec![s("3"), s("Evanston"), file("b.csv")],
            vec![s("5"), s("Chicago"), file("b.csv")],
            vec![s("6"), s("Boston"), file("d.csv")],
            vec![s("8"), s("Boston"), file("d.csv")],
        ]
    );
    let dead = rows(&format!(
        "SELECT split_part(source, '#', 1), message_id, reason, \
         (split_part(source, '#', 2) = (SELECT version FROM etl.files WHERE pipeline = '{name}' AND key = 'customers/d.csv'))::text \
         FROM etl.dead_letters WHERE pipeline = '{name}'"
    ))
    .await;
    assert_eq!(
        dead,
        vec![vec![file("d.csv"), s("line 2"), s("line 2: expected 6 fields, found 3"), s("true")]],
        "the dead letter names the file, its version and the line"
    );
}

/// The issue's bound: a 1,000,000-row JSON-lines object (about 170 MB)
/// loads with the host's peak RSS under 200 MB. `FILES_ROWS` scales it.
#[tokio::test(flavor = "multi_thread")]
async fn a_million_row_object_loads_with_bounded_memory() {
    let n = services::env_usize("FILES_ROWS", 1_000_000);
    let object = crate::objects::big_object(n).await;
    let run = tokio::task::spawn_blocking(move || (crate::objects::backfill(&object), object)).await.unwrap();
    let (run, object) = run;
    assert!(run.success, "{}\n{}", run.stdout, run.stderr);
    let loaded: i64 = pg()
        .await
        .query_one(&format!("SELECT count(DISTINCT user_id) FROM {}.user_logins", object.schema), &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(loaded as usize, n, "{}", run.stdout);
    println!(
        "{n} rows, {:.0} MB object: host peak RSS {:.0} MB, {:.1} s, {:.1} s of CPU",
        object.bytes as f64 / 1e6,
        run.peak_rss_kib as f64 / 1024.0,
        run.elapsed.as_secs_f64(),
        run.cpu_s
    );
    assert!(run.peak_rss_kib < 200 * 1024, "peak RSS {} KiB: {}", run.peak_rss_kib, run.stderr);
    assert!(run.stdout.contains(&format!("rows {n}, dead letters 0")), "{}", run.stdout);
}

/// SIGKILL in the middle of an object, then a second run: it resumes after
/// the last committed chunk and every row is there exactly once (the table
/// is `append`: a row loaded twice would show).
#[tokio::test(flavor = "multi_thread")]
async fn bad_json_lines_are_dead_letters_with_their_bytes_and_the_rest_loads() {
    // The reader splits JSON lines without parsing them; the loader's
    // decoder is what finds each bad one. Every bad line is a dead letter
    // keeping its bytes as the file held them, with a reason naming its
    // line and never its content; the good lines around them load.
    let object = crate::objects::big_object(1).await;
    let text = std::fs::read_to_string(&object.pipeline).unwrap();
    let bucket = text.split("bucket = \"").nth(1).and_then(|t| t.split('"').next()).unwrap().to_string();
    let good = |i: u32| {
        format!(
            "{{\"user_id\": \"bad-{i}\", \"app_version\": \"2.3.0\", \"device_type\": \"ios\", \
             \"ip\": \"1.2.3.4\", \"locale\": \"RU\", \"device_id\": \"d\"}}"
        )
    };
    let bad: [&[u8]; 4] = [b"{\"user_id\": \"secret", b"{\"user_id\": \"\xff\"}", b"[1, 2]", b"{\"a\": 1, \"a\": 2}"];
    let mut body = format!("{}\n", good(1)).into_bytes();
    for line in bad {
        body.extend_from_slice(line);
        body.push(b'\n');
    }
    body.extend_from_slice(format!("{}\n", good(2)).as_bytes());
    put(&s3_at(&object.endpoint).await, &bucket, "logins/bad.jsonl", body).await;
    let (run, object) = tokio::task::spawn_blocking(move || (crate::objects::backfill(&object), object)).await.unwrap();
    assert!(run.success, "{}\n{}", run.stdout, run.stderr);
    let loaded =
        count_rows(&format!("SELECT count(*) FROM {}.user_logins WHERE user_id LIKE 'bad-%'", object.schema)).await;
    assert_eq!(loaded, 2, "both good lines load");
    let letters = pg()
        .await
        .query(
            "SELECT d.reason, p.payload FROM etl.dead_letters d JOIN etl.dead_letter_payloads p \
             ON p.dead_letter_id = d.id WHERE d.pipeline = $1 AND d.stage = 'input' ORDER BY d.reason",
            &[&object.name],
        )
        .await
        .unwrap();
    let got: Vec<(String, Vec<u8>)> = letters.iter().map(|r| (r.get(0), r.get(1))).collect();
    assert_eq!(got.len(), 4, "{got:?}");
    let starts =
        ["line 2: invalid JSON", "line 3: invalid JSON", "line 4: expected a JSON object", "line 5: duplicate key `a`"];
    for ((reason, payload), (start, line)) in got.iter().zip(starts.iter().zip(bad)) {
        assert!(reason.starts_with(start), "{reason}");
        assert!(!reason.contains("secret"), "no content in a reason: {reason}");
        assert_eq!(payload.as_slice(), line, "the line as the file held it");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_killed_load_resumes_after_its_last_committed_chunk() {
    let n = 200_000;
    let object = crate::objects::big_object_with(n, "rows_per_commit = 5000").await;
    let db = pg().await;
    let name = object.name.clone();
    let progress = || async {
        let row = db.query_opt("SELECT rows_done, done FROM etl.files WHERE pipeline = $1", &[&name]).await.unwrap();
        row.map_or((0, false), |r| (r.get::<_, i64>(0), r.get::<_, bool>(1)))
    };
    // The killed load's lease on the object lasts 3 s: the next backfill
    // waits that long for it.
    let mut child = crate::objects::backfill_command(&object).env("HOST_LEASE_S", "3").spawn().unwrap();
    let start = std::time::Instant::now();
    while progress().await.0 < 20_000 {
        assert!(start.elapsed() < Duration::from_secs(60), "no progress");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    child.kill().unwrap();
    child.wait().unwrap();
    let (at_kill, done) = progress().await;
    assert!(!done && (at_kill as usize) < n, "killed before the end (at row {at_kill})");
    let count = |sql: String| {
        let db = &db;
        async move { db.query_one(&sql, &[]).await.unwrap().get::<_, i64>(0) }
    };
    let table = format!("{}.user_logins", object.schema);
    assert_eq!(count(format!("SELECT count(*) FROM {table}")).await, at_kill, "rows = committed chunks");

    let again = tokio::task::spawn_blocking(move || crate::objects::backfill(&object)).await.unwrap();
    assert!(again.success, "{}\n{}", again.stdout, again.stderr);
    assert!(again.stdout.contains(&format!("rows {}, dead letters 0", n as i64 - at_kill)), "{}", again.stdout);
    assert_eq!(progress().await, (n as i64, true));
    assert_eq!(count(format!("SELECT count(*) FROM {table}")).await, n as i64);
    assert_eq!(count(format!("SELECT count(DISTINCT user_id) FROM {table}")).await, n as i64);
}

/// Two reconcile passes at once (two hosts): each file is loaded by one.
#[tokio::test(flavor = "multi_thread")]
async fn two_reconcilers_at_once_load_each_file_once() {
    migrated().await;
    let (name, schema, bucket) = (unique("cust2"), unique("s"), bucket_name("landing2"));
    schema_with_customers(&schema).await;
    let s3 = s3_at(services::endpoint()).await;
    s3.create_bucket().bucket(&bucket).send().await.unwrap();
    for f in 0..8 {
        let body: String = (0..500)
            .map(|i| format!("{},10001,City {f},NY,2023-01-01 00:00:00,2023-01-01 00:00:00\n", f * 1000 + i))
            .collect();
        put(&s3, &bucket, &format!("customers/{f}.csv"), body).await;
    }
    let pipeline = || shipped("customers.toml", "customers", &schema, &name, &[("CUSTOMER_BUCKET", bucket.as_str())]);
    let (a, b) = tokio::join!(run_once(pipeline()), run_once(pipeline()));
    assert_eq!((a.objects + b.objects, a.rows + b.rows), (8, 4000), "{a}\n{b}");
    let db = pg().await;
    let n: i64 = db.query_one(&format!("SELECT count(*) FROM {schema}.customers"), &[]).await.unwrap().get(0);
    let distinct: i64 =
        db.query_one(&format!("SELECT count(DISTINCT customer_id) FROM {schema}.customers"), &[]).await.unwrap().get(0);
    assert_eq!((n, distinct), (4000, 4000));
    let commits: i64 =
        db.query_one("SELECT count(*) FROM etl.batches WHERE pipeline = $1", &[&name]).await.unwrap().get(0);
    assert_eq!(commits, 8, "one commit per file, by one of the two");
}

/// Without `--once`, a reconcile pass runs every `interval_s`: files
/// uploaded while the host runs are loaded by the next pass.
#[tokio::test(flavor = "multi_thread")]
async fn reconcile_passes_run_on_their_interval_until_stopped() {
    migrated().await;
    let (name, schema, bucket) = (unique("cust3"), unique("s"), bucket_name("landing3"));
    schema_with_customers(&schema).await;
    let s3 = s3_at(services::endpoint()).await;
    s3.create_bucket().bucket(&bucket).send().await.unwrap();
    let pipeline = shipped("customers.toml", "customers", &schema, &name, &[("CUSTOMER_BUCKET", bucket.as_str())]);
    let every_second = {
        let mut p = pipeline;
        if let Some(host::config::Source::S3(s3)) = &mut p.source {
            s3.mode = host::config::S3Mode::Reconcile { interval: Duration::from_secs(1), range_objects: 10_000 };
        }
        p
    };
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let aws = services::aws_at(services::endpoint()).await;
    let host = tokio::spawn(async move {
        let opts = RunOptions { once: false, idle: Duration::from_secs(1), ..Default::default() };
        host::run::run(every_second, common::engine(), &services::database_url(), &aws, opts, async {
            let _ = stop_rx.await;
        })
        .await
    });
    let count = || async {
        pg().await.query_one(&format!("SELECT count(*) FROM {schema}.customers"), &[]).await.unwrap().get::<_, i64>(0)
    };
    let wait_for = |n: i64| async move {
        let start = std::time::Instant::now();
        while count().await != n {
            assert!(start.elapsed() < Duration::from_secs(30), "timed out waiting for {n} rows");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    };
    put(&s3, &bucket, "customers/a.csv", "1,10001,New York,NY,2023-01-01 00:00:00,2023-01-01 00:00:00\n").await;
    wait_for(1).await;
    put(&s3, &bucket, "customers/b.csv", "2,10002,New York,NY,2023-01-01 00:00:00,2023-01-01 00:00:00\n").await;
    wait_for(2).await;
    s3.delete_object().bucket(&bucket).key("customers/a.csv").send().await.unwrap();
    wait_for(1).await;
    stop_tx.send(()).unwrap();
    let summary = host.await.unwrap().expect("stops cleanly");
    assert_eq!((summary.objects, summary.objects_removed), (2, 1), "{summary}");
}

/// Deletes what the queue holds.
async fn drain(sqs: &aws_sdk_sqs::Client, url: &str) {
    loop {
        let out = sqs.receive_message().queue_url(url).max_number_of_messages(10).send().await.unwrap();
        if out.messages().is_empty() {
            return;
        }
        for m in out.messages() {
            sqs.delete_message().queue_url(url).receipt_handle(m.receipt_handle().unwrap()).send().await.unwrap();
        }
    }
}

/// `body` (an S3 event notification) naming object version `version`.
fn with_version(body: &str, version: &str) -> String {
    let mut event: serde_json::Value = serde_json::from_str(body).unwrap();
    event["Records"][0]["s3"]["object"]["versionId"] = version.into();
    event.to_string()
}

/// `body` (an S3 event notification) with its sequencer set to `sequencer`.
fn with_sequencer(body: &str, sequencer: &str) -> String {
    let mut event: serde_json::Value = serde_json::from_str(body).unwrap();
    event["Records"][0]["s3"]["object"]["sequencer"] = sequencer.into();
    event.to_string()
}

#[tokio::test(flavor = "multi_thread")]
async fn a_late_notification_of_an_older_version_never_replaces_the_newer_one() {
    migrated().await;
    let (name, schema, q, bucket) = (unique("seq"), unique("s"), unique("seqq"), bucket_name("seq"));
    let db = pg().await;
    db.batch_execute(&format!(
        "CREATE SCHEMA {schema}; CREATE TABLE {schema}.transactions (LIKE public.transactions INCLUDING ALL)"
    ))
    .await
    .unwrap();
    let endpoint = services::endpoint();
    let (sqs, s3) = (services::sqs().await, s3_at(endpoint).await);
    let url = queue(&sqs, &q).await;
    services::bucket_notifying(&s3, &bucket, &q).await;
    use aws_sdk_s3::types::{BucketVersioningStatus, VersioningConfiguration};
    let versioning = VersioningConfiguration::builder().status(BucketVersioningStatus::Enabled).build();
    s3.put_bucket_versioning().bucket(&bucket).versioning_configuration(versioning).send().await.unwrap();
    let older = std::fs::read_to_string(common::workspace().join("tests/data/s3/transactions.csv")).unwrap();
    let newer = older.replace("180500.5", "181000.0");
    let put_version = |body: String| {
        let s3 = s3.clone();
        let bucket = bucket.clone();
        async move {
            let body = aws_sdk_s3::primitives::ByteStream::from(body.into_bytes());
            let out = s3.put_object().bucket(&bucket).key("in/2023-01.csv").body(body).send().await.unwrap();
            out.version_id().expect("a versioned bucket names the version").to_string()
        }
    };
    let older_version = put_version(older).await;
    let older_event = peek_notifications(&sqs, &url).await.pop().unwrap();
    drain(&sqs, &url).await;
    let newer_version = put_version(newer).await;
    let newer_event = peek_notifications(&sqs, &url).await.pop().unwrap();
    drain(&sqs, &url).await;
    assert_ne!(older_version, newer_version);
    // What S3 sends (moto leaves the version id out of its events).
    let (older_event, newer_event) =
        (with_version(&older_event, &older_version), with_version(&newer_event, &newer_version));
    let pipeline = || {
        shipped(
            "transactions.toml",
            "transactions",
            &schema,
            &name,
            &[("TRANSACTION_QUEUE", q.as_str()), ("TRANSACTION_BUCKET", bucket.as_str())],
        )
    };
    let amount = format!("SELECT transaction_amount::text FROM {schema}.transactions WHERE id = 2");
    // The newer version's event first, then the older one's, late.
    services::send(&sqs, &url, &[with_sequencer(&newer_event, "0055AED6DCD90281E6")]).await;
    let summary = run_once(pipeline()).await;
    assert_eq!((summary.objects, summary.rows), (1, 3), "{summary}");
    assert_eq!(rows(&amount).await, vec![vec![Some("181000.0".to_string())]]);
    services::send(&sqs, &url, &[with_sequencer(&older_event, "0055AED6DCD90281E5")]).await;
    let summary = run_once(pipeline()).await;
    assert_eq!((summary.messages, summary.objects, summary.rows, summary.dead_letters), (1, 0, 0, 0), "{summary}");
    assert_eq!(rows(&amount).await, vec![vec![Some("181000.0".to_string())]], "the newer version's rows stay");
    assert_eq!(queue_depth(&sqs, &url).await, 0, "the late notification is settled");
}

/// A dead letter of pipeline `name` with `payload`, from `source`, made
/// the way the sink makes them.
async fn dead_letter(p: &Pipeline, name: &str, source: &str, payload: &str) {
    let sink = host::sink::PostgresSink::new(
        host::sink::pool(&services::database_url(), 1).unwrap(),
        name,
        source,
        p.sink.as_ref().unwrap(),
        None,
    );
    let unit = host::sink::Unit {
        message_id: unique("m"),
        payload: payload.as_bytes().to_vec(),
        dead: vec![host::sink::dead_letter::DeadLetter::source("received 6 times (max_receives = 5)".into(), 6)],
        ..Default::default()
    };
    assert_eq!(sink.commit(vec![unit], &host::sink::Lineage::default()).await.unwrap().dead_letters, 1);
}

async fn replay(p: Pipeline) -> (usize, usize, Vec<String>) {
    let aws = host::aws::Aws::new(services::aws_at(services::endpoint()).await);
    let mut results = Vec::new();
    let url = services::database_url();
    let r =
        host::source::dead_letters::replay(p, common::engine(), &url, &aws, &[], |_, r| results.push(r.to_string()))
            .await
            .unwrap();
    (r.loaded, r.failed, results)
}

#[tokio::test(flavor = "multi_thread")]
async fn a_dead_lettered_notification_replays_as_a_notification() {
    migrated().await;
    let (name, schema, q, bucket) = (unique("rn"), unique("s"), unique("rnq"), bucket_name("rn"));
    pg().await
        .batch_execute(&format!(
            "CREATE SCHEMA {schema}; CREATE TABLE {schema}.transactions (LIKE public.transactions INCLUDING ALL)"
        ))
        .await
        .unwrap();
    let s3 = s3_at(services::endpoint()).await;
    s3.create_bucket().bucket(&bucket).send().await.unwrap();
    let csv = std::fs::read(common::workspace().join("tests/data/s3/transactions.csv")).unwrap();
    put(&s3, &bucket, "in/2023-01.csv", csv).await;
    let vars = [("TRANSACTION_QUEUE", q.as_str()), ("TRANSACTION_BUCKET", bucket.as_str())];
    let pipeline = || shipped("transactions.toml", "transactions", &schema, &name, &vars);
    dead_letter(&pipeline(), &name, &format!("sqs:{q}"), &format!("s3://{bucket}/in/2023-01.csv")).await;
    let (loaded, failed, results) = replay(pipeline()).await;
    assert_eq!((loaded, failed), (1, 0), "{results:?}");
    assert_eq!(results, ["loaded 1 objects, 3 rows"]);
    let rows = count_rows(&format!("SELECT count(*) FROM {schema}.transactions")).await;
    assert_eq!(rows, 3, "the object it announced is loaded");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_replayed_row_of_a_file_keeps_its_source_file() {
    migrated().await;
    let (name, schema, bucket) = (unique("rf"), unique("s"), bucket_name("rf"));
    schema_with_customers(&schema).await;
    let p = || shipped("customers.toml", "customers", &schema, &name, &[("CUSTOMER_BUCKET", bucket.as_str())]);
    let file = format!("s3://{bucket}/customers/a.csv");
    let row = r#"{"customer_id": "7", "zipcode": "33301", "city": "Fort Lauderdale", "state_code": "FL", "datetime_created": "2023-01-01 10:00:00", "datetime_updated": "2023-01-02 10:00:00"}"#;
    dead_letter(&p(), &name, &format!("{file}#etag-1"), row).await;
    // The version loaded for the key (a row of another would be skipped).
    pg().await
        .execute(
            "INSERT INTO etl.files (pipeline, bucket, key, version, done) VALUES ($1, $2, 'customers/a.csv', 'etag-1', true)",
            &[&name, &bucket],
        )
        .await
        .unwrap();
    let (loaded, failed, results) = replay(p()).await;
    assert_eq!((loaded, failed), (1, 0), "{results:?}");
    let got = rows(&format!("SELECT customer_id::text, source_file FROM {schema}.customers")).await;
    assert_eq!(got, vec![vec![Some("7".to_string()), Some(file)]]);
}

async fn count_rows(sql: &str) -> i64 {
    pg().await.query_one(sql, &[]).await.unwrap().get(0)
}

#[tokio::test(flavor = "multi_thread")]
async fn reconcile_walks_a_bucket_of_many_pages_without_holding_it() {
    // 2,050 files: three listing pages and three pages of loaded files,
    // with removals, a change and a new file on different pages.
    migrated().await;
    let (name, schema, bucket) = (unique("pages"), unique("s"), bucket_name("pages"));
    schema_with_customers(&schema).await;
    let endpoint = services::private_endpoint();
    let s3 = s3_at(&endpoint).await;
    s3.create_bucket().bucket(&bucket).send().await.unwrap();
    let line = |i: usize, city: &str| format!("{i},33301,{city},FL,2023-01-01 10:00:00,2023-01-02 10:00:00\n");
    let key = |i: usize| format!("customers/f{i:05}.csv");
    let n = 2050;
    for i in 0..n {
        put(&s3, &bucket, &key(i), line(i, "Tampa")).await;
    }
    let p = || shipped("customers.toml", "customers", &schema, &name, &[("CUSTOMER_BUCKET", bucket.as_str())]);
    let aws = services::aws_at(&endpoint).await;
    let once = || async {
        let opts = RunOptions { once: true, idle: Duration::from_millis(1500), ..Default::default() };
        host::run::run(p(), common::engine(), &services::database_url(), &aws, opts, std::future::pending())
            .await
            .expect("run completes")
    };
    let s = once().await;
    assert_eq!((s.objects, s.rows, s.objects_removed), (n, n, 0), "{s}");
    for gone in [5, 1500, 2049] {
        s3.delete_object().bucket(&bucket).key(key(gone)).send().await.unwrap();
    }
    put(&s3, &bucket, &key(1000), line(1000, "Miami")).await;
    put(&s3, &bucket, "customers/f01234x.csv", line(99_999, "Orlando")).await;
    let s = once().await;
    assert_eq!((s.objects, s.rows, s.objects_removed), (2, 2, 3), "{s}");
    let cities = rows(&format!(
        "SELECT count(*)::text, count(DISTINCT customer_id)::text, \
         string_agg(CASE WHEN city <> 'Tampa' THEN customer_id || ':' || city END, ',' ORDER BY customer_id) \
         FROM {schema}.customers"
    ))
    .await;
    let want =
        vec![Some((n - 3 + 1).to_string()), Some((n - 3 + 1).to_string()), Some("1000:Miami,99999:Orlando".into())];
    assert_eq!(cities, vec![want]);
    let s = once().await;
    assert_eq!((s.objects, s.rows, s.objects_removed), (0, 0, 0), "a third pass finds nothing to do: {s}");
}
