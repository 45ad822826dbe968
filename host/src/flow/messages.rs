//! A batch of queue messages, start to acknowledgement: each body decoded
//! into a record (or a dead letter saying why not), the records through the
//! chain, the rows and dead letters committed under the message ledger, and
//! only then the messages deleted. [`prepare`] is shared with the replay of
//! dead letters, which acknowledges in its own way.

use super::units::{Ran, fill_units, lineage, load_time, plugins_json, run_chain_kept};
use super::{Flow, Hold, Job, Outage, Received, release};
use crate::batch::BatchBuilder;
use crate::mapping::RowOrigin;
use crate::queue::{Message, SqsSource};
use crate::sink::dead_letter::DeadLetter;
use crate::sink::{Lineage, Unit};
use crate::transform::TransformChain;
use std::collections::HashSet;
use std::sync::Arc;
use tracing::Instrument;

/// A batch on its way to a worker, its messages held invisible to other
/// consumers until they are deleted or released.
pub struct MessageBatch {
    flow: Arc<Flow>,
    source: SqsSource,
    max_receives: u32,
    messages: Vec<Message>,
    holds: Vec<Hold>,
    /// When its first message was received.
    since: tokio::time::Instant,
}

impl MessageBatch {
    /// A batch of messages from `source`, as the receivers handed them on.
    pub fn new(flow: Arc<Flow>, source: SqsSource, max_receives: u32, received: Vec<Received>) -> Self {
        let since = received.iter().map(|r| r.at).min().unwrap_or_else(tokio::time::Instant::now);
        let (messages, holds) = received.into_iter().map(|r| (r.message, r.hold)).unzip();
        MessageBatch { flow, source, max_receives, messages, holds, since }
    }
}

impl Job for MessageBatch {
    async fn run(self, chain: TransformChain) -> TransformChain {
        let (chain, rest) = self.run_split(chain).await;
        if let Some(rest) = rest {
            rest.await;
        }
        chain
    }

    /// The chain's part (decode, transform, encode), then the rest (commit,
    /// delete, count) to run beside the worker's next batches.
    async fn run_split(self, chain: TransformChain) -> (TransformChain, Option<super::Rest>) {
        let first = self.messages.first().map_or("", |m| m.id.as_str());
        let span = tracing::info_span!("batch", pipeline = %self.flow.pipeline.name, messages = self.messages.len(), first_message = %first);
        let (chain, prepared) =
            prepare(&self.flow, chain, &self.messages, self.max_receives).instrument(span.clone()).await;
        let rest = match prepared {
            Ok((units, lineage)) => Some(Box::pin(self.commit(units, lineage).instrument(span)) as super::Rest),
            Err(why) => {
                let _enter = span.enter();
                self.holds.into_iter().for_each(Hold::settle);
                self.flow.failed(true, "batch", &why);
                None
            }
        };
        (chain, rest)
    }
}

impl MessageBatch {
    /// Commits the batch's units, then deletes its messages. While the
    /// database is gone (not in a finite run) it keeps its messages held
    /// and a copy of its units, and commits them once the database is back
    /// (an outage raises no receive count).
    async fn commit(self, units: Vec<Unit>, lineage: Lineage) {
        let MessageBatch { flow, source, max_receives: _, messages, holds, since } = self;
        // Each path below settles the holds: deleted, released, or left to
        // come back after their visibility timeout.
        let settle = |holds: Vec<Hold>| holds.into_iter().for_each(Hold::settle);
        let mut units = units;
        let report = loop {
            let kept = flow.holds_through_outages().then(|| units.clone());
            match flow.sink.commit(units, &lineage).await {
                Ok(report) => {
                    flow.database_back();
                    flow.sink.metrics.latency.record(since.elapsed());
                    flow.sink.metrics.batch_size.record(messages.len() as f64);
                    break report;
                }
                Err(e) if e.unavailable() && kept.is_some() => match flow.outage(&e.to_string()).await {
                    Outage::Back => units = kept.expect("kept"),
                    Outage::Stopped => {
                        settle(holds);
                        release(&source, messages).await;
                        return;
                    }
                    Outage::NotDown => {
                        settle(holds);
                        flow.failed(e.retryable(), "batch", &e.to_string());
                        return;
                    }
                },
                Err(e) => {
                    settle(holds);
                    flow.failed(e.retryable(), "batch", &e.to_string());
                    return;
                }
            }
        };
        let refs: Vec<&Message> = messages.iter().collect();
        match source.delete(&refs).await {
            Ok(0) => {}
            Ok(n) => tracing::warn!(failed = n, "some deletes failed; those messages will come back and add nothing"),
            Err(e) => tracing::warn!(error = %e, "delete failed; the messages will come back and add nothing"),
        }
        settle(holds);
        // Copies of one message delivered into the same batch count as
        // duplicates too.
        let distinct = messages.iter().map(|m| m.id.as_str()).collect::<HashSet<_>>().len();
        flow.tally(|s| {
            s.messages += distinct - report.duplicates;
            s.duplicates += report.duplicates + (messages.len() - distinct);
            s.rows += report.rows;
            s.dead_letters += report.dead_letters;
            // Transactions: a batch committed with others counts in the
            // first of them.
            s.batches += report.commits;
        });
    }
}

/// Decodes, transforms and encodes messages into sink units, with the
/// chain's lineage. A message received more than `max_receives` times is a
/// dead letter without being decoded.
pub async fn prepare(
    flow: &Flow,
    chain: TransformChain,
    messages: &[Message],
    max_receives: u32,
) -> (TransformChain, Prepared) {
    prepare_with(flow, chain, messages, Some(max_receives), None).await
}

/// A dead letter on replay: the object (`s3://bucket/key`) and version a
/// row came from, which its `source-file` and `source-version` columns
/// keep, and where its rows came from at first (the message, or the line).
pub struct Original<'a> {
    pub file: Option<(&'a str, &'a str)>,
    pub origin: RowOrigin<'a>,
}

/// [`prepare`] of payloads kept with dead letters: their bodies as they
/// came, without a receive limit or the message's metadata field.
pub async fn prepare_replay(
    flow: &Flow,
    chain: TransformChain,
    messages: &[Message],
    replayed: Original<'_>,
) -> (TransformChain, Prepared) {
    prepare_with(flow, chain, messages, None, Some(replayed)).await
}

/// A batch's units and its lineage, or why the chain failed.
pub type Prepared = Result<(Vec<Unit>, Lineage), String>;

async fn prepare_with(
    flow: &Flow,
    chain: TransformChain,
    messages: &[Message],
    max_receives: Option<u32>,
    replayed: Option<Original<'_>>,
) -> (TransformChain, Prepared) {
    let metadata = replayed.is_none();
    let mut units: Vec<Unit> =
        messages.iter().map(|m| Unit { message_id: m.id.clone(), sent_ms: m.sent_ms, ..Unit::default() }).collect();
    let mut builder = BatchBuilder::new();
    let mut record_message = Vec::new();
    let mut seen = HashSet::new();
    for (i, m) in messages.iter().enumerate() {
        if !seen.insert(m.id.as_str()) {
            // Delivered twice into this batch (SQS is at-least-once): the
            // copy contributes nothing, and both receipts are deleted.
            units[i].message_id.clear();
            continue;
        }
        if m.id_missing() {
            // Its id is a stand-in a redelivery would not carry: loaded, it
            // could load twice. Kept whole as a dead letter (replay loads it
            // once), not deleted unloaded nor left to expire on the queue.
            let reason = "the queue gave this message no MessageId, so it cannot be loaded exactly once; replay it";
            units[i].dead.push(DeadLetter::source(reason.to_string(), m.receive_count));
            continue;
        }
        if let Some(max) = max_receives.filter(|max| m.receive_count > *max) {
            let reason = format!("received {} times (max_receives = {max})", m.receive_count);
            units[i].dead.push(DeadLetter::source(reason, m.receive_count));
            continue;
        }
        match flow.decoder.decode_message(&m.body, metadata.then_some(m), &mut builder) {
            Ok(()) => record_message.push(i),
            Err(reason) => {
                units[i].dead.push(DeadLetter { received_count: m.receive_count as i32, ..DeadLetter::input(reason) })
            }
        }
    }
    let Ran { chain, batch, out, cpu } = run_chain_kept(chain, builder.finish()).await;
    let out = match out {
        Ok(out) => out,
        Err(e) => return (chain, Err(e.to_string())),
    };
    let mut load = load_time(&chain);
    if let Some((uri, version)) = replayed.as_ref().and_then(|r| r.file) {
        load.source_file = Some(uri.to_string());
        load.source_version = Some(version.to_string());
    }
    let origin = |i: usize| match &replayed {
        Some(r) => r.origin,
        None => RowOrigin { message_id: Some(messages[i].id.as_str()), line: None },
    };
    fill_units(&flow.mapping, &load, &out, &record_message, &mut units, |i| messages[i].receive_count as i32, origin);
    // Only when a candidate runs: the offer's parts cost nothing otherwise.
    flow.shadow(|| crate::shadow::Offer {
        lineage: plugins_json(&chain),
        batch,
        production: out,
        production_cpu: cpu,
        labels: record_message.iter().map(|&i| messages[i].id.clone()).collect(),
    });
    // Every message keeps its body with the batch: the database may still
    // refuse its row, and then it becomes a dead letter that can be replayed.
    for (u, m) in units.iter_mut().zip(messages) {
        u.payload = m.body.clone();
    }
    units.retain(|u| !u.message_id.is_empty());
    let lineage = lineage(&chain);
    (chain, Ok((units, lineage)))
}
