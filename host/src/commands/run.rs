//! `host run`, `host migrate` and `host dead-letters`: the commands that
//! talk to AWS and PostgreSQL.
//!
//! Must not hold run logic: that is `crate::run` and below.

use super::EngineOptions;
use crate::aws::Aws;
use crate::config;
use crate::run::{RunOptions, Summary};
use anyhow::Context;
use std::path::Path;

/// `DATABASE_URL`, which these commands need.
pub fn database_url() -> anyhow::Result<String> {
    std::env::var("DATABASE_URL")
        .ok()
        .filter(|u| !u.is_empty())
        .context("DATABASE_URL is not set (for example postgres://postgres@127.0.0.1:5432/postgres)")
}

/// Runs a pipeline until SIGINT/SIGTERM (or, with `--once`, until the queue
/// stays empty).
pub async fn run(path: &Path, once: bool, migrate: bool, opts: &EngineOptions) -> anyhow::Result<Summary> {
    let (pipeline, url, engine, aws) = set_up(path, migrate, opts).await?;
    let run_opts = RunOptions { once, idle: std::time::Duration::from_secs(2) };
    Ok(crate::run::run(pipeline, engine, &url, aws, run_opts, shutdown_signal()).await?)
}

/// What `run` and `backfill` need: the pipeline, the database URL (migrated
/// first if asked), the engine and the AWS configuration, whose S3 client
/// the engine shares for plugins kept in S3.
async fn set_up(
    path: &Path,
    migrate: bool,
    opts: &EngineOptions,
) -> anyhow::Result<(config::Pipeline, String, std::sync::Arc<crate::transform::Engine>, Aws)> {
    let pipeline = config::load(path)?;
    let url = database_url()?;
    if migrate {
        crate::migrate::run(&url).await?;
    }
    let engine = opts.engine()?;
    let aws = Aws::from_env().await;
    engine.remote().share(aws.s3.clone());
    Ok((pipeline, url, engine, aws))
}

/// Loads every object under `prefix` of the pipeline's bucket, showing
/// progress on stderr: a bar on a terminal, a plain line every 5 s otherwise.
pub async fn backfill(path: &Path, prefix: &str, migrate: bool, opts: &EngineOptions) -> anyhow::Result<Summary> {
    use std::io::{IsTerminal, Write};
    let (pipeline, url, engine, aws) = set_up(path, migrate, opts).await?;
    let terminal = std::io::stderr().is_terminal();
    let last = std::sync::Mutex::new(None::<std::time::Duration>);
    let show = |p: &crate::run::BackfillProgress| {
        let mut last = last.lock().expect("not poisoned");
        let final_line = p.objects_done == p.objects;
        if !terminal && !final_line && last.is_some_and(|l| p.elapsed < l + std::time::Duration::from_secs(5)) {
            return;
        }
        *last = Some(p.elapsed);
        let line = progress_line(p);
        let mut err = std::io::stderr().lock();
        if terminal {
            let _ = write!(err, "\r\x1b[2K{line}");
            if final_line {
                let _ = writeln!(err);
            }
        } else {
            let _ = writeln!(err, "{line}");
        }
    };
    let summary = crate::run::backfill(pipeline, engine, &url, aws, prefix, show).await?;
    Ok(summary)
}

/// `[#####.....] 3/10 objects, 120000 rows, 12.3/40.0 MB, 40000 rows/s, ETA 12 s`.
pub fn progress_line(p: &crate::run::BackfillProgress) -> String {
    const WIDTH: usize = 20;
    let done = if p.total_bytes == 0 {
        if p.objects == 0 { 1.0 } else { p.objects_done as f64 / p.objects as f64 }
    } else {
        (p.bytes as f64 / p.total_bytes as f64).min(1.0)
    };
    let filled = (done * WIDTH as f64).round() as usize;
    let eta = match p.eta() {
        Some(t) if p.objects_done < p.objects => format!(", ETA {} s", t.as_secs()),
        _ => String::new(),
    };
    format!(
        "[{}{}] {}/{} objects, {} rows, {:.1}/{:.1} MB, {:.0} rows/s{eta}",
        "#".repeat(filled),
        ".".repeat(WIDTH - filled),
        p.objects_done,
        p.objects,
        p.rows,
        p.bytes as f64 / 1e6,
        p.total_bytes as f64 / 1e6,
        p.rate()
    )
}

/// Resolves on SIGINT or SIGTERM.
pub async fn shutdown_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate()).expect("SIGTERM handler");
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
    tracing::info!("stopping: finishing batches in work, releasing the rest");
}

/// Applies the migrations (`migrations/`) to `DATABASE_URL`.
pub async fn migrate(path: &Path) -> anyhow::Result<Vec<String>> {
    config::load(path)?;
    Ok(crate::migrate::run(&database_url()?).await?)
}

#[cfg(test)]
mod tests {
    use super::progress_line;
    use crate::run::BackfillProgress;
    use std::time::Duration;

    #[test]
    fn progress_shows_objects_rows_bytes_rate_and_eta() {
        let p = BackfillProgress {
            objects_done: 1,
            objects: 4,
            rows: 20_000,
            bytes: 10_000_000,
            total_bytes: 40_000_000,
            elapsed: Duration::from_secs(2),
        };
        assert_eq!(
            progress_line(&p),
            "[#####...............] 1/4 objects, 20000 rows, 10.0/40.0 MB, 10000 rows/s, ETA 6 s"
        );
        let done = BackfillProgress { objects_done: 4, bytes: 40_000_000, ..p };
        assert_eq!(progress_line(&done), "[####################] 4/4 objects, 20000 rows, 40.0/40.0 MB, 10000 rows/s");
    }
}
