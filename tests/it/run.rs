//! `host run` against moto and the local PostgreSQL: the Fetch acceptance
//! run, redelivery, two hosts on one queue, merge modes, data errors,
//! malformed messages, dead letters and their replay.

use crate::common;
use crate::services::{self, migrated, pg, queue, queue_depth, send, unique};
use host::config::Pipeline;
use host::run::{RunOptions, Summary};
use std::path::Path;
use std::time::Duration;

/// The shipped logins pipeline, on its own queue, schema and name.
pub(crate) fn logins(queue: &str, schema: &str, name: &str) -> Pipeline {
    let text = std::fs::read_to_string(common::workspace().join("pipelines/logins.toml")).unwrap();
    let text = text
        .replace("name = \"logins\"", &format!("name = \"{name}\""))
        .replace("table = \"user_logins\"", &format!("table = \"user_logins\"\nschema = \"{schema}\""));
    let path = Path::new("pipelines/logins.toml");
    let parsed = host::config::parse_str(path, &text, |v| (v == "LOGIN_QUEUE").then(|| queue.to_string())).unwrap();
    host::config::validate(path, parsed).unwrap()
}

/// A schema with a copy of `user_logins`.
pub(crate) async fn schema_with_user_logins(name: &str) {
    migrated().await;
    let db = pg().await;
    db.batch_execute(&format!("CREATE SCHEMA {name}; CREATE TABLE {name}.user_logins (LIKE public.user_logins)"))
        .await
        .unwrap();
}

async fn aws() -> aws_config::SdkConfig {
    aws_config::defaults(aws_config::BehaviorVersion::latest())
        .endpoint_url(services::endpoint())
        .region(aws_config::Region::new("us-east-1"))
        .credentials_provider(aws_sdk_sqs::config::Credentials::new("test", "test", None, None, "tests"))
        .load()
        .await
}

/// The pipeline's sink on its own, under the pipeline name `name`.
pub(crate) fn sink_for(name: &str, p: &Pipeline) -> host::sink::PostgresSink {
    host::sink::PostgresSink::new(
        host::sink::pool(&services::database_url(), 2).unwrap(),
        name,
        "test",
        p.sink.as_ref().unwrap(),
        None,
    )
}

pub(crate) async fn run_once(p: Pipeline) -> Summary {
    let opts = RunOptions { once: true, idle: Duration::from_millis(1500), ..Default::default() };
    host::run::run(p, common::engine(), &services::database_url(), &aws().await, opts, std::future::pending())
        .await
        .expect("run completes")
}

pub(crate) async fn count(sql: &str) -> i64 {
    pg().await.query_one(sql, &[]).await.unwrap().get(0)
}

pub(crate) fn fetch_bodies() -> Vec<String> {
    std::fs::read_to_string(common::workspace().join("tests/data/fetch_login_queue_bodies.jsonl"))
        .unwrap()
        .lines()
        .map(str::to_string)
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn the_fetch_queue_loads_99_rows_and_one_dead_letter() {
    let (name, schema) = (unique("logins"), unique("s"));
    schema_with_user_logins(&schema).await;
    let sqs = services::sqs().await;
    let url = queue(&sqs, &name).await;
    send(&sqs, &url, &fetch_bodies()).await;

    let summary = run_once(logins(&name, &schema, &name)).await;
    assert_eq!((summary.messages, summary.rows, summary.dead_letters), (100, 99, 1), "{summary}");
    assert_eq!(count(&format!("SELECT count(*) FROM {schema}.user_logins")).await, 99);
    assert_eq!(count(&format!("SELECT count(*) FROM {schema}.user_logins WHERE locale IS NULL")).await, 29);
    assert_eq!(
        count(&format!(
            "SELECT count(*) FROM {schema}.user_logins WHERE create_date = current_date AND length(masked_ip) = 64"
        ))
        .await,
        99
    );
    let db = pg().await;
    let dl = db.query_one("SELECT stage, reason FROM etl.dead_letters WHERE pipeline = $1", &[&name]).await.unwrap();
    assert_eq!(dl.get::<_, String>(0), "input");
    assert_eq!(
        dl.get::<_, String>(1),
        "missing required fields: user_id, app_version, device_type, ip, locale, device_id"
    );
    assert_eq!(queue_depth(&sqs, &url).await, 0, "every message deleted");
    let lineage: i64 = db
        .query_one("SELECT sum(rows_written)::bigint FROM etl.batches WHERE pipeline = $1", &[&name])
        .await
        .unwrap()
        .get(0);
    assert_eq!(lineage, 99);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_message_committed_before_adds_nothing() {
    // What a redelivery meets: the same message ids, committed already.
    let (name, schema) = (unique("redeliver"), unique("s"));
    schema_with_user_logins(&schema).await;
    let p = logins("unused", &schema, &name);
    let sink = sink_for(&name, &p);
    let unit = |id: &str| host::sink::Unit {
        message_id: id.into(),
        rows: b"u\tios\tm\td\tRU\t2\t2026-01-01\n".to_vec(),
        row_count: 1,
        ..Default::default()
    };
    // m1 twice in one batch: SQS may deliver a message twice at once.
    let first = sink.commit(vec![unit("m1"), unit("m2"), unit("m1")], &host::sink::Lineage::default()).await.unwrap();
    let again = sink.commit(vec![unit("m1"), unit("m2"), unit("m3")], &host::sink::Lineage::default()).await.unwrap();
    assert_eq!((first.rows, first.duplicates), (2, 1));
    assert_eq!((again.rows, again.duplicates), (1, 2));
    assert_eq!(count(&format!("SELECT count(*) FROM {schema}.user_logins")).await, 3);
    // SQS ids are UUIDs and recorded as such; other forms of the same
    // characters are other ids. Mixed batches find both kinds.
    let id = "6f1c3c4e-2f7a-4b8e-9d2c-5a7b8c9d0e1f";
    let upper = id.to_uppercase();
    let third = sink.commit(vec![unit(id), unit("m4")], &host::sink::Lineage::default()).await.unwrap();
    let fourth = sink
        .commit(vec![unit("m4"), unit(id), unit(&upper), unit("m1")], &host::sink::Lineage::default())
        .await
        .unwrap();
    assert_eq!((third.rows, third.duplicates), (2, 0));
    assert_eq!((fourth.rows, fourth.duplicates), (1, 3));
    assert_eq!(count(&format!("SELECT count(*) FROM {schema}.user_logins")).await, 6);
    let recorded: Vec<(Vec<String>, Vec<String>)> = pg()
        .await
        .query(
            "SELECT message_ids, message_uuids::text[] FROM etl.receipts WHERE pipeline = $1 ORDER BY batch_id",
            &[&name],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect();
    assert_eq!(recorded[2], (vec!["m4".to_string()], vec![id.to_string()]));
}

#[tokio::test(flavor = "multi_thread")]
async fn two_hosts_on_one_queue_load_each_message_once() {
    let (name, schema) = (unique("two"), unique("s"));
    schema_with_user_logins(&schema).await;
    let sqs = services::sqs().await;
    let url = queue(&sqs, &name).await;
    let bodies: Vec<String> = fetch_bodies().into_iter().filter(|b| b.contains("user_id")).cycle().take(400).collect();
    send(&sqs, &url, &bodies).await;
    let (a, b) = tokio::join!(run_once(logins(&name, &schema, &name)), run_once(logins(&name, &schema, &name)));
    assert_eq!(a.rows + b.rows, 400, "{a} / {b}");
    assert_eq!(count(&format!("SELECT count(*) FROM {schema}.user_logins")).await, 400);
    assert_eq!(queue_depth(&sqs, &url).await, 0);
}

/// A pipeline over `{schema}.items (id int primary key, name varchar(8))`.
/// One receive loop: the tests send in order and SQS hands messages out in
/// order only to a single receiver (two loops may pass them on swapped).
pub(crate) fn items(queue: &str, schema: &str, name: &str, mode: &str) -> Pipeline {
    let key = if mode == "append" { String::new() } else { "key = [\"id\"]\n".into() };
    common::pipeline(&format!(
        "name = \"{name}\"\n[source.sqs]\nqueue = \"{queue}\"\nreceivers = 1\n[batch]\nmax_records = 100\nmax_wait_ms = 300\n\
         [sink]\ntable = \"items\"\nschema = \"{schema}\"\nmode = \"{mode}\"\n{key}\
         [sink.columns]\nid = \"id\"\nname = \"name\"\n"
    ))
}

pub(crate) async fn items_table(schema: &str) {
    migrated().await;
    pg().await
        .batch_execute(&format!(
            "CREATE SCHEMA {schema}; CREATE TABLE {schema}.items (id integer PRIMARY KEY, name varchar(8) NOT NULL)"
        ))
        .await
        .unwrap();
}

async fn names(schema: &str) -> Vec<(i32, String)> {
    pg().await
        .query(&format!("SELECT id, name FROM {schema}.items ORDER BY id"), &[])
        .await
        .unwrap()
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn upsert_and_delete_insert_keep_the_last_of_each_key() {
    for mode in ["upsert", "delete-insert"] {
        let (name, schema) = (unique("merge"), unique("s"));
        items_table(&schema).await;
        pg().await.execute(&format!("INSERT INTO {schema}.items VALUES (1, 'old'), (9, 'keep')"), &[]).await.unwrap();
        let sqs = services::sqs().await;
        let url = queue(&sqs, &name).await;
        let bodies = [r#"{"id":1,"name":"a"}"#, r#"{"id":2,"name":"b"}"#, r#"{"id":1,"name":"c"}"#];
        send(&sqs, &url, &bodies.map(String::from)).await;
        let s = run_once(items(&name, &schema, &name, mode)).await;
        assert_eq!(s.dead_letters, 0, "{mode}: {s}");
        assert_eq!(names(&schema).await, vec![(1, "c".into()), (2, "b".into()), (9, "keep".into())], "{mode}");
    }
}

/// Message `id` carrying `rows` (COPY text) of `items`.
pub(crate) fn item_rows(id: &str, rows: &str) -> host::sink::Unit {
    host::sink::Unit {
        message_id: id.into(),
        rows: rows.as_bytes().to_vec(),
        row_count: rows.lines().count(),
        ..Default::default()
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn upsert_goes_straight_in_with_new_keys_and_merges_when_one_is_there() {
    // New keys are COPYed into the target; a key already there (or twice in
    // one batch) sends the batch through staging and the merge; either way
    // the later message of a key wins.
    let (name, schema) = (unique("upsert"), unique("s"));
    items_table(&schema).await;
    let sink = sink_for(&name, &items("unused", &schema, &name, "upsert"));
    let commit = |units| async { sink.commit(units, &host::sink::Lineage::default()).await.unwrap() };
    commit(vec![item_rows("a", "1\tone\n2\ttwo\n")]).await;
    commit(vec![item_rows("b", "2\tdeux\n3\ttrois\n"), item_rows("c", "3\tdrei\n4\tvier\n")]).await;
    commit(vec![item_rows("d", "5\tcinq\n5\tfem\n")]).await;
    let r = commit(vec![item_rows("e", "6\tsix\n"), item_rows("f", "1\tuno\n")]).await;
    assert_eq!((r.rows, r.dead_letters, r.commits), (2, 0, 1));
    let want = [(1, "uno"), (2, "deux"), (3, "drei"), (4, "vier"), (5, "fem"), (6, "six")];
    assert_eq!(names(&schema).await, want.map(|(i, n)| (i, n.to_string())).to_vec());
    // After conflicts the sink merges for a while; new keys load the same.
    commit(vec![item_rows("g", "7\tsept\n")]).await;
    assert_eq!(names(&schema).await.len(), 7);
}

#[tokio::test(flavor = "multi_thread")]
async fn upsert_without_a_unique_index_on_its_key_is_refused_not_appended() {
    // The index goes while the host runs: new keys must not be COPYed in
    // under a key nothing keeps unique any more.
    let (name, schema) = (unique("upsert"), unique("s"));
    items_table(&schema).await;
    let sink = sink_for(&name, &items("unused", &schema, &name, "upsert"));
    sink.commit(vec![item_rows("a", "1\tone\n")], &host::sink::Lineage::default()).await.unwrap();
    pg().await.batch_execute(&format!("ALTER TABLE {schema}.items DROP CONSTRAINT items_pkey")).await.unwrap();
    let e = sink.commit(vec![item_rows("b", "2\ttwo\n")], &host::sink::Lineage::default()).await.unwrap_err();
    assert!(!e.retryable(), "{e}");
    assert!(e.to_string().contains("no unique or exclusion constraint matching the ON CONFLICT"), "{e}");
    assert_eq!(names(&schema).await, vec![(1, "one".to_string())]);
}

#[tokio::test(flavor = "multi_thread")]
async fn rows_the_database_refuses_become_dead_letters_and_the_rest_loads() {
    let (name, schema) = (unique("refuse"), unique("s"));
    items_table(&schema).await;
    let sqs = services::sqs().await;
    let url = queue(&sqs, &name).await;
    let bodies = [
        r#"{"id":1,"name":"ok"}"#,
        r#"{"id":2,"name":"far too long for eight"}"#,
        r#"{"id":3}"#,
        r#"{"id":"three","name":"x"}"#,
        r#"{"id":4,"name":"fine"}"#,
    ];
    send(&sqs, &url, &bodies.map(String::from)).await;
    let s = run_once(items(&name, &schema, &name, "upsert")).await;
    assert_eq!((s.rows, s.dead_letters), (2, 3), "{s}");
    assert_eq!(names(&schema).await, vec![(1, "ok".into()), (4, "fine".into())]);
    let reasons: Vec<String> = pg()
        .await
        .query("SELECT reason FROM etl.dead_letters WHERE pipeline = $1 ORDER BY reason", &[&name])
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert_eq!(reasons.len(), 3);
    assert!(reasons.iter().all(|r| r.starts_with("database refused the row: ")), "{reasons:?}");
    assert!(reasons.iter().any(|r| r.contains("SQLSTATE 22001")), "{reasons:?}");
    assert!(reasons.iter().any(|r| r.contains("SQLSTATE 23502")), "{reasons:?}");
    assert!(reasons.iter().any(|r| r.contains("SQLSTATE 22P02")), "{reasons:?}");
    assert!(
        reasons.iter().all(|r| !r.contains("far too long") && !r.contains("three")),
        "no values in reasons: {reasons:?}"
    );
    let payloads: i64 = pg()
        .await
        .query_one(
            "SELECT count(*) FROM etl.dead_letter_payloads p JOIN etl.dead_letters d ON d.id = p.dead_letter_id \
             WHERE d.pipeline = $1 AND length(p.payload) > 0",
            &[&name],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(payloads, 3, "refused rows keep their message for replay");
    assert_eq!(queue_depth(&sqs, &url).await, 0);
}

#[tokio::test(flavor = "multi_thread")]
async fn malformed_messages_are_dead_letters_with_their_reason() {
    let (name, schema) = (unique("malformed"), unique("s"));
    schema_with_user_logins(&schema).await;
    let sqs = services::sqs().await;
    let url = queue(&sqs, &name).await;
    let good = fetch_bodies()[0].clone();
    let bodies = vec![
        "not json".to_string(),
        "[1, 2]".to_string(),
        r#"{"user_id": "u", "user_id": "v"}"#.to_string(),
        format!(r#"{{"pad": "{}"}}"#, "x".repeat(5000)),
        good.replace("\"2.3.0\"", "\"2..3\""),
        good.replace("\"199.172.111.135\"", "42"),
        good,
    ];
    send(&sqs, &url, &bodies).await;
    let mut p = logins(&name, &schema, &name);
    p.max_record_bytes = 4096;
    let s = run_once(p).await;
    assert_eq!((s.messages, s.rows, s.dead_letters), (7, 1, 6), "{s}");
    let rows = pg()
        .await
        .query(
            "SELECT stage, coalesce(plugin, ''), reason FROM etl.dead_letters WHERE pipeline = $1 ORDER BY id",
            &[&name],
        )
        .await
        .unwrap();
    let got: Vec<(String, String, String)> = rows.iter().map(|r| (r.get(0), r.get(1), r.get(2))).collect();
    let has = |stage: &str, plugin: &str, start: &str| {
        got.iter().any(|(s, p, r)| s == stage && p == plugin && r.starts_with(start))
    };
    assert!(has("input", "", "invalid JSON: "), "{got:?}");
    assert!(has("input", "", "expected a JSON object, found an array"), "{got:?}");
    assert!(has("input", "", "duplicate key `user_id`"), "{got:?}");
    assert!(has("input", "", "record is 5011 bytes, more than max_record_bytes (4096)"), "{got:?}");
    assert!(has("transform", "app-version", "`app_version` is not a version: empty component"), "{got:?}");
    assert!(has("transform", "mask", "`ip` is not text; mask takes text"), "{got:?}");
    let payloads: i64 = pg()
        .await
        .query_one(
            "SELECT count(*) FROM etl.dead_letter_payloads p JOIN etl.dead_letters d ON d.id = p.dead_letter_id \
             WHERE d.pipeline = $1",
            &[&name],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(payloads, 6, "every dead letter keeps its message");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_panicking_plugin_costs_its_record_not_the_run() {
    let (name, schema) = (unique("panic"), unique("s"));
    items_table(&schema).await;
    let sqs = services::sqs().await;
    let url = queue(&sqs, &name).await;
    let bodies = [r#"{"id":1,"name":"a"}"#, r#"{"id":2,"name":"b","bad":true}"#, r#"{"id":3,"name":"c"}"#];
    send(&sqs, &url, &bodies.map(String::from)).await;
    let body = format!(
        "name = \"{name}\"\n[source.sqs]\nqueue = \"{name}\"\n[batch]\nmax_wait_ms = 300\n\
         [[transforms]]\nuses = \"hostile\"\nparams = {{ mode = \"panic\", trigger = \"bad\" }}\n\
         [sink]\ntable = \"items\"\nschema = \"{schema}\"\n[sink.columns]\nid = \"id\"\nname = \"name\"\n"
    );
    let s = run_once(common::pipeline(&body)).await;
    assert_eq!((s.rows, s.dead_letters), (2, 1), "{s}");
    assert_eq!(names(&schema).await, vec![(1, "a".into()), (3, "c".into())]);
}

#[tokio::test(flavor = "multi_thread")]
async fn dead_letters_replay_through_the_current_pipeline() {
    let (name, schema) = (unique("replay"), unique("s"));
    schema_with_user_logins(&schema).await;
    let sqs = services::sqs().await;
    let url = queue(&sqs, &name).await;
    let bad = fetch_bodies()[0].replace("\"2.3.0\"", "\"v2\"");
    send(&sqs, &url, &[bad]).await;
    let s = run_once(logins(&name, &schema, &name)).await;
    assert_eq!(s.dead_letters, 1);

    // The fixed pipeline: bad versions get 0.
    let text = std::fs::read_to_string(common::workspace().join("pipelines/logins.toml"))
        .unwrap()
        .replace("name = \"logins\"", &format!("name = \"{name}\""))
        .replace("table = \"user_logins\"", &format!("table = \"user_logins\"\nschema = \"{schema}\""))
        .replace("params = { field = \"app_version\" }", "params = { field = \"app_version\", default = 0 }");
    let dir = std::env::temp_dir().join(unique("pipelines"));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("logins.toml");
    std::fs::write(&file, text).unwrap();
    let opts =
        host::commands::EngineOptions { cache_dir: Some(common::cache_dir()), plugin_path: common::plugin_path() };
    let (loaded, failed) = replay(&file, &opts).await;
    assert_eq!((loaded, failed), (1, 0));
    assert_eq!(count(&format!("SELECT count(*) FROM {schema}.user_logins WHERE app_version = 0")).await, 1);
    let (loaded, _) = replay(&file, &opts).await;
    assert_eq!(loaded, 0, "a replayed dead letter is not replayed twice");
}

async fn replay(file: &Path, opts: &host::commands::EngineOptions) -> (usize, usize) {
    let r = host::commands::dead_letters::replay_with(file, &[], &[], opts, &services::database_url()).await.unwrap();
    (r.loaded, r.failed)
}

#[tokio::test(flavor = "multi_thread")]
async fn an_unreachable_database_fails_the_batch_and_loses_nothing() {
    let name = unique("nodb");
    let sqs = services::sqs().await;
    let url = queue(&sqs, &name).await;
    send(&sqs, &url, &fetch_bodies()[..3]).await;
    let opts = RunOptions { once: true, idle: Duration::from_millis(500), ..Default::default() };
    let p = logins(&name, "public", &name);
    let summary = host::run::run(
        p,
        common::engine(),
        "postgres://postgres@127.0.0.1:1/postgres",
        &aws().await,
        opts,
        std::future::pending(),
    )
    .await
    .expect("the run itself ends");
    assert_eq!((summary.batches, summary.failed_batches, summary.rows), (0, 1, 0), "{summary}");
    assert_eq!(queue_depth(&sqs, &url).await, 3, "no message deleted");
}

#[tokio::test(flavor = "multi_thread")]
async fn an_unreachable_endpoint_is_a_clear_error() {
    let aws = aws_config::defaults(aws_config::BehaviorVersion::latest())
        .endpoint_url("http://127.0.0.1:1")
        .region(aws_config::Region::new("us-east-1"))
        .credentials_provider(aws_sdk_sqs::config::Credentials::new("test", "test", None, None, "tests"))
        .load()
        .await;
    let p = logins("login-queue", "public", &unique("noaws"));
    let opts = RunOptions { once: true, idle: Duration::from_millis(500), ..Default::default() };
    let err = host::run::run(p, common::engine(), &services::database_url(), &aws, opts, std::future::pending())
        .await
        .err()
        .expect("no queue URL without an endpoint");
    let msg = err.to_string();
    assert!(msg.starts_with("SQS queue `login-queue`: cannot find its URL: "), "{msg}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_message_received_too_often_is_a_dead_letter() {
    let (name, schema) = (unique("receives"), unique("s"));
    items_table(&schema).await;
    let sqs = services::sqs().await;
    let url = queue(&sqs, &name).await;
    send(&sqs, &url, &[r#"{"id":1,"name":"a"}"#.to_string()]).await;
    // Received twice (and not deleted) before the host sees it.
    for _ in 0..2 {
        let got = sqs.receive_message().queue_url(&url).visibility_timeout(0).send().await.unwrap();
        assert_eq!(got.messages().len(), 1);
    }
    let mut p = items(&name, &schema, &name, "append");
    if let Some(host::config::Source::Sqs(s)) = &mut p.source {
        s.max_receives = 2;
    }
    let s = run_once(p).await;
    assert_eq!((s.rows, s.dead_letters), (0, 1), "{s}");
    let reason: String = pg()
        .await
        .query_one("SELECT stage || ': ' || reason FROM etl.dead_letters WHERE pipeline = $1", &[&name])
        .await
        .unwrap()
        .get(0);
    assert_eq!(reason, "source: received 3 times (max_receives = 2)");
    assert_eq!(queue_depth(&sqs, &url).await, 0);
}

#[tokio::test(flavor = "multi_thread")]
async fn message_attributes_map_onto_columns() {
    let (name, schema) = (unique("attrs"), unique("s"));
    items_table(&schema).await;
    let sqs = services::sqs().await;
    let url = queue(&sqs, &name).await;
    let attr =
        aws_sdk_sqs::types::MessageAttributeValue::builder().data_type("String").string_value("ab").build().unwrap();
    sqs.send_message()
        .queue_url(&url)
        .message_body(r#"{"id":1}"#)
        .message_attributes("team", attr)
        .send()
        .await
        .unwrap();
    let body = format!(
        "name = \"{name}\"\n[source.sqs]\nqueue = \"{name}\"\nmetadata_field = \"sqs\"\n\
         [batch]\nmax_wait_ms = 300\n[[transforms]]\nuses = \"flatten\"\nparams = {{ separator = \"_\" }}\n\
         [sink]\ntable = \"items\"\nschema = \"{schema}\"\n[sink.columns]\nid = \"id\"\nname = \"sqs_attributes_team\"\n"
    );
    let s = run_once(common::pipeline(&body)).await;
    assert_eq!(s.rows, 1, "{s}");
    assert_eq!(names(&schema).await, vec![(1, "ab".into())]);
}

#[tokio::test(flavor = "multi_thread")]
async fn sigterm_stops_the_host_cleanly() {
    let (name, schema) = (unique("term"), unique("s"));
    schema_with_user_logins(&schema).await;
    let sqs = services::sqs().await;
    let url = queue(&sqs, &name).await;
    send(&sqs, &url, &fetch_bodies()[..20]).await;
    let text = std::fs::read_to_string(common::workspace().join("pipelines/logins.toml"))
        .unwrap()
        .replace("name = \"logins\"", &format!("name = \"{name}\""))
        .replace("table = \"user_logins\"", &format!("table = \"user_logins\"\nschema = \"{schema}\""));
    let file = std::env::temp_dir().join(format!("{name}.toml"));
    std::fs::write(&file, text).unwrap();
    let exe = std::env::current_exe().unwrap();
    let host = exe.parent().unwrap().parent().unwrap().join("host");
    assert!(host.is_file(), "{} is missing: run `cargo xtask test`", host.display());
    let child = std::process::Command::new(host)
        .arg("run")
        .args(["--plugin-path", common::PLUGIN_DIR, "--cache-dir"])
        .arg(common::cache_dir())
        .arg(&file)
        .env("LOGIN_QUEUE", &name)
        .env("AWS_ENDPOINT_URL", services::endpoint())
        .env("AWS_REGION", "us-east-1")
        .env("AWS_ACCESS_KEY_ID", "test")
        .env("AWS_SECRET_ACCESS_KEY", "test")
        .env("DATABASE_URL", services::database_url())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    tokio::time::sleep(Duration::from_secs(4)).await;
    std::process::Command::new("kill").args(["-TERM", &child.id().to_string()]).status().unwrap();
    let out = child.wait_with_output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}");
    assert!(stdout.starts_with("messages 20, rows 19, dead letters 1"), "{stdout}");
    assert_eq!(count(&format!("SELECT count(*) FROM {schema}.user_logins")).await, 19);
}

/// The ledger forgets what cannot come back: rows of messages sent before a
/// cutoff go; newer ones, replays' and the legacy partition's stay. The
/// cutoff `host run` uses comes from the queue's retention period.
#[tokio::test(flavor = "multi_thread")]
async fn the_ledger_is_pruned_past_the_queues_retention() {
    let (name, schema) = (unique("prune"), unique("s"));
    schema_with_user_logins(&schema).await;
    let p = logins("unused", &schema, &name);
    let sink = sink_for(&name, &p);
    let day = 86_400_000i64;
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_millis() as i64;
    let db = pg().await;
    for (part, id) in [
        (host::sink::sql::ledger_part(now - 20 * day), "old"),
        (host::sink::sql::ledger_part(now - day), "recent"),
        (host::sink::sql::LEGACY_PART, "legacy"),
        (host::sink::sql::ledger_part(-7), "replay"),
    ] {
        db.execute(
            "INSERT INTO etl.receipts (pipeline, part, batch_id, message_ids) VALUES ($1, $2, 0, ARRAY[$3])",
            &[&name, &part, &id],
        )
        .await
        .unwrap();
    }
    assert_eq!(sink.prune_ledger(now - 15 * day).await.unwrap(), 1);
    let left: Vec<String> = db
        .query("SELECT message_ids[1] FROM etl.receipts WHERE pipeline = $1 ORDER BY 1", &[&name])
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert_eq!(left, ["legacy", "recent", "replay"]);

    let sqs = services::sqs().await;
    let url = queue(&sqs, &name).await;
    sqs.set_queue_attributes()
        .queue_url(&url)
        .attributes(aws_sdk_sqs::types::QueueAttributeName::MessageRetentionPeriod, "86400")
        .send()
        .await
        .unwrap();
    let source = host::source::SqsSource::with_config(&aws().await, &name).await.unwrap();
    assert_eq!(source.retention().await.unwrap(), Duration::from_secs(86_400));
}

/// V10 moves ids recorded as text into the column they are looked for in
/// now: a message committed before the upgrade is still found after it.
#[tokio::test(flavor = "multi_thread")]
async fn ids_recorded_before_the_uuid_ledger_are_found_after_it() {
    let db_name = unique("mig");
    let admin = pg().await;
    admin.batch_execute(&format!("CREATE DATABASE {db_name}")).await.unwrap();
    let other = services::database_url_of(&db_name);
    host::migrate::run_to(&other, Some(9)).await.unwrap();
    let (db, conn) = tokio_postgres::connect(&other, tokio_postgres::NoTls).await.unwrap();
    tokio::spawn(conn);
    let id = "0b9f3a52-7c1d-4e2a-9f6b-3d8e1c2a4b5f";
    db.execute(
        "INSERT INTO etl.receipts (pipeline, part, batch_id, message_ids) VALUES ('p', 1, 1, $1)",
        &[&vec![id, "dead-letter:7", "0B9F3A52-7C1D-4E2A-9F6B-3D8E1C2A4B5F"]],
    )
    .await
    .unwrap();
    let applied = host::migrate::run(&other).await.unwrap();
    assert!(applied.iter().any(|m| m.contains("receipts_uuids")), "{applied:?}");
    let row = db.query_one("SELECT message_ids, message_uuids::text[] FROM etl.receipts", &[]).await.unwrap();
    let (texts, uuids): (Vec<String>, Vec<String>) = (row.get(0), row.get(1));
    assert_eq!(texts, ["dead-letter:7", "0B9F3A52-7C1D-4E2A-9F6B-3D8E1C2A4B5F"]);
    assert_eq!(uuids, [id]);
    let seen: Vec<String> = db
        .query(
            host::sink::sql::LEDGER_SEEN,
            &[
                &"p",
                &vec![1i64 - host::sink::sql::LEDGER_MAX_SPAN],
                &vec![1i64],
                &vec![1i64],
                &vec!["dead-letter:7"],
                &vec![host::sink::sql::canonical_uuid(id).unwrap()],
            ],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert_eq!(seen, ["dead-letter:7", id]);
    drop(db);
    admin.batch_execute(&format!("DROP DATABASE {db_name} WITH (FORCE)")).await.unwrap();
}
