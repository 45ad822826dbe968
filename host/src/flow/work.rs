//! The pool of workers of a run. Each owns a chain (its plugin instances),
//! takes the next unit of work from one shared channel, moves to a new
//! plugin version first if one was published, and gives the unit its chain
//! for the time it runs. Units are counted in work from dispatch to end.
//!
//! Must not know what a unit does: that is its [`Job`]'s.

use super::{Flow, take_new_version};
use crate::reload::Generation;
use crate::transform::TransformChain;
use std::future::Future;
use std::sync::Arc;
use tokio::sync::{Mutex, mpsc, watch};

/// A unit of work: a batch of messages, a notification, an object.
pub trait Job: Send + 'static {
    /// Runs the unit to its acknowledgement on `chain`; gives the chain
    /// back (a chain whose instance trapped comes back renewed).
    fn run(self, chain: TransformChain) -> impl Future<Output = TransformChain> + Send;
}

/// The workers, and the channel they take units from.
pub struct Workers<J> {
    dispatch: Dispatch<J>,
    handles: Vec<tokio::task::JoinHandle<()>>,
}

/// Hands units to the workers; clone-cheap. Holding one keeps the workers
/// waiting for more.
pub struct Dispatch<J> {
    flow: Arc<Flow>,
    /// Of capacity 1: a unit waits here only while every worker is busy.
    tx: mpsc::Sender<J>,
}

impl<J> Clone for Dispatch<J> {
    fn clone(&self) -> Self {
        Dispatch { flow: self.flow.clone(), tx: self.tx.clone() }
    }
}

impl<J: Job> Dispatch<J> {
    /// Waits for room and hands `job` over; gives it back if the workers
    /// are gone.
    pub async fn send(&self, job: J) -> Result<(), J> {
        self.flow.activity.begin();
        self.tx.send(job).await.map_err(|e| {
            self.flow.activity.end();
            e.0
        })
    }
}

impl<J: Job> Workers<J> {
    /// A worker per chain.
    pub fn start(
        flow: &Arc<Flow>,
        chains: Vec<TransformChain>,
        generations: &watch::Receiver<Arc<Generation>>,
    ) -> Self {
        let (tx, rx) = mpsc::channel::<J>(1);
        let rx = Arc::new(Mutex::new(rx));
        let handles = chains
            .into_iter()
            .map(|chain| tokio::spawn(worker(flow.clone(), chain, generations.clone(), rx.clone())))
            .collect();
        Workers { dispatch: Dispatch { flow: flow.clone(), tx }, handles }
    }

    pub fn dispatch(&self) -> &Dispatch<J> {
        &self.dispatch
    }

    /// Lets the workers finish what was dispatched, then waits for them.
    pub async fn finish(self) {
        drop(self.dispatch);
        for h in self.handles {
            let _ = h.await;
        }
    }
}

async fn worker<J: Job>(
    flow: Arc<Flow>,
    mut chain: TransformChain,
    mut generations: watch::Receiver<Arc<Generation>>,
    rx: Arc<Mutex<mpsc::Receiver<J>>>,
) {
    loop {
        let job = { rx.lock().await.recv().await };
        let Some(job) = job else { return };
        chain = take_new_version(&flow.engine, chain, &mut generations).await;
        chain = job.run(chain).await;
        flow.activity.end();
    }
}
