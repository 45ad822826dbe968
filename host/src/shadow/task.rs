//! The shadow's task: follows the run's versions (a generation whose
//! pipeline names a candidate starts a shadow of it), takes what the
//! candidate's thread measured every second, adds it to the candidate's
//! row, moves the metrics and the panel, and carries out the decision that
//! stands for the candidate (promote through the watcher, discard), making
//! one itself when `[shadow] promote_when` holds.
//!
//! Must not run plugins on the async threads: loading is on a blocking
//! thread, running on the candidate's own.

use super::run::{self, Wanted};
use super::store::{self, Decision, Delta};
use super::{Shared, Tap};
use crate::config::PromoteWhen;
use crate::reload::{Generation, Request, chain_fingerprint};
use crate::status::metrics::{SHADOW_BATCHES, SHADOW_COLUMNS, SHADOW_CPU, SHADOW_RECORDS};
use crate::status::{Panel, ShadowView};
use crate::transform::{Engine, Loaded, short};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, SystemTime};
use tokio::sync::{mpsc, oneshot, watch};

/// How often what was measured is stored and decisions are looked for.
pub const EVERY: Duration = Duration::from_secs(1);
/// How long one look at the database may take.
const DATABASE_WITHIN: Duration = Duration::from_secs(5);
/// How long a promotion (loading, configuring, test cases) may take.
const PROMOTION_WITHIN: Duration = Duration::from_secs(120);

/// What a run's shadow needs.
pub struct Setup {
    pub engine: Arc<Engine>,
    pub panel: Arc<Panel>,
    pub pool: deadpool_postgres::Pool,
    pub generations: watch::Receiver<Arc<Generation>>,
    /// The watcher's requests (`None`: nothing can be promoted).
    pub requests: Option<mpsc::Sender<Request>>,
    pub stop: watch::Receiver<bool>,
}

/// The candidate being shadowed and what is known of it.
struct Current {
    fingerprint: String,
    changes: String,
    promote_when: Option<PromoteWhen>,
    /// `running`, `promoted` or `discarded`.
    state: &'static str,
    reason: Option<String>,
    /// Measured here and not stored yet.
    unsaved: Delta,
    /// Every host's totals as last stored (plus `unsaved` while the
    /// database cannot be reached).
    totals: Delta,
    stored: bool,
}

struct Task {
    setup: Setup,
    shared: Arc<Shared>,
    current: Option<Current>,
    /// The database could not be reached at the last look (logged once).
    database_failing: bool,
}

/// Starts the shadow of a run: its thread and its task. Before returning,
/// the first version's candidate is looked at, and a promotion that stands
/// for it is carried out, so that the run's first batch already uses it.
pub async fn start(setup: Setup) -> Arc<Tap> {
    let queue = setup.generations.borrow().pipeline.shadow_queue;
    let (tx, rx) = std::sync::mpsc::sync_channel(queue);
    let shared = Arc::new(Shared::default());
    let (engine, thread_shared) = (setup.engine.clone(), shared.clone());
    let name = format!("shadow-{}", setup.panel.name);
    if let Err(e) = std::thread::Builder::new().name(name).spawn(move || run::serve(engine, thread_shared, rx)) {
        tracing::error!(pipeline = %setup.panel.name, error = %e, "cannot start the shadow's thread: no shadow runs");
    }
    let tap = Arc::new(Tap { tx, shared: shared.clone() });
    let mut task = Task { setup, shared, current: None, database_failing: false };
    task.follow().await;
    task.settle().await;
    tokio::spawn(task.run());
    tap
}

impl Task {
    async fn run(mut self) {
        let mut tick = tokio::time::interval(EVERY);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut stop = self.setup.stop.clone();
        loop {
            let changed = tokio::select! {
                changed = self.setup.generations.changed() => match changed {
                    Ok(()) => true,
                    // No versions any more: the run ended.
                    Err(_) => break,
                },
                _ = tick.tick() => false,
                _ = stop.wait_for(|s| *s) => break,
            };
            if *stop.borrow() {
                break;
            }
            if changed {
                self.follow().await;
            } else {
                self.settle().await;
            }
        }
        self.settle().await;
        self.shared.stopped.store(true, Ordering::Relaxed);
    }

    /// Takes the latest version's candidate, if it has another one.
    async fn follow(&mut self) {
        let generation = self.setup.generations.borrow_and_update().clone();
        let name = self.setup.panel.name.clone();
        let Some(candidate) = generation.pipeline.candidate() else {
            if self.current.is_some() {
                self.settle().await;
                self.current = None;
            }
            self.use_candidate(None);
            self.setup.panel.set_shadow(None);
            return;
        };
        let (engine, c) = (self.setup.engine.clone(), candidate.clone());
        let loaded = match tokio::task::spawn_blocking(move || Loaded::load(&engine, &c)).await.expect("no panic") {
            Ok(l) => l,
            Err(e) => {
                tracing::error!(pipeline = %name, error = %e, "the candidate in shadow cannot be loaded; production goes on without it");
                self.current = None;
                self.use_candidate(None);
                let view = ShadowView { state: "failed".into(), reason: Some(e.to_string()), ..ShadowView::default() };
                self.setup.panel.set_shadow(Some(view));
                return;
            }
        };
        let fingerprint = chain_fingerprint(&candidate, &loaded);
        let lineage = crate::transform::lineage(generation.loaded.plugins.iter());
        let same = self.current.as_ref().is_some_and(|c| c.fingerprint == fingerprint);
        let wanted_lineage = self.shared.wanted.lock().expect("not poisoned").as_ref().map(|w| w.lineage.clone());
        if same && wanted_lineage.as_deref() == Some(&lineage) {
            return;
        }
        if !same {
            self.settle().await;
            let changes = crate::reload::changes((&generation.pipeline, &generation.loaded), (&candidate, &loaded));
            tracing::info!(pipeline = %name, candidate = %short(&fingerprint), changes = %changes, "a candidate runs in shadow");
            self.current = Some(Current {
                fingerprint: fingerprint.clone(),
                changes,
                promote_when: generation.pipeline.promote_when,
                state: "running",
                reason: None,
                unsaved: Delta::default(),
                totals: Delta::default(),
                stored: false,
            });
        }
        if self.current.as_ref().is_some_and(|c| c.state == "running") {
            self.use_candidate(Some(Wanted { fingerprint, lineage, pipeline: candidate, loaded }));
        }
        self.show();
    }

    /// Tells the thread what to run (`None`: nothing; production stops
    /// offering).
    fn use_candidate(&self, wanted: Option<Wanted>) {
        let active = wanted.is_some();
        *self.shared.wanted.lock().expect("not poisoned") = wanted.map(Arc::new);
        self.shared.active.store(active, Ordering::Relaxed);
    }

    /// Takes what was measured, stores it, and acts on the decision that
    /// stands.
    async fn settle(&mut self) {
        let measured: Vec<(String, Delta)> = std::mem::take(&mut *self.shared.measured.lock().expect("not poisoned"));
        let skipped = self.shared.skipped.swap(0, Ordering::Relaxed);
        let error = self.shared.error.lock().expect("not poisoned").take();
        let Some(current) = self.current.as_mut() else { return };
        let mut delta = Delta { skipped, ..Delta::default() };
        for (fingerprint, d) in &measured {
            if *fingerprint == current.fingerprint {
                delta.absorb(d);
            }
        }
        if let Some(why) = error {
            if current.reason.as_deref() != Some(why.as_str()) {
                tracing::warn!(pipeline = %self.setup.panel.name, error = %why, "the candidate in shadow failed; its batches are skipped");
            }
            current.reason = Some(why);
        }
        record_metrics(&self.setup.panel.name, &delta);
        current.unsaved.absorb(&delta);
        current.totals.absorb(&delta);
        let looked = within(self.store_and_look()).await;
        let decision = self.database(looked).flatten();
        if let Some(decision) = decision {
            // Not under the database's bound: a promotion loads plugins.
            let outcome = self.carry_out(&decision).await;
            let name = self.setup.panel.name.clone();
            let pool = self.setup.pool.clone();
            let recorded = within(async move {
                let mut client = pool.get().await.map_err(|e| e.to_string())?;
                let outcome = outcome.as_ref().map(|_| ()).map_err(String::as_str);
                let tx = client.transaction().await.map_err(|e| crate::report::report(&e))?;
                store::settle(&*tx, &name, &decision, outcome).await.map_err(|e| crate::report::report(&e))?;
                tx.commit().await.map_err(|e| crate::report::report(&e))
            })
            .await;
            self.database(recorded);
        }
        self.show();
    }

    /// What a look at the database gave, noting (and logging once) when
    /// it could not be reached.
    fn database<T>(&mut self, looked: Result<T, String>) -> Option<T> {
        match looked {
            Ok(t) => {
                self.database_failing = false;
                Some(t)
            }
            Err(why) => {
                if !self.database_failing {
                    tracing::warn!(pipeline = %self.setup.panel.name, error = %why, "the shadow's summary or decisions cannot be stored or read now; kept and tried again");
                }
                self.database_failing = true;
                None
            }
        }
    }

    /// Adds what was measured to the candidate's row, then reads the
    /// decision that stands for it (making the automatic one when
    /// `promote_when` holds): the decision to carry out, if any.
    async fn store_and_look(&mut self) -> Result<Option<Decision>, String> {
        let name = self.setup.panel.name.clone();
        let failed = |e: tokio_postgres::Error| crate::report::report(&e);
        let mut client = self.setup.pool.get().await.map_err(|e| e.to_string())?;
        let Some(current) = self.current.as_mut() else { return Ok(None) };
        if !current.stored || !current.unsaved.is_empty() {
            let shadow = store::add(&mut client, &name, &current.fingerprint, &current.changes, &current.unsaved)
                .await
                .map_err(failed)?;
            current.unsaved = Delta::default();
            current.totals = shadow.totals;
            current.stored = true;
        }
        // One transaction: its statements reach one server connection
        // through a pooler in transaction mode too.
        let tx = client.transaction().await.map_err(failed)?;
        let db = &*tx;
        let mut standing = store::standing(db, &name, &current.fingerprint).await.map_err(failed)?;
        if standing.is_none()
            && current.state == "running"
            && let Some(by) = automatic(current)
        {
            tracing::info!(pipeline = %name, candidate = %short(&current.fingerprint), "promote_when holds: promoting");
            store::decide(db, &name, &current.fingerprint, "promote", &by).await.map_err(failed)?;
            standing = store::standing(db, &name, &current.fingerprint).await.map_err(failed)?;
        }
        tx.commit().await.map_err(failed)?;
        let refused = standing.as_ref().is_some_and(|d| d.outcome.as_deref() == Some("refused"));
        Ok(standing.filter(|_| current.state == "running" && !refused))
    }

    /// Promotes or discards the candidate as `decision` says.
    async fn carry_out(&mut self, decision: &Decision) -> Result<(), String> {
        let outcome = match decision.action.as_str() {
            "promote" => self.promote(decision).await,
            _ => {
                tracing::info!(pipeline = %self.setup.panel.name, candidate = %short(&decision.candidate), by = %decision.decided_by, "candidate discarded");
                Ok(())
            }
        };
        let Some(current) = self.current.as_mut() else { return outcome };
        match &outcome {
            Ok(()) => {
                current.state = if decision.action == "promote" { "promoted" } else { "discarded" };
                current.reason = None;
            }
            Err(why) => current.reason = Some(format!("{} refused: {why}", decision.action)),
        }
        if current.state != "running" {
            self.use_candidate(None);
        }
        outcome
    }

    /// Asks the watcher to swap the candidate in.
    async fn promote(&self, decision: &Decision) -> Result<(), String> {
        let name = &self.setup.panel.name;
        let Some(requests) = &self.setup.requests else {
            return Err("this run cannot swap versions (its pipeline file could not be read)".into());
        };
        let (reply, answer) = oneshot::channel();
        let request = Request::Promote { candidate: decision.candidate.clone(), reply };
        requests.send(request).await.map_err(|_| "the run is stopping".to_string())?;
        let answer = tokio::time::timeout(PROMOTION_WITHIN, answer).await;
        match answer {
            Ok(Ok(Ok(changes))) => {
                tracing::info!(pipeline = %name, by = %decision.decided_by, changes = %changes, "candidate promoted; in use from the next batch");
                Ok(())
            }
            Ok(Ok(Err(why))) => {
                tracing::error!(pipeline = %name, by = %decision.decided_by, reason = %why, "promotion refused; production goes on as it was");
                Err(why)
            }
            Ok(Err(_)) => Err("the run is stopping".into()),
            Err(_) => Err(format!("not checked within {} s", PROMOTION_WITHIN.as_secs())),
        }
    }

    /// The panel's view of the candidate.
    fn show(&self) {
        let Some(c) = &self.current else { return };
        let (t, s) = (&c.totals, &c.totals.summary);
        self.setup.panel.set_shadow(Some(ShadowView {
            candidate: c.fingerprint.clone(),
            changes: c.changes.clone(),
            state: c.state.into(),
            reason: c.reason.clone(),
            records: s.records,
            same: s.same,
            changed: s.changed,
            added: s.added,
            dropped: s.dropped,
            rejected_by_production_only: s.rejected_by_production_only,
            rejected_by_candidate_only: s.rejected_by_candidate_only,
            columns: s.columns.clone(),
            sample: s.sample.clone(),
            batches: t.batches,
            skipped: t.skipped,
            trapped: t.trapped,
            production_cpu_s: t.production_cpu_s,
            candidate_cpu_s: t.candidate_cpu_s,
            updated: Some(SystemTime::now()),
        }));
    }
}

/// `f` within [`DATABASE_WITHIN`].
async fn within<T>(f: impl std::future::Future<Output = Result<T, String>>) -> Result<T, String> {
    tokio::time::timeout(DATABASE_WITHIN, f)
        .await
        .unwrap_or_else(|_| Err(format!("no answer within {} s", DATABASE_WITHIN.as_secs())))
}

/// Who promotes the candidate by itself, if its `promote_when` holds.
fn automatic(current: &Current) -> Option<String> {
    let bounds = current.promote_when.filter(|b| holds(b, &current.totals))?;
    Some(format!(
        "automatic: promote_when {{ records = {}, changed_at_most = {}, rejected_at_most = {} }} held over {} records",
        bounds.records, bounds.changed_at_most, bounds.rejected_at_most, current.totals.summary.records
    ))
}

/// Whether `totals` keep `bounds`: enough records compared, and the shares
/// changed (rows changed, added or dropped) and rejected by one side only
/// at most the bounds.
pub fn holds(bounds: &PromoteWhen, totals: &Delta) -> bool {
    let s = &totals.summary;
    if s.records < bounds.records || s.records == 0 {
        return false;
    }
    let n = s.records as f64;
    let changed = (s.changed + s.added + s.dropped) as f64 / n;
    let rejected = (s.rejected_by_production_only + s.rejected_by_candidate_only) as f64 / n;
    changed <= bounds.changed_at_most && rejected <= bounds.rejected_at_most
}

fn record_metrics(pipeline: &str, d: &Delta) {
    let p = || pipeline.to_string();
    let s = &d.summary;
    let outcomes = [
        ("same", s.same),
        ("changed", s.changed),
        ("added", s.added),
        ("dropped", s.dropped),
        ("rejected_by_production_only", s.rejected_by_production_only),
        ("rejected_by_candidate_only", s.rejected_by_candidate_only),
    ];
    for (outcome, n) in outcomes.into_iter().filter(|(_, n)| *n > 0) {
        ::metrics::counter!(SHADOW_RECORDS, "pipeline" => p(), "outcome" => outcome).increment(n);
    }
    for (column, n) in &s.columns {
        ::metrics::counter!(SHADOW_COLUMNS, "pipeline" => p(), "column" => column.clone()).increment(*n);
    }
    let batches = [("compared", d.batches), ("skipped", d.skipped), ("trapped", d.trapped)];
    for (outcome, n) in batches.into_iter().filter(|(_, n)| *n > 0) {
        ::metrics::counter!(SHADOW_BATCHES, "pipeline" => p(), "outcome" => outcome).increment(n);
    }
    for (side, s) in [("production", d.production_cpu_s), ("candidate", d.candidate_cpu_s)] {
        if s > 0.0 {
            ::metrics::gauge!(SHADOW_CPU, "pipeline" => p(), "side" => side).increment(s);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn totals(records: u64, changed: u64, rejected: u64) -> Delta {
        let summary = crate::diff::Summary {
            records,
            changed,
            same: records - changed - rejected,
            rejected_by_candidate_only: rejected,
            ..Default::default()
        };
        Delta { summary, ..Delta::default() }
    }

    #[test]
    fn promote_when_needs_the_volume_and_both_bounds() {
        let bounds = PromoteWhen { records: 1000, changed_at_most: 0.0, rejected_at_most: 0.001 };
        assert!(!holds(&bounds, &totals(999, 0, 0)), "not enough records yet");
        assert!(holds(&bounds, &totals(1000, 0, 1)), "one in a thousand rejected is within 0.001");
        assert!(!holds(&bounds, &totals(1000, 0, 2)));
        assert!(!holds(&bounds, &totals(5000, 1, 0)), "no change allowed");
        let loose = PromoteWhen { records: 10, changed_at_most: 1.0, rejected_at_most: 0.0 };
        assert!(holds(&loose, &totals(10, 10, 0)));
        assert!(!holds(&PromoteWhen { records: 0, ..loose }, &totals(0, 0, 0)), "nothing compared holds nothing");
    }
}
