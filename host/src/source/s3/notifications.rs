//! Notifications mode: receivers take one S3 event notification (or a plain
//! `s3://bucket/key` body) per free worker; its worker loads each object it
//! announces and deletes it once all of them committed. A body that is not
//! a notification is a dead letter under the message ledger. A notification
//! whose objects could not all be loaded comes back after a delay that
//! doubles with each receive; object versions left part-loaded (a crash, a
//! notification that ran out of receives) are found in `etl.files` at the
//! start and every [`SWEEP_EVERY`] and loaded on by the host itself.
//!
//! Must not load an object itself: [`super::object`] does.

use super::{ObjectRef, Objects, Outcome};
use crate::flow::{Dispatch, Hold, Holder, Job, Received, Receiving, RunOptions, Workers, receive_loop, release};
use crate::queue::Message;
use crate::sink::Unit;
use crate::sink::dead_letter::DeadLetter;
use crate::transform::TransformChain;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc};

/// How often a run looks for object versions left part-loaded.
const SWEEP_EVERY: Duration = Duration::from_secs(60);

/// A unit of a notifications run: a notification, or an object version
/// found part-loaded.
pub(super) enum Work {
    Notification(Notification),
    Resume { objects: Arc<Objects>, object: ObjectRef },
}

impl Job for Work {
    async fn run(self, chain: TransformChain) -> TransformChain {
        match self {
            Work::Notification(n) => n.run(chain).await,
            Work::Resume { objects, object } => {
                let (chain, outcome) = objects.load(chain, &object).await;
                objects.count(&outcome);
                chain
            }
        }
    }
}

/// Receives notifications until the run ends; the workers load them.
pub(super) async fn run(
    objects: &Arc<Objects>,
    workers: Workers<Work>,
    opts: RunOptions,
    shutdown: impl std::future::Future<Output = ()>,
) {
    let flow = &objects.flow;
    let (source, queue) = objects.queue.clone().expect("notifications have a queue");
    let n = flow.pipeline.workers;
    let holder = Holder::start(source.clone(), queue.visibility);
    let receiving = Receiving {
        source: source.clone(),
        per_receive: 1,
        wait: queue.wait,
        holder: holder.clone(),
        // One notification per free worker.
        slots: Some(Arc::new(Semaphore::new(n))),
    };
    let (tx, mut rx) = mpsc::channel::<Received>(n);
    let receivers: Vec<_> =
        (0..n).map(|_| tokio::spawn(receive_loop(flow.clone(), receiving.clone(), tx.clone(), opts))).collect();
    drop(tx);
    let dispatch = workers.dispatch().clone();
    let forward = {
        let objects = objects.clone();
        tokio::spawn(async move {
            while let Some(r) = rx.recv().await {
                match dispatch.room(objects.flow.stopped()).await {
                    Some(room) => room.send(Work::Notification(Notification::new(objects.clone(), r))),
                    None => {
                        r.hold.settle();
                        release(&source, vec![r.message]).await;
                    }
                }
            }
        })
    };
    let runs = tokio::spawn(flow.clone().serve_runs(opts.idle));
    let sweep = tokio::spawn(sweep(objects.clone(), workers.dispatch().clone()));
    flow.until_done(opts, shutdown).await;
    // Loaders end after their current commit; what committed stays.
    flow.stop();
    let _ = runs.await;
    let _ = sweep.await;
    for r in receivers {
        let _ = r.await;
    }
    let _ = forward.await;
    workers.finish().await;
    holder.release_orphans().await;
}

/// One notification, start to delete.
pub(super) struct Notification {
    objects: Arc<Objects>,
    message: Message,
    hold: Hold,
    /// The worker slot its receive took.
    _slot: Option<OwnedSemaphorePermit>,
}

impl Notification {
    fn new(objects: Arc<Objects>, r: Received) -> Self {
        Notification { objects, message: r.message, hold: r.hold, _slot: r.slot }
    }
}

/// Hands the object versions left part-loaded to the workers, now and
/// every [`SWEEP_EVERY`], until the run stops.
async fn sweep(objects: Arc<Objects>, dispatch: Dispatch<Work>) {
    let flow = objects.flow.clone();
    loop {
        match flow.sink.part_loaded(1000).await {
            Ok(rows) => {
                for [bucket, key, version, etag] in rows {
                    // A version recorded without its ETag (before this was
                    // recorded) is left to its notification, as it was.
                    let (Some(bucket), Some(key), Some(version), Some(_)) = (bucket, key, version, &etag) else {
                        continue;
                    };
                    // Recorded by its ETag where it had no version id.
                    let by_etag = etag.as_deref() == Some(version.as_str());
                    let version_id = (!by_etag).then_some(version);
                    let object = ObjectRef { bucket, key, version_id, etag, sequencer: None };
                    let Some(room) = dispatch.room(flow.stopped()).await else { return };
                    room.send(Work::Resume { objects: objects.clone(), object });
                }
            }
            Err(e) => {
                tracing::warn!(pipeline = %flow.pipeline.name, error = %e, "cannot look for part-loaded objects; looked for again later")
            }
        }
        tokio::select! {
            _ = tokio::time::sleep(SWEEP_EVERY) => {}
            () = flow.stopped() => return,
        }
    }
}

/// How long a notification not done stays invisible before it is tried
/// again: 5 s after its first receive, doubling with each, at most 15 min.
fn retry_after(receive_count: u32) -> Duration {
    crate::backoff::doubling(Duration::from_secs(5), receive_count, Duration::from_secs(900))
}

impl Notification {
    async fn run(self, chain: TransformChain) -> TransformChain {
        let (chain, settled) = self.load(chain).await;
        let (source, _) = self.objects.queue.as_ref().expect("notifications have a queue");
        let refs = [&self.message];
        if settled {
            self.objects.flow.tally(|s| s.messages += 1);
            if let Err(e) = source.delete(&refs).await {
                tracing::warn!(error = %e, "delete failed; the notification comes back and adds nothing");
            }
        } else {
            // Interrupted by a stop (a drain): another host takes it at
            // once and resumes the object after its committed rows.
            // Otherwise it comes back after a backoff.
            let wait = if self.objects.flow.stopping() {
                std::time::Duration::ZERO
            } else {
                retry_after(self.message.receive_count)
            };
            if let Err(e) = source.set_visibility(&refs, wait).await {
                tracing::warn!(error = %e, "could not shorten the visibility of a notification not done");
            }
        }
        // Kept until now: a hold settled before the delete (or the new
        // timeout) would let the keeper's round under way release the
        // notification, visible to every consumer again, until the delete.
        self.hold.settle();
        chain
    }
}

impl Notification {
    /// Loads the objects announced; whether all of them are settled.
    async fn load(&self, chain: TransformChain) -> (TransformChain, bool) {
        let (objects, message) = (&self.objects, &self.message);
        let (_, queue) = objects.queue.as_ref().expect("notifications have a queue");
        let loader = &objects.loader;
        let mut chain = chain;
        if message.receive_count > queue.max_receives {
            let reason = format!("received {} times (max_receives = {})", message.receive_count, queue.max_receives);
            return (chain, self.dead_letter(reason).await);
        }
        let events = match readers::notification::parse(&String::from_utf8_lossy(&message.body)) {
            Ok(events) => events,
            Err(e) => return (chain, self.dead_letter(format!("not an S3 notification: {e}")).await),
        };
        for e in events {
            if !loader.wants(&e.bucket, &e.key) {
                tracing::info!(pipeline = %objects.flow.pipeline.name, object = %format!("s3://{}/{}", e.bucket, e.key), "not under the pipeline's bucket and prefix; skipped");
                continue;
            }
            let object = ObjectRef {
                bucket: e.bucket,
                key: e.key,
                version_id: e.version_id,
                etag: e.etag,
                sequencer: e.sequencer,
            };
            // Another loader has the object (two notifications of one key):
            // wait for it, then find what it committed.
            let (c, outcome) = objects.load_waiting(chain, &object).await;
            chain = c;
            objects.count(&outcome);
            match outcome {
                Ok(Outcome::Loaded(_) | Outcome::AlreadyLoaded | Outcome::Superseded) => {}
                Ok(Outcome::Gone) => {
                    tracing::warn!(pipeline = %objects.flow.pipeline.name, object = %object.uri(), "the announced object no longer exists; nothing to load")
                }
                Ok(Outcome::Busy | Outcome::Interrupted) | Err(_) => return (chain, false),
            }
        }
        (chain, true)
    }

    /// A message that cannot be loaded as a notification: a dead letter,
    /// under the message ledger. Returns whether it committed.
    async fn dead_letter(&self, reason: String) -> bool {
        let m = &self.message;
        let unit = Unit {
            message_id: m.id.clone(),
            sent_ms: m.sent_ms,
            payload: m.body.clone(),
            dead: vec![DeadLetter::source(reason, m.receive_count)],
            ..Unit::default()
        };
        // No chain ran: the lineage is the pipeline file's revision alone.
        let lineage =
            crate::sink::Lineage { revision: Some(self.objects.flow.pipeline.revision.clone()), ..Default::default() };
        match self.objects.flow.sink.commit(vec![unit], &lineage).await {
            Ok(r) => {
                self.objects.flow.tally(|s| s.dead_letters += r.dead_letters);
                true
            }
            Err(e) => {
                tracing::error!(error = %e, "could not record a dead letter; the message comes back");
                false
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::retry_after;
    use std::time::Duration;

    #[test]
    fn a_notification_not_done_backs_off_doubling_up_to_15_minutes() {
        let secs: Vec<u64> = [1, 2, 3, 4, 5, 9, 50].iter().map(|&n| retry_after(n).as_secs()).collect();
        assert_eq!(secs, [5, 10, 20, 40, 80, 900, 900]);
        assert_eq!(retry_after(0), Duration::from_secs(5));
    }
}
