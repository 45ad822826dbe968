//! How the real `host run` ends when things go wrong (issue 23): `--once`
//! on a queue it cannot read, a stop that an idle admin connection must
//! not hold up, and a second signal during a stop.

use crate::faults::{Host, authority, good_bodies, pipeline_file};
use crate::proxy::{Mode, Proxy};
use crate::run::schema_with_user_logins;
use crate::services::{self, queue, send, unique};
use std::time::{Duration, Instant};
use tokio::io::AsyncWriteExt;

/// The logins pipeline named `name` reading the queue at `url`.
fn reading(name: &str, schema: &str, url: &str) -> std::path::PathBuf {
    let file = pipeline_file(name, schema, "wait_time_s = 1");
    let text =
        std::fs::read_to_string(&file).unwrap().replace(&format!("queue = \"{name}\""), &format!("queue = \"{url}\""));
    std::fs::write(&file, text).unwrap();
    file
}

/// `host run --once` on `file`; its status, stdout and log.
async fn once(file: &std::path::Path, endpoint: &str) -> (std::process::ExitStatus, String, String) {
    let mut host = Host::run(file, true, &services::database_url(), endpoint);
    let (status, out) =
        host.wait(Duration::from_secs(90)).await.unwrap_or_else(|| panic!("--once ends: {}", host.log()));
    (status, out, host.log())
}

#[tokio::test(flavor = "multi_thread")]
async fn once_exits_non_zero_when_its_queue_cannot_be_read() {
    let (name, schema) = (unique("unread"), unique("s"));
    schema_with_user_logins(&schema).await;
    let endpoint = services::endpoint();
    // A queue that does not exist.
    let missing = format!("{endpoint}/123456789012/{name}");
    let (status, out, log) = once(&reading(&name, &schema, &missing), endpoint).await;
    // A configuration error, as it would have been at the start: not
    // retried as if it were transient.
    assert_eq!(status.code(), Some(2), "a queue that does not exist: {status}\n{out}\n{log}");
    assert!(
        log.contains("ReceiveMessage: AWS.SimpleQueueService.NonExistentQueue")
            || log.contains("ReceiveMessage: QueueDoesNotExist"),
        "{log}"
    );
    // A queue with messages on it, behind an endpoint that refuses.
    let sqs = services::sqs().await;
    let url = queue(&sqs, &name).await;
    send(&sqs, &url, &good_bodies(3)).await;
    let proxy = Proxy::start(&authority(endpoint)).await;
    proxy.set(Mode::Refuse);
    let through = proxy.url(endpoint, &authority(endpoint));
    let file = reading(&name, &schema, &proxy.url(&url, &authority(endpoint)));
    let (status, out, log) = once(&file, &through).await;
    assert!(!status.success(), "an endpoint that refuses: {status}\n{out}\n{log}");
    assert!(log.contains("could not be read"), "{log}");
    assert_eq!(services::queue_depth(&sqs, &url).await, 3, "nothing was taken");
}

/// A port free now on loopback.
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// A connection to the admin endpoint that sent half of a request and
/// waits: a slow client (or one that stalled).
async fn idle_connection(port: u16) -> tokio::net::TcpStream {
    let mut stream = tokio::net::TcpStream::connect(("127.0.0.1", port)).await.unwrap();
    stream.write_all(format!("GET /healthz HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n").as_bytes()).await.unwrap();
    stream
}

/// A running `host run --admin` with an idle connection to its endpoint.
async fn running_with_an_idle_admin_connection(prefix: &str) -> (Host, tokio::net::TcpStream) {
    let (name, schema) = (unique(prefix), unique("s"));
    schema_with_user_logins(&schema).await;
    let sqs = services::sqs().await;
    queue(&sqs, &name).await;
    let file = pipeline_file(&name, &schema, "wait_time_s = 1");
    let port = free_port();
    let admin = format!("127.0.0.1:{port}");
    let host = Host::run_all(&[&file], &["--admin", &admin], &[], &services::database_url(), services::endpoint());
    let start = Instant::now();
    while tokio::net::TcpStream::connect(("127.0.0.1", port)).await.is_err() {
        assert!(start.elapsed() < Duration::from_secs(60), "the admin endpoint listens: {}", host.log());
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let idle = idle_connection(port).await;
    (host, idle)
}

#[tokio::test(flavor = "multi_thread")]
async fn an_idle_admin_connection_does_not_hold_up_the_stop() {
    let (mut host, _idle) = running_with_an_idle_admin_connection("idleadm").await;
    let stopping = Instant::now();
    host.term();
    let ended = host.wait(Duration::from_secs(40)).await;
    let took = stopping.elapsed();
    let (status, out) = ended.unwrap_or_else(|| panic!("not ended 40 s after SIGTERM: {}", host.log()));
    assert!(took < Duration::from_secs(12), "SIGTERM took {took:?}:\n{}", host.log());
    assert!(status.success(), "{status}: {out}\n{}", host.log());
}

#[tokio::test(flavor = "multi_thread")]
async fn a_second_sigint_ends_a_stop_at_once() {
    let (mut host, _idle) = running_with_an_idle_admin_connection("twice").await;
    host.signal("INT");
    tokio::time::sleep(Duration::from_millis(500)).await;
    let second = Instant::now();
    host.signal("INT");
    let ended = host.wait(Duration::from_secs(40)).await;
    let took = second.elapsed();
    let (status, out) = ended.unwrap_or_else(|| panic!("not ended 40 s after two SIGINTs: {}", host.log()));
    let log = host.log();
    assert!(took < Duration::from_secs(2), "the second SIGINT took {took:?}:\n{log}");
    assert!(!status.success(), "{status}: {out}\n{log}");
    assert!(log.contains("visibility timeout"), "says what was abandoned: {log}");
}

/// `--once` with the database refused fails at once, saying why, rather
/// than saying it waits for the database and then failing its units one
/// by one; nothing is taken from the queue.
#[tokio::test(flavor = "multi_thread")]
async fn once_fails_at_once_when_the_database_does_not_answer() {
    let (name, schema) = (unique("oncedb"), unique("s"));
    schema_with_user_logins(&schema).await;
    let sqs = services::sqs().await;
    let url = queue(&sqs, &name).await;
    send(&sqs, &url, &good_bodies(2)).await;
    let db = services::database_url();
    let proxy = Proxy::start(&authority(&db)).await;
    proxy.set(Mode::Refuse);
    let file = pipeline_file(&name, &schema, "wait_time_s = 1");
    let mut host = Host::run(&file, true, &proxy.url(&db, &authority(&db)), services::endpoint());
    let (status, out) =
        host.wait(Duration::from_secs(60)).await.unwrap_or_else(|| panic!("--once ends: {}", host.log()));
    let log = host.log();
    assert_eq!(status.code(), Some(2), "{out}\n{log}");
    assert!(!log.contains("waits for it") && !log.contains("tried again later"), "{log}");
    assert!(log.contains("error: "), "{log}");
    assert_eq!(services::queue_depth(&sqs, &url).await, 2, "nothing was taken");
}
