//! What the panel shows of a candidate in shadow: plain counts, column
//! names and labels (the `shadow` module fills it in), never values.

use std::collections::BTreeMap;
use std::time::SystemTime;

/// A candidate in shadow and what it would change so far (this process's
/// counts and, once stored, every process's in `etl.shadows`).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ShadowView {
    /// `sha256:...` of the candidate chain.
    pub candidate: String,
    /// What the candidate changes, step by step.
    pub changes: String,
    /// `running`, `loading`, `failed`, `promoted` or `discarded`.
    pub state: String,
    /// Why it failed to load or a decision was refused, if it did.
    pub reason: Option<String>,
    pub records: u64,
    pub same: u64,
    pub changed: u64,
    pub added: u64,
    pub dropped: u64,
    pub rejected_by_production_only: u64,
    pub rejected_by_candidate_only: u64,
    pub columns: BTreeMap<String, u64>,
    pub sample: Vec<String>,
    pub batches: u64,
    pub skipped: u64,
    pub trapped: u64,
    pub production_cpu_s: f64,
    pub candidate_cpu_s: f64,
    pub updated: Option<SystemTime>,
}
