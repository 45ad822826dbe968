//! The drain for scale-in (issue 28), through the real `host` binary: on
//! SIGTERM readiness fails first, receiving stops, batches in work get the
//! drain's grace (`HOST_DRAIN_S`), what they still hold then is made
//! visible at once (not after its visibility timeout), and the process
//! ends within the bound; a later run loads every message once. The
//! database is held still by taking the pipeline's ledger lock from the
//! test, as a commit that cannot finish would.

use crate::admin::{free_port, http};
use crate::faults::{Host, good_bodies, pipeline_file};
use crate::run::{count, schema_with_user_logins};
use crate::services::{self, in_flight, pg, queue, queue_depth, send, unique};
use std::time::{Duration, Instant};

/// The value of metric `name` whose labels include every one of `labels`
/// (`key="value"`) in a Prometheus text page.
fn metric(page: &str, name: &str, labels: &[&str]) -> Option<f64> {
    page.lines()
        .filter(|l| l.starts_with(&format!("{name}{{")) || l.starts_with(&format!("{name} ")))
        .find(|l| labels.iter().all(|want| l.contains(want)))
        .and_then(|l| l.rsplit(' ').next()?.parse().ok())
}

#[tokio::test(flavor = "multi_thread")]
async fn sigterm_fails_readiness_first_ends_within_the_drain_and_makes_what_it_held_visible_at_once() {
    let (name, schema) = (unique("drain"), unique("s"));
    schema_with_user_logins(&schema).await;
    let endpoint = services::private_endpoint();
    let sqs = services::sqs_at(&endpoint).await;
    let url = queue(&sqs, &name).await;
    let n = 30;
    send(&sqs, &url, &good_bodies(n)).await;
    // Commits wait behind the pipeline's ledger lock, held here.
    let blocker = pg().await;
    blocker.batch_execute("BEGIN").await.unwrap();
    blocker.execute("SELECT pg_advisory_xact_lock(hashtext('etl.receipts'), hashtext($1))", &[&name]).await.unwrap();
    // A visibility timeout far beyond the test: a message seen again soon
    // after the stop was released, not timed out.
    let file = pipeline_file(&name, &schema, "visibility_timeout_s = 900\nwait_time_s = 2");
    let port = free_port();
    let admin = format!("127.0.0.1:{port}");
    let envs = [("HOST_DRAIN_S", "6"), ("HOST_NAME", "replica-a")];
    // The held commits wait for the lock as long as the test needs (the
    // host's own lock_timeout, 60 s, could end them first on a slow moto).
    let database = services::database_url();
    let sep = if database.contains('?') { '&' } else { '?' };
    let database = format!("{database}{sep}options=-c%20lock_timeout%3D600s");
    let mut host = Host::run_all(&[&file], &["--admin", &admin], &envs, &database, &endpoint);
    let start = Instant::now();
    let (pipeline, replica) = (format!("pipeline=\"{name}\""), "host=\"replica-a\"");
    // Every message received and held, none committed.
    loop {
        assert!(start.elapsed() < Duration::from_secs(120), "the host never held every message: {}", host.log());
        if let Ok(page) = http(port, "GET", "/metrics", None).await
            && metric(&page.body, "etl_messages_in_flight", &[&pipeline, replica]) == Some(n as f64)
        {
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // And a batch in work: its commit waits for the ledger lock.
    let waiting = "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND NOT granted \
                   AND classid = hashtext('etl.receipts')::oid AND objid = hashtext($1)::oid";
    while pg().await.query_one(waiting, &[&name]).await.unwrap().get::<_, i64>(0) < 1 {
        assert!(start.elapsed() < Duration::from_secs(120), "no commit reached the ledger lock: {}", host.log());
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let ready = http(port, "GET", "/readyz", None).await.unwrap();
    assert_eq!(ready.status, 200, "ready before the stop: {}", ready.body);
    let metrics = http(port, "GET", "/metrics", None).await.unwrap().body;
    assert_eq!(metric(&metrics, "etl_draining", &[replica]), Some(0.0), "{metrics}");
    assert_eq!(in_flight(&sqs, &url).await, n, "every message invisible while held");

    let stopping = Instant::now();
    host.term();
    // Readiness fails at once, and says why first.
    let not_ready = loop {
        let answer = http(port, "GET", "/readyz", None).await.unwrap();
        if answer.status == 503 {
            break answer;
        }
        assert!(stopping.elapsed() < Duration::from_secs(2), "still ready after the signal: {}", answer.body);
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert!(not_ready.body.starts_with("draining: the process is stopping"), "{}", not_ready.body);
    let metrics = http(port, "GET", "/metrics", None).await.unwrap().body;
    assert_eq!(metric(&metrics, "etl_draining", &[replica]), Some(1.0), "{metrics}");

    let ended = host.wait(Duration::from_secs(30)).await;
    let took = stopping.elapsed();
    let (status, out) = ended.unwrap_or_else(|| panic!("not ended 30 s after SIGTERM: {}", host.log()));
    let log = host.log();
    assert!(status.success(), "{status}: {out}\n{log}");
    // Within the drain (6 s), with a second for the process to start
    // exiting and the test to see it.
    assert!(took < Duration::from_secs(7), "the stop took {took:?}, more than HOST_DRAIN_S:\n{log}");
    assert!(took > Duration::from_secs(3), "the batches in work got their grace ({took:?}):\n{log}");
    assert!(log.contains("units still in work after the stop are abandoned"), "{log}");
    blocker.batch_execute("ROLLBACK").await.unwrap();
    assert_eq!(count(&format!("SELECT count(*) FROM {schema}.user_logins")).await, 0, "nothing committed");
    // Everything it held is visible again at once (visibility: 900 s).
    assert_eq!(in_flight(&sqs, &url).await, 0, "messages left invisible after the drain:\n{log}");
    assert_eq!(queue_depth(&sqs, &url).await, n);

    // Another replica loads them, each once.
    let mut next = Host::run(&file, true, &services::database_url(), &endpoint);
    let (status, out) = next.wait(Duration::from_secs(300)).await.expect("the --once run ends");
    assert!(status.success(), "{status}: {out}\n{}", next.log());
    assert_eq!(count(&format!("SELECT count(*) FROM {schema}.user_logins")).await, n as i64, "{out}");
    assert_eq!(queue_depth(&sqs, &url).await, 0);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_drain_bound_that_is_not_whole_seconds_in_range_is_refused_before_anything_runs() {
    let (name, schema) = (unique("drainbad"), unique("s"));
    let file = pipeline_file(&name, &schema, "");
    for bad in ["abc", "1", "0", "99999", "2.5"] {
        let mut host =
            Host::run_all(&[&file], &[], &[("HOST_DRAIN_S", bad)], &services::database_url(), services::endpoint());
        let (status, _) = host.wait(Duration::from_secs(60)).await.expect("refused at once");
        let log = host.log();
        assert_eq!(status.code(), Some(2), "HOST_DRAIN_S={bad}: {status}\n{log}");
        assert!(log.contains(&format!("HOST_DRAIN_S is \"{bad}\": it must be whole seconds from 2 to 3600")), "{log}");
    }
}

/// The process's children, from `/proc` (their pids in this namespace).
fn children(pid: u32) -> Vec<u32> {
    let list = std::fs::read_to_string(format!("/proc/{pid}/task/{pid}/children")).unwrap_or_default();
    list.split_whitespace().filter_map(|p| p.parse().ok()).collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn as_a_containers_first_process_it_still_drains_on_a_sigterm_from_outside() {
    // A container's first process is PID 1 of its namespace, which the
    // kernel spares every signal from outside that it has no handler for:
    // the kubelet's SIGTERM would be dropped, and the pod killed at the
    // end of its grace. Here `unshare` makes the host PID 1 of a namespace
    // of its own, and the signal comes from this (the parent) namespace.
    let (name, schema) = (unique("pid1"), unique("s"));
    schema_with_user_logins(&schema).await;
    let sqs = services::sqs().await;
    queue(&sqs, &name).await;
    let file = pipeline_file(&name, &schema, "wait_time_s = 1");
    let port = free_port();
    let admin = format!("127.0.0.1:{port}");
    let wrapper = ["unshare", "--pid", "--fork", "--kill-child"];
    let envs = [("HOST_DRAIN_S", "6")];
    let mut host = Host::run_under(
        &wrapper,
        &[&file],
        &["--admin", &admin],
        &envs,
        &services::database_url(),
        services::endpoint(),
    );
    let start = Instant::now();
    while !http(port, "GET", "/readyz", None).await.is_ok_and(|a| a.status == 200) {
        assert!(start.elapsed() < Duration::from_secs(120), "the host never got ready: {}", host.log());
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // unshare's child: the host, PID 1 of its namespace.
    let pid = children(host.pid()).first().copied().expect("unshare's child, the host");
    let stopping = Instant::now();
    std::process::Command::new("kill").args(["-TERM", &pid.to_string()]).status().unwrap();
    let (status, _) = host
        .wait(Duration::from_secs(15))
        .await
        .unwrap_or_else(|| panic!("SIGTERM to the host as PID 1 was ignored: still running 15 s later"));
    let log = host.log();
    assert!(stopping.elapsed() < Duration::from_secs(7), "{:?}:\n{log}", stopping.elapsed());
    assert!(status.success(), "{status}:\n{log}");
    assert!(log.contains("stopping: readiness now fails"), "{log}");
}

/// A lease time or a pooler mode that is not one is refused before any
/// command runs, naming the variable and what it takes.
#[test]
fn a_lease_time_or_pooler_mode_that_is_not_one_is_refused_before_anything_runs() {
    let bad = [
        ("HOST_LEASE_S", "2", "HOST_LEASE_S is \"2\": it must be whole seconds from 3 to 600"),
        ("HOST_LEASE_S", "ten", "HOST_LEASE_S is \"ten\": it must be whole seconds from 3 to 600"),
        ("DATABASE_POOLER", "statement", "DATABASE_POOLER is \"statement\": it must be `transaction`"),
    ];
    for (var, value, said) in bad {
        let out = std::process::Command::new(crate::objects::host_binary())
            .args(["check", "pipelines/logins.toml"])
            .current_dir(crate::common::workspace())
            .env(var, value)
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{var}={value}: {stderr}");
        assert!(stderr.contains(said), "{var}={value}: {stderr}");
    }
}
