//! Queues: the [`Message`] a queue hands out, and the SQS client
//! ([`SqsSource`]: long-polling receives, visibility changes, batch
//! deletes, the retention period). Endpoint, region and credentials come
//! from the environment (`AWS_ENDPOINT_URL`, `AWS_REGION`, the standard
//! credential chain). Used by the run loop and the sources.
//!
//! Must not decide what a message means, nor when to acknowledge it.

use crate::aws::{Fault, FaultKind, fault};
use crate::sink::sql::SENT_UNKNOWN;
use crate::status::Panel;
use aws_sdk_sqs::Client;
use aws_sdk_sqs::types::{
    ChangeMessageVisibilityBatchRequestEntry, DeleteMessageBatchRequestEntry, MessageSystemAttributeName,
};
use std::sync::Arc;
use std::time::Duration;

/// An SQS call that failed. The messages concerned come back after their
/// visibility timeout; whether waiting heals the queue is [`SqsError::fault`]'s
/// kind.
#[derive(Debug, thiserror::Error)]
pub enum SqsError {
    #[error("SQS queue `{queue}`: cannot find its URL: {fault}")]
    QueueUrl { queue: String, fault: Fault },
    #[error("SQS queue `{queue}`: {action}: {fault}")]
    Call { queue: String, action: &'static str, fault: Fault },
    /// The call went through, and the queue refused some of its entries.
    #[error("SQS queue `{queue}`: {action} refused {} of its messages: {}", .refused.len(), refusals(.refused))]
    Refused { queue: String, action: &'static str, refused: Vec<Refusal> },
}

/// One entry of a batch call that the queue refused.
#[derive(Debug, Clone, PartialEq)]
pub struct Refusal {
    pub message_id: String,
    /// The queue's code (`ReceiptHandleIsInvalid`, ...).
    pub code: String,
}

impl SqsError {
    /// What kind of failure it was (a refused entry counts as `other`).
    pub fn kind(&self) -> FaultKind {
        match self {
            SqsError::QueueUrl { fault, .. } | SqsError::Call { fault, .. } => fault.kind,
            SqsError::Refused { .. } => FaultKind::Other,
        }
    }
}

fn refusals(refused: &[Refusal]) -> String {
    refused.iter().map(|r| format!("{} ({})", r.message_id, r.code)).collect::<Vec<_>>().join(", ")
}

/// How the stand-in id of a message the queue gave no MessageId begins.
const NO_ID: &str = "no-message-id:";

/// One queue.
#[derive(Clone)]
pub struct SqsSource {
    client: Client,
    /// The queue as configured (name or URL), for messages.
    queue: String,
    url: String,
    /// Where receives, deletes, releases and extensions are counted.
    panel: Option<Arc<Panel>>,
}

impl SqsSource {
    /// A client of `queue` (a name or a URL) with the AWS configuration
    /// `config`; a name is resolved to its URL.
    pub async fn with_config(config: &aws_config::SdkConfig, queue: &str) -> Result<Self, SqsError> {
        let client = Client::new(config);
        let url = if queue.starts_with("https://") || queue.starts_with("http://") {
            queue.to_string()
        } else {
            client
                .get_queue_url()
                .queue_name(queue)
                .send()
                .await
                .map_err(|e| SqsError::QueueUrl { queue: queue.into(), fault: fault(&e) })?
                .queue_url()
                .unwrap_or_default()
                .to_string()
        };
        Ok(SqsSource { client, queue: queue.to_string(), url, panel: None })
    }

    /// The panel this client counts on, if any.
    pub fn panel(&self) -> Option<&Arc<Panel>> {
        self.panel.as_ref()
    }

    /// This client, counting what it does on `panel`.
    pub fn observed_by(mut self, panel: Arc<Panel>) -> Self {
        self.panel = Some(panel);
        self
    }

    pub fn queue(&self) -> &str {
        &self.queue
    }

    fn err(&self, action: &'static str) -> impl FnOnce(Fault) -> SqsError + '_ {
        move |fault| SqsError::Call { queue: self.queue.clone(), action, fault }
    }

    /// At most `max` (1 to 10) messages, waiting up to `wait` for the first
    /// (long polling); they stay invisible to others for `visibility`.
    pub async fn receive_up_to(
        &self,
        max: i32,
        wait: Duration,
        visibility: Duration,
    ) -> Result<Vec<Message>, SqsError> {
        let out = self
            .client
            .receive_message()
            .queue_url(&self.url)
            .max_number_of_messages(max.clamp(1, 10))
            .wait_time_seconds(wait.as_secs().min(20) as i32)
            .visibility_timeout(visibility.as_secs() as i32)
            .message_system_attribute_names(MessageSystemAttributeName::ApproximateReceiveCount)
            .message_system_attribute_names(MessageSystemAttributeName::SentTimestamp)
            .message_attribute_names("All")
            .send()
            .await
            .map_err(|e| self.err("ReceiveMessage")(fault(&e)))?;
        let messages: Vec<Message> = out.messages().iter().map(message).collect();
        if let Some(p) = &self.panel {
            p.received(messages.len(), messages.iter().map(|m| m.sent_ms).filter(|t| *t > 0).min());
        }
        Ok(messages)
    }

    /// How long the queue keeps a message (its MessageRetentionPeriod): no
    /// message older than this can be delivered again.
    pub async fn retention(&self) -> Result<Duration, SqsError> {
        use aws_sdk_sqs::types::QueueAttributeName;
        let out = self
            .client
            .get_queue_attributes()
            .queue_url(&self.url)
            .attribute_names(QueueAttributeName::MessageRetentionPeriod)
            .send()
            .await
            .map_err(|e| self.err("GetQueueAttributes")(fault(&e)))?;
        let seconds = out
            .attributes()
            .and_then(|a| a.get(&QueueAttributeName::MessageRetentionPeriod))
            .and_then(|v| v.parse::<u64>().ok())
            .ok_or_else(|| self.err("GetQueueAttributes")(Fault::other("no MessageRetentionPeriod in the answer")))?;
        Ok(Duration::from_secs(seconds))
    }

    /// Deletes messages (10 per call). Returns how many could not be
    /// deleted: they come back and the ledger makes them no-ops.
    pub async fn delete(&self, messages: &[&Message]) -> Result<usize, SqsError> {
        let mut failed = 0;
        for chunk in messages.chunks(10) {
            let entries = self.entries("DeleteMessageBatch", chunk, |id, m| {
                DeleteMessageBatchRequestEntry::builder().id(id).receipt_handle(&m.receipt).build()
            })?;
            let out = self
                .client
                .delete_message_batch()
                .queue_url(&self.url)
                .set_entries(Some(entries))
                .send()
                .await
                .map_err(|e| self.err("DeleteMessageBatch")(fault(&e)))?;
            failed += out.failed().len();
            if let Some(p) = &self.panel {
                p.deleted(chunk.len() - out.failed().len());
            }
        }
        Ok(failed)
    }

    /// The entries of one batch call, numbered within it.
    fn entries<E, B: std::error::Error + Send + Sync + 'static>(
        &self,
        action: &'static str,
        chunk: &[&Message],
        entry: impl Fn(String, &Message) -> Result<E, B>,
    ) -> Result<Vec<E>, SqsError> {
        chunk
            .iter()
            .enumerate()
            .map(|(i, m)| entry(i.to_string(), m))
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| self.err(action)(Fault::other(e.to_string())))
    }

    /// Sets the messages' visibility timeout (to keep them while a batch is
    /// still in work, or to 0 to release them at once). The messages the
    /// queue refuses (a receipt handle no longer valid, say) are the error,
    /// after every chunk was tried.
    pub async fn set_visibility(&self, messages: &[&Message], timeout: Duration) -> Result<(), SqsError> {
        let mut refused = Vec::new();
        for chunk in messages.chunks(10) {
            let entries = self.entries("ChangeMessageVisibilityBatch", chunk, |id, m| {
                ChangeMessageVisibilityBatchRequestEntry::builder()
                    .id(id)
                    .receipt_handle(&m.receipt)
                    .visibility_timeout(timeout.as_secs() as i32)
                    .build()
            })?;
            let out = self
                .client
                .change_message_visibility_batch()
                .queue_url(&self.url)
                .set_entries(Some(entries))
                .send()
                .await
                .map_err(|e| self.err("ChangeMessageVisibilityBatch")(fault(&e)))?;
            let failed = out.failed();
            refused.extend(failed.iter().map(|f| {
                Refusal {
                    // Entries are numbered within their chunk.
                    message_id: f
                        .id()
                        .parse::<usize>()
                        .ok()
                        .and_then(|i| chunk.get(i))
                        .map_or_else(|| f.id().to_string(), |m| m.id.clone()),
                    code: f.code().to_string(),
                }
            }));
            if let Some(p) = &self.panel {
                let done = chunk.len() - failed.len();
                if timeout.is_zero() { p.released(done) } else { p.extended(done) }
            }
        }
        if refused.is_empty() {
            return Ok(());
        }
        Err(SqsError::Refused { queue: self.queue.clone(), action: "ChangeMessageVisibilityBatch", refused })
    }
}

/// A received message as the host keeps it. A message without a
/// MessageId gets a stand-in id of its own ([`Message::id_missing`]); one
/// without a SentTimestamp is sent at [`SENT_UNKNOWN`].
fn message(m: &aws_sdk_sqs::types::Message) -> Message {
    let attribute = |name| m.attributes().and_then(|a| a.get(&name));
    Message {
        id: match m.message_id() {
            Some(id) if !id.is_empty() => id.to_string(),
            _ => format!("{NO_ID}{:032x}", rand::random::<u128>()),
        },
        receipt: m.receipt_handle().unwrap_or_default().to_string(),
        body: m.body().unwrap_or_default().as_bytes().to_vec(),
        receive_count: attribute(MessageSystemAttributeName::ApproximateReceiveCount)
            .and_then(|c| c.parse().ok())
            .unwrap_or(1),
        sent_ms: attribute(MessageSystemAttributeName::SentTimestamp)
            .and_then(|t| t.parse().ok())
            .unwrap_or(SENT_UNKNOWN),
        attributes: m
            .message_attributes()
            .map(|a| a.iter().filter_map(|(k, v)| Some((k.clone(), v.string_value()?.to_string()))).collect())
            .unwrap_or_default(),
    }
}

/// One received message.
#[derive(Debug, Clone)]
pub struct Message {
    /// The source's id for it (SQS MessageId): the ledger key.
    pub id: String,
    /// What acknowledging it needs (SQS receipt handle).
    pub receipt: String,
    pub body: Vec<u8>,
    /// How many times it has been received (1 the first time).
    pub receive_count: u32,
    /// When it was sent (SQS SentTimestamp, ms since the epoch): the same on
    /// every delivery, so the ledger is partitioned by it. [`SENT_UNKNOWN`]
    /// if the source did not say (correct, only slower to look up).
    pub sent_ms: i64,
    /// Message attributes (string values), available to the pipeline.
    pub attributes: Vec<(String, String)>,
}

impl Message {
    /// Whether the queue gave it no MessageId: its id is a stand-in made
    /// at this receive, which a redelivery would not carry, so it cannot
    /// be loaded exactly once (it is kept as a dead letter instead).
    pub fn id_missing(&self) -> bool {
        self.id.starts_with(NO_ID)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sink::sql::{LEGACY_PART, ledger_part};

    #[test]
    fn a_message_without_id_or_sent_time_is_neither_a_duplicate_nor_pruned_first() {
        let bare = aws_sdk_sqs::types::Message::builder().receipt_handle("r").body("{}").build();
        let (a, b) = (message(&bare), message(&bare));
        assert!(a.id_missing() && !a.id.is_empty(), "{}", a.id);
        assert_ne!(a.id, b.id, "two messages without an id are not one message");
        assert_eq!(ledger_part(a.sent_ms), LEGACY_PART, "the partition every look-up reads");
        let full = aws_sdk_sqs::types::Message::builder()
            .message_id("6f0c2a5e-0000-4000-8000-000000000001")
            .attributes(MessageSystemAttributeName::SentTimestamp, "1700000000123")
            .build();
        let m = message(&full);
        assert!(!m.id_missing());
        assert_eq!((m.id.as_str(), m.sent_ms), ("6f0c2a5e-0000-4000-8000-000000000001", 1_700_000_000_123));
        assert_eq!(ledger_part(m.sent_ms), 170_000_000_012);
    }
}
