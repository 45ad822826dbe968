//! How the real `host run` ends when things go wrong (issue 23): `--once`
//! on a queue it cannot read, a stop that an idle admin connection must
//! not hold up, and a second signal during a stop. And the exit status
//! every command keeps to (README, "Exit codes"): 0 done, 1 part of the
//! work failed, 2 an error, 130 a second signal.

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
    assert_eq!(status.code(), Some(130), "{status}: {out}\n{log}");
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

/// The built `host` run with `args` in the workspace, finding the test
/// plugins through the environment (not every command takes
/// `--plugin-path`), with `DATABASE_URL` pointing where nothing answers:
/// its exit code and stderr.
fn host(args: &[&str]) -> (Option<i32>, String) {
    let out = std::process::Command::new(crate::objects::host_binary())
        .current_dir(crate::common::workspace())
        .args(args)
        .env("HOST_PLUGIN_PATH", crate::common::PLUGIN_DIR)
        .env("HOST_CACHE_DIR", crate::common::cache_dir())
        .env("DATABASE_URL", "postgres://nobody@127.0.0.1:1/none?connect_timeout=2")
        .env("AWS_ENDPOINT_URL", "http://127.0.0.1:1")
        .env_remove("HOST_ADMIN_ADDR")
        .output()
        .unwrap();
    (out.status.code(), String::from_utf8_lossy(&out.stderr).into_owned())
}

/// The logins pipeline in a folder of its own, one test case expecting
/// what it does not get.
fn with_a_failing_case() -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(unique("failcase"));
    std::fs::create_dir_all(&dir).unwrap();
    let text = std::fs::read_to_string(crate::common::workspace().join("pipelines/logins.toml")).unwrap();
    let wrong = text.replace("reject = \"`app_version` is not a version\"", "reject = \"something else\"");
    assert_ne!(wrong, text);
    let file = dir.join("logins.toml");
    std::fs::write(&file, wrong).unwrap();
    file
}

#[test]
fn exit_0_when_all_went_well() {
    for args in
        [&["check", "pipelines/logins.toml"][..], &["test", "pipelines/logins.toml"], &["--help"], &["run", "--help"]]
    {
        let (code, stderr) = host(args);
        assert_eq!(code, Some(0), "host {args:?}: {stderr}");
    }
}

#[test]
fn exit_1_when_a_test_case_fails() {
    let file = with_a_failing_case();
    let file = file.to_str().unwrap();
    for args in [&["test", file][..], &["check", file], &["check", "pipelines/logins.toml", file]] {
        let (code, stderr) = host(args);
        assert_eq!(code, Some(1), "host {args:?}: {stderr}");
    }
    let (_, stderr) = host(&["check", file]);
    assert!(stderr.contains("test case `a malformed version is rejected` fails"), "{stderr}");
    // An invalid pipeline beside it: the worse status wins.
    let (code, stderr) = host(&["check", file, "tests/ui/unknown-top-key.toml"]);
    assert_eq!(code, Some(2), "{stderr}");
}

/// Every command that takes a pipeline file says what is wrong with it and
/// exits 2, whether it would reach a database and AWS or not.
#[test]
fn exit_2_from_every_command_on_a_pipeline_file_that_is_not_valid() {
    let bad = "tests/ui/unknown-top-key.toml";
    let input = "tests/data/fetch_login_queue_bodies.jsonl";
    for args in [
        &["check", bad][..],
        &["test", bad],
        &["test", bad, "--input", input],
        &["run", bad],
        &["run", "--once", bad],
        &["backfill", bad],
        &["migrate", bad],
        &["dead-letters", "list", bad],
        &["dead-letters", "replay", bad],
        &["lineage", bad],
    ] {
        let (code, stderr) = host(args);
        assert_eq!(code, Some(2), "host {args:?}: {stderr}");
        assert!(stderr.contains(&format!("{bad}:2:1: unknown field `nmae`")), "host {args:?}: {stderr}");
    }
}

#[test]
fn exit_2_on_bad_usage_and_missing_settings() {
    let empty = std::env::temp_dir().join(unique("nopipelines"));
    std::fs::create_dir_all(&empty).unwrap();
    let untested = std::env::temp_dir().join(format!("{}.toml", unique("untested")));
    std::fs::write(&untested, "[[transforms]]\nuses = \"flatten\"\n").unwrap();
    let (empty, untested) = (empty.to_str().unwrap(), untested.to_str().unwrap());
    for (args, says) in [
        (&[][..], "Usage: host"),
        (&["frobnicate"][..], "unrecognized subcommand"),
        (&["run"][..], "the following required arguments were not provided"),
        (&["check", "--frobnicate", "pipelines/logins.toml"][..], "unexpected argument '--frobnicate'"),
        // Flags only where they mean something.
        (&["migrate", "--plugin-path", "x", "pipelines/logins.toml"][..], "unexpected argument '--plugin-path'"),
        (&["plugins", "new", "x", "--log-format", "json"][..], "unexpected argument '--log-format'"),
        (&["check", empty][..], "no pipeline files (*.toml) in this folder"),
        (&["test", untested][..], "has no [[tests]]; give --input FILE"),
        (
            &["test", "pipelines/logins.toml", "--input", "tests/data/no-such-file"][..],
            "cannot open tests/data/no-such-file",
        ),
    ] {
        let (code, stderr) = host(args);
        assert_eq!(code, Some(2), "host {args:?}: {stderr}");
        assert!(stderr.contains(says), "host {args:?}: {stderr}");
    }
    let out = std::process::Command::new(crate::objects::host_binary())
        .args(["migrate", "pipelines/logins.toml"])
        .current_dir(crate::common::workspace())
        .env_remove("DATABASE_URL")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(String::from_utf8_lossy(&out.stderr).contains("DATABASE_URL is not set"));
}

/// `host check` takes folders as `host run` does: each `*.toml` in it, in
/// name order.
#[test]
fn check_takes_a_folder_of_pipelines() {
    let dir = std::env::temp_dir().join(unique("checkdir"));
    std::fs::create_dir_all(&dir).unwrap();
    let logins = std::fs::read_to_string(crate::common::workspace().join("pipelines/logins.toml")).unwrap();
    for name in ["b.toml", "a.toml"] {
        std::fs::write(dir.join(name), &logins).unwrap();
    }
    std::fs::write(dir.join("notes.txt"), "not a pipeline").unwrap();
    let out = std::process::Command::new(crate::objects::host_binary())
        .args(["check", "--plugin-path", crate::common::PLUGIN_DIR, "--cache-dir"])
        .arg(crate::common::cache_dir())
        .arg(&dir)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{stdout}{}", String::from_utf8_lossy(&out.stderr));
    let checked: Vec<&str> = stdout.lines().map(|l| l.split(" (").next().unwrap()).collect();
    let (a, b) = (dir.join("a.toml"), dir.join("b.toml"));
    assert_eq!(checked, [format!("ok: {}", a.display()), format!("ok: {}", b.display())]);
    let _ = std::fs::remove_dir_all(&dir);
}
