//! Reconcile mode: a pass now and then every `interval` (or early when a
//! notification arrives on the optional queue; `--once` runs one pass),
//! each after its feed's pass, if it has one (SFTP copies into the bucket).
//! A pass lists the objects under the bucket and prefix and compares them
//! with what `etl.files` says was loaded: new objects load, objects whose
//! ETag changed replace their rows, and the rows of objects that are gone
//! are deleted. Each object of a pass is a unit of work for the pool.
//!
//! Must not load an object itself: [`super::object`] does.

use super::claim;
use super::listing::{PAGE, Token};
use super::ranges::{Cutter, Range, Ranges};
use super::{LoadError, ObjectRef, Objects, Outcome};
use crate::config::S3Mode;
use crate::flow::{Dispatch, Job, RunOptions, Workers};
use crate::queue::Message;
use crate::sink::lease::{Fence, Lease};
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
            // The first pass, and each one woken early, sees every range.
            let mut early = true;
            loop {
                // Runs asked for by hand are this pass.
                let runs = &flow.panel.runs;
                let ids = runs.start(&flow.panel.counts());
                if let Some(feed) = &objects.feed {
                    feed.pass(flow).await;
                }
                if !flow.stopping() && !flow.fatal() {
                    let settle = opts.once || early || !ids.is_empty();
                    pass(objects, workers.dispatch(), settle, interval).await;
                }
                let stopped = (flow.stopping() || flow.fatal()).then_some("the pipeline stopped during the pass");
                runs.end(&ids, &flow.panel.counts(), stopped);
                if opts.once || flow.stopping() || flow.fatal() {
                    return;
                }
                match until_next(objects, interval, &mut stop, &mut failing).await {
                    Some(woken) => early = woken,
                    None => return,
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
/// pass covers what it announces), or a run asked for by hand; whether it
/// was woken early (not by the interval). `None` if the run stops first. While the queue cannot be read, the wait goes on
/// without it between tries (1 s, doubling to 30 s), logged once.
async fn until_next(
    objects: &Objects,
    interval: Duration,
    stop: &mut tokio::sync::watch::Receiver<bool>,
    failing: &mut Backoff,
) -> Option<bool> {
    let until = tokio::time::Instant::now() + interval;
    let Some((source, q)) = &objects.queue else {
        return tokio::select! {
            () = objects.flow.panel.runs.requested() => Some(true),
            _ = tokio::time::sleep_until(until) => Some(false),
            _ = stop.changed() => None,
        };
    };
    loop {
        let now = tokio::time::Instant::now();
        let wait = q.wait.min(until.saturating_duration_since(now));
        // While the queue fails, its next try waits; the interval and a
        // run asked for by hand still count.
        let next_try = failing.next_try(now).min(until);
        tokio::select! {
            () = objects.flow.panel.runs.requested() => return Some(true),
            _ = stop.changed() => return None,
            _ = tokio::time::sleep_until(next_try), if next_try > now => {}
            r = source.receive_up_to(10, wait, q.visibility), if next_try <= now => match r {
                Ok(m) => {
                    objects.flow.panel.source_ok("queue");
                    failing.ended();
                    if !m.is_empty() {
                        let refs: Vec<&Message> = m.iter().collect();
                        let _ = source.delete(&refs).await;
                        return Some(true);
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
            return Some(false);
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

/// One pass: the pipeline's key ranges ([`super::ranges`]), each walked
/// under its lease, until every range was passed since this pass began
/// (`settle`: `--once`, a run asked for by hand or a notification), or
/// within the last half interval (a periodic pass leaves the ranges other
/// hosts hold to them).
async fn pass(objects: &Arc<Objects>, dispatch: &Dispatch<ObjectJob>, settle: bool, interval: Duration) {
    let loader = &objects.loader;
    // Versioning may have been turned on since (or, behind an unreadable
    // answer, the first versions written by the feed's pass).
    loader.detect_versions().await;
    let flow = &objects.flow;
    let bucket = loader.config.bucket.clone().unwrap_or_default();
    let failed =
        |e| objects.count(&Err(LoadError::Sink { uri: format!("s3://{bucket}/{}", loader.config.prefix), error: e }));
    let ranges = Ranges::of(objects);
    let started = match ranges.start().await {
        Ok(now) => now,
        Err(e) => return failed(e),
    };
    let since = if settle { started } else { started - interval.as_secs_f64() / 2.0 };
    let size = match loader.config.mode {
        S3Mode::Reconcile { range_objects, .. } => range_objects,
        S3Mode::Notifications => u64::MAX,
    };
    let mut totals = Walked::default();
    loop {
        if flow.stopping() || flow.fatal() {
            return;
        }
        let all = match ranges.all().await {
            Ok(all) => all,
            Err(e) => return failed(e),
        };
        let due: Vec<Range> = all.into_iter().filter(|r| r.passed_at.is_none_or(|t| t < since)).collect();
        if due.is_empty() {
            break;
        }
        let mut passed = false;
        for range in due {
            let name = ranges.lease_name(&range.after);
            let lease = match Lease::try_take(flow.sink.pool(), &flow.pipeline.name, &name, "reconcile").await {
                Ok(Some(lease)) => lease,
                Ok(None) => continue,
                Err(e) => return failed(e),
            };
            // Cut by another host since it was read: passed again after
            // reading the ranges anew.
            let now = match ranges.all().await {
                Ok(all) => all.into_iter().find(|r| r.after == range.after),
                Err(e) => return failed(e),
            };
            let Some(range) = now.filter(|r| r.passed_at.is_none_or(|t| t < since)) else {
                lease.release().await;
                passed = true;
                continue;
            };
            let mut cutter = Cutter::new(size);
            let walked = walk(objects, dispatch, &range, &lease, &mut cutter).await;
            let began = (range.after.as_str(), lease.taken_at());
            let recorded = match &walked {
                Some(_) => ranges.passed(lease.fence(), began, cutter.listed, &cutter.cuts()).await,
                None => Ok(()),
            };
            lease.release().await;
            let Some(walked) = walked else { return };
            if let Err(e) = recorded {
                return failed(e);
            }
            totals += walked;
            passed = true;
        }
        if !passed {
            if !settle {
                break;
            }
            // Every range left is another host's now: wait for it to end
            // them (or for their leases to expire, if it died).
            tokio::select! {
                _ = tokio::time::sleep(Duration::from_secs(1)) => {}
                () = flow.stopped() => return,
            }
        }
    }
    let Walked { listed, to_load, gone, backing_off } = totals;
    tracing::info!(pipeline = %flow.pipeline.name, listed, to_load, gone, backing_off, "reconcile pass");
}

/// What walking one range did.
#[derive(Debug, Default, Clone, Copy)]
struct Walked {
    listed: usize,
    to_load: usize,
    gone: usize,
    backing_off: usize,
}

impl std::ops::AddAssign for Walked {
    fn add_assign(&mut self, o: Walked) {
        self.listed += o.listed;
        self.to_load += o.to_load;
        self.gone += o.gone;
        self.backing_off += o.backing_off;
    }
}

/// Walks one range's listing and the files loaded from it side by side, a
/// page at a time (both in byte order of keys, so neither is ever held
/// whole): new and changed objects load (each worker takes the next), and
/// the rows of files whose object is gone are removed, under the range's
/// `lease`. `None` if it ended early (the run stopping, the lease taken
/// over, a failure: counted).
async fn walk(
    objects: &Arc<Objects>,
    dispatch: &Dispatch<ObjectJob>,
    range: &Range,
    lease: &Lease,
    cutter: &mut Cutter,
) -> Option<Walked> {
    let loader = &objects.loader;
    let prefix = loader.config.prefix.clone();
    let bucket = loader.config.bucket.clone().unwrap_or_default();
    let bounds = (range.after.as_str(), range.upto.as_deref());
    let mut loaded = Loaded { page: VecDeque::new(), after: (String::new(), String::new()), end: false };
    let mut walked = Walked::default();
    let mut token = (!range.after.is_empty()).then(|| Token::StartAfter(range.after.clone()));
    let mut last_listed: Option<String> = None;
    loop {
        if objects.flow.stopping() {
            return None;
        }
        if lease.lost() {
            tracing::warn!(pipeline = %objects.flow.pipeline.name, range = %lease.fence().name,
                "the range's lease was taken over by another host; this host leaves the range to it");
            return None;
        }
        let (mut page, mut next) = match loader.list_page(&prefix, token.take()).await {
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
                        objects.flow.fail(&e.to_string());
                        return None;
                    }
                }
                objects.count(&Err(e));
                return None;
            }
        };
        if let Some(upto) = &range.upto {
            // The range ends at `upto`: the next range's keys are its own.
            let all = page.len();
            page.retain(|o| o.key.as_bytes() <= upto.as_bytes());
            if page.len() < all || page.last().is_some_and(|o| o.key == *upto) {
                next = None;
            }
        }
        walked.listed += page.len();
        // The walk needs keys in byte order, as S3 lists them; a store that
        // lists otherwise (S3 directory buckets) would look like removals.
        let sorted = page.windows(2).all(|w| w[0].key.as_bytes() < w[1].key.as_bytes())
            && page.first().zip(last_listed.as_deref()).is_none_or(|(f, l)| l.as_bytes() < f.key.as_bytes());
        if !sorted {
            tracing::error!(pipeline = %objects.flow.pipeline.name, bucket = %bucket, "the listing is not in key order; this pass removes nothing and loads nothing");
            return None;
        }
        last_listed = page.last().map(|o| o.key.clone()).or(last_listed);
        let mut todo = Vec::new();
        let mut removed = Vec::new();
        for o in &page {
            cutter.saw(&o.key);
            // Loaded files before this key are not listed: gone.
            let mut have = false;
            loop {
                let front = loaded.front(objects, &prefix, &bucket, bounds).await.ok()?;
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
                    walked.backing_off += 1;
                }
            }
        }
        if next.is_none() {
            // Past the range's listing, every loaded file left in it is gone.
            while loaded.front(objects, &prefix, &bucket, bounds).await.ok()?.is_some() {
                removed.push(loaded.pop().0);
                if removed.len() >= PAGE {
                    walked.gone += remove_all(objects, &bucket, std::mem::take(&mut removed), lease.fence()).await;
                }
            }
        }
        walked.to_load += todo.len();
        load_all(objects, dispatch, todo, false).await;
        walked.gone += remove_all(objects, &bucket, removed, lease.fence()).await;
        token = next;
        if token.is_none() {
            return Some(walked);
        }
    }
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
    async fn front(
        &mut self,
        objects: &Objects,
        prefix: &str,
        bucket: &str,
        range: (&str, Option<&str>),
    ) -> Result<Option<(&str, &str, bool)>, ()> {
        if self.page.is_empty() && !self.end {
            let after = (self.after.0.as_str(), self.after.1.as_str());
            match objects.loader.loaded_page(prefix, after, range).await {
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

/// Removes the rows of files that are gone, under the range's `fence`; how
/// many were removed.
async fn remove_all(objects: &Objects, bucket: &str, keys: Vec<String>, fence: &Fence) -> usize {
    let mut keys = keys;
    keys.dedup();
    let mut n = 0;
    for key in keys {
        match remove(objects, bucket, &key, fence).await {
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
/// run stops). With `wait_busy` (a backfill), an object another loader
/// holds is waited for; a pass leaves it to the next pass.
pub(super) async fn load_all(
    objects: &Arc<Objects>,
    dispatch: &Dispatch<ObjectJob>,
    todo: Vec<ObjectRef>,
    wait_busy: bool,
) {
    let (done, mut all_done) = mpsc::channel::<()>(1);
    for object in todo {
        if objects.flow.stopping() || objects.flow.fatal() {
            break;
        }
        // Not waiting for room past a stop: the workers may all be stuck.
        let Some(room) = dispatch.room(objects.flow.stopped()).await else { break };
        room.send(ObjectJob { objects: objects.clone(), object, wait_busy, _done: done.clone() });
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
    wait_busy: bool,
    /// Dropped when the job ends.
    _done: mpsc::Sender<()>,
}

impl Job for ObjectJob {
    async fn run(self, chain: TransformChain) -> TransformChain {
        let objects = &self.objects;
        if objects.flow.stopping() || objects.flow.fatal() {
            return chain;
        }
        let (chain, outcome) = match self.wait_busy {
            true => objects.load_waiting(chain, &self.object).await,
            false => objects.load(chain, &self.object).await,
        };
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

/// Removes the rows of a file whose object is gone, and its ledger rows,
/// under the object's lease and the range's `fence` (the listing that
/// found it gone is this range holder's). `false` if another loader holds
/// the file.
async fn remove(objects: &Objects, bucket: &str, key: &str, fence: &Fence) -> Result<bool, SinkError> {
    let Some(column) = &objects.loader.replace else { return Ok(false) };
    let sink = &objects.flow.sink;
    let pipeline = &objects.flow.pipeline.name;
    let object = ObjectRef { bucket: bucket.into(), key: key.into(), ..ObjectRef::default() };
    // Under the object's lease, as a load would be: a loader that holds
    // it (a new version being loaded) keeps the file.
    let Some(lease) = claim::try_take(sink.pool(), pipeline, &object).await? else { return Ok(false) };
    let mut client = sink.pool().get().await.map_err(SinkError::pool)?;
    let removed = async {
        let tx = lease.fence().begin(&mut client).await?;
        if !fence.holds(&tx).await.map_err(SinkError::of)? {
            return Err(fence.refused());
        }
        tx.execute(&sql::delete_file_rows(sink.target(), column), &[&object.uri()]).await.map_err(SinkError::of)?;
        tx.execute(sql::FILE_FORGET, &[pipeline, &bucket, &key]).await.map_err(SinkError::of)?;
        tx.commit().await.map_err(SinkError::of)
    }
    .await;
    drop(client);
    lease.release().await;
    removed.map(|()| true)
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
