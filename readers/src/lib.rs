//! Reading S3 objects for the host, without the AWS SDK: [`notification`]
//! says which objects an SQS message asks to load, [`file`] streams rows out
//! of an object's bytes in bounded memory. Neither does any network I/O of
//! its own, and neither puts a body's or a row's content in an error.

pub mod file;
pub mod notification;
