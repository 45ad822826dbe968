//! A step's candidate in shadow, complete, and the `[shadow]` section's
//! bounds, as validated (`validate.rs` builds them).

use super::Grants;
use super::validate::{Step, range};

/// Bounds a candidate must keep over a volume of records to take over by
/// itself.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct PromoteWhen {
    pub records: u64,
    /// Largest share of compared records with a changed row (0 to 1).
    pub changed_at_most: f64,
    /// Largest share rejected by one side only (0 to 1).
    pub rejected_at_most: f64,
}

/// A step's candidate, complete: what production's step has where the
/// file left a key out.
#[derive(Debug, Clone)]
pub struct ShadowStep {
    pub uses: String,
    /// Line of the shadow's `uses` (else of the step's).
    pub line: usize,
    pub digest: Option<String>,
    pub params: String,
    pub param_lines: Vec<(String, usize)>,
    pub grants: Grants,
}

impl super::Pipeline {
    /// Whether any step names a candidate.
    pub fn has_shadow(&self) -> bool {
        self.steps.iter().any(|s| s.shadow.is_some())
    }

    /// The pipeline as it would be with every candidate promoted: the same
    /// file, source and sink, each shadowed step replaced by its
    /// candidate, and no shadows left.
    pub fn candidate(&self) -> Option<super::Pipeline> {
        if !self.has_shadow() {
            return None;
        }
        let mut p = self.clone();
        for step in &mut p.steps {
            if let Some(c) = step.shadow.take() {
                step.uses = c.uses;
                step.line = c.line;
                step.digest = c.digest;
                step.params_digest = super::params_digest(&c.params);
                step.params = c.params;
                step.param_lines = c.param_lines;
                step.grants = c.grants;
            }
        }
        p.promote_when = None;
        Some(p)
    }
}

/// `[shadow]`: its bounds, which only a pipeline with a candidate may have.
pub(super) fn shadow_settings(c: &super::ShadowSettingsConfig, steps: &[Step]) -> Result<Option<PromoteWhen>, String> {
    range("[shadow] queue", c.queue as u64, 1, 64)?;
    let Some(w) = &c.promote_when else { return Ok(None) };
    if !steps.iter().any(|s| s.shadow.is_some()) {
        return Err("[shadow] promote_when: no [[transforms]] step has a `shadow` to promote".into());
    }
    range("[shadow] promote_when.records", w.records, 1, u64::MAX)?;
    for (what, v) in [("changed_at_most", w.changed_at_most), ("rejected_at_most", w.rejected_at_most)] {
        if !(0.0..=1.0).contains(&v) {
            return Err(format!("[shadow] promote_when.{what} = {v} is a share of the records: 0 to 1"));
        }
    }
    Ok(Some(PromoteWhen {
        records: w.records,
        changed_at_most: w.changed_at_most,
        rejected_at_most: w.rejected_at_most,
    }))
}
