//! Reconcile mode: a pass now and then every `interval` (or early when a
//! notification arrives on the optional queue; `--once` runs one pass),
//! each after its feed's pass, if it has one (SFTP copies into the bucket).
//! A pass lists the objects under the bucket and prefix and compares them
//! with what `etl.files` says was loaded: new objects load, objects whose
//! ETag changed replace their rows, and the rows of objects that are gone
//! are deleted. Each object of a pass is a unit of work for the pool.
//!
//! Must not load an object itself: [`super::object`] does.

use super::listing::PAGE;
use super::lock::lock_key;
use super::{LoadError, ObjectRef, Objects, Outcome};
use crate::flow::{Dispatch, Job, RunOptions, Workers};
use crate::queue::Message;
use crate::sink::{SinkError, sql};
use crate::transform::TransformChain;
use std::collections::VecDeque;
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
    // The wake-up queue's failures, across waits: logged once per outage.
    let mut failing = Backoff::default();
    {
        let work = async {
            loop {
                // Runs asked for by hand are this pass.
                let runs = &flow.panel.runs;
                let ids = runs.start(&flow.panel.counts());
                if let Some(feed) = &objects.feed {
                    feed.pass(flow).await;
                }
                if !flow.stopping() && !flow.fatal() {
                    pass(objects, workers.dispatch()).await;
                }
                let stopped = (flow.stopping() || flow.fatal()).then_some("the pipeline stopped during the pass");
                runs.end(&ids, &flow.panel.counts(), stopped);
                if opts.once || flow.stopping() || flow.fatal() {
                    return;
                }
                if !until_next(objects, interval, &mut stop, &mut failing).await {
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

/// Waits for the next pass: `interval`, a notification on the queue (the
/// pass covers what it announces), or a run asked for by hand. `false` if
/// the run stops first. While the queue cannot be read, the wait goes on
/// without it between tries (1 s, doubling to 30 s), logged once.
async fn until_next(
    objects: &Objects,
    interval: Duration,
    stop: &mut tokio::sync::watch::Receiver<bool>,
    failing: &mut Backoff,
) -> bool {
    let until = tokio::time::Instant::now() + interval;
    let Some((source, q)) = &objects.queue else {
        return tokio::select! {
            () = objects.flow.panel.runs.requested() => true,
            _ = tokio::time::sleep_until(until) => true,
            _ = stop.changed() => false,
        };
    };
    loop {
        let now = tokio::time::Instant::now();
        let wait = q.wait.min(until.saturating_duration_since(now));
        // While the queue fails, its next try waits; the interval and a
        // run asked for by hand still count.
        let next_try = failing.next_try(now).min(until);
        tokio::select! {
            () = objects.flow.panel.runs.requested() => return true,
            _ = stop.changed() => return false,
            _ = tokio::time::sleep_until(next_try), if next_try > now => {}
            r = source.receive_up_to(10, wait, q.visibility), if next_try <= now => match r {
                Ok(m) => {
                    objects.flow.panel.source_ok("queue");
                    failing.ended();
                    if !m.is_empty() {
                        let refs: Vec<&Message> = m.iter().collect();
                        let _ = source.delete(&refs).await;
                        return true;
                    }
                }
                Err(e) => {
                    let kind = e.kind();
                    objects.flow.panel.source_error("queue", kind.label(), &e.to_string(), false);
                    failing.failed(tokio::time::Instant::now());
                }
            },
        }
        if tokio::time::Instant::now() >= until {
            return true;
        }
    }
}

/// The tries of a wake-up queue that fails: each try waits twice as long
/// as the one before (1 s to 30 s, [`crate::backoff`]).
struct Backoff {
    /// When the queue may be tried again.
    retry: Option<tokio::time::Instant>,
    tries: crate::backoff::Backoff,
}

impl Default for Backoff {
    fn default() -> Self {
        Backoff { retry: None, tries: crate::backoff::Backoff::new(Duration::from_secs(1), Duration::from_secs(30)) }
    }
}

impl Backoff {
    fn next_try(&self, now: tokio::time::Instant) -> tokio::time::Instant {
        self.retry.unwrap_or(now)
    }

    /// A try failed at `now` (the panel's source health logs it).
    fn failed(&mut self, now: tokio::time::Instant) {
        self.retry = Some(now + self.tries.failed());
    }

    fn ended(&mut self) {
        self.retry = None;
        self.tries.reset();
    }
}

/// One pass: walks the listing and the files loaded from it side by side,
/// a page at a time (both in byte order of keys, so neither is ever held
/// whole): new and changed objects load (each worker takes the next), and
/// the rows of files whose object is gone are removed.
async fn pass(objects: &Arc<Objects>, dispatch: &Dispatch<ObjectJob>) {
    let loader = &objects.loader;
    // Versioning may have been turned on since (or, behind an unreadable
    // answer, the first versions written by the feed's pass).
    loader.detect_versions().await;
    let prefix = loader.config.prefix.clone();
    let bucket = loader.config.bucket.clone().unwrap_or_default();
    let mut loaded = Loaded { page: VecDeque::new(), after: (String::new(), String::new()), end: false };
    let (mut listed, mut to_load, mut gone, mut backing_off) = (0usize, 0usize, 0usize, 0usize);
    let mut token = None;
    let mut last_listed: Option<String> = None;
    loop {
        if objects.flow.stopping() {
            return;
        }
        let (page, next) = match loader.list_page(&prefix, token.take()).await {
            Ok(p) => {
                objects.flow.panel.source_ok("bucket");
                p
            }
            Err(e) => {
                if let LoadError::S3 { kind, .. } = &e {
                    objects.flow.panel.source_error("bucket", kind.label(), &e.to_string(), kind.lasting());
                    if kind.lasting() {
                        // A bucket gone or refused: a configuration error,
                        // as it would have been at the start.
                        return objects.flow.fail(&e.to_string());
                    }
                }
                return objects.count(&Err(e));
            }
        };
        listed += page.len();
        // The walk needs keys in byte order, as S3 lists them; a store that
        // lists otherwise (S3 directory buckets) would look like removals.
        let sorted = page.windows(2).all(|w| w[0].key.as_bytes() < w[1].key.as_bytes())
            && page.first().zip(last_listed.as_deref()).is_none_or(|(f, l)| l.as_bytes() < f.key.as_bytes());
        if !sorted {
            tracing::error!(pipeline = %objects.flow.pipeline.name, bucket = %bucket, "the listing is not in key order; this pass removes nothing and loads nothing");
            return;
        }
        last_listed = page.last().map(|o| o.key.clone()).or(last_listed);
        let mut todo = Vec::new();
        let mut removed = Vec::new();
        for o in &page {
            // Loaded files before this key are not listed: gone.
            let mut have = false;
            loop {
                let front = match loaded.front(objects, &prefix, &bucket).await {
                    Ok(f) => f,
                    Err(()) => return,
                };
                match front {
                    // Part-loaded ones too: their rows go with their object.
                    Some((key, _, _)) if key.as_bytes() < o.key.as_bytes() => removed.push(loaded.pop().0),
                    // Only a version loaded completely is had; one part-loaded
                    // (a crash, a failed read) loads on from its last row.
                    Some((key, version, done)) if key == o.key => {
                        // By its ETag too: a pass that could not ask whether
                        // the bucket keeps versions recorded it by that.
                        have |= done && (version == o.version() || version == o.etag);
                        loaded.pop();
                    }
                    _ => break,
                }
            }
            if !have {
                let object = o.object(&bucket);
                // A version that failed waits for its backoff.
                if objects.due(&object) {
                    todo.push(object);
                } else {
                    backing_off += 1;
                }
            }
        }
        if next.is_none() {
            // Past the listing's end, every loaded file left is gone.
            loop {
                match loaded.front(objects, &prefix, &bucket).await {
                    Ok(Some(_)) => removed.push(loaded.pop().0),
                    Ok(None) => break,
                    Err(()) => return,
                }
                if removed.len() >= PAGE {
                    gone += remove_all(objects, &bucket, std::mem::take(&mut removed)).await;
                }
            }
        }
        to_load += todo.len();
        load_all(objects, dispatch, todo).await;
        gone += remove_all(objects, &bucket, removed).await;
        token = next;
        if token.is_none() {
            break;
        }
    }
    tracing::info!(pipeline = %objects.flow.pipeline.name, listed, to_load, gone, backing_off, "reconcile pass");
}

/// The files loaded (or part-loaded) under the prefix, read a page at a time.
struct Loaded {
    page: VecDeque<(String, String, bool)>,
    /// The last (key, version) read.
    after: (String, String),
    end: bool,
}

impl Loaded {
    /// The next file (key, version, done), reading a page when needed;
    /// `Err` when the database failed (counted).
    async fn front(&mut self, objects: &Objects, prefix: &str, bucket: &str) -> Result<Option<(&str, &str, bool)>, ()> {
        if self.page.is_empty() && !self.end {
            let after = (self.after.0.as_str(), self.after.1.as_str());
            match objects.loader.loaded_page(prefix, after).await {
                Ok(rows) => {
                    self.end = rows.len() < PAGE;
                    if let Some((key, version, _)) = rows.last() {
                        self.after = (key.clone(), version.clone());
                    }
                    self.page.extend(rows);
                }
                Err(e) => {
                    objects.count(&Err(LoadError::Sink { uri: format!("s3://{bucket}/{prefix}"), error: e }));
                    return Err(());
                }
            }
        }
        Ok(self.page.front().map(|(k, v, d)| (k.as_str(), v.as_str(), *d)))
    }

    fn pop(&mut self) -> (String, String, bool) {
        self.page.pop_front().expect("front was read")
    }
}

/// Removes the rows of files that are gone; how many were removed.
async fn remove_all(objects: &Objects, bucket: &str, keys: Vec<String>) -> usize {
    let mut keys = keys;
    keys.dedup();
    let mut n = 0;
    for key in keys {
        match remove(objects, bucket, &key).await {
            Ok(true) => {
                objects.flow.tally(|s| s.objects_removed += 1);
                n += 1;
            }
            Ok(false) => {}
            Err(e) => objects.count(&Err(LoadError::Sink { uri: format!("s3://{bucket}/{key}"), error: e })),
        }
    }
    n
}

/// Hands each object to the workers and waits until all are done (or the
/// run stops).
pub(super) async fn load_all(objects: &Arc<Objects>, dispatch: &Dispatch<ObjectJob>, todo: Vec<ObjectRef>) {
    let (done, mut all_done) = mpsc::channel::<()>(1);
    for object in todo {
        if objects.flow.stopping() || objects.flow.fatal() {
            break;
        }
        // Not waiting for room past a stop: the workers may all be stuck.
        let Some(room) = dispatch.room(objects.flow.stopped()).await else { break };
        room.send(ObjectJob { objects: objects.clone(), object, _done: done.clone() });
    }
    drop(done);
    // Every job holds a sender: `None` once the last one ended. Once the
    // run stops, units get their grace and the workers abandon the rest.
    tokio::select! {
        _ = all_done.recv() => {}
        () = objects.flow.grace_over() => {}
    }
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
        objects.settle(&self.object, &outcome);
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_failing_wake_up_queue_is_tried_after_1_s_doubling_to_30_s() {
        let mut b = Backoff::default();
        let start = tokio::time::Instant::now();
        assert_eq!(b.next_try(start), start, "a queue that works is read at once");
        let mut waits = Vec::new();
        for _ in 0..7 {
            let now = tokio::time::Instant::now();
            b.failed(now);
            waits.push(b.next_try(now).duration_since(now).as_secs());
        }
        assert_eq!(waits, [1, 2, 4, 8, 16, 30, 30]);
        b.ended();
        assert_eq!(b.next_try(start), start);
    }
}
