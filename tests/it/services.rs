//! The real services the tests talk to: PostgreSQL at `DATABASE_URL`
//! (default: the local server) and an SQS endpoint at `AWS_ENDPOINT_URL`, or
//! else a moto server this test binary starts on a free loopback port (and
//! that exits with it).

use std::path::PathBuf;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

/// A count from the environment, for scaling the long runs down (the crash
/// run and the sink benchmark).
#[allow(dead_code)]
pub fn env_usize(name: &str, default: usize) -> usize {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

/// CPU seconds (user + system) in a `/proc/PID/stat` text: the process's
/// own, and its waited-for children's (clock ticks of 1/100 s).
#[allow(dead_code)] // the test binaries that share this file use it only in places
pub fn stat_cpu_s(stat: &str) -> (f64, f64) {
    // After the command's closing parenthesis and the state field, utime,
    // stime, cutime and cstime are indices 11 to 14.
    let f: Vec<f64> =
        stat.rsplit(')').next().unwrap_or_default().split_whitespace().map(|x| x.parse().unwrap_or(0.0)).collect();
    ((f[11] + f[12]) / 100.0, (f[13] + f[14]) / 100.0)
}

/// [`stat_cpu_s`] of this process.
#[allow(dead_code)]
pub fn own_cpu_s() -> (f64, f64) {
    stat_cpu_s(&std::fs::read_to_string("/proc/self/stat").expect("/proc/self/stat"))
}

pub fn database_url() -> String {
    std::env::var("DATABASE_URL").unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".into())
}

/// `host:port` of `DATABASE_URL` (127.0.0.1:5432, or the port of the
/// private server `cargo xtask` started).
pub fn database_address() -> String {
    let url = database_url();
    let rest = url.split_once("://").map_or(url.as_str(), |(_, r)| r);
    let authority = rest.split(['/', '?']).next().unwrap_or_default();
    authority.rsplit_once('@').map_or(authority, |(_, h)| h).to_string()
}

/// The SQS endpoint, starting moto if needed.
pub fn endpoint() -> &'static str {
    static ENDPOINT: OnceLock<String> = OnceLock::new();
    ENDPOINT.get_or_init(|| std::env::var("AWS_ENDPOINT_URL").unwrap_or_else(|_| start_moto()))
}

pub fn python() -> PathBuf {
    if let Some(p) = std::env::var_os("MOTO_PYTHON") {
        return p.into();
    }
    let venv = crate::common::workspace().join(".venv/bin/python");
    assert!(
        venv.is_file(),
        "{} is missing: `cargo xtask test` creates it (python3 -m venv .venv && .venv/bin/pip install 'moto[server]'), or set AWS_ENDPOINT_URL",
        venv.display()
    );
    venv
}

/// A moto server of its own, for a test whose steady stream would slow the
/// shared one down for every other test.
pub fn private_endpoint() -> String {
    if let Ok(url) = std::env::var("AWS_ENDPOINT_URL") {
        return url;
    }
    start_moto()
}

fn start_moto() -> String {
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    // The server exits when this test process does (its parent changes).
    let script = format!(
        "import os, sys, threading, time\n\
         parent = os.getppid()\n\
         def watch():\n    while os.getppid() == parent: time.sleep(0.5)\n    os._exit(0)\n\
         threading.Thread(target=watch, daemon=True).start()\n\
         from moto.server import main\n\
         sys.argv = ['moto_server', '-H', '127.0.0.1', '-p', '{port}']\n\
         main()\n"
    );
    std::process::Command::new(python())
        .args(["-c", &script])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("moto server starts");
    let start = Instant::now();
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(start.elapsed() < Duration::from_secs(30), "moto server did not start on port {port}");
        std::thread::sleep(Duration::from_millis(100));
    }
    format!("http://127.0.0.1:{port}")
}

/// An SQS client for the test endpoint.
pub async fn sqs() -> aws_sdk_sqs::Client {
    sqs_at(endpoint()).await
}

pub async fn sqs_at(endpoint: &str) -> aws_sdk_sqs::Client {
    aws_sdk_sqs::Client::new(&aws_at(endpoint).await)
}

/// The AWS configuration of the tests, for `endpoint`.
pub async fn aws_at(endpoint: &str) -> aws_config::SdkConfig {
    aws_config::defaults(aws_config::BehaviorVersion::latest())
        .endpoint_url(endpoint)
        .region(aws_config::Region::new("us-east-1"))
        .credentials_provider(aws_sdk_sqs::config::Credentials::new("test", "test", None, None, "tests"))
        .load()
        .await
}

/// A unique name for this test's queue, schema and pipeline.
pub fn unique(prefix: &str) -> String {
    use std::sync::atomic::{AtomicU32, Ordering};
    static N: AtomicU32 = AtomicU32::new(0);
    let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().subsec_nanos();
    format!("{prefix}_{}_{}_{}", std::process::id(), N.fetch_add(1, Ordering::SeqCst), nanos % 100_000)
}

/// `DATABASE_URL` with database `name` instead of its own.
#[allow(dead_code)] // the other test binaries that share this file make no databases
pub fn database_url_of(name: &str) -> String {
    let url = database_url();
    let (base, query) = url.split_once('?').map_or((url.as_str(), ""), |(b, q)| (b, q));
    let base = base.rsplit_once('/').expect("DATABASE_URL is a URL with a database").0;
    if query.is_empty() { format!("{base}/{name}") } else { format!("{base}/{name}?{query}") }
}

pub async fn pg() -> tokio_postgres::Client {
    let (client, conn) =
        tokio_postgres::connect(&database_url(), tokio_postgres::NoTls).await.expect("PostgreSQL at DATABASE_URL");
    tokio::spawn(conn);
    client
}

/// Applies the host's migrations once per test binary, and makes the
/// example pipelines' tables (`pipelines/tables.sql`), which tests copy
/// (`CREATE TABLE ... (LIKE public.user_logins)`).
pub async fn migrated() {
    static DONE: tokio::sync::OnceCell<()> = tokio::sync::OnceCell::const_new();
    DONE.get_or_init(|| async {
        host::migrate::run(&database_url()).await.expect("migrations apply");
        pg().await.batch_execute(TABLES).await.expect("pipelines/tables.sql applies");
    })
    .await;
}

/// The example pipelines' tables.
pub const TABLES: &str = include_str!("../../pipelines/tables.sql");

/// Creates a queue; returns its URL.
pub async fn queue(client: &aws_sdk_sqs::Client, name: &str) -> String {
    client.create_queue().queue_name(name).send().await.unwrap().queue_url().unwrap().to_string()
}

pub async fn send(client: &aws_sdk_sqs::Client, url: &str, bodies: &[String]) {
    for chunk in bodies.chunks(10) {
        let entries = chunk
            .iter()
            .enumerate()
            .map(|(i, b)| {
                aws_sdk_sqs::types::SendMessageBatchRequestEntry::builder()
                    .id(i.to_string())
                    .message_body(b)
                    .build()
                    .unwrap()
            })
            .collect();
        let out = client.send_message_batch().queue_url(url).set_entries(Some(entries)).send().await.unwrap();
        assert!(out.failed().is_empty());
    }
}

/// Messages visible plus in flight.
pub async fn queue_depth(client: &aws_sdk_sqs::Client, url: &str) -> usize {
    use aws_sdk_sqs::types::QueueAttributeName as A;
    let out = client
        .get_queue_attributes()
        .queue_url(url)
        .attribute_names(A::ApproximateNumberOfMessages)
        .attribute_names(A::ApproximateNumberOfMessagesNotVisible)
        .send()
        .await
        .unwrap();
    let attrs = out.attributes().unwrap();
    let n = |a: A| attrs.get(&a).and_then(|v| v.parse::<usize>().ok()).unwrap_or(0);
    n(A::ApproximateNumberOfMessages) + n(A::ApproximateNumberOfMessagesNotVisible)
}

/// Messages received and not yet deleted or visible again.
pub async fn in_flight(client: &aws_sdk_sqs::Client, url: &str) -> usize {
    use aws_sdk_sqs::types::QueueAttributeName as A;
    let out = client
        .get_queue_attributes()
        .queue_url(url)
        .attribute_names(A::ApproximateNumberOfMessagesNotVisible)
        .send()
        .await
        .unwrap();
    out.attributes().and_then(|a| a.get(&A::ApproximateNumberOfMessagesNotVisible)?.parse().ok()).unwrap_or(0)
}

/// An S3 client for `endpoint` (path-style, as local endpoints serve).
pub async fn s3_at(endpoint: &str) -> aws_sdk_s3::Client {
    host::aws::s3_client(&aws_at(endpoint).await)
}

/// Creates a bucket whose object-created events go to queue `queue`.
pub async fn bucket_notifying(s3: &aws_sdk_s3::Client, bucket: &str, queue: &str) {
    use aws_sdk_s3::types::{Event, NotificationConfiguration, QueueConfiguration};
    s3.create_bucket().bucket(bucket).send().await.unwrap();
    let config = QueueConfiguration::builder()
        .queue_arn(format!("arn:aws:sqs:us-east-1:123456789012:{queue}"))
        .events(Event::from("s3:ObjectCreated:*"))
        .build()
        .unwrap();
    s3.put_bucket_notification_configuration()
        .bucket(bucket)
        .notification_configuration(NotificationConfiguration::builder().queue_configurations(config).build())
        .send()
        .await
        .unwrap();
}

pub async fn put(s3: &aws_sdk_s3::Client, bucket: &str, key: &str, body: impl Into<Vec<u8>>) {
    let body = aws_sdk_s3::primitives::ByteStream::from(body.into());
    s3.put_object().bucket(bucket).key(key).body(body).send().await.unwrap();
}

/// Time of one plain `COPY table FROM STDIN` of `text` (COPY text format).
#[allow(dead_code)] // the benches time their baselines with it
pub async fn timed_copy(db: &tokio_postgres::Client, table: &str, text: Vec<u8>) -> Duration {
    use futures_util::SinkExt;
    let start = Instant::now();
    let copy = db.copy_in(&format!("COPY {table} FROM STDIN")).await.unwrap();
    futures_util::pin_mut!(copy);
    copy.send(bytes::Bytes::from(text)).await.unwrap();
    copy.finish().await.unwrap();
    start.elapsed()
}

/// CPU seconds of the local PostgreSQL server's processes (`postgres` in
/// `/proc`), sampled until stopped: backends exit with their client, so
/// each process's last reading counts.
#[allow(dead_code, reason = "used by the benchmarks, which include this file")]
pub struct ServerCpu {
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    sampler: std::thread::JoinHandle<f64>,
}

#[allow(dead_code, reason = "used by the benchmarks, which include this file")]
impl ServerCpu {
    pub fn start() -> ServerCpu {
        use std::collections::HashMap;
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let flag = stop.clone();
        let sampler = std::thread::spawn(move || {
            let read = || -> HashMap<u32, f64> {
                let mut cpu = HashMap::new();
                for entry in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
                    let Ok(pid) = entry.file_name().to_string_lossy().parse::<u32>() else { continue };
                    let Ok(stat) = std::fs::read_to_string(entry.path().join("stat")) else { continue };
                    if stat.contains("(postgres)") {
                        cpu.insert(pid, stat_cpu_s(&stat).0);
                    }
                }
                cpu
            };
            let first = read();
            let mut last = first.clone();
            while !flag.load(std::sync::atomic::Ordering::Relaxed) {
                std::thread::sleep(Duration::from_millis(20));
                last.extend(read());
            }
            last.extend(read());
            last.iter().map(|(pid, s)| s - first.get(pid).copied().unwrap_or(0.0)).sum()
        });
        ServerCpu { stop, sampler }
    }

    pub fn stop(self) -> f64 {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        self.sampler.join().unwrap()
    }
}

/// `psql \copy` of the COPY text `file` into `table` (the fastest plain
/// load here): its time and CPU seconds; the file is removed.
#[allow(dead_code, reason = "used by the benchmarks, which include this file")]
pub fn psql_copy(table: &str, file: &std::path::Path) -> (Duration, f64) {
    let cpu_before = own_cpu_s().1;
    let start = Instant::now();
    let out = std::process::Command::new("psql")
        .arg(database_url())
        .args(["-X", "-q", "-v", "ON_ERROR_STOP=1", "-c"])
        .arg(format!("\\copy {table} FROM '{}'", file.display()))
        .output()
        .expect("psql (PostgreSQL's client) on PATH");
    let elapsed = start.elapsed();
    assert!(out.status.success(), "psql: {}", String::from_utf8_lossy(&out.stderr));
    std::fs::remove_file(file).ok();
    (elapsed, own_cpu_s().1 - cpu_before)
}

/// A table's rows as COPY text.
#[allow(dead_code, reason = "used by the benchmarks, which include this file")]
pub async fn copy_out(db: &tokio_postgres::Client, table: &str) -> Vec<u8> {
    use futures_util::TryStreamExt;
    let out = db.copy_out(&format!("COPY {table} TO STDOUT")).await.unwrap();
    futures_util::pin_mut!(out);
    let mut all = Vec::new();
    while let Some(chunk) = out.try_next().await.unwrap() {
        all.extend_from_slice(&chunk);
    }
    all
}
