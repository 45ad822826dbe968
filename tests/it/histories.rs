//! The object histories the history checker found wrong, each as a test of
//! its own (issue 23): versioning suspended, an older version's late event
//! after a backfill, a part-loaded object abandoned (notifications) or kept
//! after its object is deleted (reconcile).

use crate::common;
use crate::run::run_once;
use crate::services::{self, migrated, pg, queue, s3_at, unique};

/// A bucket, a table `schema.t (id, body, source_file)` and a pipeline over
/// them: `mode` is `reconcile`, or a queue name for notifications.
struct Setup {
    name: String,
    schema: String,
    bucket: String,
    s3: aws_sdk_s3::Client,
}

impl Setup {
    async fn new(label: &str, versioned: bool) -> Setup {
        migrated().await;
        let (name, schema) = (unique(label), unique("s"));
        let bucket = unique(label).replace('_', "-");
        pg().await
            .batch_execute(&format!(
                "CREATE SCHEMA {schema}; CREATE TABLE {schema}.t (id integer, body text, source_file text NOT NULL)"
            ))
            .await
            .unwrap();
        let s3 = s3_at(services::endpoint()).await;
        s3.create_bucket().bucket(&bucket).send().await.unwrap();
        let setup = Setup { name, schema, bucket, s3 };
        if versioned {
            setup.versioning("Enabled").await;
        }
        setup
    }

    async fn versioning(&self, status: &str) {
        use aws_sdk_s3::types::{BucketVersioningStatus, VersioningConfiguration};
        let config = VersioningConfiguration::builder().status(BucketVersioningStatus::from(status)).build();
        self.s3.put_bucket_versioning().bucket(&self.bucket).versioning_configuration(config).send().await.unwrap();
    }

    fn pipeline(&self, source: &str) -> host::config::Pipeline {
        common::pipeline(&self.text(source))
    }

    /// The pipeline's text (see [`Setup::pipeline`]).
    fn text(&self, source: &str) -> String {
        format!(
            "name = \"{}\"\n[source.s3]\n{source}\nbucket = \"{}\"\nprefix = \"h/\"\nformat = \"csv\"\n\
             csv = {{ header = false, columns = [\"id\", \"body\"] }}\nrows_per_commit = 2\n\
             [batch]\nmax_records = 2\n\
             [sink]\nschema = \"{}\"\ntable = \"t\"\nmode = \"append\"\n\
             [sink.columns]\nid = \"id\"\nbody = \"body\"\nsource_file = {{ generated = \"source-file\" }}\n",
            self.name, self.bucket, self.schema
        )
    }

    fn reconcile(&self) -> host::config::Pipeline {
        self.pipeline("mode = \"reconcile\"")
    }

    /// Puts `body` at `h/KEY`; its version id and ETag.
    async fn put(&self, key: &str, body: &str) -> (Option<String>, String) {
        let out = self
            .s3
            .put_object()
            .bucket(&self.bucket)
            .key(format!("h/{key}"))
            .body(body.as_bytes().to_vec().into())
            .send()
            .await
            .unwrap();
        (out.version_id().map(str::to_string), out.e_tag().unwrap().trim_matches('"').to_string())
    }

    async fn bodies(&self) -> Vec<String> {
        let sql = format!("SELECT body FROM {}.t ORDER BY source_file, id, body", self.schema);
        pg().await.query(&sql, &[]).await.unwrap().iter().map(|r| r.get(0)).collect()
    }
}

/// How many object versions `etl.files` records for pipeline `name`.
async fn recorded(name: &str) -> i64 {
    let sql = "SELECT count(*) FROM etl.files WHERE pipeline = $1";
    pg().await.query_one(sql, &[&name]).await.unwrap().get(0)
}

/// With versioning suspended every overwrite is version `null`: a changed
/// file must still load (it is told apart by its ETag).
#[tokio::test(flavor = "multi_thread")]
async fn an_overwrite_while_versioning_is_suspended_loads() {
    let s = Setup::new("suspend", true).await;
    s.put("f.csv", "1,v1\n").await;
    run_once(s.reconcile()).await;
    assert_eq!(s.bodies().await, ["v1"]);
    s.versioning("Suspended").await;
    s.put("f.csv", "1,v2\n").await;
    run_once(s.reconcile()).await;
    assert_eq!(s.bodies().await, ["v2"]);
    s.put("f.csv", "1,v3\n2,v3\n").await;
    let summary = run_once(s.reconcile()).await;
    assert_eq!(s.bodies().await, ["v3", "v3"], "the second overwrite under `null` loads too: {summary}");
    s.versioning("Enabled").await;
    let summary = run_once(s.reconcile()).await;
    assert_eq!(summary.objects, 0, "versioning enabled again changes nothing by itself: {summary}");
    assert_eq!(s.bodies().await, ["v3", "v3"]);
}

/// `put f` twice, a backfill (loads the second), then the first put's
/// event arrives late: the table keeps the second version.
#[tokio::test(flavor = "multi_thread")]
async fn a_late_event_of_an_older_version_after_a_backfill_changes_nothing() {
    let s = Setup::new("late", true).await;
    let sqs = services::sqs().await;
    let q = unique("lateq");
    let url = queue(&sqs, &q).await;
    let (v1, e1) = s.put("f.csv", "1,old\n2,old\n3,old\n").await;
    s.put("f.csv", "1,new\n").await;
    let notifications = || s.pipeline(&format!("queue = \"{q}\"\nwait_time_s = 1"));
    let aws = services::aws_at(services::endpoint()).await;
    let url_db = services::database_url();
    host::run::backfill(notifications(), common::engine(), &url_db, &aws, "h/", |_| {}).await.unwrap();
    assert_eq!(s.bodies().await, ["new"]);
    let event = serde_json::json!({"Records": [{"eventName": "ObjectCreated:Put", "s3": {
        "bucket": {"name": s.bucket}, "object": {"key": "h/f.csv", "versionId": v1, "eTag": e1, "sequencer": "0A"}}}]});
    services::send(&sqs, &url, &[event.to_string()]).await;
    let summary = run_once(notifications()).await;
    assert_eq!(summary.messages, 1, "{summary}");
    assert_eq!(s.bodies().await, ["new"], "the older version's late event must not replace the newer rows");
}

/// Records `version` of `h/KEY` as part-loaded (its first `rows` rows in
/// the table), as a crash or a failed read leaves it.
async fn part_loaded(s: &Setup, key: &str, version: &str, etag: &str, rows: &[&str]) {
    let db = pg().await;
    let uri = format!("s3://{}/h/{key}", s.bucket);
    db.execute(
        "INSERT INTO etl.files (pipeline, bucket, key, version, etag, rows_done) VALUES ($1, $2, $3, $4, $5, $6)",
        &[&s.name, &s.bucket, &format!("h/{key}"), &version, &etag, &(rows.len() as i64)],
    )
    .await
    .unwrap();
    for (i, body) in rows.iter().enumerate() {
        let sql = format!("INSERT INTO {}.t VALUES ($1, $2, $3)", s.schema);
        db.execute(&sql, &[&(i as i32 + 1), body, &uri]).await.unwrap();
    }
}

/// A part-loaded file deleted before the next pass: its rows go.
#[tokio::test(flavor = "multi_thread")]
async fn a_part_loaded_file_that_is_deleted_loses_its_rows() {
    let s = Setup::new("partdel", false).await;
    let (_, etag) = s.put("f.csv", "1,a\n2,a\n3,a\n").await;
    part_loaded(&s, "f.csv", &etag, &etag, &["a", "a"]).await;
    s.s3.delete_object().bucket(&s.bucket).key("h/f.csv").send().await.unwrap();
    let summary = run_once(s.reconcile()).await;
    assert_eq!(s.bodies().await, Vec::<String>::new(), "{summary}");
    assert_eq!(recorded(&s.name).await, 0);
}

/// A part-loaded object whose notification is gone (it ran out of
/// receives): the notifications run finishes it by itself.
#[tokio::test(flavor = "multi_thread")]
async fn a_notifications_run_finishes_an_object_left_part_loaded() {
    let s = Setup::new("partnote", true).await;
    let sqs = services::sqs().await;
    let q = unique("partq");
    queue(&sqs, &q).await;
    let (version, etag) = s.put("f.csv", "1,a\n2,a\n3,a\n4,a\n5,a\n").await;
    part_loaded(&s, "f.csv", version.as_deref().unwrap(), &etag, &["a", "a"]).await;
    let summary = run_once(s.pipeline(&format!("queue = \"{q}\"\nwait_time_s = 1"))).await;
    assert_eq!(s.bodies().await, ["a"; 5], "{summary}");
    let done: bool =
        pg().await.query_one("SELECT done FROM etl.files WHERE pipeline = $1", &[&s.name]).await.unwrap().get(0);
    assert!(done);
}

/// An older version left part-loaded, then a newer one put: the older is
/// dropped (rows and record) rather than finished over the newer content.
#[tokio::test(flavor = "multi_thread")]
async fn a_part_loaded_older_version_is_dropped_not_finished() {
    let s = Setup::new("partold", true).await;
    let sqs = services::sqs().await;
    let q = unique("partoldq");
    queue(&sqs, &q).await;
    let (v1, e1) = s.put("f.csv", "1,old\n2,old\n3,old\n").await;
    part_loaded(&s, "f.csv", v1.as_deref().unwrap(), &e1, &["old", "old"]).await;
    s.put("f.csv", "1,new\n").await;
    run_once(s.pipeline(&format!("queue = \"{q}\"\nwait_time_s = 1"))).await;
    assert_eq!(s.bodies().await, Vec::<String>::new(), "the newer version loads on its own event, not this one's");
    assert_eq!(recorded(&s.name).await, 0);
}

/// One object S3 will not serve (every request naming it is cut) holds up
/// no other: the others load, its failure is logged once however many
/// passes meet it, and once S3 serves it again it loads after its backoff.
#[tokio::test(flavor = "multi_thread")]
async fn an_object_s3_will_not_serve_holds_up_no_other_and_is_logged_once() {
    use crate::proxy::{Mode, Proxy};
    let s = Setup::new("isolate", false).await;
    s.put("a.csv", "1,a\n").await;
    s.put("bad.csv", "1,bad\n").await;
    s.put("c.csv", "1,c\n").await;
    let file = std::env::temp_dir().join(format!("{}.toml", s.name));
    std::fs::write(&file, s.text("mode = \"reconcile\"\ninterval_s = 1")).unwrap();
    let proxy = Proxy::start(&crate::faults::authority(services::endpoint())).await;
    let pattern: &'static str = Box::leak(format!("{}/h/bad.csv", s.bucket).into_boxed_str());
    proxy.set(Mode::CutRequestsWith(pattern));
    let endpoint = format!("http://127.0.0.1:{}", proxy.port);
    let mut host = crate::faults::Host::run(&file, false, &services::database_url(), &endpoint);
    let until = |want: usize| {
        let s = &s;
        async move {
            let start = std::time::Instant::now();
            while s.bodies().await.len() < want && start.elapsed() < std::time::Duration::from_secs(60) {
                tokio::time::sleep(std::time::Duration::from_millis(200)).await;
            }
            s.bodies().await
        }
    };
    assert_eq!(until(2).await, ["a", "c"], "{}", host.log());
    // Several passes (one a second) meet the object within its backoff.
    tokio::time::sleep(std::time::Duration::from_secs(6)).await;
    let log = host.log();
    let said = |l: &&str| l.contains("h/bad.csv") && (l.contains("WARN") || l.contains("ERROR"));
    assert_eq!(log.lines().filter(said).count(), 1, "{log}");
    proxy.set(Mode::Pass);
    assert_eq!(until(3).await, ["a", "bad", "c"], "{}", host.log());
    host.term();
    host.wait(std::time::Duration::from_secs(30)).await.expect("stops");
}

/// A first pass that cannot ask whether the bucket keeps versions lists it
/// by ETag and records that; once the bucket answers, the next pass lists
/// versions and must not load every file again.
#[tokio::test(flavor = "multi_thread")]
async fn a_first_pass_that_cannot_ask_about_versions_makes_the_next_reload_nothing() {
    use crate::proxy::{Mode, Proxy};
    let s = Setup::new("cannotask", true).await;
    s.put("a.csv", "1,a\n").await;
    s.put("b.csv", "1,b\n").await;
    let proxy = Proxy::start(&crate::faults::authority(services::endpoint())).await;
    // GetBucketVersioning (`?versioning`) never answers this first pass.
    proxy.set(Mode::CutRequestsWith("versioning"));
    let opts = host::run::RunOptions { once: true, idle: std::time::Duration::from_millis(1500), ..Default::default() };
    let aws = services::aws_at(&format!("http://127.0.0.1:{}", proxy.port)).await;
    let db = services::database_url();
    let run = host::run::run(s.reconcile(), common::engine(), &db, &aws, opts, std::future::pending());
    let first = run.await.expect("run completes");
    assert_eq!(first.objects, 2, "{first}");
    let second = run_once(s.reconcile()).await;
    assert_eq!(second.objects, 0, "nothing changed, nothing loads again: {second}");
    assert_eq!(s.bodies().await, ["a", "b"]);
}
