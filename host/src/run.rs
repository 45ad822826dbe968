//! `host run` and `host backfill` as a library: picks the pipeline's source
//! and hands it the run loop. The loop itself is `crate::flow`; the sources
//! are `crate::source`.
//!
//! Must not hold loop logic of its own.

pub use crate::flow::{RunError, RunOptions, RunSetup, Summary};
pub use crate::source::s3::{BackfillProgress, backfill};

use crate::aws::Aws;
use crate::config::{Pipeline, Source};
use crate::status::Panel;
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
    let panel = Panel::detached(&pipeline.name);
    run_on(panel, pipeline, engine, database_url, aws, opts, shutdown).await
}

/// [`run`], showing what it does on `panel` (its state included: running,
/// then stopped or failed).
pub async fn run_on(
    panel: Arc<Panel>,
    pipeline: Pipeline,
    engine: Arc<Engine>,
    database_url: &str,
    aws: impl Into<Aws>,
    opts: RunOptions,
    shutdown: impl std::future::Future<Output = ()>,
) -> Result<Summary, RunError> {
    let aws = aws.into();
    let fits = check_table(&pipeline, database_url).await;
    let result = match (&pipeline.source, &pipeline.sink, fits) {
        (_, _, Err(e)) => Err(e),
        (Some(source), Some(_), Ok(())) => {
            let source = source.clone();
            let setup = RunSetup { pipeline, panel: panel.clone(), engine, database_url, aws: &aws, opts };
            match source {
                Source::Sqs(_) => crate::source::sqs::run(setup, shutdown).await,
                Source::S3(s) if s.sftp.is_some() => crate::source::sftp::run(setup, shutdown).await,
                Source::S3(_) => crate::source::s3::run(setup, shutdown).await,
            }
        }
        _ => Err(RunError::Incomplete(pipeline.file.display().to_string())),
    };
    // The state first: a run asked for from here is refused, not queued.
    let why = match &result {
        Ok(_) => "the pipeline stopped".to_string(),
        Err(e) => crate::report(e),
    };
    panel.set_state(match &result {
        Ok(_) => crate::status::State::Stopped,
        Err(_) => crate::status::State::Failed(why.clone()),
    });
    panel.runs.interrupt_all(&panel.counts(), &why);
    result
}

/// Checks the pipeline's table before any data flows (as `host check
/// --db` does; `host run` and `host backfill`): a table that does not fit
/// fails the pipeline now, with the same words. A check that cannot be
/// made (the database does not answer yet) leaves the table unchecked: the
/// run waits for the database, and the sink's own errors say the rest.
pub async fn check_table(pipeline: &Pipeline, database_url: &str) -> Result<(), RunError> {
    let Some(sink) = &pipeline.sink else { return Ok(()) };
    match crate::sink::table::check(database_url, pipeline, sink).await {
        Ok(fitted) => {
            for warning in &fitted.warnings {
                tracing::warn!(pipeline = %pipeline.name, table = %fitted.table, "{warning}");
            }
            Ok(())
        }
        Err(e @ crate::sink::table::TableError::Unfit { .. }) => Err(RunError::Table(e)),
        Err(e) => {
            tracing::warn!(pipeline = %pipeline.name, error = %e, "the table could not be checked at the start");
            Ok(())
        }
    }
}
