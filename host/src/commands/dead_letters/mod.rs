//! `host dead-letters list | show | discard | export | replay`: what could
//! not be loaded, everything about one dead letter, setting some aside for
//! good, all of them as JSON lines, and loading them again through the
//! pipeline as it is now (`crate::source::dead_letters`).
//!
//! A statement that finds the `etl` schema missing (or older than this
//! host) fails as [`crate::migrate::NotMigrated`], saying what to run.
//!
//! Must not log payloads: only `show --payload` and `export --payload`
//! return them, for the caller to print on stdout.

mod filter;
mod print;
mod read;

use super::EngineOptions;
use crate::config;
use crate::sink::dead_letter::Sealer;
use crate::source::dead_letters::ReplayError;
pub use crate::source::dead_letters::Replayed;
use crate::transform::choice::StepChoice;
pub use filter::{Filter, STAGES, Since};
pub use print::table;
pub use read::{Listed, Origin};
use std::path::Path;

pub(crate) async fn connect(url: &str) -> anyhow::Result<tokio_postgres::Client> {
    Ok(crate::source::dead_letters::connect(url).await?)
}

/// A statement's error as the user should see it: the `etl` schema
/// missing or behind says so ([`crate::migrate::not_migrated`]).
fn db_error(e: tokio_postgres::Error, url: &str, path: &Path) -> anyhow::Error {
    match crate::migrate::not_migrated(&e, true, url, path) {
        Some(missing) => missing.into(),
        None => anyhow::anyhow!("reading dead letters: {}", crate::sink::refusal(&e)),
    }
}

fn read_error(e: read::Read, url: &str, path: &Path) -> anyhow::Error {
    match e {
        read::Read::Db(e) => db_error(e, url, path),
        read::Read::Payload(why) => anyhow::anyhow!(why),
    }
}

/// The pipeline's name and a connection to `url`.
async fn open(path: &Path, url: &str) -> anyhow::Result<(String, tokio_postgres::Client)> {
    let name = config::load(path)?.name;
    Ok((name, connect(url).await?))
}

/// The pipeline's dead letters that `filter` means, oldest first, at most
/// `limit` (never their payloads).
pub async fn list(path: &Path, filter: &Filter, limit: i64, url: &str) -> anyhow::Result<Vec<Listed>> {
    filter.check().map_err(anyhow::Error::msg)?;
    let (name, client) = open(path, url).await?;
    let rows = read::page(&client, &name, filter, 0, limit, None).await.map_err(|e| read_error(e, url, path))?;
    Ok(rows.into_iter().map(|(d, _)| d).collect())
}

/// Dead letter `id` as `show` prints it: every field and, with `payload`,
/// its payload opened with `HOST_DEAD_LETTER_KEY`. An id that is not one
/// of the pipeline's dead letters is an error.
pub async fn show(path: &Path, id: i64, payload: bool, url: &str) -> anyhow::Result<Vec<u8>> {
    let sealer = if payload { Sealer::from_env().map_err(anyhow::Error::msg)? } else { None };
    let (name, client) = open(path, url).await?;
    let opened = payload.then_some(sealer.as_ref());
    let found = read::one(&client, &name, id, opened).await.map_err(|e| read_error(e, url, path))?;
    let Some((letter, payload)) = found else {
        anyhow::bail!("pipeline `{name}` has no dead letter {id} (`host dead-letters list --all` lists them)");
    };
    Ok(print::fields(&letter, payload.as_deref()))
}

/// Writes the dead letters `filter` means to `out`, one JSON object a
/// line, oldest first, their payloads too with `payload`; returns how many.
pub async fn export(
    path: &Path,
    filter: &Filter,
    payload: bool,
    url: &str,
    mut out: impl std::io::Write,
) -> anyhow::Result<usize> {
    filter.check().map_err(anyhow::Error::msg)?;
    let sealer = if payload { Sealer::from_env().map_err(anyhow::Error::msg)? } else { None };
    let (name, client) = open(path, url).await?;
    let (mut after, mut n) = (0, 0);
    loop {
        let page = read::page(&client, &name, filter, after, read::PAGE, payload.then_some(sealer.as_ref()))
            .await
            .map_err(|e| read_error(e, url, path))?;
        for (letter, payload) in &page {
            writeln!(out, "{}", print::json(letter, payload.as_deref()))?;
            after = letter.id;
        }
        n += page.len();
        if (page.len() as i64) < read::PAGE {
            out.flush()?;
            return Ok(n);
        }
    }
}

/// Which dead letters `discard` sets aside.
#[derive(Debug, Clone, PartialEq)]
pub enum Discard {
    /// These, each of which must be the pipeline's.
    Ids(Vec<i64>),
    /// All open ones the filter means; it must narrow them.
    Matching(Filter),
}

/// What `discard` did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Discarded {
    pub discarded: u64,
    /// Ids given that were replayed or discarded before, left as they were.
    pub left: Vec<(i64, &'static str)>,
}

impl std::fmt::Display for Discarded {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "discarded {} dead letters", self.discarded)?;
        for (id, state) in &self.left {
            write!(f, "\ndead letter {id}: {state} already; left as it was")?;
        }
        Ok(())
    }
}

/// The statement that marks dead letters discarded, after `$1` (the
/// pipeline) and `$2` (who: `None` for the database role).
const DISCARD_SQL: &str = "UPDATE etl.dead_letters d SET discarded_at = now(), \
     discarded_by = coalesce($2::text, session_user::text) WHERE d.pipeline = $1";

/// Marks dead letters discarded, by `who` (else the database role): they
/// stay in the table, with their payloads, but `list` (without `--all`),
/// `replay` and the status page leave them out. Given ids that are not
/// the pipeline's are an error and nothing is discarded; `Matching` with
/// a filter that narrows nothing is refused.
pub async fn discard(path: &Path, which: &Discard, who: Option<&str>, url: &str) -> anyhow::Result<Discarded> {
    if let Discard::Matching(filter) = which {
        filter.check().map_err(anyhow::Error::msg)?;
        anyhow::ensure!(
            filter.narrows(),
            "--all-matching needs at least one of --stage, --source, --since, --reason: without one it would \
             discard every dead letter of the pipeline. To mean all of them, say so: --since 1970-01-01T00:00:00Z"
        );
    }
    let (name, mut client) = open(path, url).await?;
    let db = |e: tokio_postgres::Error| db_error(e, url, path);
    let tx = client.transaction().await.map_err(db)?;
    let done = match which {
        Discard::Matching(filter) => {
            let (condition, extra) = Filter { all: false, ..filter.clone() }.sql(3);
            let mut params: Vec<&(dyn tokio_postgres::types::ToSql + Sync)> = vec![&name, &who];
            params.extend(filter::refs(&extra));
            let n = tx.execute(&format!("{DISCARD_SQL}{condition}"), &params).await.map_err(db)?;
            Discarded { discarded: n, left: Vec::new() }
        }
        Discard::Ids(ids) => {
            let left = states(&tx, &name, ids).await.map_err(db)?;
            let left = known(&name, ids, left, "nothing was discarded")?;
            let sql = format!("{DISCARD_SQL} AND d.id = ANY($3) AND d.replayed_at IS NULL AND d.discarded_at IS NULL");
            let n = tx.execute(&sql, &[&name, &who, ids]).await.map_err(db)?;
            Discarded { discarded: n, left }
        }
    };
    tx.commit().await.map_err(db)?;
    Ok(done)
}

/// The state of each of `ids` that is the pipeline's (`open`, `replayed`
/// or `discarded`), the rows locked until the transaction ends.
async fn states(
    client: &impl tokio_postgres::GenericClient,
    pipeline: &str,
    ids: &[i64],
) -> Result<Vec<(i64, &'static str)>, tokio_postgres::Error> {
    let rows = client
        .query(
            "SELECT id, replayed_at IS NOT NULL, discarded_at IS NOT NULL FROM etl.dead_letters \
             WHERE pipeline = $1 AND id = ANY($2) ORDER BY id FOR UPDATE",
            &[&pipeline, &ids],
        )
        .await?;
    Ok(rows
        .iter()
        .map(|r| match (r.get(1), r.get(2)) {
            (true, _) => (r.get(0), "replayed"),
            (false, true) => (r.get(0), "discarded"),
            (false, false) => (r.get(0), "open"),
        })
        .collect())
}

/// The ids of `found` not open; an error naming the ids given that are not
/// the pipeline's (then `nothing`: what was not done).
fn known(
    pipeline: &str,
    ids: &[i64],
    found: Vec<(i64, &'static str)>,
    nothing: &str,
) -> anyhow::Result<Vec<(i64, &'static str)>> {
    let mut unknown: Vec<i64> = ids.iter().copied().filter(|id| !found.iter().any(|(f, _)| f == id)).collect();
    unknown.sort_unstable();
    unknown.dedup();
    let unknown: Vec<String> = unknown.iter().map(i64::to_string).collect();
    match unknown.len() {
        0 => Ok(found.into_iter().filter(|(_, state)| *state != "open").collect()),
        1 => anyhow::bail!("pipeline `{pipeline}` has no dead letter {}: {nothing}", unknown[0]),
        _ => anyhow::bail!("pipeline `{pipeline}` has no dead letters {}: {nothing}", unknown.join(", ")),
    }
}

/// Who discards: the user the command runs as (`USER`, `LOGNAME`), if
/// known; else the database role is recorded.
pub fn who() -> Option<String> {
    ["USER", "LOGNAME"].iter().find_map(|v| std::env::var(v).ok().filter(|u| !u.is_empty()))
}

/// Replays dead letters (`ids`, or all open ones) through the current
/// pipeline, printing each result.
pub async fn replay(path: &Path, ids: &[i64], steps: &[StepChoice], opts: &EngineOptions) -> anyhow::Result<Replayed> {
    replay_with(path, ids, steps, opts, &super::run::database_url()?).await
}

/// The summary line of a replay.
pub fn summary(r: &Replayed) -> String {
    format!("replayed: {} loaded, {} failed again, {} skipped", r.loaded, r.failed, r.skipped)
}

/// [`replay`] against the database at `url`. Given ids that are not the
/// pipeline's are an error and nothing is replayed; given ids replayed or
/// discarded before are not replayed, saying so.
pub async fn replay_with(
    path: &Path,
    ids: &[i64],
    steps: &[StepChoice],
    opts: &EngineOptions,
    url: &str,
) -> anyhow::Result<Replayed> {
    let mut pipeline = config::load(path)?;
    anyhow::ensure!(pipeline.sink.is_some(), "the pipeline has no [sink]");
    // First, whether the schema is there and the ids are the pipeline's.
    let client = connect(url).await?;
    let found = states(&client, &pipeline.name, ids).await.map_err(|e| db_error(e, url, path))?;
    let (given, mut ids) = (!ids.is_empty(), ids.to_vec());
    for (id, state) in known(&pipeline.name, &ids, found, "nothing was replayed")? {
        println!("dead letter {id}: {state} already; not replayed");
        ids.retain(|i| *i != id);
    }
    // None left of those given: not all of them (which no ids means).
    if given && ids.is_empty() {
        return Ok(Replayed::default());
    }
    let engine = opts.engine()?;
    crate::transform::choice::apply(&engine, &mut pipeline, steps)?;
    let report = |id: i64, result: &str| println!("dead letter {id}: {result}");
    let aws = crate::aws::Aws::from_env().await;
    match crate::source::dead_letters::replay(pipeline, engine, url, &aws, &ids, report).await {
        Ok(done) => Ok(done),
        Err(ReplayError::Db(e)) => Err(db_error(e, url, path)),
        Err(e) => Err(e.into()),
    }
}
