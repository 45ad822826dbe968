//! The real system a history runs against: a bucket and a queue on moto,
//! a schema in PostgreSQL, two pipelines over the bucket (reconcile, and
//! notifications) and the real `host` binary, run, killed, and cut off
//! from S3 or PostgreSQL through a proxy.

use crate::model::{self, Op, Versioning};
use crate::proxy::{Mode, Proxy};
use crate::{common, services};
use aws_sdk_s3::types::{BucketVersioningStatus, VersioningConfiguration};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// An event the bucket would have sent: its S3 notification body.
type Event = String;

pub struct World {
    pub bucket: String,
    pub schema: String,
    queue_url: String,
    dir: PathBuf,
    pub log: PathBuf,
    s3: aws_sdk_s3::Client,
    sqs: aws_sdk_sqs::Client,
    events: Vec<Event>,
    sequencer: u64,
}

/// The pipelines' file names in the world's folder.
const RECONCILE: &str = "reconcile.toml";
const NOTIFICATIONS: &str = "notifications.toml";

impl World {
    pub async fn new(seed: u64, versioning: Versioning) -> World {
        let name = services::unique(&format!("h{seed}"));
        let bucket = name.replace('_', "-");
        let schema = name.clone();
        let (s3, sqs) = (services::s3_at(services::endpoint()).await, services::sqs().await);
        s3.create_bucket().bucket(&bucket).send().await.unwrap();
        let queue_url = services::queue(&sqs, &name).await;
        let dir = common::workspace().join("target/history").join(&name);
        std::fs::create_dir_all(&dir).unwrap();
        services::pg()
            .await
            .batch_execute(&format!(
                "CREATE SCHEMA {schema};
                 CREATE TABLE {schema}.r (id integer, body text, source_file text NOT NULL);
                 CREATE TABLE {schema}.n (id integer, body text, source_file text NOT NULL);"
            ))
            .await
            .unwrap();
        for (file, table, source) in [
            // Ranges of 2 keys: every history crosses range boundaries.
            (RECONCILE, "r", format!("mode = \"reconcile\"\nbucket = \"{bucket}\"\nrange_objects = 2")),
            (
                NOTIFICATIONS,
                "n",
                format!(
                    // Receives are not what is checked here: a notification
                    // held by several killed runs must not become a dead letter.
                    "queue = \"{name}\"\nbucket = \"{bucket}\"\nvisibility_timeout_s = 5\nwait_time_s = 1\nmax_receives = 1000"
                ),
            ),
        ] {
            std::fs::write(dir.join(file), pipeline(&format!("{name}_{table}"), &schema, table, &source)).unwrap();
        }
        let world = World {
            bucket,
            schema,
            queue_url,
            log: dir.join("host.log"),
            dir,
            s3,
            sqs,
            events: Vec::new(),
            sequencer: 0,
        };
        if versioning == Versioning::Enabled {
            world.versioning(Versioning::Enabled).await;
        }
        world
    }

    pub fn pipeline_name(&self, table: &str) -> String {
        format!("{}_{table}", self.schema)
    }

    /// Carries out one operation (`generation`: a put's, from the model);
    /// `Err` when the endpoint refused one of the bucket's own operations.
    pub async fn run(&mut self, op: &Op, generation: Option<u32>, versioning: Versioning) -> Result<(), String> {
        match op {
            Op::Put { key, rows } => {
                return self.put(*key, generation.expect("a put has a generation"), *rows, versioning).await;
            }
            Op::Delete { key } => return self.delete(*key).await,
            Op::SetVersioning(v) => self.versioning(*v).await,
            Op::Reconcile => self.host_once(RECONCILE, None, None).await,
            Op::ReconcileKilled { after_ms } => self.killed(RECONCILE, *after_ms).await,
            Op::ReconcileS3Cut { after_bytes } => {
                let proxy = Proxy::start(authority(services::endpoint())).await;
                proxy.set(Mode::CutAfter(*after_bytes));
                let endpoint = format!("http://127.0.0.1:{}", proxy.port);
                self.host_once(RECONCILE, None, Some(&endpoint)).await;
            }
            Op::ReconcileDbDown { at_ms, for_ms } => self.db_down(*at_ms, *for_ms).await,
            Op::Deliver { event } | Op::Redeliver { event } => {
                services::send(&self.sqs, &self.queue_url, &[self.events[*event].clone()]).await;
            }
            Op::Notifications => self.host_once(NOTIFICATIONS, None, None).await,
            Op::NotificationsKilled { after_ms } => self.killed(NOTIFICATIONS, *after_ms).await,
            Op::Backfill => {
                let mut child = self.host(&["backfill"], NOTIFICATIONS, None, None);
                wait(&mut child, Duration::from_secs(120));
            }
        }
        Ok(())
    }

    fn key(key: usize) -> String {
        format!("h/f{key}.csv")
    }

    pub fn uri(&self, key: usize) -> String {
        format!("s3://{}/{}", self.bucket, World::key(key))
    }

    async fn put(&mut self, key: usize, generation: u32, rows: usize, versioning: Versioning) -> Result<(), String> {
        let body = model::csv(key, generation, rows);
        let put = self.s3.put_object().bucket(&self.bucket).key(World::key(key)).body(body.into_bytes().into());
        let out = put.send().await.map_err(|e| format!("PutObject: {}", aws_sdk_s3::error::DisplayErrorContext(e)))?;
        let version = out.version_id().map(str::to_string).or_else(|| {
            // S3 names a version written while versioning is suspended `null`.
            (versioning == Versioning::Suspended).then(|| "null".to_string())
        });
        let etag = out.e_tag().unwrap_or_default().trim_matches('"').to_string();
        self.event("ObjectCreated:Put", key, version.as_deref(), Some(&etag));
        Ok(())
    }

    async fn delete(&mut self, key: usize) -> Result<(), String> {
        let delete = self.s3.delete_object().bucket(&self.bucket).key(World::key(key)).send().await;
        // The event is recorded either way (the host loads no removals), so
        // that the history's event numbers stay as drawn.
        let version = delete.as_ref().ok().and_then(|out| out.version_id().map(str::to_string));
        self.event("ObjectRemoved:Delete", key, version.as_deref(), None);
        delete.map(|_| ()).map_err(|e| format!("DeleteObject: {}", aws_sdk_s3::error::DisplayErrorContext(e)))
    }

    /// Records the event S3 would send, with a sequencer later than all before.
    fn event(&mut self, name: &str, key: usize, version: Option<&str>, etag: Option<&str>) {
        self.sequencer += 1;
        let mut object = serde_json::json!({"key": World::key(key), "sequencer": format!("{:016X}", self.sequencer)});
        if let Some(v) = version {
            object["versionId"] = v.into();
        }
        if let Some(e) = etag {
            object["eTag"] = e.into();
        }
        let record = serde_json::json!({
            "eventVersion": "2.1", "eventSource": "aws:s3", "eventName": name,
            "s3": {"bucket": {"name": self.bucket}, "object": object}
        });
        self.events.push(serde_json::json!({"Records": [record]}).to_string());
    }

    async fn versioning(&self, v: Versioning) {
        let status = match v {
            Versioning::Enabled => BucketVersioningStatus::Enabled,
            Versioning::Suspended => BucketVersioningStatus::Suspended,
            Versioning::Unversioned => return,
        };
        let config = VersioningConfiguration::builder().status(status).build();
        self.s3.put_bucket_versioning().bucket(&self.bucket).versioning_configuration(config).send().await.unwrap();
    }

    /// The host on pipeline `file` (`args` before it), its database and
    /// endpoint replaced when given; output into the world's log.
    fn host(&self, args: &[&str], file: &str, database: Option<&str>, endpoint: Option<&str>) -> Child {
        host(args, &self.dir.join(file), database, endpoint, &self.log)
    }

    /// `host run --once`, to its end (killed past two minutes).
    pub async fn host_once(&self, file: &str, database: Option<&str>, endpoint: Option<&str>) {
        let mut child = self.host(&["run", "--once"], file, database, endpoint);
        tokio::task::block_in_place(|| wait(&mut child, Duration::from_secs(120)));
    }

    /// `host run` with every database answer slowed (so that loads take a
    /// while), SIGKILLed after `after_ms`.
    async fn killed(&self, file: &str, after_ms: u64) {
        let pg = authority(&services::database_url()).to_string();
        let proxy = Proxy::start(&pg).await;
        proxy.set(Mode::Delay(Duration::from_millis(15)));
        let url = proxy.url(&services::database_url(), &pg);
        let mut child = self.host(&["run"], file, Some(&url), None);
        tokio::time::sleep(Duration::from_millis(after_ms)).await;
        let _ = Command::new("kill").args(["-9", &child.id().to_string()]).status();
        let _ = child.wait();
        proxy.set(Mode::Refuse);
    }

    async fn db_down(&self, at_ms: u64, for_ms: u64) {
        let pg = authority(&services::database_url()).to_string();
        let proxy = Proxy::start(&pg).await;
        let url = proxy.url(&services::database_url(), &pg);
        let mut child = self.host(&["run", "--once"], RECONCILE, Some(&url), None);
        tokio::time::sleep(Duration::from_millis(at_ms)).await;
        proxy.set(Mode::Refuse);
        tokio::time::sleep(Duration::from_millis(for_ms)).await;
        proxy.set(Mode::Pass);
        tokio::task::block_in_place(|| wait(&mut child, Duration::from_secs(120)));
    }

    /// Quiescence: every event delivered, the notifications pipeline run
    /// until its queue is empty, and reconcile passes until one changes
    /// nothing.
    pub async fn settle(&mut self, model: &model::Model) {
        let undelivered: Vec<Event> =
            (0..model.events).filter(|&e| !model.delivered[e]).map(|e| self.events[e].clone()).collect();
        services::send(&self.sqs, &self.queue_url, &undelivered).await;
        let start = Instant::now();
        loop {
            self.host_once(NOTIFICATIONS, None, None).await;
            if self.queue_total().await == 0 || start.elapsed() > Duration::from_secs(180) {
                break;
            }
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
        // Once more: a pass that finds what a killed run left part-loaded.
        self.host_once(NOTIFICATIONS, None, None).await;
        let mut before = None;
        for _ in 0..3 {
            self.host_once(RECONCILE, None, None).await;
            let now = crate::check::table(&self.schema, "r").await;
            if before.as_ref() == Some(&now) {
                break;
            }
            before = Some(now);
        }
    }

    /// Messages on the queue, visible or not.
    async fn queue_total(&self) -> usize {
        use aws_sdk_sqs::types::QueueAttributeName as A;
        let out = self
            .sqs
            .get_queue_attributes()
            .queue_url(&self.queue_url)
            .attribute_names(A::ApproximateNumberOfMessages)
            .attribute_names(A::ApproximateNumberOfMessagesNotVisible)
            .send()
            .await
            .unwrap();
        let attrs = out.attributes().cloned().unwrap_or_default();
        let n = |a: A| attrs.get(&a).and_then(|v| v.parse::<usize>().ok()).unwrap_or(0);
        n(A::ApproximateNumberOfMessages) + n(A::ApproximateNumberOfMessagesNotVisible)
    }

    /// Each key's current version as the host may record it: the version
    /// id (none where it is `null`), and the ETag.
    pub async fn current_versions(&self) -> Vec<(String, Option<String>, String)> {
        let mut out = Vec::new();
        let listed = self.s3.list_objects_v2().bucket(&self.bucket).prefix("h/").send().await.unwrap();
        for o in listed.contents() {
            let key = o.key().unwrap_or_default();
            let head = self.s3.head_object().bucket(&self.bucket).key(key).send().await.unwrap();
            let id = head.version_id().filter(|v| *v != "null").map(str::to_string);
            let etag = head.e_tag().unwrap_or_default().trim_matches('"').to_string();
            out.push((key.to_string(), id, etag));
        }
        out
    }
}

/// The real `host` (or `HISTORY_HOST`, another build, to see what an older
/// one did) on pipeline file `pipeline`, `args` before it, its database
/// and endpoint replaced when given; its output appended to `log`.
pub fn host(args: &[&str], pipeline: &Path, database: Option<&str>, endpoint: Option<&str>, log: &Path) -> Child {
    let host =
        std::env::var_os("HISTORY_HOST").map_or_else(|| common::workspace().join("target/release/host"), PathBuf::from);
    assert!(host.is_file(), "{} is missing: `cargo xtask build` builds it", host.display());
    let log = std::fs::OpenOptions::new().create(true).append(true).open(log).unwrap();
    Command::new(host)
        .args(args)
        .args(["--plugin-path", common::PLUGIN_DIR, "--cache-dir"])
        .arg(common::cache_dir())
        .arg(pipeline)
        .env("DATABASE_URL", database.map_or_else(services::database_url, str::to_string))
        .env("AWS_ENDPOINT_URL", endpoint.unwrap_or(services::endpoint()))
        .env("AWS_REGION", "us-east-1")
        .env("AWS_ACCESS_KEY_ID", "test")
        .env("AWS_SECRET_ACCESS_KEY", "test")
        .env("RUST_LOG", "warn")
        .env("HOST_LOG_FORMAT", "text")
        .stdin(Stdio::null())
        .stdout(log.try_clone().unwrap())
        .stderr(log)
        .spawn()
        .expect("host starts")
}

/// A pipeline over the world's bucket: headerless CSV (id, body) into
/// `schema.table`, each row knowing its file, small commits.
fn pipeline(name: &str, schema: &str, table: &str, source: &str) -> String {
    format!(
        "name = \"{name}\"\n\n[source.s3]\n{source}\nprefix = \"h/\"\nformat = \"csv\"\n\
         csv = {{ header = false, columns = [\"id\", \"body\"] }}\nrows_per_commit = 4\n\n\
         [batch]\nmax_records = 4\nworkers = 2\n\n\
         [sink]\nschema = \"{schema}\"\ntable = \"{table}\"\nmode = \"append\"\n\n\
         [sink.columns]\nid = \"id\"\nbody = \"body\"\nsource_file = {{ generated = \"source-file\" }}\n"
    )
}

/// `host:port` of a URL.
fn authority(url: &str) -> &str {
    let rest = url.split_once("://").map_or(url, |(_, r)| r);
    let rest = rest.split(['/', '?']).next().unwrap_or(rest);
    rest.rsplit_once('@').map_or(rest, |(_, h)| h)
}

/// Waits for the host to exit, killing it past `limit`.
fn wait(child: &mut Child, limit: Duration) {
    let start = Instant::now();
    while child.try_wait().unwrap().is_none() {
        if start.elapsed() > limit {
            let _ = child.kill();
            let _ = child.wait();
            return;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}
