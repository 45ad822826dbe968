//! Faults between the happy path and a crash, through the real `host`
//! binary (issue 12): a backlog at SIGTERM, PostgreSQL unreachable, the AWS
//! endpoint unreachable and then slow, each behind a [`Proxy`]. Every test
//! ends with each message loaded exactly once and no new dead letters.

use crate::common;
use crate::proxy::{Mode, Proxy};
use crate::run::{count, fetch_bodies, schema_with_user_logins};
use crate::services::{self, in_flight, pg, queue, send, unique};
use std::path::PathBuf;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

/// `n` login bodies that each make one row.
pub(crate) fn good_bodies(n: usize) -> Vec<String> {
    let good = &fetch_bodies()[1..6];
    (0..n).map(|i| good[i % good.len()].clone()).collect()
}

/// The shipped logins pipeline, named `name`, into `schema`, with more
/// `[source.sqs]` settings.
pub(crate) fn pipeline_file(name: &str, schema: &str, sqs: &str) -> PathBuf {
    let text = std::fs::read_to_string(common::workspace().join("pipelines/logins.toml"))
        .unwrap()
        .replace("name = \"logins\"", &format!("name = \"{name}\""))
        .replace("table = \"user_logins\"", &format!("table = \"user_logins\"\nschema = \"{schema}\""))
        .replace("queue = \"${LOGIN_QUEUE:-login-queue}\"", &format!("queue = \"{name}\"\n{sqs}"));
    let file = std::env::temp_dir().join(format!("{name}.toml"));
    std::fs::write(&file, text).unwrap();
    file
}

/// `host:port` of a `scheme://[user@]host:port/...` URL.
pub(crate) fn authority(url: &str) -> String {
    let rest = url.split_once("://").map_or(url, |(_, r)| r);
    let rest = rest.rsplit_once('@').map_or(rest, |(_, r)| r);
    rest.split(['/', '?']).next().unwrap().to_string()
}

/// A `host run` process; its log goes to a file, shown when a test fails.
pub(crate) struct Host {
    child: Child,
    log: PathBuf,
}

impl Host {
    pub(crate) fn run(file: &std::path::Path, once: bool, database_url: &str, endpoint: &str) -> Host {
        let args: &[&str] = if once { &["--once"] } else { &[] };
        Host::run_all(&[file], args, &[], database_url, endpoint)
    }

    /// `host run FILES ARGS` with more environment `envs`.
    pub(crate) fn run_all(
        files: &[&std::path::Path],
        args: &[&str],
        envs: &[(&str, &str)],
        database_url: &str,
        endpoint: &str,
    ) -> Host {
        Host::run_under(&[], files, args, envs, database_url, endpoint)
    }

    /// [`Host::run_all`] as the last arguments of the command `wrapper`
    /// (`unshare ...`), if any.
    pub(crate) fn run_under(
        wrapper: &[&str],
        files: &[&std::path::Path],
        args: &[&str],
        envs: &[(&str, &str)],
        database_url: &str,
        endpoint: &str,
    ) -> Host {
        // A log of each host's own: hosts of one test run the same files.
        static HOSTS: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
        let n = HOSTS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let log = files[0].with_extension(format!("{}.{n}.log", std::process::id()));
        let host = crate::objects::host_binary();
        let mut cmd = match wrapper.split_first() {
            Some((program, rest)) => {
                let mut c = Command::new(program);
                c.args(rest).arg(host);
                c
            }
            None => Command::new(host),
        };
        cmd.arg("run").args(["--plugin-path", common::PLUGIN_DIR, "--cache-dir"]).arg(common::cache_dir());
        cmd.args(files).args(args).envs(envs.iter().copied());
        let child = cmd
            .env("AWS_ENDPOINT_URL", endpoint)
            .env("AWS_REGION", "us-east-1")
            .env("AWS_ACCESS_KEY_ID", "test")
            .env("AWS_SECRET_ACCESS_KEY", "test")
            .env("DATABASE_URL", database_url)
            .stdout(Stdio::piped())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .unwrap();
        Host { child, log }
    }

    pub(crate) fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// The process's id (a wrapper's, under one).
    pub(crate) fn pid(&self) -> u32 {
        self.child.id()
    }

    pub(crate) fn term(&self) {
        self.signal("TERM");
    }

    /// Sends signal `name` (`TERM`, `INT`).
    pub(crate) fn signal(&self, name: &str) {
        Command::new("kill").args([&format!("-{name}"), &self.child.id().to_string()]).status().unwrap();
    }

    /// Waits for the process to end, up to `limit`; its status and output.
    pub(crate) async fn wait(&mut self, limit: Duration) -> Option<(ExitStatus, String)> {
        let start = Instant::now();
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                let mut out = String::new();
                use std::io::Read;
                self.child.stdout.take().unwrap().read_to_string(&mut out).unwrap();
                return Some((status, out));
            }
            if start.elapsed() > limit {
                return None;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

impl Drop for Host {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

async fn rows(schema: &str) -> i64 {
    count(&format!("SELECT count(*) FROM {schema}.user_logins")).await
}

async fn dead_letters(pipeline: &str) -> i64 {
    count(&format!("SELECT count(*) FROM etl.dead_letters WHERE pipeline = '{pipeline}'")).await
}

/// Polls `rows` until it reaches `want` or `limit` passes; the last count.
pub(crate) async fn rows_reach(schema: &str, want: i64, limit: Duration) -> i64 {
    let start = Instant::now();
    loop {
        let n = rows(schema).await;
        if n >= want || start.elapsed() > limit {
            return n;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// Sends `n` good messages, `per_second` a second, from a task.
fn feed(sqs: aws_sdk_sqs::Client, url: String, n: usize, per_second: usize) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let bodies = good_bodies(n);
        for chunk in bodies.chunks(per_second) {
            let tick = Instant::now();
            send(&sqs, &url, chunk).await;
            tokio::time::sleep(Duration::from_secs(1).saturating_sub(tick.elapsed())).await;
        }
    })
}

/// After a fault: waits for `n` rows, stops the host, and checks that it
/// ended well, loaded each message exactly once, made no dead letter and
/// left the queue empty. Returns the host's log.
async fn ends_with_every_message_once(
    mut host: Host,
    schema: &str,
    name: &str,
    n: usize,
    (sqs, url): (&aws_sdk_sqs::Client, &str),
) -> String {
    let loaded = rows_reach(schema, n as i64, Duration::from_secs(180)).await;
    host.term();
    let (status, out) = host.wait(Duration::from_secs(30)).await.expect("the host ends");
    let log = host.log();
    assert!(status.success(), "{status}: {out}\n{log}");
    assert_eq!((loaded, rows(schema).await), (n as i64, n as i64), "every message exactly once:\n{out}\n{log}");
    assert_eq!(dead_letters(name).await, 0, "{out}");
    assert_eq!(services::queue_depth(sqs, url).await, 0);
    log
}

#[tokio::test(flavor = "multi_thread")]
async fn sigterm_with_a_backlog_ends_in_seconds_and_a_later_run_loads_the_rest_once() {
    // Commits wait behind a lock this test holds, so workers stay busy,
    // the batcher waits for one and the receivers for room: the state in
    // which SIGTERM used to hang.
    let (name, schema) = (unique("backlog"), unique("s"));
    schema_with_user_logins(&schema).await;
    let endpoint = services::private_endpoint();
    let sqs = services::sqs_at(&endpoint).await;
    let url = queue(&sqs, &name).await;
    let n = 2000;
    send(&sqs, &url, &good_bodies(n)).await;
    let locker = pg().await;
    locker.batch_execute(&format!("BEGIN; LOCK TABLE {schema}.user_logins IN ACCESS EXCLUSIVE MODE")).await.unwrap();
    let file = pipeline_file(&name, &schema, "visibility_timeout_s = 30");
    // A drain of 8 s: units in work get 6.4 s, then are abandoned.
    let drain = [("HOST_DRAIN_S", "8")];
    let mut host = Host::run_all(&[&file], &[], &drain, &services::database_url(), &endpoint);
    let start = Instant::now();
    while in_flight(&sqs, &url).await < 40 {
        assert!(start.elapsed() < Duration::from_secs(60), "the host received nothing: {}", host.log());
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // Long enough for every channel on the way to fill.
    tokio::time::sleep(Duration::from_secs(5)).await;
    let held = in_flight(&sqs, &url).await;
    let stopping = Instant::now();
    host.term();
    let ended = host.wait(Duration::from_secs(60)).await;
    let took = stopping.elapsed();
    let (status, out) = ended.unwrap_or_else(|| panic!("SIGTERM did not end the host in 60 s: {}", host.log()));
    assert!(took < Duration::from_secs(9), "SIGTERM took {took:?} to end the host (HOST_DRAIN_S=8):\n{}", host.log());
    assert!(status.success(), "{status}: {out}\n{}", host.log());
    locker.batch_execute("ROLLBACK").await.unwrap();
    assert_eq!(rows(&schema).await, 0, "nothing committed behind the lock");
    // All it held was released, not left invisible for 30 s. (Before the
    // drain of issue 28, 20 of about 80 stayed invisible in two runs of
    // some twenty: the abandoned units' holds were dropped only after the
    // run's last release.)
    let still = in_flight(&sqs, &url).await;
    assert_eq!(still, 0, "{still} of {held} messages still invisible after the stop:\n{}", host.log());
    // Later runs load the rest, each message once; one more run after the
    // visibility timeout takes what was not released.
    let mut outs = Vec::new();
    for round in 0..2 {
        if round == 1 {
            if rows(&schema).await == n as i64 {
                break;
            }
            tokio::time::sleep(Duration::from_secs(31)).await;
        }
        let mut again = Host::run(&file, true, &services::database_url(), &endpoint);
        let (status, out) = again.wait(Duration::from_secs(600)).await.expect("the --once run ends");
        assert!(status.success(), "{status}: {out}\n{}", again.log());
        outs.push(out);
    }
    let out = outs.join("\n");
    assert_eq!(rows(&schema).await, n as i64, "every message once: {out}");
    assert_eq!(dead_letters(&name).await, 0);
    assert_eq!(services::queue_depth(&sqs, &url).await, 0);
    eprintln!("backlog: {held} messages held at SIGTERM, ended in {took:?}");
}

/// Settings users pick for a fast retry: short visibility, few receives.
const EAGER: &str = "visibility_timeout_s = 5\nmax_receives = 3\nwait_time_s = 2";

#[tokio::test(flavor = "multi_thread")]
async fn postgres_unreachable_for_30_s_loads_every_message_once_and_dead_letters_none() {
    let (name, schema) = (unique("pgdown"), unique("s"));
    schema_with_user_logins(&schema).await;
    let database = services::database_url();
    let proxy = Proxy::start(&authority(&database)).await;
    let endpoint = services::private_endpoint();
    let sqs = services::sqs_at(&endpoint).await;
    let url = queue(&sqs, &name).await;
    let file = pipeline_file(&name, &schema, EAGER);
    let host = Host::run(&file, false, &proxy.url(&database, &authority(&database)), &endpoint);
    let (n, per_second) = (600, 10);
    let feeder = feed(sqs.clone(), url.clone(), n, per_second);
    tokio::time::sleep(Duration::from_secs(10)).await;
    assert!(rows(&schema).await > 0, "loading before the outage: {}", host.log());
    proxy.set(Mode::Refuse);
    tokio::time::sleep(Duration::from_secs(30)).await;
    proxy.set(Mode::Pass);
    feeder.await.unwrap();
    let log = ends_with_every_message_once(host, &schema, &name, n, (&sqs, &url)).await;
    assert!(log.contains("receiving paused"), "{log}");
}

#[tokio::test(flavor = "multi_thread")]
async fn the_endpoint_unreachable_for_30_s_then_slow_loads_every_message_once() {
    let (name, schema) = (unique("awsdown"), unique("s"));
    schema_with_user_logins(&schema).await;
    let endpoint = services::private_endpoint();
    let proxy = Proxy::start(&authority(&endpoint)).await;
    let sqs = services::sqs_at(&endpoint).await;
    let url = queue(&sqs, &name).await;
    let file = pipeline_file(&name, &schema, EAGER);
    let host = Host::run(&file, false, &services::database_url(), &proxy.url(&endpoint, &authority(&endpoint)));
    let (n, per_second) = (700, 10);
    let feeder = feed(sqs.clone(), url.clone(), n, per_second);
    tokio::time::sleep(Duration::from_secs(10)).await;
    assert!(rows(&schema).await > 0, "loading before the outage: {}", host.log());
    proxy.set(Mode::Refuse);
    tokio::time::sleep(Duration::from_secs(30)).await;
    // Each answer 2 s late.
    proxy.set(Mode::Delay(Duration::from_secs(2)));
    tokio::time::sleep(Duration::from_secs(30)).await;
    proxy.set(Mode::Pass);
    feeder.await.unwrap();
    ends_with_every_message_once(host, &schema, &name, n, (&sqs, &url)).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn an_object_whose_connection_is_cut_mid_body_is_loaded_completely_once_afterwards() {
    let n = 60_000;
    let o = crate::objects::big_object_with(n, "rows_per_commit = 5000").await;
    let proxy = Proxy::start(&authority(&o.endpoint)).await;
    let through = proxy.url(&o.endpoint, &authority(&o.endpoint));
    // The object is about 10 MB: its connection is cut a third of the way.
    proxy.set(Mode::CutAfter(o.bytes as u64 / 3));
    let first = crate::objects::backfill_command(&o).env("AWS_ENDPOINT_URL", &through).output().unwrap();
    let first_err = String::from_utf8_lossy(&first.stderr);
    assert_eq!(proxy.mode(), Mode::Pass, "the proxy cut the object's connection: {first_err}");
    let part = count(&format!("SELECT count(*) FROM {}.user_logins", o.schema)).await;
    assert!(part < n as i64, "a cut body is not a complete object: {part} rows\n{first_err}");
    let second = crate::objects::backfill_command(&o).env("AWS_ENDPOINT_URL", &through).output().unwrap();
    let second_out = String::from_utf8_lossy(&second.stdout);
    assert!(second.status.success(), "{second_out}\n{}", String::from_utf8_lossy(&second.stderr));
    let table = format!("{}.user_logins", o.schema);
    let (all, distinct) = (
        count(&format!("SELECT count(*) FROM {table}")).await,
        count(&format!("SELECT count(DISTINCT user_id) FROM {table}")).await,
    );
    assert_eq!((all, distinct), (n as i64, n as i64), "every row once: {part} after the cut\n{second_out}");
}
