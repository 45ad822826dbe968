//! `host replay`: a pipeline's stored objects through a chosen version of
//! its chain (`--step N=PATH|DIGEST`), compared with what production holds
//! (`--diff`), written to a side table (`--into`) or put in place of
//! production's rows (`--apply`), with progress on stderr; the report
//! printed at the end.
//!
//! Must not hold replay logic: that is `crate::source::s3::replay`.

use super::EngineOptions;
use super::dead_letters::Since;
use crate::config;
use crate::source::s3::replay::{self as core, Action, ReplayError, Replayed, Request};
use crate::transform::choice::{self, StepChoice};
use std::path::Path;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// A time given to `--since` or `--until` (RFC 3339, or a duration before
/// now).
pub fn time_of(since: Since) -> SystemTime {
    match since {
        Since::At(secs) => UNIX_EPOCH + Duration::from_secs_f64(secs.max(0.0)),
        Since::Ago(secs) => SystemTime::now() - Duration::from_secs_f64(secs),
    }
}

/// `--into [SCHEMA.]TABLE`.
pub fn side_table(text: &str) -> Result<Action, ReplayError> {
    let bad = || ReplayError::SideName(text.to_string());
    let name = |s: &str| {
        let ok = s.chars().next().is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
            && s.chars().all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '$');
        ok.then(|| s.to_string())
    };
    match text.split_once('.') {
        Some((schema, table)) => {
            Ok(Action::Into { schema: Some(name(schema).ok_or_else(bad)?), table: name(table).ok_or_else(bad)? })
        }
        None => Ok(Action::Into { schema: None, table: name(text).ok_or_else(bad)? }),
    }
}

/// Runs the replay of `request` for the pipeline at `path`, its steps as
/// `steps` choose. Gives what it did and whether values may be shown.
pub async fn replay(
    path: &Path,
    request: &Request,
    steps: &[StepChoice],
    opts: &EngineOptions,
) -> anyhow::Result<Replayed> {
    let mut pipeline = config::load(path)?;
    let url = super::run::database_url()?;
    crate::sink::connect::check(&url, false).await?;
    let engine = opts.engine()?;
    choice::apply(&engine, &mut pipeline, steps)?;
    let aws = crate::aws::Aws::from_env().await;
    engine.remote().share(aws.s3.clone());
    let bar = super::run::Bar::new("replay");
    let note = |line: &str| bar.line(line);
    let work = core::replay(pipeline, engine, &url, &aws, request, |p| bar.show(p), &note);
    let done = bar.during(work).await;
    bar.finish();
    match done {
        Ok(done) => Ok(done),
        Err(ReplayError::Db { what, source }) => match crate::migrate::not_migrated(&source, true, &url, path) {
            Some(not) => Err(not.into()),
            None => Err(ReplayError::Db { what, source }.into()),
        },
        Err(e) => Err(e.into()),
    }
}

/// What a replay did, for a terminal: the chain, the counts, and for
/// `--diff` the comparison in the shadow report's words.
pub fn report(r: &Replayed, action: &Action) -> String {
    let mut out = format!("chain: {} ({})\n", r.plugins, crate::transform::short(&r.chain));
    let what = match action {
        Action::Diff => "compared",
        Action::Into { .. } => "written",
        Action::Apply => "applied",
    };
    out.push_str(&format!(
        "objects {what}: {}, candidate rows: {}, rejected by the candidate: {}",
        r.objects, r.rows, r.rejected
    ));
    if *action == Action::Apply {
        out.push_str(&format!(", applied before: {}", r.already));
    }
    out.push_str(&format!(", skipped: {}, failed: {}\n", r.skipped, r.failed));
    if *action == Action::Diff {
        out.push_str(&format!("rows matched {}\n", r.matched_by));
        out.push_str(&r.diff.text());
    }
    if *action == Action::Apply && r.objects == 0 && r.already > 0 && r.failed == 0 {
        out.push_str("nothing changed: every object was applied through this chain before\n");
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_side_table_is_a_name_or_a_schema_and_a_name() {
        assert_eq!(side_table("t_1").unwrap(), Action::Into { schema: None, table: "t_1".into() });
        assert_eq!(side_table("s.t").unwrap(), Action::Into { schema: Some("s".into()), table: "t".into() });
        for bad in ["", "1t", "s.", "a.b.c", "t;drop"] {
            assert!(matches!(side_table(bad), Err(ReplayError::SideName(_))), "{bad}");
        }
    }
}
