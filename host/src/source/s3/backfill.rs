//! `host backfill`: every object under a prefix of the pipeline's bucket,
//! loaded as a notification for each would load it (objects loaded before
//! are skipped), with the progress so far reported about once a second.
//!
//! Must not print: the CLI turns the progress into a bar or lines.

use super::reconcile::load_all;
use super::{Loader, Objects, Progress};
use crate::config::Pipeline;
use crate::flow::{RunError, Summary, Workers};
use crate::transform::Engine;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

/// Loads what is under `prefix`; `report` is called about once a second
/// with the progress so far, and once at the end.
pub async fn backfill(
    pipeline: Pipeline,
    engine: Arc<Engine>,
    database_url: &str,
    aws: impl Into<crate::aws::Aws>,
    prefix: &str,
    report: impl Fn(&BackfillProgress),
) -> Result<Summary, RunError> {
    let started = Instant::now();
    let aws = aws.into();
    let panel = crate::status::Panel::detached(&pipeline.name);
    let (mut flow, config) = super::flow(pipeline, panel, engine, database_url)?;
    flow.once = true;
    let flow = Arc::new(flow);
    if config.bucket.is_none() {
        return Err(RunError::Stopped(format!(
            "{}: [source.s3] needs `bucket` for a backfill",
            flow.pipeline.file.display()
        )));
    }
    let loader = Loader::new(flow.clone(), config.clone(), aws.s3.clone());
    loader.detect_versions().await;
    let listed = loader.list(prefix).await.map_err(|e| RunError::Stopped(e.to_string()))?;
    let chains = flow.chains().await?;
    let objects = Arc::new(Objects::new(flow.clone(), loader, None, None));
    let workers = Workers::start(&flow, chains.chains, &chains.generations);
    let total_bytes: u64 = listed.iter().map(|o| o.size).sum();
    let count = listed.len() as u64;
    let bucket = config.bucket.clone().unwrap_or_default();
    let todo = listed.into_iter().map(|o| o.object(&bucket)).collect();
    let progress = || BackfillProgress::of(&objects.loader.progress, count, total_bytes, started);
    {
        let all = load_all(&objects, workers.dispatch(), todo, true);
        tokio::pin!(all);
        let mut tick = tokio::time::interval(Duration::from_secs(1));
        loop {
            tokio::select! {
                _ = &mut all => break,
                _ = tick.tick() => report(&progress()),
            }
        }
    }
    report(&progress());
    workers.finish().await;
    flow.finish(chains.watching).await
}

/// A backfill's progress at one moment.
#[derive(Debug, Clone, Copy)]
pub struct BackfillProgress {
    pub objects_done: u64,
    pub objects: u64,
    pub rows: u64,
    pub bytes: u64,
    /// Bytes of all the objects listed.
    pub total_bytes: u64,
    pub elapsed: Duration,
}

impl BackfillProgress {
    pub(super) fn of(p: &Progress, objects: u64, total_bytes: u64, started: Instant) -> Self {
        BackfillProgress {
            objects_done: p.objects.load(Ordering::Relaxed),
            objects,
            total_bytes,
            rows: p.rows.load(Ordering::Relaxed),
            bytes: p.bytes.load(Ordering::Relaxed),
            elapsed: started.elapsed(),
        }
    }

    /// Rows per second so far.
    pub fn rate(&self) -> f64 {
        self.rows as f64 / self.elapsed.as_secs_f64().max(1e-3)
    }

    /// Time left at the byte rate so far, once there is one.
    pub fn eta(&self) -> Option<Duration> {
        let rate = self.bytes as f64 / self.elapsed.as_secs_f64().max(1e-3);
        (self.bytes > 0 && rate > 0.0)
            .then(|| Duration::from_secs_f64(self.total_bytes.saturating_sub(self.bytes) as f64 / rate))
    }
}
