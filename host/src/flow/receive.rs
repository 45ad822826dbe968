//! Receiving from a queue, for every source that reads one: long polls that
//! retry after a failure, messages handed on one by one, and on stop, what
//! was received but not handed on released at once. Also the keeper that
//! extends the visibility of messages while their unit is in work.
//!
//! Must not decide what a message means: receivers hand messages on.

use super::{Flow, RunOptions};
use crate::queue::{Message, SqsSource};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc};

/// How one source's messages are received.
#[derive(Clone)]
pub struct Receiving {
    pub source: SqsSource,
    /// At most this many per receive (1 to 10).
    pub per_receive: i32,
    pub wait: Duration,
    pub visibility: Duration,
    /// When set, a receive waits for a permit (a free worker) and its
    /// message carries it until its unit ends: no message then waits for a
    /// worker while nobody extends its visibility.
    pub slots: Option<Arc<Semaphore>>,
}

/// A message as a receiver hands it on.
pub struct Received {
    pub message: Message,
    /// Its worker slot, when receives are gated by [`Receiving::slots`].
    pub slot: Option<OwnedSemaphorePermit>,
}

/// Receives until the flow stops; hands each message to `tx`.
pub async fn receive_loop(flow: Arc<Flow>, r: Receiving, tx: mpsc::Sender<Received>, opts: RunOptions) {
    let wait = if opts.once { r.wait.min(Duration::from_secs(1)) } else { r.wait };
    let mut stop = flow.stop_signal();
    loop {
        if *stop.borrow() {
            return;
        }
        let mut slot = match &r.slots {
            Some(slots) => tokio::select! {
                permit = slots.clone().acquire_owned() => Some(permit.expect("the semaphore is never closed")),
                _ = stop.changed() => return,
            },
            None => None,
        };
        // Not cancelled by a stop: SQS may already have handed the messages
        // out, and a dropped answer would leave them invisible for a whole
        // visibility timeout. What comes back after a stop is released.
        let per_receive = if slot.is_some() { 1 } else { r.per_receive };
        match r.source.receive_up_to(per_receive, wait, r.visibility).await {
            Ok(messages) => {
                flow.activity.received(messages.len());
                let mut messages = messages.into_iter();
                while !*stop.borrow() {
                    let Some(message) = messages.next() else { break };
                    if let Err(unsent) = tx.send(Received { message, slot: slot.take() }).await {
                        release(&r.source, std::iter::once(unsent.0.message).chain(messages).collect()).await;
                        return;
                    }
                }
                let rest: Vec<Message> = messages.collect();
                if !rest.is_empty() {
                    release(&r.source, rest).await;
                    return;
                }
            }
            Err(e) => {
                tracing::warn!(error = %e, "receive failed; retrying in 1 s");
                // Nothing to wait for either: `--once` may stop.
                flow.activity.received(0);
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
        }
    }
}

/// Makes messages visible again at once (they were received, not loaded).
pub async fn release(source: &SqsSource, messages: Vec<Message>) {
    if messages.is_empty() {
        return;
    }
    let refs: Vec<&Message> = messages.iter().collect();
    if let Err(e) = source.set_visibility(&refs, Duration::ZERO).await {
        tracing::warn!(error = %e, "could not release messages; they return after their visibility timeout");
    }
}

/// Extends the visibility of messages while it lives.
pub struct Keeper(tokio::task::JoinHandle<()>);

impl Drop for Keeper {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Extends the messages' visibility to `visibility` every half of it,
/// until the returned keeper is dropped.
pub fn keep_visible(source: SqsSource, messages: Vec<Message>, visibility: Duration) -> Keeper {
    Keeper(tokio::spawn(async move {
        loop {
            tokio::time::sleep(visibility / 2).await;
            let refs: Vec<&Message> = messages.iter().collect();
            if let Err(e) = source.set_visibility(&refs, visibility).await {
                tracing::warn!(error = %e, "could not extend visibility");
            }
        }
    }))
}
