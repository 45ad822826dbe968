//! Where messages come from. `sqs` is the one source today; a message is
//! acknowledged (deleted) only by the run loop, after its outcome committed.

pub mod sqs;

pub use sqs::{SqsError, SqsSource};

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
