//! What a running process knows about itself, for the admin endpoint
//! (the `admin` module) and the metrics: a [`Board`] of one [`Panel`] per
//! pipeline (its state, counts, plugin versions, last swaps and refusals,
//! rows over the last minutes, the age of the oldest message, its runs on
//! demand and how to probe its database and source).
//!
//! Every count a run keeps goes through [`Panel::tally`], which moves the
//! Prometheus counters by the same amounts: the metrics and the run's
//! summary cannot disagree. Without an installed recorder
//! ([`metrics::install`]) the counters cost nothing.
//!
//! Must not hold a record's values: names, counts, digests and reasons
//! only.

pub mod metrics;
mod runs;
mod shadow;

pub use runs::{RunRecord, RunState, Runs};
pub use shadow::ShadowView;

use std::collections::VecDeque;
use std::future::Future;
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, SystemTime};

/// What a run did.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct Summary {
    pub messages: usize,
    pub rows: usize,
    pub dead_letters: usize,
    pub duplicates: usize,
    pub batches: usize,
    pub failed_batches: usize,
    /// New plugin or pipeline versions taken while running, and refused.
    pub swaps: usize,
    pub refused_versions: usize,
    /// S3 objects loaded (completely), and files whose rows were removed
    /// because their object is gone (reconcile).
    pub objects: usize,
    pub objects_removed: usize,
    /// Files an SFTP pass copied into the bucket, and deleted there because
    /// they were deleted on the server (`mirror_deletes`).
    pub files_copied: usize,
    pub files_deleted: usize,
    /// Attempts of an SFTP pass at one file that failed (a file the SFTP
    /// user cannot read, a copy S3 refused): each tried again later.
    pub files_failed: usize,
    pub elapsed: Duration,
}

impl std::fmt::Display for Summary {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "messages {}, rows {}, dead letters {}, duplicates skipped {}, batches {}, failed batches {}, \
             versions swapped in {}, refused {}, objects loaded {}, removed {}, {}elapsed {:.1} s",
            self.messages,
            self.rows,
            self.dead_letters,
            self.duplicates,
            self.batches,
            self.failed_batches,
            self.swaps,
            self.refused_versions,
            self.objects,
            self.objects_removed,
            // Only where files are copied: other sources never copy any.
            match (self.files_copied, self.files_deleted, self.files_failed) {
                (0, 0, 0) => String::new(),
                (c, d, 0) => format!("files copied {c}, deleted {d}, "),
                (c, d, f) => format!("files copied {c}, deleted {d}, failed {f}, "),
            },
            self.elapsed.as_secs_f64()
        )
    }
}

impl Summary {
    /// What happened between `earlier` and `self`.
    pub fn since(&self, earlier: &Summary) -> Summary {
        Summary {
            messages: self.messages - earlier.messages,
            rows: self.rows - earlier.rows,
            dead_letters: self.dead_letters - earlier.dead_letters,
            duplicates: self.duplicates - earlier.duplicates,
            batches: self.batches - earlier.batches,
            failed_batches: self.failed_batches - earlier.failed_batches,
            swaps: self.swaps - earlier.swaps,
            refused_versions: self.refused_versions - earlier.refused_versions,
            objects: self.objects - earlier.objects,
            objects_removed: self.objects_removed - earlier.objects_removed,
            files_copied: self.files_copied - earlier.files_copied,
            files_deleted: self.files_deleted - earlier.files_deleted,
            files_failed: self.files_failed - earlier.files_failed,
            elapsed: self.elapsed.saturating_sub(earlier.elapsed),
        }
    }
}

/// Where a pipeline is in its life.
#[derive(Debug, Clone, PartialEq)]
pub enum State {
    /// Its plugins are loading.
    Starting,
    Running,
    /// It stopped on an error; the others go on.
    Failed(String),
    /// It ended (`--once` drained, or a stop).
    Stopped,
}

/// How a part of a pipeline's source (its queue, bucket, SFTP server or
/// plugin store) answers.
#[derive(Debug, Clone, PartialEq)]
pub enum Health {
    Ok,
    /// Its calls fail, and are tried again (backing off): why.
    Degraded(String),
    /// It failed in a way waiting does not heal (gone, access refused):
    /// the pipeline stopped on it.
    Failed(String),
}

impl Health {
    pub fn label(&self) -> &'static str {
        match self {
            Health::Ok => "ok",
            Health::Degraded(_) => "degraded",
            Health::Failed(_) => "failed",
        }
    }

    pub fn reason(&self) -> Option<&str> {
        match self {
            Health::Ok => None,
            Health::Degraded(why) | Health::Failed(why) => Some(why),
        }
    }
}

/// One part of a pipeline's source, as the run last found it.
#[derive(Debug, Clone)]
pub struct SourcePart {
    /// `queue`, `bucket`, `sftp` or `plugins`.
    pub part: &'static str,
    pub health: Health,
    /// Since when it is in this state.
    pub since: SystemTime,
    /// Calls that failed since the start.
    pub errors: u64,
    /// When its state was last logged (a reminder is due every
    /// [`REMIND_EVERY`] while it is not ok).
    logged: std::time::Instant,
}

/// How often a part that stays degraded is logged again.
pub const REMIND_EVERY: Duration = Duration::from_secs(300);

impl State {
    pub fn label(&self) -> &'static str {
        match self {
            State::Starting => "starting",
            State::Running => "running",
            State::Failed(_) => "failed",
            State::Stopped => "stopped",
        }
    }
}

/// A plugin version in use: step number, plugin name, digest.
#[derive(Debug, Clone, PartialEq)]
pub struct PluginVersion {
    pub step: usize,
    pub name: String,
    pub digest: String,
}

/// A version swapped in or refused.
#[derive(Debug, Clone)]
pub struct Event {
    pub at: SystemTime,
    pub swapped: bool,
    /// What changed (a swap) or why it was refused.
    pub text: String,
}

/// What a readiness probe answers: each part (`database`, `source`) and
/// what is wrong with it, if anything.
pub type ProbeResult = Vec<(&'static str, Result<(), String>)>;

/// A readiness probe of a pipeline's database and source.
pub type Probe = Arc<dyn Fn() -> Pin<Box<dyn Future<Output = ProbeResult> + Send>> + Send + Sync>;

/// The most events a panel keeps.
const EVENTS: usize = 20;
/// Samples of the rows written: one every [`SAMPLE_EVERY`], this many kept.
pub const SAMPLES: usize = 60;
pub const SAMPLE_EVERY: Duration = Duration::from_secs(5);

/// One pipeline as the process sees it.
pub struct Panel {
    pub name: String,
    pub file: PathBuf,
    /// Where its units come from (`sqs:QUEUE`, `s3://BUCKET/PREFIX`).
    source: Mutex<String>,
    state: Mutex<State>,
    counts: Mutex<Summary>,
    plugins: Mutex<Vec<PluginVersion>>,
    events: Mutex<VecDeque<Event>>,
    /// (when, rows written so far), oldest first.
    samples: Mutex<VecDeque<(SystemTime, usize)>>,
    /// SentTimestamp (ms) of the oldest message in the latest receive; 0
    /// when none is known.
    oldest_sent_ms: AtomicI64,
    probe: OnceLock<Probe>,
    /// Why the last SFTP pass failed (SFTP pipelines), until one succeeds.
    sftp_error: Mutex<Option<String>>,
    /// The parts of its source and how they answer.
    sources: Mutex<Vec<SourcePart>>,
    /// The digest (`sha256:...`) of the pipeline file's text the run uses.
    revision: Mutex<Option<String>>,
    pub runs: Runs,
    counters: metrics::Counters,
    /// The candidate in shadow, if any, and what it would change so far.
    shadow: Mutex<Option<ShadowView>>,
}

impl Panel {
    pub fn new(name: &str, file: PathBuf) -> Panel {
        Panel {
            name: name.to_string(),
            file,
            source: Mutex::new(String::new()),
            state: Mutex::new(State::Starting),
            counts: Mutex::default(),
            plugins: Mutex::default(),
            events: Mutex::default(),
            samples: Mutex::default(),
            oldest_sent_ms: AtomicI64::new(0),
            probe: OnceLock::new(),
            sftp_error: Mutex::new(None),
            sources: Mutex::default(),
            revision: Mutex::default(),
            runs: Runs::default(),
            counters: metrics::Counters::new(name),
            shadow: Mutex::default(),
        }
    }

    /// A panel of its own, for a run no board shows (tests, replays).
    pub fn detached(name: &str) -> Arc<Panel> {
        Arc::new(Panel::new(name, PathBuf::new()))
    }

    pub fn set_source(&self, label: &str) {
        *self.source.lock().expect("not poisoned") = label.to_string();
    }

    pub fn source(&self) -> String {
        self.source.lock().expect("not poisoned").clone()
    }

    /// Its state; a change to running or stopped is logged (a failure is
    /// logged by whoever stops the run, with its reason).
    pub fn set_state(&self, state: State) {
        let before = std::mem::replace(&mut *self.state.lock().expect("not poisoned"), state.clone());
        if before != state {
            match &state {
                State::Running => {
                    tracing::info!(pipeline = %self.name, source = %self.source(), "the pipeline runs")
                }
                State::Stopped => tracing::info!(pipeline = %self.name, "the pipeline stopped"),
                State::Starting | State::Failed(_) => {}
            }
        }
        self.show_up();
    }

    pub fn state(&self) -> State {
        self.state.lock().expect("not poisoned").clone()
    }

    /// The state as shown: `degraded` (with the first part's reason) while
    /// it runs and a part of its source does not answer.
    pub fn label(&self) -> (&'static str, Option<String>) {
        let state = self.state();
        match &state {
            State::Running => match self.sources().into_iter().find(|s| s.health != Health::Ok) {
                Some(s) => ("degraded", s.health.reason().map(|r| format!("{}: {r}", s.part))),
                None => ("running", None),
            },
            State::Failed(why) => ("failed", Some(why.clone())),
            other => (other.label(), None),
        }
    }

    /// `etl_pipeline_up`: 1 while it runs and its source answers.
    fn show_up(&self) {
        let up = self.state() == State::Running
            && self.sources.lock().expect("not poisoned").iter().all(|s| s.health == Health::Ok);
        ::metrics::gauge!(metrics::PIPELINE_UP, "pipeline" => self.name.clone()).set(if up { 1.0 } else { 0.0 });
    }

    /// The pipeline file's revision the run uses: the digest of its text.
    pub fn set_revision(&self, digest: &str) {
        *self.revision.lock().expect("not poisoned") = Some(digest.to_string());
    }

    pub fn revision(&self) -> Option<String> {
        self.revision.lock().expect("not poisoned").clone()
    }

    /// The parts of its source, in the order they were first heard of.
    pub fn sources(&self) -> Vec<SourcePart> {
        self.sources.lock().expect("not poisoned").clone()
    }

    /// `part` of its source answered. Logged (once) when it did not before.
    pub fn source_ok(&self, part: &'static str) {
        {
            let sources = self.sources.lock().expect("not poisoned");
            // Failed is for good: the run stops on it. A call that was on
            // its way before (another receiver's long poll) and answers
            // after does not make it ok again.
            if sources.iter().any(|s| s.part == part && matches!(s.health, Health::Ok | Health::Failed(_))) {
                return;
            }
        }
        let before = self.set_health(part, Health::Ok);
        match before {
            Some(s) if s.health != Health::Ok => {
                let down = SystemTime::now().duration_since(s.since).unwrap_or_default();
                tracing::info!(pipeline = %self.name, source = part, down_s = down.as_secs(), errors = s.errors,
                    "the {part} answers again");
            }
            _ => {}
        }
    }

    /// A call to `part` of its source failed (`kind`: unreachable,
    /// not_found, ...), saying `why`. `lasting`: waiting does not heal it
    /// (the part is failed, and the run stops on it); otherwise the part
    /// is degraded and the call is tried again. Logged when the state
    /// changes and every [`REMIND_EVERY`] while it stays; each attempt only
    /// at debug level.
    pub fn source_error(&self, part: &'static str, kind: &'static str, why: &str, lasting: bool) {
        ::metrics::counter!(metrics::SOURCE_ERRORS, "pipeline" => self.name.clone(), "source" => part, "kind" => kind)
            .increment(1);
        tracing::debug!(pipeline = %self.name, source = part, kind, error = %why, "a call to the source failed");
        let health = if lasting { Health::Failed(why.to_string()) } else { Health::Degraded(why.to_string()) };
        let label = health.label();
        let before = self.set_health(part, health);
        let now = std::time::Instant::now();
        match before {
            Some(s) if s.health.label() == label => {
                if now.duration_since(s.logged) >= REMIND_EVERY {
                    let since = SystemTime::now().duration_since(s.since).unwrap_or_default();
                    tracing::warn!(pipeline = %self.name, source = part, since_s = since.as_secs(), errors = s.errors + 1,
                        error = %why, "the {part} is still {label}");
                    self.logged(part, now);
                }
                return;
            }
            _ => {}
        }
        // A lasting failure stops the run, whose stop says why.
        if !lasting {
            tracing::warn!(pipeline = %self.name, source = part, kind, error = %why,
                "the {part} does not answer: degraded; tried again, backing off");
        }
    }

    /// Sets a part's health (counting an error unless it is ok); what it
    /// was before, if it was known.
    fn set_health(&self, part: &'static str, health: Health) -> Option<SourcePart> {
        let before = {
            let mut sources = self.sources.lock().expect("not poisoned");
            let now = SystemTime::now();
            let failed = u64::from(health != Health::Ok);
            match sources.iter_mut().find(|s| s.part == part) {
                Some(s) => {
                    let before = s.clone();
                    if s.health.label() != health.label() {
                        s.since = now;
                        s.logged = std::time::Instant::now();
                    }
                    s.health = health;
                    s.errors += failed;
                    Some(before)
                }
                None => {
                    let logged = std::time::Instant::now();
                    sources.push(SourcePart { part, health, since: now, errors: failed, logged });
                    None
                }
            }
        };
        let up = self.sources.lock().expect("not poisoned").iter().any(|s| s.part == part && s.health == Health::Ok);
        ::metrics::gauge!(metrics::SOURCE_UP, "pipeline" => self.name.clone(), "source" => part).set(if up {
            1.0
        } else {
            0.0
        });
        self.show_up();
        before
    }

    fn logged(&self, part: &'static str, at: std::time::Instant) {
        if let Some(s) = self.sources.lock().expect("not poisoned").iter_mut().find(|s| s.part == part) {
            s.logged = at;
        }
    }

    /// Adds to the run's counts, and the counters by as much.
    pub fn tally(&self, f: impl FnOnce(&mut Summary)) {
        let mut counts = self.counts.lock().expect("not poisoned");
        let before = counts.clone();
        f(&mut counts);
        self.counters.moved(&before, &counts);
    }

    pub fn counts(&self) -> Summary {
        self.counts.lock().expect("not poisoned").clone()
    }

    pub fn set_plugins(&self, plugins: Vec<PluginVersion>) {
        *self.plugins.lock().expect("not poisoned") = plugins;
    }

    pub fn plugins(&self) -> Vec<PluginVersion> {
        self.plugins.lock().expect("not poisoned").clone()
    }

    /// A version swapped in (`swapped`) or refused, with what changed or why.
    pub fn event(&self, swapped: bool, text: &str) {
        self.tally(|s| if swapped { s.swaps += 1 } else { s.refused_versions += 1 });
        let mut events = self.events.lock().expect("not poisoned");
        if events.len() == EVENTS {
            events.pop_front();
        }
        events.push_back(Event { at: SystemTime::now(), swapped, text: text.to_string() });
    }

    /// Shows the candidate in shadow (`None`: there is none).
    pub fn set_shadow(&self, view: Option<ShadowView>) {
        *self.shadow.lock().expect("not poisoned") = view;
    }

    pub fn shadow(&self) -> Option<ShadowView> {
        self.shadow.lock().expect("not poisoned").clone()
    }

    /// The last swaps and refusals, newest first.
    pub fn events(&self) -> Vec<Event> {
        self.events.lock().expect("not poisoned").iter().rev().cloned().collect()
    }

    /// Records the rows written so far (called every [`SAMPLE_EVERY`]).
    pub fn sample(&self) {
        let rows = self.counts().rows;
        let mut samples = self.samples.lock().expect("not poisoned");
        if samples.len() == SAMPLES {
            samples.pop_front();
        }
        samples.push_back((SystemTime::now(), rows));
    }

    /// Rows per second between consecutive samples, oldest first.
    pub fn rates(&self) -> Vec<f64> {
        let samples = self.samples.lock().expect("not poisoned");
        samples
            .iter()
            .zip(samples.iter().skip(1))
            .map(|((t0, r0), (t1, r1))| {
                let secs = t1.duration_since(*t0).unwrap_or_default().as_secs_f64();
                if secs > 0.0 { (r1 - r0) as f64 / secs } else { 0.0 }
            })
            .collect()
    }

    /// Messages received: their count, and the oldest one's SentTimestamp
    /// (an empty receive: the queue is drained, no age).
    pub fn received(&self, n: usize, oldest_sent_ms: Option<i64>) {
        self.counters.received.increment(n as u64);
        if n == 0 {
            // Nothing waits (that this receive saw).
            self.oldest_sent_ms.store(0, Ordering::Relaxed);
            self.counters.oldest_age.set(0.0);
        } else if let Some(sent) = oldest_sent_ms.filter(|s| *s > 0) {
            self.oldest_sent_ms.store(sent, Ordering::Relaxed);
            let age = (now_ms() - sent).max(0) as f64 / 1000.0;
            self.counters.oldest_age.set(age);
        }
    }

    /// Messages the pipeline holds now (received, not yet settled).
    pub fn held(&self, n: usize) {
        self.counters.in_flight.set(n as f64);
    }

    /// The age of the oldest message of the latest receive, when known.
    pub fn oldest_age(&self) -> Option<Duration> {
        let sent = self.oldest_sent_ms.load(Ordering::Relaxed);
        (sent > 0).then(|| Duration::from_millis((now_ms() - sent).max(0) as u64))
    }

    pub fn deleted(&self, n: usize) {
        self.counters.deleted.increment(n as u64);
    }

    pub fn released(&self, n: usize) {
        self.counters.released.increment(n as u64);
    }

    pub fn extended(&self, n: usize) {
        self.counters.extended.increment(n as u64);
    }

    pub fn bytes_read(&self, n: u64) {
        self.counters.bytes_read.increment(n);
    }

    pub fn sftp_bytes(&self, n: u64) {
        self.counters.sftp_bytes.increment(n);
    }

    /// An SFTP pass failed, and why: shown until a pass succeeds.
    pub fn sftp_failed(&self, why: Option<&str>) {
        match why {
            Some(why) => {
                self.counters.sftp_failed.increment(1);
                self.source_error("sftp", "other", why, false);
            }
            None => self.source_ok("sftp"),
        }
        *self.sftp_error.lock().expect("not poisoned") = why.map(str::to_string);
    }

    /// Why the last SFTP pass failed, if it did.
    pub fn sftp_error(&self) -> Option<String> {
        self.sftp_error.lock().expect("not poisoned").clone()
    }

    /// The run's probe of its database and source, set once.
    pub fn set_probe(&self, probe: Probe) {
        let _ = self.probe.set(probe);
    }

    /// Probes the database and the source; empty before the run set a probe.
    pub async fn probe(&self) -> ProbeResult {
        match self.probe.get() {
            Some(p) => p().await,
            None => Vec::new(),
        }
    }
}

fn now_ms() -> i64 {
    SystemTime::now().duration_since(SystemTime::UNIX_EPOCH).map_or(0, |d| d.as_millis() as i64)
}

/// The pipelines of one process.
pub struct Board {
    panels: Mutex<Vec<Arc<Panel>>>,
    pub started: SystemTime,
    /// The process is stopping (a signal came): not ready any more.
    draining: std::sync::atomic::AtomicBool,
}

impl Default for Board {
    fn default() -> Self {
        Board { panels: Mutex::default(), started: SystemTime::now(), draining: Default::default() }
    }
}

impl Board {
    /// The process stops: readiness fails from now on, and
    /// `etl_draining` is 1.
    pub fn drain(&self) {
        self.draining.store(true, Ordering::Relaxed);
        ::metrics::gauge!(metrics::DRAINING).set(1.0);
    }

    pub fn draining(&self) -> bool {
        self.draining.load(Ordering::Relaxed)
    }

    /// A panel for the pipeline `name`; an error if the process runs one of
    /// that name already.
    pub fn add(&self, name: &str, file: PathBuf) -> Result<Arc<Panel>, String> {
        let mut panels = self.panels.lock().expect("not poisoned");
        if let Some(p) = panels.iter().find(|p| p.name == name) {
            return Err(format!(
                "{} and {} both name the pipeline `{name}`: names must differ within one process",
                p.file.display(),
                file.display()
            ));
        }
        let panel = Arc::new(Panel::new(name, file));
        panels.push(panel.clone());
        Ok(panel)
    }

    pub fn panels(&self) -> Vec<Arc<Panel>> {
        self.panels.lock().expect("not poisoned").clone()
    }

    pub fn get(&self, name: &str) -> Option<Arc<Panel>> {
        self.panels.lock().expect("not poisoned").iter().find(|p| p.name == name).cloned()
    }

    /// Samples every panel's rows every [`SAMPLE_EVERY`], for ever.
    pub async fn sample(self: Arc<Self>) {
        let mut tick = tokio::time::interval(SAMPLE_EVERY);
        loop {
            tick.tick().await;
            for p in self.panels() {
                p.sample();
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn since_subtracts_every_count() {
        let a = Summary { messages: 3, rows: 5, objects: 1, ..Summary::default() };
        let b = Summary { messages: 10, rows: 12, objects: 4, dead_letters: 2, ..Summary::default() };
        assert_eq!(b.since(&a), Summary { messages: 7, rows: 7, objects: 3, dead_letters: 2, ..Summary::default() });
    }

    #[test]
    fn a_name_is_taken_once_per_board() {
        let board = Board::default();
        board.add("logins", "a.toml".into()).unwrap();
        let Err(err) = board.add("logins", "b.toml".into()) else { panic!("a second `logins`") };
        assert!(err.contains("a.toml and b.toml both name the pipeline `logins`"), "{err}");
    }

    #[test]
    fn a_source_part_that_fails_degrades_the_pipeline_until_it_answers() {
        let p = Panel::new("p", PathBuf::new());
        p.set_state(State::Running);
        p.source_ok("queue");
        assert_eq!(p.label(), ("running", None));
        p.source_error("queue", "unreachable", "cannot reach the endpoint", false);
        p.source_error("queue", "unreachable", "cannot reach the endpoint", false);
        assert_eq!(p.label(), ("degraded", Some("queue: cannot reach the endpoint".to_string())));
        let part = &p.sources()[0];
        assert_eq!((part.health.label(), part.errors), ("degraded", 2));
        p.source_ok("queue");
        assert_eq!(p.label(), ("running", None));
        p.source_error("bucket", "not_found", "NoSuchBucket", true);
        assert_eq!(p.sources()[1].health, Health::Failed("NoSuchBucket".into()));
        // A call on its way before the failure that answers after it.
        p.source_ok("bucket");
        assert_eq!(p.sources()[1].health, Health::Failed("NoSuchBucket".into()), "failed stays failed");
        p.set_state(State::Failed("bucket: NoSuchBucket".into()));
        assert_eq!(p.label(), ("failed", Some("bucket: NoSuchBucket".to_string())));
    }

    #[test]
    fn events_keep_the_last_twenty_newest_first_and_count() {
        let p = Panel::new("p", PathBuf::new());
        for i in 0..25 {
            p.event(i % 2 == 0, &format!("e{i}"));
        }
        let events = p.events();
        assert_eq!(events.len(), 20);
        assert_eq!(events[0].text, "e24");
        assert_eq!((p.counts().swaps, p.counts().refused_versions), (13, 12));
    }
}
