//! `host dead-letters list | replay`: what could not be loaded, and loading
//! it again through the pipeline as it is now (`crate::source::dead_letters`).
//!
//! Must not print payloads.

use super::EngineOptions;
use crate::config;
pub use crate::source::dead_letters::Replayed;
use std::path::Path;

pub(crate) async fn connect(url: &str) -> anyhow::Result<tokio_postgres::Client> {
    Ok(crate::source::dead_letters::connect(url).await?)
}

/// Prints the pipeline's dead letters (never their payloads).
pub async fn list(path: &Path, limit: i64, include_replayed: bool) -> anyhow::Result<usize> {
    let pipeline = config::load(path)?;
    let client = connect(&super::run::database_url()?).await?;
    let rows = client
        .query(
            "SELECT id, failed_at::text, message_id, stage, step, plugin, reason, received_count, \
             coalesce(replay_result, ''), replay_attempts, coalesce(last_replay_reason, '') FROM etl.dead_letters \
             WHERE pipeline = $1 AND ($3 OR replayed_at IS NULL) ORDER BY id LIMIT $2",
            &[&pipeline.name, &limit, &include_replayed],
        )
        .await?;
    println!("{:>6}  {:<29}  {:<38}  {:<9}  {:<20}  reason", "id", "failed at", "message", "stage", "step");
    for r in &rows {
        let step: Option<i32> = r.get(4);
        let plugin: Option<String> = r.get(5);
        let at = match (step, plugin) {
            (Some(s), Some(p)) => format!("{s} ({p})"),
            _ => "-".into(),
        };
        let replay = replay_note(r.get(8), r.get(9), r.get(10));
        println!(
            "{:>6}  {:<29}  {:<38}  {:<9}  {:<20}  {}{replay}",
            r.get::<_, i64>(0),
            r.get::<_, String>(1),
            r.get::<_, String>(2),
            r.get::<_, String>(3),
            at,
            r.get::<_, String>(6)
        );
    }
    Ok(rows.len())
}

/// What replays did to a dead letter: loaded (`result`), or tried
/// `attempts` times, the last failing for `reason`.
fn replay_note(result: String, attempts: i32, reason: String) -> String {
    match (result.is_empty(), attempts) {
        (false, _) => format!(" [replayed: {result}]"),
        (true, 0) => String::new(),
        (true, 1) => format!(" [replay failed: {reason}]"),
        (true, n) => format!(" [replay failed {n} times, last: {reason}]"),
    }
}

/// Replays dead letters (`ids`, or all not yet replayed) through the current
/// pipeline, printing each result.
pub async fn replay(path: &Path, ids: &[i64], opts: &EngineOptions) -> anyhow::Result<Replayed> {
    replay_with(path, ids, opts, &super::run::database_url()?).await
}

/// The summary line of a replay.
pub fn summary(r: &Replayed) -> String {
    format!("replayed: {} loaded, {} failed again, {} skipped", r.loaded, r.failed, r.skipped)
}

/// [`replay`] against the database at `url`.
pub async fn replay_with(path: &Path, ids: &[i64], opts: &EngineOptions, url: &str) -> anyhow::Result<Replayed> {
    let pipeline = config::load(path)?;
    anyhow::ensure!(pipeline.sink.is_some(), "the pipeline has no [sink]");
    let engine = opts.engine()?;
    let report = |id: i64, result: &str| println!("dead letter {id}: {result}");
    let aws = crate::aws::Aws::from_env().await;
    Ok(crate::source::dead_letters::replay(pipeline, engine, url, &aws, ids, report).await?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_listed_dead_letter_says_what_replays_did() {
        assert_eq!(replay_note(String::new(), 0, String::new()), "");
        assert_eq!(replay_note("loaded 1 rows".into(), 2, "x".into()), " [replayed: loaded 1 rows]");
        assert_eq!(replay_note(String::new(), 1, "invalid JSON".into()), " [replay failed: invalid JSON]");
        assert_eq!(
            replay_note(String::new(), 3, "invalid JSON".into()),
            " [replay failed 3 times, last: invalid JSON]"
        );
    }

    #[test]
    fn the_summary_counts_each_outcome() {
        let r = Replayed { loaded: 2, failed: 1, skipped: 3 };
        assert_eq!(summary(&r), "replayed: 2 loaded, 1 failed again, 3 skipped");
    }
}
