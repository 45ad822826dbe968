//! A large S3 object of login events and a `host backfill` of it through the
//! logins chain, with the host's peak memory: shared by the memory test and
//! the files benchmark.

use crate::{common, services};
use std::path::PathBuf;
use std::time::{Duration, Instant};

/// `n` Fetch-like login events as JSON lines (unique user ids), about 170
/// bytes each.
pub fn logins_lines(n: usize) -> Vec<u8> {
    let mut out = Vec::with_capacity(n * 180);
    for i in 0..n {
        let line = format!(
            "{{\"user_id\": \"{i:08x}-063a-43a7-b91b-7ca1a833afae\", \"app_version\": \"2.3.0\", \
             \"device_type\": \"android\", \"ip\": \"199.172.{}.{}\", \"locale\": \"RU\", \
             \"device_id\": \"593-47-{:04}\"}}\n",
            i / 256 % 256,
            i % 256,
            i % 10_000
        );
        out.extend_from_slice(line.as_bytes());
    }
    out
}

/// The shipped logins pipeline named `name`, into `schema`, reading S3
/// with the `[source.s3]` settings `source` (TOML lines) instead of SQS.
pub fn logins_from_s3(name: &str, schema: &str, source: &str) -> String {
    let text = std::fs::read_to_string(common::workspace().join("pipelines/logins.toml")).unwrap();
    let text = text
        .replace("name = \"logins\"", &format!("name = \"{name}\""))
        .replace("[source.sqs]\nqueue = \"${LOGIN_QUEUE:-login-queue}\"", &format!("[source.s3]\n{source}"))
        .replace("table = \"user_logins\"", &format!("table = \"user_logins\"\nschema = \"{schema}\""));
    assert!(text.contains("[source.s3]"), "the logins pipeline's source is where this expects it");
    text
}

/// A schema with an empty `user_logins`, a bucket holding one object of `n`
/// events, and the logins pipeline reading that bucket.
pub struct BigObject {
    /// The pipeline's name.
    pub name: String,
    /// A moto of its own: 170 MB would slow the shared one for every test.
    pub endpoint: String,
    pub schema: String,
    pub pipeline: PathBuf,
    pub bytes: usize,
}

pub async fn big_object(n: usize) -> BigObject {
    big_object_with(n, "").await
}

/// [`big_object`] with more `[source.s3]` settings (TOML lines).
pub async fn big_object_with(n: usize, source_settings: &str) -> BigObject {
    services::migrated().await;
    let (schema, name) = (services::unique("s"), services::unique("big"));
    let bucket = services::unique("big").replace('_', "-");
    services::pg()
        .await
        .batch_execute(&format!("CREATE SCHEMA {schema}; CREATE TABLE {schema}.user_logins (LIKE public.user_logins)"))
        .await
        .unwrap();
    let endpoint = services::private_endpoint();
    let s3 = services::s3_at(&endpoint).await;
    s3.create_bucket().bucket(&bucket).send().await.unwrap();
    let body = logins_lines(n);
    let bytes = body.len();
    services::put(&s3, &bucket, "logins/big.jsonl", body).await;
    let source = format!("queue = \"unused\"\nbucket = \"{bucket}\"\nformat = \"json-lines\"\n{source_settings}");
    let text = logins_from_s3(&name, &schema, &source);
    let dir = std::env::temp_dir().join(&name);
    std::fs::create_dir_all(&dir).unwrap();
    let pipeline = dir.join("logins-s3.toml");
    std::fs::write(&pipeline, text).unwrap();
    BigObject { name, endpoint, schema, pipeline, bytes }
}

/// `text` (a pipeline of the object's) under a fresh name starting with
/// `prefix`, written beside the object's pipeline: a pipeline of its own
/// loads every object from its first row (receipts are per pipeline).
#[allow(dead_code, reason = "used by the benchmarks, which include this file")]
pub fn renamed_pipeline(o: &BigObject, text: &str, prefix: &str) -> (String, PathBuf) {
    let name = services::unique(prefix);
    let pipeline = o.pipeline.with_file_name(format!("{name}.toml"));
    std::fs::write(&pipeline, text.replace(&format!("name = \"{}\"", o.name), &format!("name = \"{name}\""))).unwrap();
    (name, pipeline)
}

/// What a `host backfill` did.
pub struct Backfill {
    pub elapsed: Duration,
    /// Peak resident memory (VmHWM) of the host process, in KiB.
    pub peak_rss_kib: u64,
    /// CPU time (user + system) of the host process, seconds.
    pub cpu_s: f64,
    pub stdout: String,
    pub stderr: String,
    pub success: bool,
}

pub fn host_binary() -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    let bin = exe.parent().unwrap().parent().unwrap().join("host");
    assert!(bin.is_file(), "{} is missing: run `cargo xtask test` (it builds the host first)", bin.display());
    bin
}

/// Runs `host backfill` on the object's pipeline, watching its memory.
pub fn backfill(o: &BigObject) -> Backfill {
    backfill_of(backfill_command(o))
}

/// Runs a `host backfill` command, watching its memory and CPU time.
pub fn backfill_of(mut command: std::process::Command) -> Backfill {
    let cpu_before = services::own_cpu_s().1;
    let start = Instant::now();
    let mut child = command.spawn().unwrap();
    let status = format!("/proc/{}/status", child.id());
    let mut peak = 0;
    // VmHWM is the peak so far: the last reading before the exit is the peak.
    while child.try_wait().unwrap().is_none() {
        if let Some(kib) = std::fs::read_to_string(&status).ok().and_then(|s| vm_hwm(&s)) {
            peak = peak.max(kib);
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let out = child.wait_with_output().unwrap();
    Backfill {
        elapsed: start.elapsed(),
        peak_rss_kib: peak,
        cpu_s: services::own_cpu_s().1 - cpu_before,
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        success: out.status.success(),
    }
}

/// `host backfill` of the object's pipeline, not started.
pub fn backfill_command(o: &BigObject) -> std::process::Command {
    backfill_command_of(o, &o.pipeline)
}

/// `host backfill` of `pipeline`, against the object's moto, not started.
pub fn backfill_command_of(o: &BigObject, pipeline: &std::path::Path) -> std::process::Command {
    let mut command = std::process::Command::new(host_binary());
    command
        .arg("backfill")
        .arg("--plugin-path")
        .arg(common::PLUGIN_DIR)
        .arg("--cache-dir")
        .arg(common::cache_dir())
        .arg(pipeline)
        .env("DATABASE_URL", services::database_url())
        .env("AWS_ENDPOINT_URL", &o.endpoint)
        .env("AWS_REGION", "us-east-1")
        .env("AWS_ACCESS_KEY_ID", "test")
        .env("AWS_SECRET_ACCESS_KEY", "test")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped());
    command
}

fn vm_hwm(status: &str) -> Option<u64> {
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}
