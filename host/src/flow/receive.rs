//! Receiving from a queue, for every source that reads one: long polls that
//! retry after a failure, wait while the sink cannot commit, and hand
//! messages on one by one; on stop, what was received but not handed on is
//! released at once. Also the [`Holder`], which keeps every message it
//! holds invisible to other consumers from the moment it is received until
//! it is deleted or released, whatever it waits for in between.
//!
//! Must not decide what a message means: receivers hand messages on.

use super::{Flow, RunOptions};
use crate::backoff::{Backoff, jitter};
use crate::queue::{Message, SqsSource};
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;
use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc};
use tokio::time::Instant;

/// How one source's messages are received.
#[derive(Clone)]
pub struct Receiving {
    pub source: SqsSource,
    /// At most this many per receive (1 to 10).
    pub per_receive: i32,
    pub wait: Duration,
    /// Keeps what is received invisible until it is settled.
    pub holder: Holder,
    /// When set, a receive waits for a permit (a free worker) and its
    /// message carries it until its unit ends.
    pub slots: Option<Arc<Semaphore>>,
}

/// A message as a receiver hands it on.
pub struct Received {
    pub message: Message,
    /// Keeps it invisible to others while it lives.
    pub hold: Hold,
    /// Its worker slot, when receives are gated by [`Receiving::slots`].
    pub slot: Option<OwnedSemaphorePermit>,
    /// When its receive returned.
    pub at: Instant,
}

/// How long releasing messages may take.
const RELEASE_WITHIN: Duration = Duration::from_secs(5);

/// Receives until the flow stops; hands each message to `tx`.
pub async fn receive_loop(flow: Arc<Flow>, r: Receiving, tx: mpsc::Sender<Received>, opts: RunOptions) {
    let wait = if opts.once { r.wait.min(Duration::from_secs(1)) } else { r.wait };
    let mut stop = flow.stop_signal();
    // Receives failed in a row: the next waits 1 s, doubling to 30 s, with
    // jitter (receivers and hosts do not knock in step).
    let mut failures = Backoff::new(Duration::from_secs(1), RECEIVE_BACKOFF_MAX);
    loop {
        // Back-pressure: nothing is received while the sink cannot commit
        // (a message received then would only wait, or come back counted).
        if !flow.sink_ready(&mut stop).await {
            return;
        }
        let mut slot = match &r.slots {
            Some(slots) => tokio::select! {
                permit = slots.clone().acquire_owned() => Some(permit.expect("the semaphore is never closed")),
                _ = stop.changed() => return,
            },
            None => None,
        };
        let per_receive = if slot.is_some() { 1 } else { r.per_receive };
        let asked = Instant::now();
        let receive = r.source.receive_up_to(per_receive, wait, r.holder.visibility());
        tokio::pin!(receive);
        // A stop does not cancel a receive: SQS may already have handed
        // the messages out (or may hand out some that arrive before the
        // long poll ends), and what comes back is released at once. Only
        // one still waiting after the drain's grace is abandoned: what it
        // would have returned stays invisible for a visibility timeout.
        let result = tokio::select! {
            result = &mut receive => result,
            _ = stop.changed() => tokio::select! {
                result = &mut receive => result,
                () = flow.grace_over() => return,
            },
        };
        match result {
            Ok(messages) => {
                failures.reset();
                flow.panel.source_ok("queue");
                let at = Instant::now();
                flow.activity.received(messages.len());
                // Held from here: waiting for room below counts too.
                let held: Vec<(Hold, Message)> = messages.into_iter().map(|m| (r.holder.hold(&m, asked), m)).collect();
                let mut messages = held.into_iter();
                while let Some((hold, message)) = messages.next() {
                    let room = if *stop.borrow() {
                        None
                    } else {
                        tokio::select! {
                            room = tx.reserve() => room.ok(),
                            _ = stop.changed() => None,
                        }
                    };
                    if let Some(room) = room {
                        room.send(Received { message, hold, slot: slot.take(), at });
                        continue;
                    }
                    let rest = std::iter::once((hold, message)).chain(messages.by_ref());
                    release(&r.source, rest.map(|(h, m)| settled(h, m)).collect()).await;
                    return;
                }
            }
            Err(e) => {
                let kind = e.kind();
                flow.panel.source_error("queue", kind.label(), &e.to_string(), kind.lasting());
                if kind.lasting() {
                    // Gone, or access refused: a configuration error, as it
                    // would have been at the start. This pipeline stops.
                    flow.fail(&e.to_string());
                    return;
                }
                // Nothing to wait for either: `--once` may stop, and says
                // it could not read the queue.
                flow.activity.receive_failed(e.to_string());
                let wait = jitter(failures.failed());
                tokio::select! {
                    _ = tokio::time::sleep(wait) => {}
                    _ = stop.changed() => return,
                }
            }
        }
    }
}

/// The longest wait between receives that fail (from 1 s, doubling).
pub const RECEIVE_BACKOFF_MAX: Duration = Duration::from_secs(30);

/// `message`, its hold settled.
fn settled(hold: Hold, message: Message) -> Message {
    hold.settle();
    message
}

/// Makes messages visible again at once (they were received, not loaded).
pub async fn release(source: &SqsSource, messages: Vec<Message>) {
    if messages.is_empty() {
        return;
    }
    let refs: Vec<&Message> = messages.iter().collect();
    // Bounded (a stop must not wait on an endpoint that does not answer):
    // what is not released comes back after its visibility timeout anyway.
    match tokio::time::timeout(RELEASE_WITHIN, source.set_visibility(&refs, Duration::ZERO)).await {
        Ok(Ok(())) => {}
        Ok(Err(e)) => {
            tracing::warn!(error = %e, "could not release messages; they return after their visibility timeout")
        }
        Err(_) => tracing::warn!("releasing messages took too long; they return after their visibility timeout"),
    }
}

/// Keeps messages invisible to other consumers while they are held: one
/// task per holder extends each held message's visibility once a third of
/// it has passed, so a message waiting for a worker (or for the database
/// to come back) is kept as well as one in work. Clone-cheap; the task
/// ends when the holder and every [`Hold`] are gone.
#[derive(Clone)]
pub struct Holder {
    shared: Arc<Shared>,
}

struct Shared {
    source: SqsSource,
    visibility: Duration,
    held: Mutex<HashMap<u64, Kept>>,
    next: AtomicU64,
    /// Held by the task for each round of extensions (and the releases
    /// after it): a run's last release waits for a round under way, whose
    /// extensions could otherwise land after it.
    round: tokio::sync::Mutex<()>,
}

/// What extending a held message needs, and when its visibility ends.
struct Kept {
    message: Message,
    until: Instant,
    /// Its hold was dropped without being settled (its unit was abandoned
    /// or its worker panicked): released at once instead of kept.
    orphan: bool,
}

/// One message held. [`Hold::settle`] ends it once the message was
/// deleted, released, or left to come back after its timeout; a hold
/// dropped unsettled (an abandoned unit, a worker that panicked) releases
/// its message at once, so that it comes back without waiting.
pub struct Hold {
    key: u64,
    shared: Arc<Shared>,
    settled: bool,
}

impl Hold {
    pub fn settle(mut self) {
        self.settled = true;
        let mut held = self.shared.held.lock().expect("not poisoned");
        held.remove(&self.key);
        self.shared.count(&held);
    }
}

impl Drop for Hold {
    fn drop(&mut self) {
        if !self.settled
            && let Some(k) = self.shared.held.lock().expect("not poisoned").get_mut(&self.key)
        {
            k.orphan = true;
        }
    }
}

/// Extension calls in flight at once (10 messages each).
const PARALLEL_EXTENSIONS: usize = 8;

impl Holder {
    /// A holder of `source`'s messages, received with `visibility`.
    pub fn start(source: SqsSource, visibility: Duration) -> Holder {
        let shared = Arc::new(Shared {
            source,
            visibility,
            held: Mutex::new(HashMap::new()),
            next: AtomicU64::new(0),
            round: tokio::sync::Mutex::new(()),
        });
        tokio::spawn(keep(Arc::downgrade(&shared)));
        Holder { shared }
    }

    pub fn visibility(&self) -> Duration {
        self.shared.visibility
    }

    /// Holds `message`, received by a call made at `asked`.
    pub fn hold(&self, message: &Message, asked: Instant) -> Hold {
        let key = self.shared.next.fetch_add(1, Ordering::Relaxed);
        // Only what a visibility change needs, not the body.
        let kept = Message { body: Vec::new(), attributes: Vec::new(), ..message.clone() };
        let until = asked + self.shared.visibility;
        let mut held = self.shared.held.lock().expect("not poisoned");
        held.insert(key, Kept { message: kept, until, orphan: false });
        self.shared.count(&held);
        drop(held);
        Hold { key, shared: self.shared.clone(), settled: false }
    }

    /// Releases the messages whose holds were dropped unsettled (the task
    /// does it too, each tick; a run ends with this), after any round of
    /// extensions under way (which releases again what was settled while
    /// it ran).
    pub async fn release_orphans(&self) {
        // A round stuck in an extension call (as long as a third of the
        // visibility timeout) must not hold up a drain: after a second the
        // release goes ahead, and a message an extension then reaches again
        // comes back after its timeout.
        let _round = tokio::time::timeout(Duration::from_secs(1), self.shared.round.lock()).await;
        self.shared.release_orphans().await;
    }
}

impl Shared {
    /// Shows how many messages are held (`etl_messages_in_flight`).
    fn count(&self, held: &HashMap<u64, Kept>) {
        if let Some(panel) = self.source.panel() {
            panel.held(held.len());
        }
    }

    async fn release_orphans(&self) {
        let orphans: Vec<Message> = {
            let mut held = self.held.lock().expect("not poisoned");
            let keys: Vec<u64> = held.iter().filter(|(_, k)| k.orphan).map(|(key, _)| *key).collect();
            let orphans = keys.iter().filter_map(|key| held.remove(key)).map(|k| k.message).collect();
            self.count(&held);
            orphans
        };
        if !orphans.is_empty() {
            tracing::info!(messages = orphans.len(), "releasing messages of units that were abandoned");
            release(&self.source, orphans).await;
        }
    }
}

/// The holder's task: extends what is due, until the holder is gone.
async fn keep(shared: Weak<Shared>) {
    let tick = match shared.upgrade() {
        Some(s) => (s.visibility / 10).clamp(Duration::from_millis(100), Duration::from_secs(2)),
        None => return,
    };
    loop {
        tokio::time::sleep(tick).await;
        let Some(shared) = shared.upgrade() else { return };
        let _round = shared.round.lock().await;
        shared.release_orphans().await;
        let visibility = shared.visibility;
        let now = Instant::now();
        let due: Vec<(u64, Message)> = shared
            .held
            .lock()
            .expect("not poisoned")
            .iter()
            .filter(|(_, k)| !k.orphan && k.until.saturating_duration_since(now) <= visibility * 2 / 3)
            .map(|(key, k)| (*key, k.message.clone()))
            .collect();
        if due.is_empty() {
            continue;
        }
        use futures_util::StreamExt;
        let chunks: Vec<&[(u64, Message)]> = due.chunks(10).collect();
        futures_util::stream::iter(chunks)
            .for_each_concurrent(PARALLEL_EXTENSIONS, |chunk| {
                let shared = &shared;
                async move {
                    let asked = Instant::now();
                    let refs: Vec<&Message> = chunk.iter().map(|(_, m)| m).collect();
                    // Bounded: one slow call must not hold up the next round.
                    let call = shared.source.set_visibility(&refs, visibility);
                    match tokio::time::timeout(visibility / 3, call).await {
                        Ok(Ok(())) => {
                            let mut held = shared.held.lock().expect("not poisoned");
                            for (key, _) in chunk {
                                if let Some(k) = held.get_mut(key) {
                                    k.until = asked + visibility;
                                }
                            }
                        }
                        Ok(Err(e)) => tracing::warn!(error = %e, messages = chunk.len(), "could not extend visibility; trying again"),
                        Err(_) => tracing::warn!(messages = chunk.len(), "extending visibility took too long; trying again"),
                    }
                    // Settled while the call was under way (released, say):
                    // the extension may have landed after the release, so
                    // they are released again (for a deleted message this
                    // is a no-op).
                    let settled: Vec<Message> = {
                        let held = shared.held.lock().expect("not poisoned");
                        chunk.iter().filter(|(key, _)| !held.contains_key(key)).map(|(_, m)| m.clone()).collect()
                    };
                    release(&shared.source, settled).await;
                }
            })
            .await;
    }
}
