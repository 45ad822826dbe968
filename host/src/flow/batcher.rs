//! Messages into batches: a batch goes to the workers when it holds
//! `max_records` messages or its first one waited `max_wait`. Ends on
//! shutdown, on a fatal error, or with `--once` when nothing is left.
//!
//! Must not process batches: [`super::Job`]s do.

use super::receive::Received;
use super::{Dispatch, Flow, Job, Quiet, RunOptions};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::mpsc;

/// Groups messages from `rx` into jobs made by `make` and dispatches them;
/// returns the messages not dispatched when it stops (also while it waits
/// for a free worker).
pub async fn batch_loop<J: Job>(
    flow: &Arc<Flow>,
    rx: &mut mpsc::Receiver<Received>,
    dispatch: &Dispatch<J>,
    make: impl Fn(Vec<Received>) -> J,
    opts: RunOptions,
    shutdown: impl std::future::Future<Output = ()>,
) -> Vec<Received> {
    tokio::pin!(shutdown);
    let mut pending: Vec<Received> = Vec::new();
    let mut deadline: Option<tokio::time::Instant> = None;
    let mut quiet = Quiet::new(&flow.activity);
    let mut tick = tokio::time::interval(Duration::from_millis(100));
    loop {
        let full = pending.len() >= flow.pipeline.max_records;
        let due = deadline.is_some_and(|d| d <= tokio::time::Instant::now());
        if !pending.is_empty() && (full || due) {
            let until = async {
                tokio::select! {
                    () = &mut shutdown => {}
                    () = flow.stopped() => {}
                }
            };
            match dispatch.room(until).await {
                Some(room) => room.send(make(std::mem::take(&mut pending))),
                None => return pending,
            }
            deadline = None;
            quiet.touch(&flow.activity);
        }
        if flow.fatal() {
            return pending;
        }
        tokio::select! {
            m = rx.recv() => match m {
                Some(r) => {
                    if pending.is_empty() {
                        deadline = Some(tokio::time::Instant::now() + flow.pipeline.max_wait);
                    }
                    pending.push(r);
                    quiet.touch(&flow.activity);
                }
                None => return pending,
            },
            _ = tick.tick() => {
                if opts.once && pending.is_empty() && quiet.drained(&flow.activity, opts.idle) {
                    return pending;
                }
            }
            _ = &mut shutdown => return pending,
        }
    }
}
