//! `host run` and `host backfill` as a library: picks the pipeline's source
//! and hands it the run loop. The loop itself is `crate::flow`; the sources
//! are `crate::source`.
//!
//! Must not hold loop logic of its own.

pub use crate::flow::{RunError, RunOptions, RunSetup, Summary};
pub use crate::source::s3::{BackfillProgress, backfill};

use crate::aws::Aws;
use crate::config::{Pipeline, Source};
use crate::transform::Engine;
use std::sync::Arc;

/// Runs `pipeline` until `shutdown` resolves (or, with `once`, until its
/// source has nothing left).
pub async fn run(
    pipeline: Pipeline,
    engine: Arc<Engine>,
    database_url: &str,
    aws: impl Into<Aws>,
    opts: RunOptions,
    shutdown: impl std::future::Future<Output = ()>,
) -> Result<Summary, RunError> {
    let aws = aws.into();
    let source = match (&pipeline.source, &pipeline.sink) {
        (Some(source), Some(_)) => source.clone(),
        _ => return Err(RunError::Incomplete(pipeline.file.display().to_string())),
    };
    let setup = RunSetup { pipeline, engine, database_url, aws: &aws, opts };
    match source {
        Source::Sqs(_) => crate::source::sqs::run(setup, shutdown).await,
        Source::S3(_) => crate::source::s3::run(setup, shutdown).await,
    }
}
