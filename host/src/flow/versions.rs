//! The plugin versions of a run: the chains its workers start with, the
//! watcher of new versions (see `crate::reload`), and taking a new version
//! between two units of work, so that each runs on one version from start
//! to end. Must not run units itself.

use super::RunError;
use crate::config::Pipeline;
use crate::reload::{Generation, Request, Watcher};
use crate::status::Panel;
use crate::transform::{Engine, Loaded, TransformChain};
use std::sync::Arc;
use tokio::sync::watch;

/// The workers' chains, and the versions they take between batches.
pub struct Versions {
    chains: Vec<TransformChain>,
    /// Holds the channel of the first (and, without a watcher, only) version.
    keep_first: watch::Sender<Arc<Generation>>,
    watcher: Option<Watcher>,
}

/// A running watcher of new versions, and what it counted.
pub struct Watching {
    task: Option<tokio::task::JoinHandle<()>>,
    _keep_first: watch::Sender<Arc<Generation>>,
    /// Where promotions are asked for (`None`: nothing watches the file).
    pub requests: Option<tokio::sync::mpsc::Sender<Request>>,
}

impl Versions {
    /// Loads the pipeline's plugins and a chain per worker; watches the
    /// pipeline's file when it asks for live swaps.
    pub async fn start(engine: &Arc<Engine>, pipeline: &Pipeline, panel: &Arc<Panel>) -> Result<Versions, RunError> {
        let (e, p) = (engine.clone(), pipeline.clone());
        let loaded = tokio::task::spawn_blocking(move || Loaded::load(&e, &p)).await.expect("no panic")?;
        panel.set_plugins(loaded.versions());
        let first = Arc::new(Generation { number: 1, pipeline: pipeline.clone(), loaded });
        let mut chains = Vec::new();
        for _ in 0..pipeline.workers {
            let (engine, first) = (engine.clone(), first.clone());
            let chain = tokio::task::spawn_blocking(move || {
                TransformChain::instantiate(&engine, &first.pipeline, &first.loaded)
            })
            .await
            .expect("no panic")?;
            chains.push(chain);
        }
        // Watch the file the pipeline came from (a pipeline built in memory
        // has none); a pipeline with a candidate in shadow has a watcher
        // for its promotion, looking at the file only if reloads are on.
        let watched = pipeline.reload.is_some() || pipeline.has_shadow();
        let text = watched.then(|| Some((pipeline.reload, std::fs::read_to_string(&pipeline.file).ok()?))).flatten();
        let watcher = match text {
            // Off the async threads: looking at S3 plugins blocks.
            Some((every, text)) => {
                let (engine, first, panel) = (engine.clone(), first.clone(), panel.clone());
                Some(
                    tokio::task::spawn_blocking(move || Watcher::new(engine, first, text, every, panel))
                        .await
                        .expect("no panic"),
                )
            }
            None => None,
        };
        let (keep_first, _) = watch::channel(first);
        Ok(Versions { chains, keep_first, watcher })
    }

    /// Starts watching until `stop`; gives the chains and the channel of
    /// versions.
    pub fn watch(
        self,
        stop: watch::Receiver<bool>,
    ) -> (Vec<TransformChain>, watch::Receiver<Arc<Generation>>, Watching) {
        let generations = self.watcher.as_ref().map_or_else(|| self.keep_first.subscribe(), Watcher::subscribe);
        let requests = self.watcher.as_ref().map(Watcher::requester);
        let task = self.watcher.map(|w| tokio::spawn(w.run(stop)));
        (self.chains, generations, Watching { task, _keep_first: self.keep_first, requests })
    }
}

impl Watching {
    /// Waits for the watcher (told to stop); it counted its swaps and
    /// refusals on the run's panel.
    pub async fn finish(self) {
        if let Some(t) = self.task {
            let _ = t.await;
        }
    }
}

/// A new version, checked by the watcher, is taken between batches: each
/// batch runs on one version from start to end.
pub async fn take_new_version(
    engine: &Arc<Engine>,
    chain: TransformChain,
    generations: &mut watch::Receiver<Arc<Generation>>,
) -> TransformChain {
    if !generations.has_changed().unwrap_or(false) {
        return chain;
    }
    let next = generations.borrow_and_update().clone();
    let engine = engine.clone();
    let built = tokio::task::spawn_blocking(move || {
        TransformChain::instantiate(&engine, &next.pipeline, &next.loaded).map(|c| (c, next.number))
    })
    .await
    .expect("no panic");
    match built {
        Ok((c, number)) => {
            tracing::debug!(generation = number, "worker on the new version");
            c
        }
        Err(e) => {
            tracing::error!(error = %e, "could not instantiate the new version; this worker keeps the old one");
            chain
        }
    }
}
