//! A pipeline's steps in order: runs a batch through all of them and keeps,
//! for every output row, the input record it came from, and for every input
//! record that did not make it, why.
//!
//! Must not know where records come from or where rows go.

use super::engine::{Engine, Plugin, PluginError, resolve};
use super::step::{StepError, StepOutput, StepRunner};
use super::wit;
use crate::config::Pipeline;
use plugin_sdk::record::{Batch, Outcome};
use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;

/// A chain that could not be built.
#[derive(Debug, thiserror::Error)]
pub enum ChainError {
    #[error("{file}:{line}: step {step}: {error}")]
    Plugin { file: String, line: usize, step: usize, error: PluginError },
    #[error(transparent)]
    Step(#[from] StepError),
}

/// A record a step refused (or that made its calls fail).
#[derive(Debug, Clone, PartialEq)]
pub struct Rejection {
    /// Index of the input record in its batch.
    pub record: u32,
    /// 1-based step number.
    pub step: usize,
    pub plugin: String,
    /// Digest of the plugin version that refused it.
    pub digest: String,
    pub reason: String,
}

impl std::fmt::Display for Rejection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "step {} (`{}`): {}", self.step, self.plugin, self.reason)
    }
}

/// The result of a batch through the whole chain.
pub struct ChainOutput {
    pub batch: Batch,
    /// For each output record, the index of the input record it came from.
    pub origin: Vec<u32>,
    pub rejected: Vec<Rejection>,
    /// Input records deliberately dropped by a step.
    pub dropped: Vec<u32>,
}

/// The steps of one pipeline, each with a live instance.
pub struct TransformChain {
    steps: Vec<StepRunner>,
    /// The revision of the pipeline file the steps came from.
    revision: String,
}

/// Every step's plugin, found, compiled and linked, but not instantiated:
/// what a chain is made from. Shared by all workers; a new version of any
/// plugin is a new `Loaded`.
#[derive(Clone)]
pub struct Loaded {
    /// One per step, in order.
    pub plugins: Vec<Arc<Plugin>>,
}

impl Loaded {
    /// Finds and loads every step's plugin (the same file once).
    pub fn load(engine: &Arc<Engine>, pipeline: &Pipeline) -> Result<Self, ChainError> {
        let file = pipeline.file.display().to_string();
        let mut loaded: HashMap<std::path::PathBuf, Arc<Plugin>> = HashMap::new();
        let mut plugins = Vec::new();
        for (step, path) in pipeline.steps.iter().zip(plugin_files(engine, pipeline)) {
            let at = |error| ChainError::Plugin { file: file.clone(), line: step.line, step: step.index, error };
            let path = path.map_err(at)?;
            let plugin = match loaded.get(&path) {
                Some(p) => p.clone(),
                None => {
                    let p = engine.load(&plugin_name(&step.uses), &path, None).map_err(at)?;
                    loaded.insert(path, p.clone());
                    p
                }
            };
            if let Some(expected) = step.digest.as_ref().filter(|d| **d != plugin.digest) {
                let (name, path) = (plugin.name.clone(), plugin.path.clone());
                let (expected, actual) = (expected.clone(), plugin.digest.clone());
                return Err(at(PluginError::Digest { name, path, expected, actual }));
            }
            plugins.push(plugin);
        }
        Ok(Loaded { plugins })
    }
}

impl Loaded {
    /// Each step's plugin name and digest, for the status page.
    pub fn versions(&self) -> Vec<crate::status::PluginVersion> {
        self.plugins
            .iter()
            .enumerate()
            .map(|(i, p)| crate::status::PluginVersion { step: i + 1, name: p.name.clone(), digest: p.digest.clone() })
            .collect()
    }
}

/// The lineage of what a chain of `plugins` writes: their names and
/// digests as JSON (what `etl.batches.plugins` holds).
pub fn lineage<'a>(plugins: impl Iterator<Item = &'a Arc<Plugin>>) -> String {
    let plugins: Vec<serde_json::Value> =
        plugins.map(|p| serde_json::json!({"name": p.name, "digest": p.digest})).collect();
    serde_json::Value::Array(plugins).to_string()
}

/// The `.wasm` file each step uses, looked up now.
pub fn plugin_files(engine: &Engine, pipeline: &Pipeline) -> Vec<Result<std::path::PathBuf, PluginError>> {
    let dir = pipeline.file.parent().unwrap_or(Path::new("."));
    let search = engine.search_path(&pipeline.plugin_path);
    pipeline.steps.iter().map(|step| resolve(&step.uses, dir, &search)).collect()
}

impl TransformChain {
    /// Finds, loads, instantiates and configures every step's plugin.
    pub fn build(engine: &Arc<Engine>, pipeline: &Pipeline) -> Result<Self, ChainError> {
        Self::instantiate(engine, pipeline, &Loaded::load(engine, pipeline)?)
    }

    /// Instantiates and configures the plugins of `loaded` for `pipeline`.
    pub fn instantiate(engine: &Arc<Engine>, pipeline: &Pipeline, loaded: &Loaded) -> Result<Self, ChainError> {
        let file = pipeline.file.display().to_string();
        let mut steps = Vec::new();
        for (step, plugin) in pipeline.steps.iter().zip(&loaded.plugins) {
            let runner = StepRunner::new(
                engine.clone(),
                &file,
                &pipeline.name,
                step.clone(),
                plugin.clone(),
                pipeline.record_values_in_logs,
            )?;
            steps.push(runner);
        }
        Ok(TransformChain { steps, revision: pipeline.revision.clone() })
    }

    /// The revision of the pipeline file this chain's version came from.
    pub fn revision(&self) -> &str {
        &self.revision
    }

    /// Each step as configured, with its plugin, in order.
    pub fn steps(&self) -> impl Iterator<Item = (&crate::config::Step, &Arc<Plugin>)> {
        self.steps.iter().map(|s| (&s.step, &s.plugin))
    }

    /// The plugins in step order.
    pub fn plugins(&self) -> impl Iterator<Item = &Arc<Plugin>> {
        self.steps.iter().map(|s| &s.plugin)
    }

    /// Batches on which a call of any step failed (trapped, ran out of time
    /// or memory, returned malformed output), so far, summed over steps.
    pub fn failed_batches(&self) -> u64 {
        self.steps.iter().map(StepRunner::failed_batches).sum()
    }

    /// Each step's instance memory, as [`StepRunner::memory_bytes`].
    pub fn memory_bytes(&self) -> Vec<Option<usize>> {
        self.steps.iter().map(StepRunner::memory_bytes).collect()
    }

    /// Runs `input` through every step.
    pub fn run(&mut self, input: &Batch) -> Result<ChainOutput, StepError> {
        let mut origin: Vec<u32> = (0..input.records.len() as u32).collect();
        let mut rejected = Vec::new();
        let mut dropped = Vec::new();
        // Between steps the batch stays in its (checked) column form.
        let mut current = wit::to_wit(input);
        for runner in &mut self.steps {
            if current.records.is_empty() {
                break;
            }
            let (batch, outcomes) = match runner.run(&current)? {
                StepOutput::Unchanged => continue,
                StepOutput::Changed { batch, outcomes } => (batch, outcomes),
            };
            let mut next = Vec::with_capacity(batch.records.len());
            for (i, outcome) in outcomes.into_iter().enumerate() {
                let from = origin[i];
                match outcome {
                    Outcome::Emit(0) | Outcome::Drop => dropped.push(from),
                    Outcome::Emit(k) => next.extend(std::iter::repeat_n(from, k as usize)),
                    Outcome::Reject(reason) => rejected.push(Rejection {
                        record: from,
                        step: runner.step.index,
                        plugin: runner.plugin.name.clone(),
                        digest: runner.plugin.digest.clone(),
                        reason,
                    }),
                }
            }
            origin = next;
            current = batch;
        }
        Ok(ChainOutput { batch: current.into_record(), origin, rejected, dropped })
    }
}

/// The name of a plugin from `uses`: the file stem for paths.
fn plugin_name(uses: &str) -> String {
    Path::new(uses).file_stem().map_or_else(|| uses.to_string(), |s| s.to_string_lossy().into_owned())
}
