//! Notifications mode: receivers take one S3 event notification (or a plain
//! `s3://bucket/key` body) per free worker; its worker loads each object it
//! announces and deletes it once all of them committed. A body that is not
//! a notification is a dead letter under the message ledger.
//!
//! Must not load an object itself: [`super::object`] does.

use super::{ObjectRef, Objects, Outcome};
use crate::flow::{Hold, Holder, Job, Received, Receiving, RunOptions, Workers, receive_loop, release};
use crate::queue::Message;
use crate::sink::Unit;
use crate::sink::dead_letter::DeadLetter;
use crate::transform::TransformChain;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc};

/// Receives notifications until the run ends; the workers load them.
pub(super) async fn run(
    objects: &Arc<Objects>,
    workers: Workers<Notification>,
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
                    Some(room) => room.send(Notification::new(objects.clone(), r)),
                    None => {
                        r.hold.settle();
                        release(&source, vec![r.message]).await;
                    }
                }
            }
        })
    };
    let runs = tokio::spawn(flow.clone().serve_runs(opts.idle));
    flow.until_done(opts, shutdown).await;
    // Loaders end after their current commit; what committed stays.
    flow.stop();
    let _ = runs.await;
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

impl Job for Notification {
    async fn run(self, chain: TransformChain) -> TransformChain {
        let (chain, settled) = self.load(chain).await;
        // Settled or not, the notification is no longer kept from here.
        self.hold.settle();
        let (source, _) = self.objects.queue.as_ref().expect("notifications have a queue");
        let refs = [&self.message];
        if settled {
            self.objects.flow.tally(|s| s.messages += 1);
            if let Err(e) = source.delete(&refs).await {
                tracing::warn!(error = %e, "delete failed; the notification comes back and adds nothing");
            }
        } else if let Err(e) = source.set_visibility(&refs, Duration::from_secs(5)).await {
            tracing::warn!(error = %e, "could not shorten the visibility of a notification not done");
        }
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
            let (c, mut outcome) = objects.load(chain, &object).await;
            chain = c;
            // Another loader has the object (two notifications of one key):
            // wait for it, then find what it committed.
            while matches!(outcome, Ok(Outcome::Busy)) && !objects.flow.stopping() {
                tokio::time::sleep(Duration::from_millis(200)).await;
                let (c, next) = objects.load(chain, &object).await;
                (chain, outcome) = (c, next);
            }
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
        match self.objects.flow.sink.commit(vec![unit], "[]").await {
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
