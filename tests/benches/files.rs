//! An S3 object into PostgreSQL, side by side with the fastest plain load
//! of the same rows on this machine, measured in the same run:
//!
//! - `host backfill` of a 1,000,000-row JSON-lines object of login events
//!   (moto S3) through the logins chain (flatten, app-version, mask) into
//!   `user_logins`, against `psql \copy` of the rows it wrote (already
//!   transformed) from a local file into an empty table;
//! - the same object with no transform (its six fields into a table of six
//!   text columns), against `psql \copy` of those raw rows.
//!
//! `psql \copy` is the baseline because it is the fastest plain COPY here
//! (a tokio-postgres COPY of one 100 MB buffer took twice as long). Both
//! sides connect with `DATABASE_URL` as it is (its `sslmode`, PostgreSQL's
//! default `prefer` when it names none: TLS where the server offers it).
//! Each figure: seconds, rows/s, the client's CPU seconds (user + system of
//! the host or psql process) and rows per client CPU-second; the host's
//! peak RSS; and the CPU seconds of the PostgreSQL server's processes
//! meanwhile ("server s", when the server runs on this machine: sampled
//! every 20 ms, so a backend that lives less than that is missed).
//!
//! `cargo bench -p tests --bench files` (PostgreSQL at DATABASE_URL or the
//! local server; moto from `.venv`, started by the bench). `FILES_ROWS`
//! scales it down, `FILES_RUNS` sets the rounds (default 2); `FILES_PERF=DIR`
//! runs each host load under `perf record -g` into `DIR`; `FILES_LOG=1`
//! prints the host's log (`RUST_LOG` sets its level).

use std::path::Path;
use std::time::Duration;

#[path = "../it/common.rs"]
#[allow(dead_code)]
mod common;
#[path = "../it/objects.rs"]
#[allow(dead_code)]
mod objects;
#[path = "../it/services.rs"]
#[allow(dead_code)]
mod services;

/// One load: how long, how much client CPU, how much memory.
struct Load {
    elapsed: Duration,
    cpu_s: f64,
    peak_rss_mb: Option<f64>,
}

#[tokio::main]
async fn main() {
    let n = services::env_usize("FILES_ROWS", 1_000_000);
    let runs = services::env_usize("FILES_RUNS", 2);
    let object = objects::big_object(n).await;
    let db = services::pg().await;
    let schema = object.schema.clone();
    db.batch_execute(&format!(
        "CREATE TABLE {schema}.raw (user_id text, app_version text, device_type text, ip text, locale text, \
         device_id text)"
    ))
    .await
    .unwrap();
    let chain_text = std::fs::read_to_string(&object.pipeline).unwrap();
    let raw_text = raw_pipeline(&chain_text);
    let dir = object.pipeline.parent().unwrap().to_path_buf();
    println!(
        "{n} rows, {:.0} MB JSON lines in S3 (moto); DATABASE_URL's sslmode on both sides",
        object.bytes as f64 / 1e6
    );
    println!(
        "{:<4} {:<40} {:>8} {:>10} {:>8} {:>12} {:>8} {:>9} {:>10}",
        "run", "", "seconds", "rows/s", "CPU s", "rows/CPU-s", "of psql", "peak RSS", "server s"
    );
    for run in 1..=runs {
        for (label, text, table) in [("logins chain", &chain_text, "user_logins"), ("no transform", &raw_text, "raw")] {
            db.batch_execute(&format!("TRUNCATE {schema}.{table}")).await.unwrap();
            let (name, pipeline) = objects::renamed_pipeline(&object, text, "files");
            let mut command = objects::backfill_command_of(&object, &pipeline);
            if let Ok(dir) = std::env::var("FILES_PERF") {
                // Profiling: the host under `perf record` (its figures then
                // include perf's own cost).
                let mut perf = std::process::Command::new("perf");
                let data = format!("{dir}/{}-{run}.data", table);
                perf.args(["record", "-F", "2000", "-g", "-o", &data, "--"]).arg(command.get_program());
                perf.args(command.get_args()).envs(command.get_envs().filter_map(|(k, v)| Some((k, v?))));
                perf.stdout(std::process::Stdio::piped()).stderr(std::process::Stdio::piped());
                command = perf;
            }
            let server = services::ServerCpu::start();
            let host = tokio::task::spawn_blocking(move || objects::backfill_of(command)).await.unwrap();
            let host_server_s = server.stop();
            assert!(host.success, "{}\n{}", host.stdout, host.stderr);
            if std::env::var_os("FILES_LOG").is_some() {
                eprintln!("{}", host.stderr);
            }

            // The rows the host wrote, as COPY text in a local file, loaded
            // by psql into an empty table of the same shape.
            let text = services::copy_out(&db, &format!("{schema}.{table}")).await;
            assert_eq!(text.iter().filter(|&&b| b == b'\n').count(), n, "{label}: every row loaded once");
            let file = dir.join(format!("{name}.copy"));
            std::fs::write(&file, &text).unwrap();
            let plain = format!("{schema}.plain_{table}_{run}");
            db.batch_execute(&format!("CREATE TABLE {plain} (LIKE {schema}.{table})")).await.unwrap();
            let server = services::ServerCpu::start();
            let psql = tokio::task::spawn_blocking(move || psql_copy(&plain, &file)).await.unwrap();
            let psql_server_s = server.stop();

            let host =
                Load { elapsed: host.elapsed, cpu_s: host.cpu_s, peak_rss_mb: Some(host.peak_rss_kib as f64 / 1024.0) };
            for (who, load, server_s) in [
                (format!("psql \\copy, {label} rows"), &psql, psql_server_s),
                (format!("host backfill, {label}"), &host, host_server_s),
            ] {
                let secs = load.elapsed.as_secs_f64();
                let rss = load.peak_rss_mb.map_or("-".into(), |m| format!("{m:.0} MB"));
                println!(
                    "{run:<4} {who:<40} {secs:>8.2} {:>10.0} {:>8.2} {:>12.0} {:>8.2} {rss:>9} {server_s:>10.2}",
                    n as f64 / secs,
                    load.cpu_s,
                    n as f64 / load.cpu_s.max(0.01),
                    psql.elapsed.as_secs_f64() / secs,
                );
            }
        }
    }
}

/// The logins pipeline without its steps: the object's six fields as they
/// are, into the `raw` table.
fn raw_pipeline(chain: &str) -> String {
    let mut out = String::new();
    let mut skipping = false;
    for line in chain.lines() {
        if line.starts_with('[') {
            skipping = line == "[[transforms]]" || line == "[sink.columns]" || line == "[[tests]]";
            if line == "[sink.columns]" {
                out.push_str("[sink.columns]\n");
                for f in ["user_id", "app_version", "device_type", "ip", "locale", "device_id"] {
                    out.push_str(&format!("{f} = \"{f}\"\n"));
                }
            }
        }
        if skipping {
            continue;
        }
        out.push_str(&line.replace("table = \"user_logins\"", "table = \"raw\""));
        out.push('\n');
    }
    assert!(out.contains("table = \"raw\"") && !out.contains("[[transforms]]"), "{out}");
    out
}

/// `psql \copy` of `file` into `table`, with its CPU time.
fn psql_copy(table: &str, file: &Path) -> Load {
    let (elapsed, cpu_s) = services::psql_copy(table, file);
    Load { elapsed, cpu_s, peak_rss_mb: None }
}
