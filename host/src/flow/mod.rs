//! The one run loop: units of work come from a source (SQS messages, the
//! notifications of S3 objects, the objects of a reconcile pass or a
//! backfill, dead letters to replay), go to a pool of workers, each owning
//! its plugin instances (a `TransformChain`), which run them through the
//! chain on a blocking thread, commit them through the shared sink, and only
//! then acknowledge them. Shutdown, `--once`, a fatal error, the visibility
//! keeper, live versions, the counters and the run summary live here once;
//! the sources (`host/src/source/`) are its users.
//!
//! Delivery: a message is acknowledged only after the transaction holding
//! all its rows and dead letters committed; the sink's receipt in that
//! transaction makes a redelivered message add nothing. A batch that could
//! not commit is left alone: its messages come back after their visibility
//! timeout.
//!
//! Must not know a source's protocol beyond [`crate::queue::Message`]: what a source
//! loads and how it acknowledges is the source's.

mod batcher;
pub mod messages;
mod receive;
mod units;
mod versions;
mod work;

pub use batcher::batch_loop;
pub use receive::{Hold, Holder, Received, Receiving, receive_loop, release};
pub use units::{Ran, fill_units, lineage, load_time, plugins_json, run_chain, run_chain_kept};
pub use versions::{Versions, Watching, take_new_version};
pub use work::{Dispatch, Job, Rest, Room, Workers};

use crate::config::Pipeline;
use crate::input::Decoder;
use crate::mapping::Mapping;
use crate::reload::Generation;
use crate::sink::PostgresSink;
use crate::status::Panel;
pub use crate::status::Summary;
use crate::transform::{Engine, TransformChain};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};
use tokio::sync::watch;

/// What `host run` of a source is given.
pub struct RunSetup<'a> {
    pub pipeline: Pipeline,
    /// Where the run shows what it does (see `crate::status`).
    pub panel: Arc<Panel>,
    pub engine: Arc<Engine>,
    pub database_url: &'a str,
    pub aws: &'a crate::aws::Aws,
    pub opts: RunOptions,
}

/// How `run` ends.
#[derive(Debug, Clone, Copy)]
pub struct RunOptions {
    /// Stop once the queue stays empty for `idle` and nothing is in work.
    pub once: bool,
    pub idle: Duration,
    /// How long a stop may take, from the signal to the run's end
    /// (`HOST_DRAIN_S`): receives and units under way get
    /// [`RunOptions::grace`] of it, the rest is kept for releasing what
    /// they still hold.
    pub drain: Duration,
}

impl Default for RunOptions {
    fn default() -> Self {
        RunOptions { once: false, idle: Duration::from_secs(2), drain: DEFAULT_DRAIN }
    }
}

/// A stop's bound when none is set: under the 30 s a Kubernetes pod gets
/// by default between SIGTERM and SIGKILL.
pub const DEFAULT_DRAIN: Duration = Duration::from_secs(25);

impl RunOptions {
    /// How long receives and units under way at a stop may go on: the
    /// drain less a quarter of it (2 to 7 s), kept for what follows:
    /// dropping the units abandoned then (up to 1 s), releasing their
    /// messages (up to 5 s, milliseconds as a rule) and closing the admin
    /// endpoint.
    pub fn grace(&self) -> Duration {
        self.drain.saturating_sub((self.drain / 4).clamp(Duration::from_secs(2), Duration::from_secs(7)))
    }
}

#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error("{0}: `host run` needs a [source] and a [sink]")]
    Incomplete(String),
    #[error(transparent)]
    Source(#[from] crate::queue::SqsError),
    #[error(transparent)]
    Sink(#[from] crate::sink::SinkError),
    #[error(transparent)]
    Chain(#[from] crate::transform::ChainError),
    /// The table does not fit the pipeline (checked as the run starts).
    #[error(transparent)]
    Table(#[from] crate::sink::table::TableError),
    #[error("{0}")]
    Stopped(String),
    /// A finite run (`--once`) whose last receive failed: it ended without
    /// knowing the queue was empty.
    #[error("the queue could not be read to its end (its last receive failed: {0}); messages may still be on it")]
    Unread(String),
}

/// Whether work is going on, for `--once`: batches in work, and what the
/// source said lately.
#[derive(Debug, Default)]
pub struct Activity {
    /// Units dispatched to workers and not finished.
    in_flight: AtomicUsize,
    /// Receives that came back empty (or failed), so far: `--once` stops
    /// only after one did since the last activity (a slow endpoint is not
    /// an empty queue).
    empty_receives: AtomicUsize,
    /// Messages received, so far.
    received: AtomicUsize,
    /// Why the last receive failed, until one succeeds.
    failing: std::sync::Mutex<Option<String>>,
}

impl Activity {
    pub fn received(&self, n: usize) {
        *self.failing.lock().expect("not poisoned") = None;
        if n == 0 {
            self.empty_receives.fetch_add(1, Ordering::SeqCst);
        } else {
            self.received.fetch_add(n, Ordering::SeqCst);
        }
    }

    /// A receive failed: as far as `--once` waits, it came back empty, and
    /// the run's end says the queue was not read to its end.
    pub fn receive_failed(&self, why: String) {
        *self.failing.lock().expect("not poisoned") = Some(why);
        self.empty_receives.fetch_add(1, Ordering::SeqCst);
    }

    /// Why the last receive failed, if it did.
    pub fn failing(&self) -> Option<String> {
        self.failing.lock().expect("not poisoned").clone()
    }

    fn begin(&self) {
        self.in_flight.fetch_add(1, Ordering::SeqCst);
    }

    fn end(&self) {
        self.in_flight.fetch_sub(1, Ordering::SeqCst);
    }

    fn stamp(&self) -> (usize, usize) {
        (self.received.load(Ordering::SeqCst), self.empty_receives.load(Ordering::SeqCst))
    }
}

/// A loop's view of [`Activity`]: when it last saw something happen.
pub struct Quiet {
    last: Instant,
    seen: (usize, usize),
}

impl Quiet {
    pub fn new(a: &Activity) -> Self {
        Quiet { last: Instant::now(), seen: a.stamp() }
    }

    /// Something happened now.
    pub fn touch(&mut self, a: &Activity) {
        self.last = Instant::now();
        self.seen = a.stamp();
    }

    /// Whether, for `idle`, nothing was in work or received, and a receive
    /// came back empty since.
    pub fn drained(&mut self, a: &Activity, idle: Duration) -> bool {
        let (received, empty) = a.stamp();
        if a.in_flight.load(Ordering::SeqCst) > 0 || received != self.seen.0 {
            self.touch(a);
        }
        empty > self.seen.1 && self.last.elapsed() >= idle
    }
}

/// How long each part of a readiness probe may take to answer.
pub const PROBE_WITHIN: Duration = Duration::from_secs(2);

async fn within(limit: Duration, f: impl std::future::Future<Output = Result<(), String>>) -> Result<(), String> {
    tokio::time::timeout(limit, f).await.unwrap_or_else(|_| Err(format!("no answer within {} s", limit.as_secs())))
}

/// What [`Flow::outage`] found.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Outage {
    /// The database answers at once: the failure is the unit's own.
    NotDown,
    /// It was down and answers again: try again.
    Back,
    /// The run stopped while it was down.
    Stopped,
}

/// What every part of one run shares.
pub struct Flow {
    pub engine: Arc<Engine>,
    pub pipeline: Pipeline,
    pub sink: PostgresSink,
    pub mapping: Mapping,
    pub decoder: Decoder,
    pub activity: Activity,
    /// A finite run (`--once`, a backfill, a replay): a unit whose commit
    /// finds the database gone fails (its messages come back after their
    /// timeout) instead of waiting for it, so the run ends.
    pub once: bool,
    /// How long units in work may go on after the run stops (`host
    /// run`: [`RunOptions::grace`]; 5 s otherwise).
    pub grace: Duration,
    /// The run's counts, state and versions, as the admin endpoint shows them.
    pub panel: Arc<Panel>,
    /// Set when a worker meets an error that must stop the run.
    fatal: std::sync::Mutex<Option<String>>,
    /// Turns true when the run stops: receivers, watchers and loaders end.
    stop: watch::Sender<bool>,
    /// When the run began to stop: the grace is counted from it.
    stopped_at: std::sync::OnceLock<Instant>,
    /// False while the sink cannot commit (the database does not answer):
    /// receivers wait, units in work hold their messages and try again.
    sink_up: watch::Sender<bool>,
    started: Instant,
    /// Where batches go to a candidate in shadow, once the run started
    /// (see `crate::shadow`).
    shadow: std::sync::OnceLock<Arc<crate::shadow::Tap>>,
    /// The shadow's own connection (its summary and decisions), made when
    /// first used: never one of the sink's.
    shadow_pool: Option<deadpool_postgres::Pool>,
}

/// The workers' first chains, and the versions to come.
pub struct Chains {
    pub chains: Vec<TransformChain>,
    pub generations: watch::Receiver<Arc<Generation>>,
    pub watching: Watching,
}

impl Flow {
    /// The pipeline's sink (`source` names where its batches come from, in
    /// lineage and dead letters) on a pool of `connections`.
    pub fn new(
        pipeline: Pipeline,
        panel: Arc<Panel>,
        engine: Arc<Engine>,
        database_url: &str,
        connections: usize,
        source: &str,
    ) -> Result<Flow, RunError> {
        let Some(sink_config) = pipeline.sink.clone() else {
            return Err(RunError::Incomplete(pipeline.file.display().to_string()));
        };
        let pool = crate::sink::pool(database_url, connections)?;
        // A candidate may come with a new version of the file.
        let shadow_pool = (pipeline.has_shadow() || pipeline.reload.is_some())
            .then(|| crate::sink::pool(database_url, 1))
            .transpose()?;
        let sealer = crate::sink::dead_letter::Sealer::from_env().map_err(RunError::Stopped)?;
        let unsealed = sealer.is_none();
        let flow = Flow {
            sink: PostgresSink::new(pool, &pipeline.name, source, &sink_config, sealer),
            panel,
            mapping: Mapping::new(&sink_config),
            decoder: Decoder::new(&pipeline),
            engine,
            pipeline,
            activity: Activity::default(),
            once: false,
            // Commands that are not `host run` (a backfill, a replay)
            // keep a short grace: they are stopped from a terminal.
            grace: Duration::from_secs(5),
            fatal: Default::default(),
            stop: watch::channel(false).0,
            stopped_at: std::sync::OnceLock::new(),
            sink_up: watch::channel(true).0,
            started: Instant::now(),
            shadow: std::sync::OnceLock::new(),
            shadow_pool,
        };
        flow.panel.set_source(source);
        if unsealed {
            tracing::warn!(pipeline = %flow.pipeline.name, "HOST_DEAD_LETTER_KEY is not set: dead-letter payloads are stored unencrypted (in etl.dead_letter_payloads, no PUBLIC access)");
        }
        Ok(flow)
    }

    /// The pipeline's plugins loaded, a chain per worker, and the watcher
    /// of new versions started (until the flow stops): the run is running.
    pub async fn chains(&self) -> Result<Chains, RunError> {
        let versions = Versions::start(&self.engine, &self.pipeline, &self.panel).await?;
        let (chains, generations, watching) = versions.watch(self.stop_signal());
        if let Some(pool) = &self.shadow_pool
            && self.shadow.get().is_none()
        {
            let setup = crate::shadow::Setup {
                engine: self.engine.clone(),
                panel: self.panel.clone(),
                pool: pool.clone(),
                generations: generations.clone(),
                requests: watching.requests.clone(),
                stop: self.stop_signal(),
            };
            let _ = self.shadow.set(crate::shadow::start(setup).await);
        }
        self.panel.set_state(crate::status::State::Running);
        Ok(Chains { chains, generations, watching })
    }

    /// Gives the run's panel its readiness probe: a query on a connection
    /// of its own to `database_url` (not the sink's pool, which may be busy
    /// with work), and `source`, each within [`PROBE_WITHIN`].
    pub fn set_probe<F>(&self, database_url: &str, source: impl Fn() -> F + Send + Sync + 'static)
    where
        F: std::future::Future<Output = Result<(), String>> + Send + 'static,
    {
        let db = Arc::new(crate::sink::connect::Kept::new(database_url));
        let source = Arc::new(source);
        self.panel.set_probe(Arc::new(move || {
            let (db, source) = (db.clone(), source.clone());
            Box::pin(async move {
                let database = async { db.query("SELECT 1", &[], PROBE_WITHIN).await.map(|_| ()) };
                let (database, source) = tokio::join!(database, within(PROBE_WITHIN, source()));
                vec![("database", database), ("source", source)]
            })
        }));
    }

    pub fn stop_signal(&self) -> watch::Receiver<bool> {
        self.stop.subscribe()
    }

    /// Tells receivers, watchers and loaders to end.
    pub fn stop(&self) {
        let _ = self.stopped_at.set(Instant::now());
        self.stop.send_replace(true);
    }

    /// Resolves once the run stopped and its grace passed: receives and
    /// units still under way then are abandoned. One deadline for all of
    /// them, counted from the stop, so waits one after another do not add
    /// up.
    pub async fn grace_over(&self) {
        self.stopped().await;
        let at = *self.stopped_at.get().expect("set by stop");
        tokio::time::sleep_until((at + self.grace).into()).await;
    }

    pub fn stopping(&self) -> bool {
        *self.stop.borrow()
    }

    /// Resolves once the run stops.
    pub async fn stopped(&self) {
        let mut stop = self.stop.subscribe();
        let _ = stop.wait_for(|s| *s).await;
    }

    /// Waits while the sink cannot commit; `false` if the run stops first
    /// (`stop` is the caller's stop signal).
    pub async fn sink_ready(&self, stop: &mut watch::Receiver<bool>) -> bool {
        let mut up = self.sink_up.subscribe();
        let up = tokio::select! {
            r = up.wait_for(|up| *up) => r.is_ok(),
            _ = stop.wait_for(|s| *s) => false,
        };
        up && !*stop.borrow()
    }

    /// A unit could not commit because the database does not answer:
    /// receiving pauses until [`Flow::database_back`].
    fn database_down(&self, why: &str) {
        if self.sink_up.send_replace(false) {
            tracing::error!(pipeline = %self.pipeline.name, error = %why, "the database does not answer: receiving paused, units in work keep their messages and try again");
        }
    }

    /// A commit went through: receiving goes on.
    pub fn database_back(&self) {
        if !self.sink_up.send_replace(true) {
            tracing::info!(pipeline = %self.pipeline.name, "the database answers again: receiving resumed");
        }
    }

    /// Whether a unit whose commit found the database gone should hold its
    /// work and wait for it ([`Flow::outage`]): not in a finite run.
    pub fn holds_through_outages(&self) -> bool {
        !self.once
    }

    /// A commit failed as if the database were gone: whether it is. If it
    /// answers at once, the failure is the unit's own (`NotDown`: it fails
    /// as any other). Otherwise receiving pauses ([`Flow::database_down`])
    /// and this waits until it answers (tried every 0.5 to 5 s, with jitter
    /// so that workers and hosts do not knock in step): `Back`, or
    /// `Stopped` if the run stops first.
    pub async fn outage(&self, why: &str) -> Outage {
        if self.sink.answers().await {
            return Outage::NotDown;
        }
        self.database_down(why);
        let mut tries = crate::backoff::Backoff::new(Duration::from_millis(500), Duration::from_secs(5));
        loop {
            tokio::select! {
                _ = tokio::time::sleep(crate::backoff::jitter(tries.failed())) => {}
                () = self.stopped() => return Outage::Stopped,
            }
            if self.sink.answers().await {
                self.database_back();
                return if self.stopping() { Outage::Stopped } else { Outage::Back };
            }
        }
    }

    /// Serves the runs asked for by hand on a queue pipeline until the run
    /// stops: each drains what waits, and ends once the queue stayed empty
    /// for `idle` with nothing in work (as `--once` would).
    pub async fn serve_runs(self: Arc<Self>, idle: Duration) {
        let runs = &self.panel.runs;
        loop {
            tokio::select! {
                () = runs.requested() => {}
                () = self.stopped() => return,
            }
            let ids = runs.start(&self.panel.counts());
            let mut quiet = Quiet::new(&self.activity);
            let mut tick = tokio::time::interval(Duration::from_millis(100));
            loop {
                tick.tick().await;
                if self.stopping() {
                    runs.end(&ids, &self.panel.counts(), Some("the pipeline stopped before the queue was drained"));
                    return;
                }
                if quiet.drained(&self.activity, idle) {
                    runs.end(&ids, &self.panel.counts(), None);
                    break;
                }
            }
        }
    }

    pub fn fatal(&self) -> bool {
        self.fatal.lock().expect("not poisoned").is_some()
    }

    /// Offers a batch production ran to the candidate in shadow, if one
    /// runs (`offer` is made only then); never waits.
    pub fn shadow(&self, offer: impl FnOnce() -> crate::shadow::Offer) {
        if let Some(tap) = self.shadow.get().filter(|t| t.active()) {
            tap.offer(offer());
        }
    }

    /// Adds to the run's counts.
    pub fn tally(&self, f: impl FnOnce(&mut Summary)) {
        self.panel.tally(f);
    }

    /// A unit of work that did not commit: it is tried again later if
    /// `retryable`; otherwise the run stops.
    pub fn failed(&self, retryable: bool, what: &str, why: &str) {
        self.tally(|s| s.failed_batches += 1);
        if retryable {
            tracing::error!(pipeline = %self.pipeline.name, error = %why, "{what} not committed; it is tried again later");
        } else {
            tracing::error!(pipeline = %self.pipeline.name, error = %why, "stopping: {what} cannot be committed as configured");
            *self.fatal.lock().expect("not poisoned") = Some(why.to_string());
            self.stop();
        }
    }

    /// Stops the run on an error that is no unit's (a source that refuses
    /// the host): `finish` returns it.
    pub fn fail(&self, why: &str) {
        tracing::error!(pipeline = %self.pipeline.name, error = %why, "stopping");
        *self.fatal.lock().expect("not poisoned") = Some(why.to_string());
        self.stop();
    }

    /// Resolves when the run should end: `shutdown`, a fatal error, or with
    /// `once` nothing left to do.
    pub async fn until_done(&self, opts: RunOptions, shutdown: impl std::future::Future<Output = ()>) {
        tokio::pin!(shutdown);
        let mut quiet = Quiet::new(&self.activity);
        let mut tick = tokio::time::interval(Duration::from_millis(100));
        loop {
            tokio::select! {
                _ = tick.tick() => {
                    if self.fatal() || (opts.once && quiet.drained(&self.activity, opts.idle)) {
                        return;
                    }
                }
                _ = &mut shutdown => return,
            }
        }
    }

    /// The run's summary once its watcher stopped, or why it had to stop
    /// (a finite run whose last receive failed did not finish its queue).
    pub async fn finish(&self, watching: Watching) -> Result<Summary, RunError> {
        self.stop();
        watching.finish().await;
        // Leases of work the stop dropped go to the other hosts now, not
        // after their time (bounded: the database may be what failed).
        let release = crate::sink::lease::release_all(self.sink.pool(), &self.pipeline.name);
        if let Ok(Ok(n @ 1..)) = tokio::time::timeout(std::time::Duration::from_secs(1), release).await {
            tracing::info!(pipeline = %self.pipeline.name, leases = n, "released the leases of work left unfinished");
        }
        let mut summary = self.panel.counts();
        summary.elapsed = self.started.elapsed();
        if let Some(why) = self.fatal.lock().expect("not poisoned").take() {
            return Err(RunError::Stopped(why));
        }
        match self.activity.failing().filter(|_| self.once) {
            Some(why) => {
                tracing::error!(pipeline = %self.pipeline.name, messages = summary.messages, rows = summary.rows, "--once ends without reading its queue to the end");
                Err(RunError::Unread(why))
            }
            None => Ok(summary),
        }
    }
}
