//! `host lineage PIPELINE`: which batches each version wrote (a version:
//! the pipeline file's revision and each step's plugin digest and params),
//! and with `--digest`, the batches and source message ids of the versions
//! a plugin digest, params digest or revision names.
//!
//! Must not change anything.

use crate::config;
use crate::transform::short;
use std::collections::HashMap;
use std::path::Path;

/// Prints the pipeline's versions with their steps, batches and rows, or,
/// for one digest (or the start of one), its batches (newest first, at
/// most `limit`) and their message ids. Returns the number of versions or
/// batches printed.
pub async fn show(path: &Path, digest: Option<&str>, limit: i64, url: &str) -> anyhow::Result<usize> {
    let pipeline = config::load(path)?;
    let client = super::dead_letters::connect(url).await?;
    match digest {
        None => versions(&client, &pipeline.name).await,
        Some("") => anyhow::bail!("--digest: give a digest (sha256:...) or its start"),
        Some(digest) => batches(&client, &pipeline.name, digest, limit).await,
    }
}

/// One step of a version, as `etl.batches.plugins` holds it.
#[derive(Debug, serde::Deserialize)]
struct StepLineage {
    name: String,
    digest: String,
    /// Absent for batches committed before params were recorded.
    params: Option<String>,
}

async fn versions(client: &tokio_postgres::Client, pipeline: &str) -> anyhow::Result<usize> {
    let rows = client
        .query(
            "SELECT b.revision, b.plugins::text, count(*), sum(b.rows_written)::bigint, sum(b.dead_letters)::bigint, \
             to_char(min(b.committed_at) AT TIME ZONE 'UTC', 'YYYY-MM-DD HH24:MI:SS\"Z\"'), \
             to_char(max(b.committed_at) AT TIME ZONE 'UTC', 'YYYY-MM-DD HH24:MI:SS\"Z\"') \
             FROM etl.batches b WHERE b.pipeline = $1 \
             GROUP BY b.revision, b.plugins ORDER BY min(b.committed_at)",
            &[&pipeline],
        )
        .await?;
    let mut versions = Vec::new();
    for r in &rows {
        let steps: Vec<StepLineage> = serde_json::from_str(r.get::<_, &str>(1))?;
        versions.push((r, steps));
    }
    let digests: Vec<&str> = versions.iter().flat_map(|(_, s)| s.iter().filter_map(|s| s.params.as_deref())).collect();
    let params: HashMap<String, String> = client
        .query("SELECT digest, params FROM etl.step_params WHERE digest = ANY($1)", &[&digests])
        .await?
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect();
    if versions.is_empty() {
        println!("no batches of pipeline {pipeline} yet");
    }
    for (n, (r, steps)) in versions.iter().enumerate() {
        let revision: Option<String> = r.get(0);
        let (batches, rows, dead): (i64, Option<i64>, Option<i64>) = (r.get(2), r.get(3), r.get(4));
        let (first, last): (String, String) = (r.get(5), r.get(6));
        println!(
            "version {}  revision {}  batches {batches}  rows {}  dead letters {}  {first} .. {last}",
            n + 1,
            revision.as_deref().map_or("-", short),
            rows.unwrap_or(0),
            dead.unwrap_or(0)
        );
        let width = steps.iter().map(|s| s.name.len()).max().unwrap_or(0);
        for (i, s) in steps.iter().enumerate() {
            let (digest, text) = match &s.params {
                Some(d) => (short(d), params.get(d).map_or_else(|| "(not kept)".to_string(), |t| clip(t, 72))),
                None => ("-", "(not recorded)".to_string()),
            };
            println!("  step {}  {:width$}  {}  params {digest}  {text}", i + 1, s.name, short(&s.digest));
        }
    }
    Ok(versions.len())
}

async fn batches(client: &tokio_postgres::Client, pipeline: &str, digest: &str, limit: i64) -> anyhow::Result<usize> {
    let rows = client
        .query(
            "SELECT b.id, to_char(b.committed_at AT TIME ZONE 'UTC', 'YYYY-MM-DD HH24:MI:SS\"Z\"'), b.messages, \
             b.rows_written, b.dead_letters, \
             coalesce((SELECT array_agg(m) FROM etl.receipts r, unnest(r.message_ids || r.message_uuids::text[]) m \
                       WHERE r.batch_id = b.id AND r.pipeline = b.pipeline), '{}') \
             FROM etl.batches b WHERE b.pipeline = $1 AND (starts_with(coalesce(b.revision, ''), $2) \
               OR EXISTS (SELECT 1 FROM jsonb_array_elements(b.plugins) p \
                          WHERE starts_with(p->>'digest', $2) OR starts_with(coalesce(p->>'params', ''), $2))) \
             ORDER BY b.id DESC LIMIT $3",
            &[&pipeline, &digest, &limit],
        )
        .await?;
    println!("batch\tcommitted\tmessages\trows\tdead letters\tmessage ids");
    for r in &rows {
        let (id, at, messages, written, dead): (i64, String, i32, i32, i32) =
            (r.get(0), r.get(1), r.get(2), r.get(3), r.get(4));
        let ids: Vec<String> = r.get(5);
        println!("{id}\t{at}\t{messages}\t{written}\t{dead}\t{}", ids.join(","));
    }
    Ok(rows.len())
}

/// `text` cut to `max` characters, with `…` when cut.
fn clip(text: &str, max: usize) -> String {
    match text.char_indices().nth(max) {
        Some((at, _)) => format!("{}…", &text[..at]),
        None => text.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::clip;

    #[test]
    fn long_params_are_clipped_on_a_character() {
        assert_eq!(clip(r#"{"a":1}"#, 72), r#"{"a":1}"#);
        assert_eq!(clip("ééééé", 3), "ééé…");
    }
}
