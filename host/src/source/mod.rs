//! Where units of work come from: an SQS queue of messages ([`sqs`]), S3
//! objects announced on a queue or reconciled against a bucket ([`s3`]),
//! files of an SFTP server copied into a bucket and reconciled ([`sftp`]),
//! and the dead letters of a pipeline, replayed ([`dead_letters`]). Each is
//! a user of the run loop (`crate::flow`), which decodes, transforms and
//! commits; a source says what its units are and how they are
//! acknowledged, and acknowledges only after its unit committed.

pub mod dead_letters;
pub mod failures;
pub mod s3;
pub mod sftp;
pub mod sqs;

pub use crate::queue::{Message, SqsError, SqsSource};
