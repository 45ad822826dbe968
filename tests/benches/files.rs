//! An S3 object into PostgreSQL, side by side with its baseline measured in
//! the same run: `host backfill` of a 1,000,000-row JSON-lines object of
//! login events (moto S3) through the logins chain (flatten, app-version,
//! mask) into `user_logins`, against a plain `COPY` of the rows it wrote
//! (already transformed) into an empty table.
//!
//! `cargo bench -p tests --bench files` (PostgreSQL at DATABASE_URL or the
//! local server; moto from `.venv`, started by the bench). `FILES_ROWS`
//! scales it down.

use futures_util::TryStreamExt;

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
    let n = services::env_usize("FILES_ROWS", 1_000_000);
    let object = objects::big_object(n).await;
    let (run, object) = tokio::task::spawn_blocking(move || (objects::backfill(&object), object)).await.unwrap();
    assert!(run.success, "{}\n{}", run.stdout, run.stderr);

    // The baseline: the rows the host wrote, as COPY text, copied into an
    // empty table of the same shape.
    let db = services::pg().await;
    let schema = &object.schema;
    let text: Vec<u8> = {
        let out = db.copy_out(&format!("COPY {schema}.user_logins TO STDOUT")).await.unwrap();
        futures_util::pin_mut!(out);
        let mut all = Vec::new();
        while let Some(chunk) = out.try_next().await.unwrap() {
            all.extend_from_slice(&chunk);
        }
        all
    };
    let rows = text.iter().filter(|&&b| b == b'\n').count();
    assert_eq!(rows, n);
    db.batch_execute(&format!("CREATE TABLE {schema}.plain (LIKE public.user_logins)")).await.unwrap();
    let copy_time = services::timed_copy(&db, &format!("{schema}.plain"), text).await;

    let rate = |t: std::time::Duration| n as f64 / t.as_secs_f64();
    println!("{n} rows, {:.0} MB JSON lines in S3 (moto)", object.bytes as f64 / 1e6);
    println!("{:<44} {:>12} {:>14} {:>10}", "", "seconds", "rows/s", "of COPY");
    println!(
        "{:<44} {:>12.2} {:>14.0} {:>10.2}",
        "plain COPY of the transformed rows",
        copy_time.as_secs_f64(),
        rate(copy_time),
        1.0
    );
    println!(
        "{:<44} {:>12.2} {:>14.0} {:>10.2}",
        "host backfill (S3, chain, COPY, ledger)",
        run.elapsed.as_secs_f64(),
        rate(run.elapsed),
        copy_time.as_secs_f64() / run.elapsed.as_secs_f64()
    );
    println!("host peak RSS: {:.0} MB", run.peak_rss_kib as f64 / 1024.0);
}
