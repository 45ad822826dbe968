//! `host shadow report | promote | discard PIPELINE`: what a candidate in
//! shadow would change, and the decisions on it.
//!
//! A decision is written to `etl.shadow_decisions`; every running host of
//! the pipeline that runs that candidate looks for it each second and
//! carries it out (a promotion through the live swap's checks), the first
//! recording the outcome. `promote` and `discard` wait for that outcome
//! for a while; a decision no host took up yet stands, and a host that
//! starts with that candidate carries it out before its first batch.
//!
//! Must not change anything but the decisions.

use super::exit::Exit;
use crate::config::{self, Pipeline};
use crate::shadow::store::{self, Decision, Shadow};
use crate::transform::short;
use std::path::Path;
use std::time::{Duration, Instant};

/// Prints every candidate of the pipeline (newest first) with what it
/// changed, its decisions, and what the file needs after a promotion.
pub async fn report(path: &Path, url: &str) -> anyhow::Result<()> {
    let pipeline = config::load(path)?;
    let client = super::dead_letters::connect(url).await?;
    let failed = |e| db_error(e, url, path);
    let shadows = store::shadows(&client, &pipeline.name).await.map_err(failed)?;
    let decisions = store::decisions(&client, &pipeline.name).await.map_err(failed)?;
    if shadows.is_empty() {
        println!("pipeline `{}`: no candidate has run in shadow", pipeline.name);
        return Ok(());
    }
    for s in &shadows {
        let own: Vec<&Decision> = decisions.iter().filter(|d| d.candidate == s.candidate).collect();
        print!("{}", text(&pipeline, s, &own));
    }
    Ok(())
}

/// One candidate as `report` prints it.
fn text(pipeline: &Pipeline, s: &Shadow, decisions: &[&Decision]) -> String {
    let t = &s.totals;
    let mut out = format!(
        "pipeline `{}` candidate {} ({})\n  changes: {}\n  since {}, last updated {}\n  \
         batches compared: {}, skipped (the candidate behind or failing): {}, with failed calls: {}\n  \
         CPU: production {:.3} s, candidate {:.3} s\n",
        pipeline.name,
        s.candidate,
        s.state,
        s.changes,
        s.started_at,
        s.updated_at,
        t.batches,
        t.skipped,
        t.trapped,
        t.production_cpu_s,
        t.candidate_cpu_s
    );
    for line in t.summary.text().lines() {
        out.push_str(&format!("  {line}\n"));
    }
    if !decisions.is_empty() {
        out.push_str("  decisions:\n");
    }
    for d in decisions {
        let outcome = match (&d.outcome, &d.settled_at) {
            (None, _) => "not carried out yet".to_string(),
            (Some(o), at) => format!("{o} at {}", at.as_deref().unwrap_or("?")),
        };
        let reason = d.reason.as_deref().map(|r| format!(": {r}")).unwrap_or_default();
        out.push_str(&format!(
            "    #{} {} by {} at {}: {outcome}{reason}\n",
            d.id, d.action, d.decided_by, d.decided_at
        ));
    }
    if s.state == "promoted" {
        out.push_str(&file_note(pipeline));
    }
    out
}

/// What the file must become for the promotion to be its own.
fn file_note(pipeline: &Pipeline) -> String {
    let file = pipeline.file.display();
    let shadowed: Vec<_> = pipeline.steps.iter().filter(|s| s.shadow.is_some()).collect();
    if shadowed.is_empty() {
        return format!("  {file} no longer names a candidate: the promotion is the file's own\n");
    }
    let mut out = format!(
        "  {file} still names the old step: running hosts use the candidate, and a host started on this file \
         promotes it again before its first batch while the decision stands. To make it the file's own, in\n"
    );
    for step in shadowed {
        out.push_str(&format!(
            "    [[transforms]] #{} (line {}): move the shadow's keys into the step (`uses`, `digest`, `params`, \
             `grants`) and remove `shadow`\n",
            step.index, step.line
        ));
    }
    out
}

/// Records a decision (`promote` or `discard`) on the pipeline's running
/// candidate (or the one `candidate` starts), then waits up to `wait` for
/// a running host to carry it out.
pub async fn decide(
    path: &Path,
    action: &str,
    candidate: Option<&str>,
    wait: Duration,
    url: &str,
) -> anyhow::Result<Exit> {
    let pipeline = config::load(path)?;
    let client = super::dead_letters::connect(url).await?;
    let failed = |e| db_error(e, url, path);
    let shadows = store::shadows(&client, &pipeline.name).await.map_err(failed)?;
    let chosen = match candidate {
        Some(prefix) => shadows.iter().find(|s| s.candidate.starts_with(prefix) || short(&s.candidate) == prefix),
        None => shadows.iter().find(|s| s.state == "running"),
    };
    let Some(chosen) = chosen else {
        match candidate {
            Some(c) => anyhow::bail!("pipeline `{}` has no candidate {c} in etl.shadows", pipeline.name),
            None => anyhow::bail!(
                "pipeline `{}` has no candidate running in shadow: `host run` a pipeline file whose step has a \
                 `shadow` first (`host shadow report` lists its candidates)",
                pipeline.name
            ),
        }
    };
    let by = format!("cli: {}", super::dead_letters::who().unwrap_or_else(|| "unknown user".into()));
    let id = store::decide(&client, &pipeline.name, &chosen.candidate, action, &by).await.map_err(failed)?;
    eprintln!("{action} of candidate {} ({}) recorded as decision #{id}", short(&chosen.candidate), chosen.changes);
    let until = Instant::now() + wait;
    loop {
        let d = store::decision(&client, id).await.map_err(failed)?;
        match d.as_ref().and_then(|d| d.outcome.as_deref()) {
            Some("done") => {
                println!("decision #{id}: {action} done");
                if action == "promote" {
                    print!("{}", file_note(&pipeline));
                }
                return Ok(Exit::Ok);
            }
            Some(_) => {
                let why = d.and_then(|d| d.reason).unwrap_or_default();
                println!("decision #{id}: {action} refused: {why}");
                return Ok(Exit::Failed);
            }
            None if Instant::now() >= until => {
                println!(
                    "decision #{id}: no running host took it up within {} s; it stands, and a host running this \
                     candidate carries it out when it next looks (each second, and before its first batch)",
                    wait.as_secs()
                );
                return Ok(Exit::Ok);
            }
            None => tokio::time::sleep(Duration::from_millis(250)).await,
        }
    }
}

fn db_error(e: tokio_postgres::Error, url: &str, path: &Path) -> anyhow::Error {
    match crate::migrate::not_migrated(&e, true, url, path) {
        Some(missing) => missing.into(),
        None => anyhow::anyhow!("reading shadows: {}", crate::sink::refusal(&e)),
    }
}
