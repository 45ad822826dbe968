//! Scale-out on this machine (issue 28): 1, 2 and 3 `host` processes
//! loading one bucket together, as replicas would, side by side with
//! `psql \copy` of the same final rows (the fastest plain load here),
//! measured in the same run.
//!
//! The bucket holds `REPLICAS_OBJECTS` JSON-lines objects of login events
//! (`REPLICAS_ROWS` rows in all, default 600,000) in a moto of its own.
//! Each replica is a `host backfill` of the logins chain: every one lists
//! the bucket, and the objects are divided between them by the per-object
//! claim (a replica skips an object another holds). Figures: seconds until
//! the last replica ended, rows/s of them all, that against `\copy`, the
//! client CPU seconds of all replicas, rows per client CPU-second, and the
//! PostgreSQL server's CPU seconds meanwhile.
//!
//! `cargo bench -p tests --bench replicas`; `REPLICAS_RUNS` rounds
//! (default 2), each in the order 1, 2, 3 then 3, 2, 1.

use std::time::Instant;

#[path = "../it/common.rs"]
#[allow(dead_code)]
mod common;
#[path = "../it/objects.rs"]
#[allow(dead_code)]
mod objects;
#[path = "../it/services.rs"]
#[allow(dead_code)]
mod services;

#[tokio::main]
async fn main() {
    let rows = services::env_usize("REPLICAS_ROWS", 600_000);
    let objects = services::env_usize("REPLICAS_OBJECTS", 12);
    let runs = services::env_usize("REPLICAS_RUNS", 2);
    let per_object = rows / objects;
    let rows = per_object * objects;
    // One object to start from (its pipeline, schema and moto); the rest
    // are put beside it.
    let first = objects::big_object(per_object).await;
    let s3 = services::s3_at(&first.endpoint).await;
    let bucket = bucket_of(&first);
    let lines = objects::logins_lines(rows);
    let cuts: Vec<usize> = std::iter::once(0)
        .chain(lines.iter().enumerate().filter(|(_, b)| **b == b'\n').map(|(i, _)| i + 1))
        .step_by(per_object)
        .collect();
    // Object 0 is big_object's (its own user ids 0..per_object); these are
    // the rows after it, with ids of their own.
    for i in 1..objects {
        let body = lines[cuts[i]..cuts[i + 1]].to_vec();
        services::put(&s3, &bucket, &format!("logins/part-{i}.jsonl"), body).await;
    }
    let db = services::pg().await;
    let schema = first.schema.clone();
    let text = std::fs::read_to_string(&first.pipeline).unwrap();
    let dir = first.pipeline.parent().unwrap().to_path_buf();
    println!(
        "{rows} rows in {objects} objects of JSON lines in S3 (moto), the logins chain; {} cores",
        std::thread::available_parallelism().map_or(0, |n| n.get())
    );
    println!(
        "{:<4} {:<28} {:>8} {:>10} {:>8} {:>8} {:>12} {:>9}",
        "run", "", "seconds", "rows/s", "of psql", "CPU s", "rows/CPU-s", "server s"
    );
    for run in 1..=runs {
        let order: Vec<usize> = if run % 2 == 1 { vec![1, 2, 3] } else { vec![3, 2, 1] };
        for replicas in order {
            db.batch_execute(&format!("TRUNCATE {schema}.user_logins")).await.unwrap();
            let (name, pipeline) = objects::renamed_pipeline(&first, &text, "replicas");
            let cpu_before = services::own_cpu_s().1;
            let server = services::ServerCpu::start();
            let start = Instant::now();
            let children: Vec<_> = (0..replicas)
                .map(|_| objects::backfill_command_of(&first, &pipeline).spawn().expect("host backfill starts"))
                .collect();
            for child in children {
                let out = child.wait_with_output().unwrap();
                assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
            }
            let elapsed = start.elapsed();
            let server_s = server.stop();
            let cpu_s = services::own_cpu_s().1 - cpu_before;
            let loaded = db
                .query_one(&format!("SELECT count(*), count(DISTINCT user_id) FROM {schema}.user_logins"), &[])
                .await
                .unwrap();
            let (n, distinct): (i64, i64) = (loaded.get(0), loaded.get(1));
            assert_eq!((n, distinct), (rows as i64, rows as i64), "{replicas} replicas: every row once");

            // The same rows by psql into an empty table of the same shape.
            let copy = services::copy_out(&db, &format!("{schema}.user_logins")).await;
            let file = dir.join(format!("{name}.copy"));
            std::fs::write(&file, &copy).unwrap();
            let plain = format!("{schema}.plain_{name}");
            db.batch_execute(&format!("CREATE TABLE {plain} (LIKE {schema}.user_logins)")).await.unwrap();
            let psql_server = services::ServerCpu::start();
            let (psql_s, psql_cpu) =
                tokio::task::spawn_blocking(move || services::psql_copy(&plain, &file)).await.unwrap();
            let psql_server_s = psql_server.stop();
            let psql_s = psql_s.as_secs_f64();
            let secs = elapsed.as_secs_f64();
            for (who, secs, cpu, server) in [
                ("psql \\copy of the rows".to_string(), psql_s, psql_cpu, psql_server_s),
                (format!("{replicas} host replica{}", if replicas == 1 { "" } else { "s" }), secs, cpu_s, server_s),
            ] {
                println!(
                    "{run:<4} {who:<28} {secs:>8.2} {:>10.0} {:>8.2} {cpu:>8.2} {:>12.0} {server:>9.2}",
                    rows as f64 / secs,
                    psql_s / secs,
                    rows as f64 / cpu.max(0.01),
                );
            }
        }
    }
}

/// The bucket `big_object` made (named in its pipeline).
fn bucket_of(o: &objects::BigObject) -> String {
    let text = std::fs::read_to_string(&o.pipeline).unwrap();
    let line = text.lines().find(|l| l.starts_with("bucket = ")).expect("the pipeline names its bucket");
    line.trim_start_matches("bucket = ").trim_matches('"').to_string()
}
