//! One step of a chain: a live instance of a plugin under its limits, calls
//! that cannot take the host down, and isolation of the records that make a
//! call fail.
//!
//! Must not let a trap, a timeout or an exhausted memory escape as a panic.

use super::engine::{Engine, Plugin, short, ticks};
use super::sandbox::StepState;
use super::wit::{self, Batch};
use crate::batch::BatchBuilder;
use crate::config::Step;
use plugin_sdk::record::Outcome;
use std::collections::HashMap;
use std::fmt;
use std::sync::Arc;

/// Calls that may fail while isolating the bad records of one batch; past it
/// the records not yet cleared are rejected with the last failure.
const MAX_FAILED_CALLS: usize = 24;

/// Why one call failed. The instance is discarded after any of these.
#[derive(Debug, Clone, PartialEq)]
pub enum CallFailure {
    Timeout {
        budget_ms: u128,
    },
    OutOfMemory {
        cap_mb: usize,
    },
    /// A trap; `panic` is the plugin's panic message when the pipeline lets
    /// record values be shown.
    Trap {
        trap: String,
        panicked: bool,
        panic: Option<String>,
    },
    Malformed(String),
}

impl fmt::Display for CallFailure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CallFailure::Timeout { budget_ms } => {
                write!(f, "exceeded its time budget of {budget_ms} ms per call")
            }
            CallFailure::OutOfMemory { cap_mb } => {
                write!(f, "ran out of memory (cap {cap_mb} MiB)")
            }
            CallFailure::Trap { trap, panicked: true, panic: Some(p) } => write!(f, "panicked ({trap}): {p}"),
            CallFailure::Trap { trap, panicked: true, panic: None } => write!(
                f,
                "panicked ({trap}); message withheld as it may hold record values ([logging] record_values = true shows it)"
            ),
            CallFailure::Trap { trap, .. } => write!(f, "trapped: {trap}"),
            CallFailure::Malformed(why) => write!(f, "returned malformed output: {why}"),
        }
    }
}

/// A step that cannot run at all.
#[derive(Debug, thiserror::Error)]
pub enum StepError {
    /// `problem` names the environment variable.
    #[error("{file}:{line}: step {step} (`{plugin}`): secret `{secret}`: {problem}")]
    Secret { file: String, line: usize, step: usize, plugin: String, secret: String, problem: String },
    #[error("{file}:{line}: step {step} (`{plugin}`): cannot instantiate: {reason}")]
    Instantiate { file: String, line: usize, step: usize, plugin: String, reason: String },
    #[error("{file}:{line}: step {step} (`{plugin}`) refused its params: {reason}")]
    Configure { file: String, line: usize, step: usize, plugin: String, reason: String },
    /// The params do not fit the schema the plugin declares; `line` is the
    /// parameter's own.
    #[error("{file}:{line}: step {step} (`{plugin}`) params: {at}{message}")]
    Params { file: String, line: usize, step: usize, plugin: String, at: String, message: String },
}

/// The outcome of one step on one batch.
pub enum StepOutput {
    /// Every record passed through as it came.
    Unchanged,
    Changed {
        /// The emitted records, checked.
        batch: Batch,
        /// One per input record, in order.
        outcomes: Vec<Outcome>,
    },
}

/// A call's result: `None` when the batch passed unchanged.
type Called = Option<(Batch, Vec<Outcome>)>;

/// A step ready to run batches.
pub struct StepRunner {
    pub step: Step,
    pub plugin: Arc<Plugin>,
    /// Where errors point: the pipeline file.
    file: String,
    engine: Arc<Engine>,
    secrets: Arc<HashMap<String, Vec<u8>>>,
    show_panics: bool,
    live: Option<Live>,
    metrics: crate::status::metrics::Step,
    /// Batches on which a call failed (trap, timeout, memory, malformed
    /// output), so far.
    failed_batches: u64,
}

struct Live {
    store: wasmtime::Store<StepState>,
    instance: wit::Plugin,
    /// The fields the configured step declared (the `fields` export of
    /// the `projecting-plugin` world), if it did: calls then pass only
    /// those (see `plugin_sdk::projection`).
    projection: Option<plugin_sdk::projection::Declared>,
}

impl StepRunner {
    /// Resolves the step's secrets, instantiates and configures the plugin.
    pub fn new(
        engine: Arc<Engine>,
        file: &str,
        pipeline: &str,
        step: Step,
        plugin: Arc<Plugin>,
        show_panics: bool,
    ) -> Result<Self, StepError> {
        let mut secrets = HashMap::new();
        for (name, var) in &step.grants.secrets {
            let refused = |problem: &str| StepError::Secret {
                file: file.into(),
                line: step.line,
                step: step.index,
                plugin: plugin.name.clone(),
                secret: name.clone(),
                problem: format!("environment variable `{var}` {problem}"),
            };
            let value = std::env::var(var).map_err(|_| refused("is not set"))?;
            // An empty key makes every keyed hash one anybody can compute.
            if value.is_empty() {
                return Err(refused("is empty: a key must not be"));
            }
            secrets.insert(name.clone(), value.into_bytes());
        }
        let metrics = crate::status::metrics::Step::new(pipeline, step.index, &plugin.name, short(&plugin.digest));
        let mut runner = StepRunner {
            step,
            plugin,
            file: file.into(),
            engine,
            secrets: Arc::new(secrets),
            show_panics,
            live: None,
            metrics,
            failed_batches: 0,
        };
        runner.check_params()?;
        runner.live = Some(runner.instantiate()?);
        Ok(runner)
    }

    /// The step's params against the schema the plugin declares, if any.
    fn check_params(&self) -> Result<(), StepError> {
        let Some(schema) = &self.plugin.description.params_schema else { return Ok(()) };
        match super::params::check(schema, &self.step.params) {
            Ok(()) => Ok(()),
            Err(super::params::Refusal::Schema(reason)) => Err(StepError::Instantiate {
                file: self.file.clone(),
                line: self.step.line,
                step: self.step.index,
                plugin: self.plugin.name.clone(),
                reason,
            }),
            Err(super::params::Refusal::Misfit { key, top, message }) => {
                // The key's own line, else the nearest key above it written.
                let lines = &self.step.param_lines;
                let line_of = |path: &str| lines.iter().find(|(k, _)| k == path).map(|(_, l)| *l);
                let mut path = key.as_str();
                let line = loop {
                    if let Some(l) = line_of(path) {
                        break l;
                    }
                    match path.rfind(['.', '[']) {
                        Some(i) => path = &path[..i],
                        None => break top.as_deref().and_then(line_of).unwrap_or(self.step.line),
                    }
                };
                Err(StepError::Params {
                    file: self.file.clone(),
                    line,
                    step: self.step.index,
                    plugin: self.plugin.name.clone(),
                    at: if key.is_empty() { String::new() } else { format!("`{key}` ") },
                    message,
                })
            }
        }
    }

    /// A fresh, configured instance.
    fn instantiate(&self) -> Result<Live, StepError> {
        let mut store = self.engine.store(&self.step.limits, &self.step.grants, self.secrets.clone());
        let err = |reason: String| StepError::Instantiate {
            file: self.file.clone(),
            line: self.step.line,
            step: self.step.index,
            plugin: self.plugin.name.clone(),
            reason,
        };
        let raw = self.plugin.pre.instance_pre().instantiate(&mut store).map_err(|e| err(format!("{e:#}")))?;
        let instance = wit::Plugin::new(&mut store, &raw).map_err(|e| err(format!("{e:#}")))?;
        match instance.call_configure(&mut store, &self.step.params) {
            Ok(Ok(())) => {
                let projection = match raw.get_func(&mut store, "fields").filter(|_| self.engine.projection()) {
                    None => None,
                    Some(f) => {
                        let f = f.typed::<(), (Option<wit::Projection>,)>(&store).map_err(|e| {
                            err(format!("its `fields` export is not the projecting-plugin world's: {e:#}"))
                        })?;
                        match f.call(&mut store, ()) {
                            Ok((p,)) => p.map(|p| plugin_sdk::projection::Declared::new(&p.reads, &p.writes)),
                            Err(e) => return Err(err(self.failure(&mut store, e).to_string())),
                        }
                    }
                };
                Ok(Live { store, instance, projection })
            }
            Ok(Err(reason)) => Err(StepError::Configure {
                file: self.file.clone(),
                line: self.step.line,
                step: self.step.index,
                plugin: self.plugin.name.clone(),
                reason,
            }),
            Err(e) => Err(err(self.failure(&mut store, e).to_string())),
        }
    }

    /// One call under the limits; after a failure the instance is replaced
    /// before the next call.
    pub fn call(&mut self, batch: &Batch) -> Result<Result<Called, CallFailure>, StepError> {
        let mut live = match self.live.take() {
            Some(l) => l,
            None => self.instantiate()?,
        };
        live.store.set_epoch_deadline(ticks(self.step.limits.max_call));
        let started = std::time::Instant::now();
        let projected = live.projection.as_ref().map(|p| wit::project(batch, p));
        let called = live.instance.call_transform(&mut live.store, projected.as_ref().map_or(batch, |(b, _)| b));
        self.metrics.call.record(started.elapsed());
        match called {
            Ok(wit::Output::Unchanged) => {
                self.live = Some(live);
                Ok(Ok(None))
            }
            Ok(wit::Output::Changed(out)) => {
                let checked = wit::check(out, batch.records.len()).and_then(|(out, outcomes)| {
                    match (&live.projection, &projected) {
                        (Some(p), Some((_, places))) => Ok((wit::merge(batch, places, &out, &outcomes, p)?, outcomes)),
                        _ => Ok((out, outcomes)),
                    }
                });
                let checked = checked.map_err(CallFailure::Malformed);
                match checked {
                    Ok(_) => self.live = Some(live),
                    Err(_) => self.metrics.malformed.increment(1),
                }
                Ok(checked.map(Some))
            }
            Err(e) => Ok(Err(self.failure(&mut live.store, e))),
        }
    }

    fn failure(&self, store: &mut wasmtime::Store<StepState>, e: wasmtime::Error) -> CallFailure {
        let trap = e.downcast_ref::<wasmtime::Trap>().copied();
        if trap == Some(wasmtime::Trap::Interrupt) {
            self.metrics.timeout.increment(1);
            return CallFailure::Timeout { budget_ms: self.step.limits.max_call.as_millis() };
        }
        if store.data().limiter.refused {
            self.metrics.memory.increment(1);
            return CallFailure::OutOfMemory { cap_mb: self.step.limits.max_memory_bytes >> 20 };
        }
        self.metrics.trap.increment(1);
        let stderr = store.data().stderr.contents();
        let panicked = stderr.windows(9).any(|w| w == b"panicked ");
        let panic = (panicked && self.show_panics).then(|| String::from_utf8_lossy(&stderr).trim().to_string());
        let trap = trap.map_or_else(|| format!("{e:#}"), |t| t.to_string());
        CallFailure::Trap { trap, panicked, panic }
    }

    /// Runs a batch; when a call fails, retries halves until the failing
    /// records are alone, and rejects only them.
    pub fn run(&mut self, input: &Batch) -> Result<StepOutput, StepError> {
        let n = input.records.len();
        if n == 0 {
            return Ok(StepOutput::Unchanged);
        }
        let first = match self.call(input)? {
            Ok(None) => return Ok(StepOutput::Unchanged),
            Ok(Some((batch, outcomes))) => {
                return Ok(StepOutput::Changed { batch, outcomes });
            }
            Err(f) => f,
        };
        self.failed_batches += 1;
        tracing::warn!(step = self.step.index, plugin = %self.plugin.name, records = n, cause = %first, "call failed; isolating");
        let mut acc = Isolation { rows: BatchBuilder::new(), outcomes: Vec::with_capacity(n), failed: 1, last: first };
        if n == 1 {
            acc.reject(1, self.reason(&acc.last.clone()));
        } else {
            self.isolate(input, 0..n / 2, &mut acc)?;
            self.isolate(input, n / 2..n, &mut acc)?;
        }
        let batch = wit::to_wit(&acc.rows.finish());
        Ok(StepOutput::Changed { batch, outcomes: acc.outcomes })
    }

    fn isolate(&mut self, input: &Batch, range: std::ops::Range<usize>, acc: &mut Isolation) -> Result<(), StepError> {
        if acc.failed >= MAX_FAILED_CALLS {
            let reason = format!("{} (not isolated: too many failed calls in this batch)", acc.last);
            acc.reject(range.len(), reason);
            return Ok(());
        }
        let part = input.slice(range.clone());
        match self.call(&part)? {
            Ok(called) => {
                let (batch, outcomes) = match called {
                    Some((batch, outcomes)) => (batch.into_record(), outcomes),
                    None => (part.into_record(), vec![Outcome::Emit(1); range.len()]),
                };
                let mut records = batch.iter();
                for o in outcomes {
                    if let Outcome::Emit(k) = o {
                        for cells in records.by_ref().take(k as usize) {
                            acc.rows.append_record(&batch, cells);
                        }
                    }
                    acc.outcomes.push(o);
                }
            }
            Err(f) => {
                acc.failed += 1;
                acc.last = f.clone();
                if range.len() == 1 {
                    acc.reject(1, self.reason(&f));
                } else {
                    let mid = range.start + range.len() / 2;
                    self.isolate(input, range.start..mid, acc)?;
                    self.isolate(input, mid..range.end, acc)?;
                }
            }
        }
        Ok(())
    }

    /// Batches on which a call of this step failed, so far.
    pub fn failed_batches(&self) -> u64 {
        self.failed_batches
    }

    /// The live instance's memory (linear memories and tables), the most it
    /// has held; None between a failed call and the next.
    pub fn memory_bytes(&self) -> Option<usize> {
        self.live.as_ref().map(|l| l.store.data().limiter.total())
    }

    fn reason(&self, f: &CallFailure) -> String {
        f.to_string()
    }
}

struct Isolation {
    rows: BatchBuilder,
    outcomes: Vec<Outcome>,
    failed: usize,
    last: CallFailure,
}

impl Isolation {
    fn reject(&mut self, n: usize, reason: String) {
        for _ in 0..n {
            self.outcomes.push(Outcome::Reject(reason.clone()));
        }
    }
}
