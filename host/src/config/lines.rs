//! Where each key of a step's `params` was written: a second read of the
//! file as toml's spanned document, since the typed parse keeps no spans
//! inside `params`. Errors about a parameter point at its own line; those
//! about a `[sink.columns]` column at the column's.

use super::{StepConfig, interpolate};
use toml::de::{DeTable, DeValue};

/// Fills each step's `param_lines` from `text`, the file the steps were
/// parsed from (a file that parsed once parses again).
pub(super) fn param_lines(text: &str, steps: &mut [StepConfig]) {
    let Ok(doc) = DeTable::parse(text) else { return };
    let Some(DeValue::Array(written)) = doc.get_ref().get("transforms").map(|t| t.get_ref()) else { return };
    for (step, written) in steps.iter_mut().zip(written) {
        let DeValue::Table(t) = written.get_ref() else { continue };
        if let Some(params) = t.get("params") {
            key_lines(text, "", params.get_ref(), &mut step.param_lines);
        }
        if let (Some(shadow), Some(DeValue::Table(s))) = (step.shadow.as_mut(), t.get("shadow").map(|s| s.get_ref()))
            && let Some(params) = s.get("params")
        {
            key_lines(text, "", params.get_ref(), &mut shadow.param_lines);
        }
    }
}

/// The line of each column of `[sink.columns]`, by its name, in `text`
/// (written as a table or inline).
pub(super) fn column_lines(text: &str) -> Vec<(String, usize)> {
    let Ok(doc) = DeTable::parse(text) else { return Vec::new() };
    let Some(DeValue::Table(sink)) = doc.get_ref().get("sink").map(|t| t.get_ref()) else { return Vec::new() };
    let Some(DeValue::Table(columns)) = sink.get("columns").map(|c| c.get_ref()) else { return Vec::new() };
    columns.iter().map(|(k, _)| (k.get_ref().to_string(), interpolate::position(text, k.span().start).0)).collect()
}

/// The line of every key under `value`, by its path from `at`
/// (`fields.user_id`, `all[1].equals`).
fn key_lines(text: &str, at: &str, value: &DeValue<'_>, out: &mut Vec<(String, usize)>) {
    let push = |path: String, start: usize, v: &DeValue<'_>, out: &mut Vec<(String, usize)>| {
        out.push((path.clone(), interpolate::position(text, start).0));
        key_lines(text, &path, v, out);
    };
    match value {
        DeValue::Table(t) => {
            for (k, v) in t {
                let path = if at.is_empty() { k.get_ref().to_string() } else { format!("{at}.{}", k.get_ref()) };
                push(path, k.span().start, v.get_ref(), out);
            }
        }
        DeValue::Array(a) => {
            for (i, v) in a.into_iter().enumerate() {
                push(format!("{at}[{i}]"), v.span().start, v.get_ref(), out);
            }
        }
        _ => {}
    }
}
