//! The SQS source: `host run` of an SQS pipeline, a thin user of the run
//! loop. Receivers feed the batcher, whose batches of messages
//! ([`MessageBatch`]) the workers decode, transform, commit under the
//! message ledger and delete; the ledger is pruned past the queue's
//! retention meanwhile. The queue client is `crate::queue`.
//!
//! Must not decode, transform or commit: the run loop does.

use crate::config::Source;
use crate::flow::messages::MessageBatch;
use crate::flow::{Flow, Holder, Receiving, RunError, RunSetup, Summary, Workers, batch_loop, receive_loop, release};
use crate::queue::SqsSource;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::mpsc;

/// `host run` of an SQS pipeline until `shutdown` resolves (or, with
/// `once`, the queue stays empty).
pub async fn run(setup: RunSetup<'_>, shutdown: impl std::future::Future<Output = ()>) -> Result<Summary, RunError> {
    let RunSetup { pipeline, panel, engine, database_url, aws, opts } = setup;
    let Some(Source::Sqs(sqs)) = pipeline.source.clone() else {
        return Err(RunError::Incomplete(pipeline.file.display().to_string()));
    };
    let source = SqsSource::with_config(&aws.config, &sqs.queue).await?.observed_by(panel.clone());
    let connections = pipeline.workers + 1;
    let mut flow = Flow::new(pipeline, panel, engine, database_url, connections, &format!("sqs:{}", sqs.queue))?;
    flow.once = opts.once;
    flow.grace = opts.grace();
    let probed = source.clone();
    flow.set_probe(database_url, move || {
        let source = probed.clone();
        async move { source.retention().await.map(|_| ()).map_err(|e| e.to_string()) }
    });
    let flow = Arc::new(flow);
    let started = flow.chains().await?;
    let holder = Holder::start(source.clone(), sqs.visibility);
    let receiving =
        Receiving { source: source.clone(), per_receive: 10, wait: sqs.wait, holder: holder.clone(), slots: None };
    // Small: what waits here is held (kept invisible), but not in work.
    let (msg_tx, mut msg_rx) = mpsc::channel(10 * sqs.receivers);
    let receivers: Vec<_> = (0..sqs.receivers)
        .map(|_| tokio::spawn(receive_loop(flow.clone(), receiving.clone(), msg_tx.clone(), opts)))
        .collect();
    drop(msg_tx);
    let pruning = tokio::spawn(prune_ledger(flow.clone(), source.clone(), flow.stop_signal()));
    let runs = tokio::spawn(flow.clone().serve_runs(opts.idle));
    let workers = Workers::start(&flow, started.chains, &started.generations);
    let make = |received| MessageBatch::new(flow.clone(), source.clone(), sqs.max_receives, received);
    let mut unsent = batch_loop(&flow, &mut msg_rx, workers.dispatch(), make, opts, shutdown).await;
    // Stop receiving (receivers waiting for room give up on the stop);
    // release what was received but not dispatched.
    flow.stop();
    for r in receivers {
        let _ = r.await;
    }
    while let Ok(r) = msg_rx.try_recv() {
        unsent.push(r);
    }
    let unsent = unsent.into_iter().map(|r| {
        r.hold.settle();
        r.message
    });
    release(&source, unsent.collect()).await;
    workers.finish().await;
    // Units abandoned after the grace: their messages go back now.
    holder.release_orphans().await;
    let _ = pruning.await;
    let _ = runs.await;
    flow.finish(started.watching).await
}

/// Keeps the ledger to what can still come back: once an hour, the rows of
/// messages sent before the queue's retention period (and a day more) go.
async fn prune_ledger(flow: Arc<Flow>, source: SqsSource, mut stop: tokio::sync::watch::Receiver<bool>) {
    const DAY_MS: i64 = 86_400_000;
    while !*stop.borrow() {
        let retention = match source.retention().await {
            Ok(r) => r,
            Err(e) => {
                tracing::warn!(error = %e, "cannot read the queue's retention; the ledger is not pruned this time");
                Duration::MAX
            }
        };
        if retention != Duration::MAX {
            let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_millis());
            let cutoff = now as i64 - retention.as_millis() as i64 - DAY_MS;
            match flow.sink.prune_ledger(cutoff).await {
                Ok(0) => {}
                Ok(n) => {
                    tracing::info!(pipeline = %flow.pipeline.name, rows = n, "ledger pruned past the queue's retention")
                }
                Err(e) => tracing::warn!(error = %e, "could not prune the ledger; trying again in an hour"),
            }
        }
        tokio::select! {
            _ = tokio::time::sleep(Duration::from_secs(3600)) => {}
            _ = stop.changed() => {}
        }
    }
}
