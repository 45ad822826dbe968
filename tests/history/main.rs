//! The history checker: seeded, randomized histories of S3 operations
//! (puts, overwrites, deletes, versioning enabled and suspended, events
//! late, twice and out of order, backfills) and of host runs (reconcile
//! and notification runs, SIGKILLed mid-load, S3 answers cut mid-body,
//! PostgreSQL refused for a while), run against moto, PostgreSQL and the
//! real `host` binary; then a history of SFTP files (appearing, growing,
//! changing, unreadable and back, deleted, renamed) under SFTP passes,
//! some SIGKILLed, against a real `sshd`. After quiescence the tables must
//! equal what the models say, and `etl.files` and `etl.sftp_files` must
//! agree with the bucket and the server.
//!
//!   history                    the fixed seeds (part of `cargo xtask test`)
//!   history --seeds N [--from S] [--ops M]   a soak: seeds S..S+N
//!   history --seed S [--ops M] a seed again (a failure prints its command)
//!   ... --only s3|sftp         one side's histories only
//!
//! Needs `target/release/host` (`cargo xtask build`), PostgreSQL at
//! `DATABASE_URL` (or the local server) and moto (`.venv`, or
//! `AWS_ENDPOINT_URL`).

mod check;
#[path = "../it/common.rs"]
#[allow(dead_code)]
mod common;
mod model;
#[path = "../it/proxy.rs"]
#[allow(dead_code)]
mod proxy;
#[path = "../it/services.rs"]
#[allow(dead_code)]
mod services;
mod sftp;
#[path = "../it/sshd.rs"]
#[allow(dead_code)]
mod sshd;
mod world;

use std::time::Instant;

/// The seeds `cargo xtask test` runs: a handful, each of the default length.
const FIXED: [u64; 3] = [1, 2, 3];
const DEFAULT_OPS: usize = 40;

struct Args {
    seeds: Vec<u64>,
    ops: usize,
    /// `s3` or `sftp`: only that side's histories.
    only: Option<String>,
}

fn args() -> Result<Args, String> {
    let mut argv = std::env::args().skip(1);
    let (mut seeds, mut from, mut count, mut ops, mut only) = (None, 0u64, None, DEFAULT_OPS, None);
    let number = |v: Option<String>, flag: &str| -> Result<u64, String> {
        v.and_then(|v| v.parse().ok()).ok_or(format!("{flag} needs a number"))
    };
    while let Some(a) = argv.next() {
        match a.as_str() {
            "--seed" => seeds = Some(vec![number(argv.next(), "--seed")?]),
            "--seeds" => count = Some(number(argv.next(), "--seeds")?),
            "--from" => from = number(argv.next(), "--from")?,
            "--ops" => ops = number(argv.next(), "--ops")? as usize,
            "--only" => match argv.next().as_deref() {
                Some(side @ ("s3" | "sftp")) => only = Some(side.to_string()),
                _ => return Err("--only needs `s3` or `sftp`".into()),
            },
            // What cargo test passes to every test binary.
            "--nocapture" | "--quiet" | "-q" | "--test-threads" => {}
            other if other.starts_with("--test-threads=") => {}
            other => return Err(format!("unknown argument `{other}`; see the top of tests/history/main.rs")),
        }
    }
    let seeds = seeds.unwrap_or_else(|| match count {
        Some(n) => (from..from + n).collect(),
        None => FIXED.to_vec(),
    });
    Ok(Args { seeds, ops, only })
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> std::process::ExitCode {
    let args = match args() {
        Ok(a) => a,
        Err(e) => {
            eprintln!("history: {e}");
            return std::process::ExitCode::from(2);
        }
    };
    services::migrated().await;
    let (mut passed, mut failed) = (0, 0);
    let started = Instant::now();
    for &seed in &args.seeds {
        let start = Instant::now();
        let side = |s: &str| args.only.as_deref().is_none_or(|o| o == s);
        let s3_len = if side("s3") { args.ops } else { 0 };
        let sftp_len = if side("sftp") { args.ops } else { 0 };
        let (versioning, ops, mut problems, log) = one(seed, s3_len).await;
        let (sftp_ops, sftp_problems, sftp_log) = one_sftp(seed, sftp_len).await;
        problems.extend(sftp_problems);
        if problems.is_empty() {
            passed += 1;
            let n = ops.len() + sftp_ops.len();
            println!("history seed {seed}: ok ({n} ops, {:.0} s)", start.elapsed().as_secs_f64());
            continue;
        }
        failed += 1;
        println!("history seed {seed}: FAILED (bucket starts {versioning:?})");
        for (i, op) in ops.iter().enumerate() {
            println!("  {i:>3}. {op}");
        }
        for (i, op) in sftp_ops.iter().enumerate() {
            println!("  {i:>3}. {op}");
        }
        for p in &problems {
            println!("  ! {p}");
        }
        println!("  the host's output: {} and {}", log.display(), sftp_log.display());
        println!("  again: cargo test --release -p tests --test history -- --seed {seed} --ops {}", args.ops);
    }
    println!("history: {} seeds in {:.0} s", args.seeds.len(), started.elapsed().as_secs_f64());
    // libtest's closing line, so that `cargo xtask test` adds these up.
    let verdict = if failed == 0 { "ok" } else { "FAILED" };
    println!("test result: {verdict}. {passed} passed; {failed} failed; 0 ignored; 0 measured; 0 filtered out");
    if failed == 0 { std::process::ExitCode::SUCCESS } else { std::process::ExitCode::FAILURE }
}

/// One seed's SFTP history, run and checked.
async fn one_sftp(seed: u64, len: usize) -> (Vec<sftp::Op>, Vec<String>, std::path::PathBuf) {
    let ops = sftp::history(seed, len);
    if ops.is_empty() {
        return (ops, Vec::new(), std::path::PathBuf::new());
    }
    let mut m = sftp::Model::default();
    let w = sftp::World::new(seed).await;
    for op in &ops {
        m.apply(op);
        w.run(op, &m).await;
    }
    w.settle(&m).await;
    let problems = w.check(&m).await;
    (ops, problems, w.log.clone())
}

/// One seed's S3 history, run and checked: what went wrong, if anything.
async fn one(seed: u64, len: usize) -> (model::Versioning, Vec<model::Op>, Vec<String>, std::path::PathBuf) {
    let (versioning, ops) = model::history(seed, len);
    if ops.is_empty() {
        return (versioning, ops, Vec::new(), std::path::PathBuf::new());
    }
    let mut m = model::Model::new(versioning);
    let mut w = world::World::new(seed, versioning).await;
    for (i, op) in ops.iter().enumerate() {
        let before = m.clone();
        let generation = m.apply(op);
        match (w.run(op, generation, m.versioning).await, op) {
            (Ok(()), _) => {}
            // moto answers some deletes in a bucket whose versioning was
            // suspended with a 500: the key stays, and so does the model's.
            (Err(e), model::Op::Delete { .. }) => {
                println!("history seed {seed}: operation {i} refused by the endpoint, kept as not done: {e:.120}");
                m.live = before.live;
            }
            (Err(e), _) => {
                // The endpoint's own failure, not the host's: said as such.
                let problem = format!("the endpoint failed operation {i}: {e}");
                return (versioning, ops.clone(), vec![problem], w.log.clone());
            }
        }
    }
    w.settle(&m).await;
    let problems = check::all(&w, &m).await;
    (versioning, ops, problems, w.log.clone())
}
