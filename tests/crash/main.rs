//! Crash safety: 10,000 messages loaded by the real `host` binary while it is
//! killed with SIGKILL at random moments (at least 10 times) and restarted,
//! and while PostgreSQL crashes (immediate stop) and restarts under it. The table must end with
//! exactly the 10,000 rows: none missing, none duplicated.
//!
//! Needs `target/release/host` (`cargo xtask test` builds it), PostgreSQL at
//! `DATABASE_URL` (or the local server) and, for the restart,
//! `PG_RESTART_COMMAND` (set by `cargo xtask` for its private server) or
//! else the machine's `pg_ctlcluster` (set `CRASH_PG_RESTART=0` to skip
//! that part, reported as skipped). `CRASH_MESSAGES` and `CRASH_KILLS`
//! scale it.

#[path = "../it/common.rs"]
#[allow(dead_code)]
mod common;
#[path = "../it/services.rs"]
#[allow(dead_code)]
mod services;

use rand::Rng;
use std::process::{Child, Command};
use std::time::{Duration, Instant};

struct Run {
    pipeline: std::path::PathBuf,
    queue: String,
}

impl Run {
    fn host(&self, once: bool) -> Child {
        let host = common::workspace().join("target/release/host");
        assert!(host.is_file(), "{} is missing: run `cargo xtask test`", host.display());
        let mut cmd = Command::new(host);
        cmd.arg("run").args(["--plugin-path", common::PLUGIN_DIR, "--cache-dir"]).arg(common::cache_dir());
        if once {
            cmd.arg("--once");
        }
        cmd.arg(&self.pipeline)
            .env("LOGIN_QUEUE", &self.queue)
            .env("AWS_ENDPOINT_URL", services::endpoint())
            .env("AWS_REGION", "us-east-1")
            .env("AWS_ACCESS_KEY_ID", "test")
            .env("AWS_SECRET_ACCESS_KEY", "test")
            .env("DATABASE_URL", services::database_url())
            .env("RUST_LOG", "error")
            .stdout(std::process::Stdio::null());
        cmd.spawn().expect("host starts")
    }
}

fn kill9(child: &mut Child) {
    let _ = Command::new("kill").args(["-9", &child.id().to_string()]).status();
    let _ = child.wait();
}

fn restart_postgres() -> Result<(), String> {
    // The private server of `cargo xtask`: `pg_ctl restart -m immediate`.
    if let Ok(cmd) = std::env::var("PG_RESTART_COMMAND") {
        let status = Command::new("sh").args(["-c", &cmd]).status().map_err(|e| format!("{cmd}: {e}"))?;
        return if status.success() { Ok(()) } else { Err(format!("{cmd} failed ({status})")) };
    }
    let versions = std::fs::read_dir("/etc/postgresql").map_err(|e| format!("/etc/postgresql: {e}"))?;
    let version = versions.filter_map(|e| e.ok()).map(|e| e.file_name().to_string_lossy().into_owned()).next();
    let version = version.ok_or("no PostgreSQL cluster in /etc/postgresql")?;
    let status = Command::new("pg_ctlcluster")
        // `immediate`: the server stops as if it crashed, without flushing
        // or checkpointing; commits whose WAL was not flushed are lost, and
        // their messages must not have been acknowledged.
        .args(["--skip-systemctl-redirect", "--mode", "immediate", &version, "main", "restart"])
        .status()
        .map_err(|e| format!("pg_ctlcluster: {e}"))?;
    if status.success() { Ok(()) } else { Err(format!("pg_ctlcluster restart failed ({status})")) }
}

#[tokio::main]
async fn main() {
    let n = services::env_usize("CRASH_MESSAGES", 10_000);
    let kills = services::env_usize("CRASH_KILLS", 10);
    services::migrated().await;
    let (name, schema) = (services::unique("crash"), services::unique("crash"));
    services::pg()
        .await
        .batch_execute(&format!("CREATE SCHEMA {schema}; CREATE TABLE {schema}.user_logins (LIKE public.user_logins)"))
        .await
        .unwrap();
    let sqs = services::sqs().await;
    let url = services::queue(&sqs, &name).await;
    let template = std::fs::read_to_string(common::workspace().join("tests/data/fetch_login_queue_bodies.jsonl"))
        .unwrap()
        .lines()
        .next()
        .unwrap()
        .to_string();
    let bodies: Vec<String> =
        (0..n).map(|i| template.replace("424cdd21-063a-43a7-b91b-7ca1a833afae", &format!("crash-{i:06}"))).collect();
    let started = Instant::now();
    // moto's receive costs grow with the queue's length: feed it as a
    // steady stream that keeps at most ~400 messages waiting.
    let producer = {
        let (sqs, url) = (sqs.clone(), url.clone());
        tokio::spawn(async move {
            for chunk in bodies.chunks(100) {
                while services::queue_depth(&sqs, &url).await > 400 {
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
                services::send(&sqs, &url, chunk).await;
            }
        })
    };

    // Short visibility so a killed host's messages come back quickly.
    let text = std::fs::read_to_string(common::workspace().join("pipelines/logins.toml"))
        .unwrap()
        .replace("name = \"logins\"", &format!("name = \"{name}\""))
        .replace("table = \"user_logins\"", &format!("table = \"user_logins\"\nschema = \"{schema}\""))
        // Each kill may add a receive to the messages it held: a limit
        // above the kills keeps a message that is in work at every kill a
        // message (the receive limit is not what this run tests).
        .replace(
            "[source.sqs]",
            &format!("[source.sqs]\nvisibility_timeout_s = 4\nwait_time_s = 1\nmax_receives = {}", kills + 5),
        )
        .replace("max_records = 500", "max_records = 200")
        .replace("max_wait_ms = 1000", "max_wait_ms = 200");
    let pipeline = std::env::temp_dir().join(format!("{name}.toml"));
    std::fs::write(&pipeline, text).unwrap();
    let run = Run { pipeline, queue: name.clone() };

    let mut rng = rand::rng();
    for k in 0..kills {
        let mut child = run.host(false);
        let after = Duration::from_millis(rng.random_range(300..2500));
        std::thread::sleep(after);
        kill9(&mut child);
        println!("crash: SIGKILL {} after {} ms; rows so far {}", k + 1, after.as_millis(), rows(&schema).await);
    }
    let pg_restart = std::env::var("CRASH_PG_RESTART").map(|v| v != "0").unwrap_or(true);
    if pg_restart {
        let mut child = run.host(false);
        std::thread::sleep(Duration::from_millis(1500));
        restart_postgres().expect("PostgreSQL restarts");
        println!(
            "crash: PostgreSQL crashed (immediate stop) and restarted under a running host; rows so far {}",
            rows(&schema).await
        );
        std::thread::sleep(Duration::from_secs(3));
        kill9(&mut child);
    } else {
        println!("crash: PostgreSQL restart skipped (CRASH_PG_RESTART=0)");
    }
    // Drain: run until every message was sent and the queue stays empty
    // (killed batches come back after their visibility timeout).
    let mut producer = Some(producer);
    let deadline = Instant::now() + Duration::from_secs(1200);
    loop {
        if let Some(p) = producer.take_if(|p| p.is_finished()) {
            p.await.expect("producer");
        }
        let status = run.host(true).wait().unwrap();
        let depth = services::queue_depth(&sqs, &url).await;
        if status.success() && depth == 0 && producer.is_none() {
            break;
        }
        assert!(Instant::now() < deadline, "queue not drained: {depth} left");
        std::thread::sleep(Duration::from_secs(2));
    }
    let db = services::pg().await;
    let row = db
        .query_one(&format!("SELECT count(*), count(DISTINCT user_id) FROM {schema}.user_logins"), &[])
        .await
        .unwrap();
    let (total, distinct): (i64, i64) = (row.get(0), row.get(1));
    let dead: i64 =
        db.query_one("SELECT count(*) FROM etl.dead_letters WHERE pipeline = $1", &[&name]).await.unwrap().get(0);
    println!(
        "crash: {total} rows, {distinct} distinct, {dead} dead letters after {kills} kills{} in {:.1} s",
        if pg_restart { " and a PostgreSQL restart" } else { "" },
        started.elapsed().as_secs_f64()
    );
    let ok = total == n as i64 && distinct == n as i64 && dead == 0;
    println!("{} passed, {} failed", usize::from(ok), usize::from(!ok));
    if !ok {
        eprintln!("crash: expected exactly {n} rows, none duplicated, no dead letters");
        std::process::exit(1);
    }
}

async fn rows(schema: &str) -> i64 {
    services::pg().await.query_one(&format!("SELECT count(*) FROM {schema}.user_logins"), &[]).await.unwrap().get(0)
}
