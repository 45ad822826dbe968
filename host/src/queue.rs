//! Queues: the [`Message`] a queue hands out, and the SQS client
//! ([`SqsSource`]: long-polling receives, visibility changes, batch
//! deletes, the retention period). Endpoint, region and credentials come
//! from the environment (`AWS_ENDPOINT_URL`, `AWS_REGION`, the standard
//! credential chain). Used by the run loop and the sources.
//!
//! Must not decide what a message means, nor when to acknowledge it.

use crate::status::Panel;
use aws_sdk_sqs::Client;
use aws_sdk_sqs::types::{
    ChangeMessageVisibilityBatchRequestEntry, DeleteMessageBatchRequestEntry, MessageSystemAttributeName,
};
use std::sync::Arc;
use std::time::Duration;

/// An SQS call that failed. All are retryable: the messages concerned come
/// back after their visibility timeout.
#[derive(Debug, thiserror::Error)]
pub enum SqsError {
    #[error("SQS queue `{queue}`: cannot find its URL: {source}")]
    QueueUrl { queue: String, source: Box<dyn std::error::Error + Send + Sync> },
    #[error("SQS queue `{queue}`: {action} failed: {source}")]
    Call { queue: String, action: &'static str, source: Box<dyn std::error::Error + Send + Sync> },
}

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

fn boxed<E: std::error::Error + Send + Sync + 'static>(e: E) -> Box<dyn std::error::Error + Send + Sync> {
    // The SDK's errors print as "service error"; the debug form names the
    // cause (no message bodies are ever part of it).
    let text = format!("{}", aws_sdk_sqs::error::DisplayErrorContext(&e));
    text.into()
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
                .map_err(|e| SqsError::QueueUrl { queue: queue.into(), source: boxed(e) })?
                .queue_url()
                .unwrap_or_default()
                .to_string()
        };
        Ok(SqsSource { client, queue: queue.to_string(), url, panel: None })
    }

    /// This client, counting what it does on `panel`.
    pub fn observed_by(mut self, panel: Arc<Panel>) -> Self {
        self.panel = Some(panel);
        self
    }

    pub fn queue(&self) -> &str {
        &self.queue
    }

    fn err(&self, action: &'static str) -> impl FnOnce(Box<dyn std::error::Error + Send + Sync>) -> SqsError + '_ {
        move |source| SqsError::Call { queue: self.queue.clone(), action, source }
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
            .map_err(|e| self.err("ReceiveMessage")(boxed(e)))?;
        let messages = out
            .messages()
            .iter()
            .map(|m| Message {
                id: m.message_id().unwrap_or_default().to_string(),
                receipt: m.receipt_handle().unwrap_or_default().to_string(),
                body: m.body().unwrap_or_default().as_bytes().to_vec(),
                receive_count: m
                    .attributes()
                    .and_then(|a| a.get(&MessageSystemAttributeName::ApproximateReceiveCount))
                    .and_then(|c| c.parse().ok())
                    .unwrap_or(1),
                sent_ms: m
                    .attributes()
                    .and_then(|a| a.get(&MessageSystemAttributeName::SentTimestamp))
                    .and_then(|t| t.parse().ok())
                    .unwrap_or(0),
                attributes: m
                    .message_attributes()
                    .map(|a| a.iter().filter_map(|(k, v)| Some((k.clone(), v.string_value()?.to_string()))).collect())
                    .unwrap_or_default(),
            })
            .collect::<Vec<Message>>();
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
            .map_err(|e| self.err("GetQueueAttributes")(boxed(e)))?;
        let seconds = out
            .attributes()
            .and_then(|a| a.get(&QueueAttributeName::MessageRetentionPeriod))
            .and_then(|v| v.parse::<u64>().ok())
            .ok_or_else(|| self.err("GetQueueAttributes")("no MessageRetentionPeriod in the answer".into()))?;
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
                .map_err(|e| self.err("DeleteMessageBatch")(boxed(e)))?;
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
            .map_err(|e| self.err(action)(boxed(e)))
    }

    /// Sets the messages' visibility timeout (to keep them while a batch is
    /// still in work, or to 0 to release them at once).
    pub async fn set_visibility(&self, messages: &[&Message], timeout: Duration) -> Result<(), SqsError> {
        for chunk in messages.chunks(10) {
            let entries = self.entries("ChangeMessageVisibilityBatch", chunk, |id, m| {
                ChangeMessageVisibilityBatchRequestEntry::builder()
                    .id(id)
                    .receipt_handle(&m.receipt)
                    .visibility_timeout(timeout.as_secs() as i32)
                    .build()
            })?;
            self.client
                .change_message_visibility_batch()
                .queue_url(&self.url)
                .set_entries(Some(entries))
                .send()
                .await
                .map_err(|e| self.err("ChangeMessageVisibilityBatch")(boxed(e)))?;
            if let Some(p) = &self.panel {
                if timeout.is_zero() { p.released(chunk.len()) } else { p.extended(chunk.len()) }
            }
        }
        Ok(())
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
    /// every delivery, so the ledger is partitioned by it. 0 if the source
    /// did not say (correct, only slower to look up).
    pub sent_ms: i64,
    /// Message attributes (string values), available to the pipeline.
    pub attributes: Vec<(String, String)>,
}
