//! Files on an SFTP server into PostgreSQL (`[source.sftp]`): each pass
//! copies the server's new and changed files into a (versioned) raw
//! bucket ([`pass`], [`copy`], over [`client`]), then the reconciling S3
//! source keeps the target equal to the latest version of each key there.
//! The run loop is S3 reconcile's; this source is its feed.
//!
//! A copy is recorded in `etl.sftp_files` after its object is written, so
//! a restart never copies a file twice, and a copy the host was killed
//! before recording is adopted from the object's metadata. The rows of a
//! file are replaced as a new version of its object loads, and removed as
//! its object is deleted (`mirror_deletes`).
//!
//! Must not load rows itself: reconcile does.

mod client;
mod copy;
mod pass;

pub use client::{Remote, RemoteFile, SftpError};

use crate::config::Source;
use crate::flow::{Flow, RunError, RunSetup, Summary};
use crate::sink::SinkError;
use std::sync::Arc;

/// Why an SFTP pass ended early.
#[derive(Debug, thiserror::Error)]
pub enum PassError {
    #[error(transparent)]
    Sftp(#[from] SftpError),
    #[error("{uri}: {action} failed: {reason}")]
    S3 { uri: String, action: &'static str, reason: String },
    #[error("recording copies: {0}")]
    Db(SinkError),
    #[error("the run stopped")]
    Stopped,
}

impl PassError {
    /// The server refuses this host as configured: retrying will not help.
    fn refused(&self) -> bool {
        matches!(self, PassError::Sftp(e) if e.refused())
    }

    /// A failure of one file or object (the server or the bucket refusing
    /// it), not of the pass: the pass goes on with the other files.
    fn of_one_file(&self) -> bool {
        matches!(self, PassError::S3 { .. } | PassError::Sftp(SftpError::Failed { .. }))
    }

    /// The pass's lease was taken over by another host, which passes now.
    fn fenced(&self) -> bool {
        matches!(self, PassError::Db(SinkError::Fenced { .. }))
    }
}

impl crate::source::s3::Feed for pass::Sftp {
    fn pass<'a>(&'a self, flow: &'a Arc<Flow>) -> futures_util::future::BoxFuture<'a, ()> {
        Box::pin(async move {
            match pass::Sftp::pass(self, flow).await {
                Ok(()) => flow.panel.sftp_failed(None),
                Err(PassError::Stopped) => {}
                Err(e) if e.fenced() => {
                    tracing::warn!(pipeline = %flow.pipeline.name, reason = %e, "the SFTP pass is left to the host that took it over");
                }
                // `--once` is one SFTP pass: if it fails, so does the run.
                Err(e) if e.refused() || flow.once => {
                    flow.panel.sftp_failed(Some(&e.to_string()));
                    flow.fail(&format!("the SFTP pass failed: {e}"));
                }
                Err(e) => {
                    flow.panel.sftp_failed(Some(&e.to_string()));
                    tracing::error!(pipeline = %flow.pipeline.name, error = %e, "the SFTP pass failed; the next pass tries again");
                }
            }
        })
    }
}

/// `host run` of an SFTP source: an SFTP pass and then a reconcile pass,
/// every `interval_s` (once with `--once`), until `shutdown`. A server that
/// refuses this host (login, host key) stops it at the start.
pub async fn run(setup: RunSetup<'_>, shutdown: impl std::future::Future<Output = ()>) -> Result<Summary, RunError> {
    let incomplete = || RunError::Incomplete(setup.pipeline.file.display().to_string());
    let Some(Source::S3(config)) = &setup.pipeline.source else { return Err(incomplete()) };
    let (Some(settings), Some(bucket)) = (config.sftp.clone(), config.bucket.clone()) else {
        return Err(incomplete());
    };
    if settings.host_key == crate::config::HostKeyCheck::Off {
        tracing::warn!(pipeline = %setup.pipeline.name, host = %settings.host,
            "check_host_key = false: the SFTP server's host key is not checked");
    }
    match Remote::connect(&settings).await {
        Ok(remote) => remote.close().await,
        Err(e) if e.refused() => return Err(RunError::Stopped(e.to_string())),
        Err(e) => tracing::warn!(pipeline = %setup.pipeline.name, error = %e, "the SFTP server does not answer yet"),
    }
    let bucket = copy::Bucket { s3: setup.aws.s3.clone(), name: bucket };
    let feed = pass::Sftp::new(settings, bucket, &config.prefix).map_err(RunError::Stopped)?;
    crate::source::s3::run_fed(setup, Some(Arc::new(feed)), shutdown).await
}
