//! S3 objects into PostgreSQL: the objects S3 notifications announce on an
//! SQS queue ([`notifications`]), or (reconcile) every object under a bucket
//! and prefix, kept equal to the rows the target holds for them
//! ([`reconcile`]), or once what a bucket holds already ([`backfill`]).
//! All three are users of the run loop: their units of work are objects,
//! each loaded by [`object`] under its lock ([`lock`]).
//!
//! A notification is deleted only after all its objects' rows committed;
//! an object's rows commit with its progress, so a crash resumes after the
//! last committed row and a second delivery adds nothing.
//!
//! Must not decode, transform or commit rows itself: the run loop's units
//! and the sink do.

pub mod backfill;
mod claim;
mod listing;
mod notifications;
mod object;
mod ranges;
mod reconcile;
pub mod replay;

pub use backfill::{BackfillProgress, backfill};
pub use listing::Listed;
pub use object::{Loader, Progress};

use crate::config::{Pipeline, S3Mode, S3SourceConfig, Source, SqsSourceConfig};
use crate::flow::{Flow, RunError, RunSetup, Summary, Workers};
use crate::queue::SqsSource;
use crate::sink::{Report, SinkError};
use crate::source::failures::Failures;
use crate::status::Panel;
use crate::transform::{Engine, TransformChain};
use std::sync::Arc;

/// One object to load. Without a version id or ETag, the object's current
/// ones are looked up first.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ObjectRef {
    pub bucket: String,
    pub key: String,
    pub version_id: Option<String>,
    pub etag: Option<String>,
    /// The S3 event's sequencer, when a notification announced it: orders
    /// the versions of one key.
    pub sequencer: Option<String>,
}

impl ObjectRef {
    pub fn uri(&self) -> String {
        format!("s3://{}/{}", self.bucket, self.key)
    }
}

/// What became of one object.
#[derive(Debug, Clone, PartialEq)]
pub enum Outcome {
    /// Its rows (the rest of them, after a crash) committed.
    Loaded(Report),
    /// This version was loaded before: nothing to do.
    AlreadyLoaded,
    /// Another loader holds it; it is left to that one.
    Busy,
    /// It changed since it was announced: a newer notification follows.
    Superseded,
    /// It no longer exists.
    Gone,
    /// The run is stopping; what committed stays, the rest loads next time.
    Interrupted,
}

#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    /// Retryable: the object loads again from its last committed row.
    #[error("{uri}: {action}: {reason}")]
    S3 { uri: String, action: &'static str, reason: String, kind: crate::aws::FaultKind },
    #[error("{uri}: {error}")]
    Sink { uri: String, error: SinkError },
    #[error("{uri}: the transform chain failed: {reason}")]
    Chain { uri: String, reason: String },
}

impl LoadError {
    /// What failed, without the details that differ from try to try
    /// (request ids): two failures of one kind are one reason.
    pub fn kind(&self) -> String {
        match self {
            LoadError::S3 { action, .. } => format!("S3 {action}"),
            LoadError::Sink { error, .. } => error.to_string(),
            LoadError::Chain { reason, .. } => reason.clone(),
        }
    }

    pub fn retryable(&self) -> bool {
        match self {
            LoadError::Sink { error, .. } => error.retryable(),
            _ => true,
        }
    }
}

/// The objects side of a run: its flow, its loader and, for notifications
/// (or to wake reconcile early), its queue; for reconcile, what fills the
/// bucket before each pass.
pub struct Objects {
    pub flow: Arc<Flow>,
    pub loader: Loader,
    pub queue: Option<(SqsSource, SqsSourceConfig)>,
    pub feed: Option<Arc<dyn Feed>>,
    /// The objects whose load failed, by key and seen as their version:
    /// a reconcile pass leaves each to its backoff, and its reason is
    /// logged once.
    failures: std::sync::Mutex<Failures<String>>,
}

/// The first wait of an object whose load failed (then doubling).
const FIRST_RETRY: std::time::Duration = std::time::Duration::from_secs(5);

/// What fills a reconciled bucket before each pass (the SFTP source's
/// copies). It counts what it does and deals with its own failures:
/// stopping the run through the flow, or leaving it to the next pass.
pub trait Feed: Send + Sync {
    fn pass<'a>(&'a self, flow: &'a Arc<Flow>) -> futures_util::future::BoxFuture<'a, ()>;
}

impl Objects {
    pub fn new(
        flow: Arc<Flow>,
        loader: Loader,
        queue: Option<(SqsSource, SqsSourceConfig)>,
        feed: Option<Arc<dyn Feed>>,
    ) -> Objects {
        let failures = std::sync::Mutex::new(Failures::new(FIRST_RETRY));
        Objects { flow, loader, queue, feed, failures }
    }

    /// Whether a pass tries `object` now (not within the backoff of a
    /// failure of the same version).
    fn due(&self, object: &ObjectRef) -> bool {
        let version = object.version_id.clone().or_else(|| object.etag.clone());
        self.failures.lock().expect("not poisoned").due(&object.key, version.as_ref(), std::time::Instant::now())
    }

    /// Counts what became of an object of a pass; a retryable failure is
    /// left to its backoff and its reason logged once.
    fn settle(&self, object: &ObjectRef, outcome: &Result<Outcome, LoadError>) {
        let mut failures = self.failures.lock().expect("not poisoned");
        match outcome {
            Err(e) if e.retryable() => {
                let version = object.version_id.clone().or_else(|| object.etag.clone());
                let new = failures.failed(&object.key, version, &e.kind(), std::time::Instant::now());
                drop(failures);
                self.flow.tally(|s| s.failed_batches += 1);
                let (pipeline, uri) = (&self.flow.pipeline.name, object.uri());
                if new {
                    tracing::warn!(pipeline = %pipeline, object = %uri, error = %e, "object not loaded; tried again after a backoff");
                } else {
                    tracing::debug!(pipeline = %pipeline, object = %uri, error = %e, "object not loaded again");
                }
            }
            _ => {
                if let Some(tries) = failures.succeeded(&object.key) {
                    tracing::info!(pipeline = %self.flow.pipeline.name, object = %object.uri(), tries, "object loaded after failed tries");
                }
                drop(failures);
                self.count(outcome);
            }
        }
    }

    /// Loads `object` (what is left of it). While the database does not
    /// answer, waits for it and loads on from the last committed row; the
    /// run stopping first leaves it [`Outcome::Interrupted`].
    async fn load(&self, chain: TransformChain, object: &ObjectRef) -> (TransformChain, Result<Outcome, LoadError>) {
        use tracing::Instrument;
        let version = object.version_id.as_deref().or(object.etag.as_deref()).unwrap_or("");
        let span =
            tracing::info_span!("object", pipeline = %self.flow.pipeline.name, uri = %object.uri(), version = %version);
        self.load_on(chain, object).instrument(span).await
    }

    /// [`Objects::load`], waiting while another loader holds the object (or
    /// its lease, left by a host that died, has not expired): asked after
    /// 200 ms, doubling to 5 s (a big object's load takes minutes).
    async fn load_waiting(
        &self,
        chain: TransformChain,
        object: &ObjectRef,
    ) -> (TransformChain, Result<Outcome, LoadError>) {
        let (mut chain, mut outcome) = self.load(chain, object).await;
        let mut asks = 0;
        while matches!(outcome, Ok(Outcome::Busy)) && !self.flow.stopping() {
            asks += 1;
            let wait = crate::backoff::doubling(
                std::time::Duration::from_millis(200),
                asks,
                std::time::Duration::from_secs(5),
            );
            tokio::select! {
                _ = tokio::time::sleep(wait) => {}
                () = self.flow.stopped() => {}
            }
            (chain, outcome) = self.load(chain, object).await;
        }
        (chain, outcome)
    }

    async fn load_on(&self, chain: TransformChain, object: &ObjectRef) -> (TransformChain, Result<Outcome, LoadError>) {
        let mut chain = chain;
        loop {
            let (c, outcome) = self.loader.load(chain, object).await;
            chain = c;
            match &outcome {
                Err(LoadError::Sink { error, .. }) if error.unavailable() && self.flow.holds_through_outages() => {
                    match self.flow.outage(&error.to_string()).await {
                        crate::flow::Outage::Back => {}
                        crate::flow::Outage::Stopped => return (chain, Ok(Outcome::Interrupted)),
                        crate::flow::Outage::NotDown => return (chain, outcome),
                    }
                }
                Ok(_) => {
                    self.flow.database_back();
                    return (chain, outcome);
                }
                Err(_) => return (chain, outcome),
            }
        }
    }

    /// Adds what became of an object to the run's counts.
    fn count(&self, outcome: &Result<Outcome, LoadError>) {
        match outcome {
            Ok(Outcome::Loaded(r)) => self.flow.tally(|s| {
                s.objects += 1;
                s.rows += r.rows;
                s.dead_letters += r.dead_letters;
                s.batches += r.commits;
            }),
            Ok(_) => {}
            Err(e) => self.flow.failed(e.retryable(), "object", &e.to_string()),
        }
    }
}

/// Where an S3 pipeline's batches come from, in lineage and dead letters.
fn source_label(config: &S3SourceConfig) -> String {
    match (&config.queue, &config.bucket) {
        (Some(q), _) => format!("sqs:{}", q.queue),
        (None, Some(b)) => format!("s3://{b}/{}", config.prefix),
        (None, None) => "s3".to_string(),
    }
}

/// The flow of an S3 pipeline: each worker holds a connection with its
/// object's lock and one committing.
fn flow(
    pipeline: Pipeline,
    panel: Arc<Panel>,
    engine: Arc<Engine>,
    database_url: &str,
) -> Result<(Flow, S3SourceConfig), RunError> {
    let Some(Source::S3(config)) = pipeline.source.clone() else {
        return Err(RunError::Incomplete(pipeline.file.display().to_string()));
    };
    let connections = 2 * pipeline.workers + 1;
    Ok((Flow::new(pipeline, panel, engine, database_url, connections, &source_label(&config))?, config))
}

/// `host run` of an S3 source: notifications or reconcile passes until
/// `shutdown` (or, with `once`, until there is nothing left to do).
pub async fn run(setup: RunSetup<'_>, shutdown: impl std::future::Future<Output = ()>) -> Result<Summary, RunError> {
    run_fed(setup, None, shutdown).await
}

/// [`run`], with `feed` filling the bucket before each reconcile pass.
pub async fn run_fed(
    setup: RunSetup<'_>,
    feed: Option<Arc<dyn Feed>>,
    shutdown: impl std::future::Future<Output = ()>,
) -> Result<Summary, RunError> {
    let RunSetup { pipeline, panel, engine, database_url, aws, opts } = setup;
    let (mut flow, config) = flow(pipeline, panel.clone(), engine, database_url)?;
    flow.once = opts.once;
    flow.grace = opts.grace();
    let flow = Arc::new(flow);
    let queue = match &config.queue {
        Some(q) => Some((SqsSource::with_config(&aws.config, &q.queue).await?.observed_by(panel), q.clone())),
        None => None,
    };
    set_probe(&flow, database_url, &config, queue.as_ref().map(|(q, _)| q.clone()), aws.s3.clone());
    let chains = flow.chains().await?;
    let loader = Loader::new(flow.clone(), config.clone(), aws.s3.clone());
    if matches!(config.mode, S3Mode::Reconcile { .. }) {
        // Asked again before every pass; here to warn once.
        if feed.is_some() && loader.detect_versions().await == Some(false) {
            tracing::warn!(pipeline = %flow.pipeline.name, bucket = config.bucket.as_deref().unwrap_or_default(),
                "the bucket keeps no versions: each copy of a file replaces the one before; turn versioning on");
        }
    }
    let objects = Arc::new(Objects::new(flow.clone(), loader, queue, feed));
    match config.mode {
        S3Mode::Notifications => {
            let workers = Workers::start(&flow, chains.chains, &chains.generations);
            notifications::run(&objects, workers, opts, shutdown).await
        }
        S3Mode::Reconcile { interval, .. } => {
            let workers = Workers::start(&flow, chains.chains, &chains.generations);
            reconcile::run(&objects, workers, opts, interval, shutdown).await
        }
    }
    flow.finish(chains.watching).await
}

/// The readiness probe of an S3 pipeline: its queue answers (notifications,
/// or reconcile woken by one), and its bucket (reconcile).
fn set_probe(
    flow: &Flow,
    database_url: &str,
    config: &S3SourceConfig,
    queue: Option<SqsSource>,
    s3: aws_sdk_s3::Client,
) {
    let bucket = config.bucket.clone();
    flow.set_probe(database_url, move || {
        let (queue, bucket, s3) = (queue.clone(), bucket.clone(), s3.clone());
        async move {
            if let Some(q) = queue {
                q.retention().await.map_err(|e| e.to_string())?;
            }
            if let Some(b) = bucket {
                s3.head_bucket()
                    .bucket(&b)
                    .send()
                    .await
                    .map_err(|e| format!("S3 bucket `{b}`: HeadBucket: {}", crate::aws::fault(&e)))?;
            }
            Ok(())
        }
    });
}

/// A version id that names one version: S3 gives `null` to the version an
/// unversioned or versioning-suspended bucket writes, and every overwrite
/// there is `null` again, so such an object is known by its ETag instead.
pub(crate) fn version_id(id: Option<&str>) -> Option<String> {
    id.filter(|v| !v.is_empty() && *v != "null").map(str::to_string)
}

fn unquote(etag: &str) -> String {
    etag.trim_matches('"').to_string()
}

fn s3_error<E>(
    o: &ObjectRef,
    action: &'static str,
    e: &aws_sdk_s3::error::SdkError<E, aws_sdk_s3::config::http::HttpResponse>,
) -> LoadError
where
    E: aws_sdk_s3::error::ProvideErrorMetadata + std::error::Error + 'static,
{
    let fault = crate::aws::fault(e);
    LoadError::S3 { uri: o.uri(), action, reason: fault.text, kind: fault.kind }
}
