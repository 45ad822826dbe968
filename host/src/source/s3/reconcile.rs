//! Reconcile mode: a pass now and then every `interval` (or early when a
//! notification arrives on the optional queue; `--once` runs one pass).
//! A pass lists the objects under the bucket and prefix and compares them
//! with what `etl.files` says was loaded: new objects load, objects whose
//! ETag changed replace their rows, and the rows of objects that are gone
//! are deleted. Each object of a pass is a unit of work for the pool.
//!
//! Must not load an object itself: [`super::object`] does.

use super::lock::lock_key;
use super::{LoadError, ObjectRef, Objects, Outcome};
use crate::flow::{Dispatch, Job, RunOptions, Workers};
use crate::queue::Message;
use crate::sink::{SinkError, sql};
use crate::transform::TransformChain;
use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;
use tokio::sync::mpsc;

/// Passes until the run ends.
pub(super) async fn run(
    objects: &Arc<Objects>,
    workers: Workers<ObjectJob>,
    opts: RunOptions,
    interval: Duration,
    shutdown: impl std::future::Future<Output = ()>,
) {
    let flow = &objects.flow;
    let mut stop = flow.stop_signal();
    {
        let work = async {
            loop {
                pass(objects, workers.dispatch()).await;
                if opts.once || flow.stopping() || flow.fatal() {
                    return;
                }
                if !until_next(objects, interval, &mut stop).await {
                    return;
                }
            }
        };
        tokio::pin!(work);
        tokio::pin!(shutdown);
        tokio::select! {
            _ = &mut work => {}
            _ = &mut shutdown => {
                flow.stop();
                work.await;
            }
        }
    }
    workers.finish().await;
}

/// Waits for the next pass: `interval`, or a notification on the queue
/// (the pass covers what it announces). `false` if the run stops first.
async fn until_next(objects: &Objects, interval: Duration, stop: &mut tokio::sync::watch::Receiver<bool>) -> bool {
    let until = tokio::time::Instant::now() + interval;
    loop {
        let woken = match &objects.queue {
            Some((source, q)) => {
                let wait = q.wait.min(until.saturating_duration_since(tokio::time::Instant::now()));
                tokio::select! {
                    r = source.receive_up_to(10, wait, q.visibility) => match r {
                        Ok(m) if !m.is_empty() => {
                            let refs: Vec<&Message> = m.iter().collect();
                            let _ = source.delete(&refs).await;
                            true
                        }
                        _ => false,
                    },
                    _ = stop.changed() => return false,
                }
            }
            None => tokio::select! {
                _ = tokio::time::sleep_until(until) => true,
                _ = stop.changed() => return false,
            },
        };
        if woken || tokio::time::Instant::now() >= until {
            return true;
        }
    }
}

/// One pass: loads new and changed objects (each worker takes the next),
/// then removes the rows of files whose object is gone.
async fn pass(objects: &Arc<Objects>, dispatch: &Dispatch<ObjectJob>) {
    let loader = &objects.loader;
    let prefix = loader.config.prefix.clone();
    let bucket = loader.config.bucket.clone().unwrap_or_default();
    let (listed, loaded) = match (loader.list(&prefix).await, loader.loaded(&prefix).await) {
        (Ok(l), Ok(d)) => (l, d),
        (Err(e), _) => return objects.count(&Err(e)),
        (_, Err(e)) => {
            return objects.count(&Err(LoadError::Sink { uri: format!("s3://{bucket}/{prefix}"), source: e }));
        }
    };
    let have: HashMap<&str, &str> = loaded.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    let todo: Vec<ObjectRef> = listed
        .iter()
        .filter(|o| have.get(o.key.as_str()) != Some(&o.etag.as_str()))
        .map(|o| ObjectRef {
            bucket: bucket.clone(),
            key: o.key.clone(),
            etag: Some(o.etag.clone()),
            ..ObjectRef::default()
        })
        .collect();
    let listed_keys: HashSet<&str> = listed.iter().map(|o| o.key.as_str()).collect();
    let gone: Vec<String> =
        loaded.iter().filter(|(k, _)| !listed_keys.contains(k.as_str())).map(|(k, _)| k.clone()).collect();
    tracing::info!(pipeline = %objects.flow.pipeline.name, listed = listed.len(), to_load = todo.len(), gone = gone.len(), "reconcile pass");
    load_all(objects, dispatch, todo).await;
    for key in gone {
        match remove(objects, &bucket, &key).await {
            Ok(true) => objects.flow.tally(|s| s.objects_removed += 1),
            Ok(false) => {}
            Err(e) => objects.count(&Err(LoadError::Sink { uri: format!("s3://{bucket}/{key}"), source: e })),
        }
    }
}

/// Hands each object to the workers and waits until all are done (or the
/// run stops).
pub(super) async fn load_all(objects: &Arc<Objects>, dispatch: &Dispatch<ObjectJob>, todo: Vec<ObjectRef>) {
    let (done, mut all_done) = mpsc::channel::<()>(1);
    for object in todo {
        if objects.flow.stopping() || objects.flow.fatal() {
            break;
        }
        let job = ObjectJob { objects: objects.clone(), object, _done: done.clone() };
        if dispatch.send(job).await.is_err() {
            break;
        }
    }
    drop(done);
    // Every job holds a sender: `None` once the last one ended.
    let _ = all_done.recv().await;
}

/// One object of a pass or a backfill.
pub(super) struct ObjectJob {
    objects: Arc<Objects>,
    object: ObjectRef,
    /// Dropped when the job ends.
    _done: mpsc::Sender<()>,
}

impl Job for ObjectJob {
    async fn run(self, chain: TransformChain) -> TransformChain {
        let objects = &self.objects;
        if objects.flow.stopping() || objects.flow.fatal() {
            return chain;
        }
        let (chain, outcome) = objects.load(chain, &self.object).await;
        match outcome {
            Ok(Outcome::Gone) => {
                tracing::info!(pipeline = %objects.flow.pipeline.name, object = %self.object.uri(), "gone before it was read")
            }
            // Done before: it counts as done in the progress.
            Ok(Outcome::AlreadyLoaded) => {
                objects.loader.progress.objects.fetch_add(1, Ordering::Relaxed);
            }
            _ => {}
        }
        objects.count(&outcome);
        chain
    }
}

/// Removes the rows of a file whose object is gone, and its ledger rows.
/// `false` if another loader holds the file.
async fn remove(objects: &Objects, bucket: &str, key: &str) -> Result<bool, SinkError> {
    let Some(column) = &objects.loader.replace else { return Ok(false) };
    let sink = &objects.flow.sink;
    let pipeline = &objects.flow.pipeline.name;
    let object = ObjectRef { bucket: bucket.into(), key: key.into(), ..ObjectRef::default() };
    let mut client = sink.pool().get().await.map_err(SinkError::pool)?;
    let tx = client.transaction().await.map_err(SinkError::of)?;
    let (a, b) = lock_key(pipeline, &object);
    let got: bool = tx.query_one(sql::OBJECT_TRY_XACT_LOCK, &[&a, &b]).await.map_err(SinkError::of)?.get(0);
    if !got {
        return Ok(false);
    }
    tx.execute(&sql::delete_file_rows(sink.target(), column), &[&object.uri()]).await.map_err(SinkError::of)?;
    tx.execute(sql::FILE_FORGET, &[pipeline, &bucket, &key]).await.map_err(SinkError::of)?;
    tx.commit().await.map_err(SinkError::of)?;
    Ok(true)
}
