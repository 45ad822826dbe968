//! `host run`, `host migrate` and `host dead-letters`: the commands that
//! talk to AWS and PostgreSQL.

use super::EngineOptions;
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
    let pipeline = config::load(path)?;
    let url = database_url()?;
    if migrate {
        crate::migrate::run(&url).await?;
    }
    let engine = opts.engine()?;
    let aws = aws_config::load_from_env().await;
    let run_opts = RunOptions { once, idle: std::time::Duration::from_secs(2) };
    Ok(crate::run::run(pipeline, engine, &url, &aws, run_opts, shutdown_signal()).await?)
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
