//! The PostgreSQL sink: per batch one transaction that loads the rows (COPY
//! straight into the target for `append`, and for `upsert` while its
//! batches bring new keys; through a staging table and a merge otherwise),
//! writes dead letters and the batch's lineage, then, under the pipeline's
//! ledger lock, checks that none of its messages was committed before (if
//! some were, the batch is tried again without them), records them in the
//! ledger and commits. Transient errors are retried; a data error isolates
//! the messages that cause it into dead letters and commits the rest.
//!
//! Must not acknowledge anything: the caller deletes messages after `commit`
//! returns.

pub mod copy;
pub mod dead_letter;
pub mod sql;

use crate::config::{MergeMode, Sink};
use bytes::Bytes;
use dead_letter::{DeadLetter, Sealer};
use futures_util::SinkExt;
use std::collections::HashSet;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;
use tokio_postgres::error::SqlState;

/// What one message brings to a batch's transaction.
#[derive(Debug, Clone, Default)]
pub struct Unit {
    /// The ledger key (SQS message id, or `dead-letter:ID` on replay).
    pub message_id: String,
    /// Its rows in COPY text format.
    pub rows: Vec<u8>,
    pub row_count: usize,
    /// Its records that could not be loaded.
    pub dead: Vec<DeadLetter>,
    /// The raw message, kept with dead letters.
    pub payload: Vec<u8>,
    /// When the source says it was sent (ms; see `source::Message`): the
    /// same on every delivery. Replays use a stand-in of their own.
    pub sent_ms: i64,
    /// For a row of an S3 object: its 1-based position among the object's
    /// rows (see [`FileReceipt`]).
    pub position: u64,
}

/// What makes a commit once-only.
#[derive(Debug, Clone, Copy)]
pub enum Receipt<'a> {
    /// Messages: their ids go into the ledger (`etl.receipts`).
    Messages,
    /// Rows of one S3 object: its progress (`etl.files`).
    File(&'a FileReceipt),
}

/// One object version being loaded. Its units are its rows in order, each
/// with its `position`; a commit covers consecutive rows and moves the
/// object's `rows_done` past them.
#[derive(Debug, Clone, Default)]
pub struct FileReceipt {
    pub bucket: String,
    pub key: String,
    /// The S3 version id, else the ETag.
    pub version: String,
    /// `s3://bucket/key`, as the target's `source-file` column holds it.
    pub uri: String,
    /// The target's column naming each row's file: before the object's
    /// first rows, the rows of its earlier versions are deleted by it.
    pub replace: Option<String>,
    /// The object's row count, once the reader reached its end.
    pub end: Option<u64>,
}

impl FileReceipt {
    /// `s3://bucket/key#version`: the source of the object's lineage and
    /// dead letters.
    pub fn origin(&self) -> String {
        format!("{}#{}", self.uri, self.version)
    }
}

/// What `etl.files` holds for one object version.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct FileState {
    pub rows_done: u64,
    pub done: bool,
}

/// What a commit did.
#[derive(Debug, Default, Clone, Copy, PartialEq)]
pub struct Report {
    /// Messages seen in the ledger before: nothing added for them.
    pub duplicates: usize,
    pub rows: usize,
    pub dead_letters: usize,
    /// Transactions committed (more than one after isolating a data error).
    pub commits: usize,
}

impl std::ops::AddAssign for Report {
    fn add_assign(&mut self, o: Report) {
        self.duplicates += o.duplicates;
        self.rows += o.rows;
        self.dead_letters += o.dead_letters;
        self.commits += o.commits;
    }
}

#[derive(Debug, thiserror::Error)]
pub enum SinkError {
    #[error("DATABASE_URL is not a valid connection string: {0}")]
    Url(String),
    #[error("database unreachable or failing after {attempts} attempts (retryable): {}", refusal(source))]
    Transient { attempts: u32, source: tokio_postgres::Error },
    #[error("database refused the batch (check the table and the pipeline's [sink]): {}", refusal(.0))]
    Permanent(tokio_postgres::Error),
    #[error("database connection pool: {0}")]
    Pool(String),
    #[error("{0}")]
    OutOfStep(String),
}

impl SinkError {
    /// Whether trying again later may succeed.
    pub fn retryable(&self) -> bool {
        matches!(self, SinkError::Transient { .. } | SinkError::Pool(_) | SinkError::OutOfStep(_))
    }
}

/// What PostgreSQL said, with its SQLSTATE, and without record values:
/// messages of class 22 (data exceptions) quote the value that failed
/// (`invalid input syntax for type integer: "..."`), and those quotes are
/// emptied. Other classes quote names of tables, columns and constraints,
/// which stay. The DETAIL, which holds key values, is never included.
pub fn refusal(e: &tokio_postgres::Error) -> String {
    let Some(db) = e.as_db_error() else { return e.to_string() };
    let code = db.code().code();
    let message = if code.starts_with("22") { without_quoted(db.message()) } else { db.message().to_string() };
    format!("{message} (SQLSTATE {code})")
}

/// `text` with every double-quoted part replaced by `"…"`.
fn without_quoted(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut parts = text.split('"');
    out.push_str(parts.next().unwrap_or_default());
    let mut inside = true;
    for part in parts {
        if inside {
            out.push_str("\"…\"");
        } else {
            out.push_str(part);
        }
        inside = !inside;
    }
    out
}

/// Whether an error may go away by itself (connection lost, server
/// restarting, serialization failure, deadlock, out of resources).
pub fn transient(e: &tokio_postgres::Error) -> bool {
    let Some(code) = e.code() else { return true };
    let c = code.code();
    c.starts_with("08")
        || c.starts_with("53")
        || c.starts_with("57P")
        || *code == SqlState::T_R_SERIALIZATION_FAILURE
        || *code == SqlState::T_R_DEADLOCK_DETECTED
}

/// Whether an error is about the data of some row (wrong type, too long,
/// constraint violated): the offending message is a dead letter.
pub fn data_error(e: &tokio_postgres::Error) -> bool {
    e.code().is_some_and(|c| c.code().starts_with("22") || c.code().starts_with("23"))
}

/// A connection pool from `DATABASE_URL`.
pub fn pool(url: &str, size: usize) -> Result<deadpool_postgres::Pool, SinkError> {
    let config: tokio_postgres::Config =
        url.parse().map_err(|e: tokio_postgres::Error| SinkError::Url(e.to_string()))?;
    let manager = deadpool_postgres::Manager::from_config(
        config,
        tokio_postgres::NoTls,
        deadpool_postgres::ManagerConfig { recycling_method: deadpool_postgres::RecyclingMethod::Fast },
    );
    deadpool_postgres::Pool::builder(manager).max_size(size).build().map_err(|e| SinkError::Pool(e.to_string()))
}

/// Loads batches of one pipeline into its table.
pub struct PostgresSink {
    pool: deadpool_postgres::Pool,
    pipeline: String,
    source: String,
    target: String,
    stage: String,
    columns: Vec<String>,
    mode: MergeMode,
    sealer: Option<Sealer>,
    max_attempts: u32,
    /// Upsert batches left to merge before one is tried straight again.
    merge_next: AtomicU32,
    /// Direct COPYs that met a key, in a row.
    conflicts: AtomicU32,
}

impl PostgresSink {
    pub fn new(
        pool: deadpool_postgres::Pool,
        pipeline: &str,
        source: &str,
        sink: &Sink,
        sealer: Option<Sealer>,
    ) -> Self {
        PostgresSink {
            pool,
            pipeline: pipeline.to_string(),
            source: source.to_string(),
            target: sql::qualified(&sink.schema, &sink.table),
            stage: sql::staging_name(&sink.table),
            columns: sink.columns.iter().map(|c| c.name.clone()).collect(),
            mode: sink.mode.clone(),
            sealer,
            max_attempts: 6,
            merge_next: AtomicU32::new(0),
            conflicts: AtomicU32::new(0),
        }
    }

    /// The target table, quoted.
    pub fn target(&self) -> &str {
        &self.target
    }

    /// Whether this commit's rows should go straight into the target: always
    /// for `append`; for `upsert` unless a recent batch met keys already
    /// there (see [`Attempt::Conflict`]); never for `delete-insert`.
    fn direct(&self) -> bool {
        match self.mode {
            MergeMode::Append => true,
            MergeMode::DeleteInsert { .. } => false,
            MergeMode::Upsert { .. } => {
                self.merge_next.fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| n.checked_sub(1)).is_err()
            }
        }
    }

    /// An upsert's direct COPY met a key: the next batches merge, for longer
    /// each time it happens again (a stream of updates pays for a failed
    /// COPY rarely; a stream of new keys soon goes straight in again).
    fn conflicted(&self) {
        let streak = self.conflicts.fetch_add(1, Ordering::Relaxed).min(8);
        self.merge_next.store(4 << streak, Ordering::Relaxed);
    }

    /// Commits `units` (see the module docs). `plugins` is the lineage: the
    /// chain's plugin names and digests as JSON.
    pub async fn commit(&self, units: Vec<Unit>, plugins: &str) -> Result<Report, SinkError> {
        self.commit_as(units, plugins, Receipt::Messages).await
    }

    /// [`PostgresSink::commit`] under a given kind of receipt.
    pub async fn commit_as(&self, units: Vec<Unit>, plugins: &str, receipt: Receipt<'_>) -> Result<Report, SinkError> {
        let mut pending = vec![units];
        let mut report = Report::default();
        while let Some(units) = pending.pop() {
            match self.commit_retrying(&units, plugins, receipt).await {
                Ok(r) => report += r,
                Err(Failure::Data(e)) if units.len() > 1 => {
                    let mut units = units;
                    let back = units.split_off(units.len() / 2);
                    pending.push(back);
                    pending.push(units);
                    tracing::warn!(pipeline = %self.pipeline, code = ?e.code().map(|c| c.code()), "data error; isolating");
                }
                Err(Failure::Data(e)) => {
                    let mut unit = units.into_iter().next().expect("one unit");
                    unit.dead.push(DeadLetter::sink(&e));
                    unit.rows.clear();
                    unit.row_count = 0;
                    pending.push(vec![unit]);
                }
                Err(Failure::Other(e)) => return Err(e),
            }
        }
        Ok(report)
    }

    /// Removes the ledger rows of messages sent before `sent_ms` (ms since
    /// the epoch); returns how many rows went.
    pub async fn prune_ledger(&self, sent_ms: i64) -> Result<u64, SinkError> {
        let client = self.pool.get().await.map_err(|e| SinkError::Pool(e.to_string()))?;
        client
            .execute(sql::LEDGER_PRUNE, &[&self.pipeline, &sql::ledger_part(sent_ms)])
            .await
            .map_err(|e| SinkError::Transient { attempts: 1, source: e })
    }

    /// Where an object version stands (nothing done if it is not known).
    pub async fn file_state(&self, f: &FileReceipt) -> Result<FileState, SinkError> {
        let client = self.pool.get().await.map_err(|e| SinkError::Pool(e.to_string()))?;
        let row =
            client.query_opt(sql::FILE_PEEK, &[&self.pipeline, &f.bucket, &f.key, &f.version]).await.map_err(|e| {
                if transient(&e) { SinkError::Transient { attempts: 1, source: e } } else { SinkError::Permanent(e) }
            })?;
        Ok(row.map_or(FileState::default(), |r| FileState { rows_done: r.get::<_, i64>(0) as u64, done: r.get(1) }))
    }

    async fn commit_retrying(&self, units: &[Unit], plugins: &str, receipt: Receipt<'_>) -> Result<Report, Failure> {
        let mut attempt = 0;
        // Messages found committed before: left out when the batch is tried
        // again (the first try is optimistic: almost every message is new).
        let mut committed: HashSet<String> = HashSet::new();
        let mut direct = self.direct();
        loop {
            attempt += 1;
            let result = match self.pool.get().await {
                Ok(mut client) => self.try_commit(&mut client, units, plugins, &committed, receipt, direct).await,
                Err(deadpool_postgres::PoolError::Backend(e)) => Err(Attempt::Db(e)),
                Err(e) => return Err(Failure::Other(SinkError::Pool(e.to_string()))),
            };
            match result {
                Ok(r) => {
                    if direct && matches!(self.mode, MergeMode::Upsert { .. }) {
                        self.conflicts.store(0, Ordering::Relaxed);
                    }
                    return Ok(r);
                }
                Err(Attempt::Conflict) => {
                    attempt -= 1;
                    direct = false;
                    self.conflicted();
                }
                Err(Attempt::Committed(ids)) => {
                    // Not counted as an attempt: each round leaves out more.
                    attempt -= 1;
                    tracing::info!(pipeline = %self.pipeline, messages = ids.len(), "messages of this batch were committed before; leaving them out");
                    committed.extend(ids);
                }
                Err(Attempt::OutOfStep(why)) => return Err(Failure::Other(SinkError::OutOfStep(why))),
                Err(Attempt::Db(e)) if data_error(&e) => return Err(Failure::Data(e)),
                Err(Attempt::Db(e)) if transient(&e) && attempt < self.max_attempts => {
                    let wait = Duration::from_millis(100 << attempt.min(6));
                    tracing::warn!(pipeline = %self.pipeline, attempt, wait_ms = wait.as_millis() as u64, error = %e, "transient database error; retrying");
                    tokio::time::sleep(wait).await;
                }
                Err(Attempt::Db(e)) if transient(&e) => {
                    return Err(Failure::Other(SinkError::Transient { attempts: attempt, source: e }));
                }
                Err(Attempt::Db(e)) => return Err(Failure::Other(SinkError::Permanent(e))),
            }
        }
    }

    async fn try_commit(
        &self,
        client: &mut deadpool_postgres::Client,
        units: &[Unit],
        plugins: &str,
        committed: &HashSet<String>,
        receipt: Receipt<'_>,
        direct: bool,
    ) -> Result<Report, Attempt> {
        // Round trips are most of a small batch's cost: statements are
        // prepared once per connection and sent in flights without waiting
        // for each answer where the order allows it.
        let tx = client.transaction().await?;
        // Each id once: a message delivered twice into one batch loads once.
        // An object's rows are distinct by position: no set of ids per row.
        let mut taken = HashSet::new();
        let file = matches!(receipt, Receipt::File(_));
        let fresh: Vec<&Unit> = units
            .iter()
            .filter(|u| !committed.contains(&u.message_id) && (file || taken.insert(u.message_id.as_str())))
            .collect();
        let mut report = Report { duplicates: units.len() - fresh.len(), commits: 1, ..Report::default() };
        let origin = match receipt {
            Receipt::File(f) => f.origin(),
            Receipt::Messages => String::new(),
        };
        let source = match receipt {
            Receipt::Messages => self.source.as_str(),
            Receipt::File(_) => origin.as_str(),
        };
        // An object's rows: its ledger row is locked first, so loaders of
        // one object take turns, and rows committed before are left out.
        let mut file_done = 0;
        if let Receipt::File(f) = receipt {
            let key: [&(dyn tokio_postgres::types::ToSql + Sync); 4] = [&self.pipeline, &f.bucket, &f.key, &f.version];
            let claim = tx.prepare_cached(sql::FILE_CLAIM).await?;
            tx.execute(&claim, &key).await?;
            let state = tx.prepare_cached(sql::FILE_LOCK).await?;
            let done = tx.query_one(&state, &key).await?.get::<_, i64>(0) as u64;
            let before: Vec<String> =
                fresh.iter().filter(|u| u.position <= done).map(|u| u.message_id.clone()).collect();
            if !before.is_empty() {
                return Err(Attempt::Committed(before));
            }
            if let Some(first) = fresh.first() {
                if first.position != done + 1 {
                    return Err(Attempt::OutOfStep(format!(
                        "{}: rows up to {done} are committed, this load starts at row {}; the object is loaded again from there",
                        f.uri, first.position
                    )));
                }
            }
            if let (Some(column), 0) = (&f.replace, done) {
                // The object's first rows: what its earlier versions wrote goes.
                tx.execute(&sql::delete_file_rows(&self.target, column), &[&f.uri]).await?;
                let forget = tx.prepare_cached(sql::FILE_FORGET_OTHERS).await?;
                tx.execute(&forget, &key).await?;
            }
            file_done = fresh.last().map_or(done, |u| u.position);
        }
        let row_count: usize = fresh.iter().map(|u| u.row_count).sum();
        let staged = row_count > 0 && !direct;
        if row_count > 0 {
            let into = if staged {
                tx.batch_execute(&sql::create_staging(&self.stage, &self.target, &self.columns)).await?;
                &self.stage
            } else {
                &self.target
            };
            let statement = tx.prepare_cached(&sql::copy_in(into, &self.columns, staged)).await?;
            let copy = tx.copy_in(&statement).await?;
            futures_util::pin_mut!(copy);
            let mut buf =
                Vec::with_capacity(fresh.iter().map(|u| u.rows.len() + if staged { u.row_count * 8 } else { 0 }).sum());
            let mut seq = 0;
            for u in &fresh {
                if staged {
                    seq = self::copy::numbered(&mut buf, &u.rows, seq);
                } else {
                    buf.extend_from_slice(&u.rows);
                }
            }
            let sent = match copy.send(Bytes::from(buf)).await {
                Ok(()) => copy.finish().await.map(|_| ()),
                Err(e) => Err(e),
            };
            match sent {
                // Upsert straight into the target met a key already there
                // (or twice in the batch): merge instead.
                Err(e)
                    if !staged && self.mode != MergeMode::Append && e.code() == Some(&SqlState::UNIQUE_VIOLATION) =>
                {
                    return Err(Attempt::Conflict);
                }
                r => r?,
            }
            report.rows = row_count;
        }
        for u in &fresh {
            for d in &u.dead {
                dead_letter::insert(&tx, &self.pipeline, source, &u.message_id, d, &u.payload, self.sealer.as_ref())
                    .await?;
                report.dead_letters += 1;
            }
        }
        // Upsert straight in holds only while a unique index on the key
        // refuses what is already there. Checked after the COPY, under its
        // lock on the table: the index cannot go before this commit.
        let unique_key = async {
            match &self.mode {
                MergeMode::Upsert { key } if row_count > 0 && direct => {
                    let check = tx.prepare_cached(sql::KEY_IS_UNIQUE).await?;
                    Ok(tx.query_one(&check, &[&self.target, key]).await?.get::<_, bool>(0))
                }
                _ => Ok(true),
            }
        };
        let lineage = tx.prepare_cached(sql::LINEAGE).await?;
        let merge = sql::merge(&self.mode, &self.target, &self.stage, &self.columns).join("; ");
        let lineage_params: [&(dyn tokio_postgres::types::ToSql + Sync); 6] = [
            &self.pipeline,
            &source,
            &(fresh.len() as i32),
            &(row_count as i32),
            &(report.dead_letters as i32),
            &plugins,
        ];
        // The merge on its own: a row it refuses must come back as that
        // error, not as "transaction aborted" from a statement behind it.
        if staged && !merge.is_empty() {
            tx.batch_execute(&merge).await?;
        }
        if let Receipt::File(f) = receipt {
            let progress = tx.prepare_cached(sql::FILE_PROGRESS).await?;
            let done = f.end == Some(file_done);
            let params: [&(dyn tokio_postgres::types::ToSql + Sync); 8] = [
                &self.pipeline,
                &f.bucket,
                &f.key,
                &f.version,
                &(file_done as i64),
                &(row_count as i64),
                &(report.dead_letters as i64),
                &done,
            ];
            let (unique, _, _) =
                tokio::try_join!(unique_key, tx.query_one(&lineage, &lineage_params), tx.execute(&progress, &params))?;
            if !unique {
                return Err(Attempt::Conflict);
            }
            tx.commit().await?;
            return Ok(report);
        }
        let lock = tx.prepare_cached(sql::LEDGER_LOCK).await?;
        let seen = tx.prepare_cached(sql::LEDGER_SEEN).await?;
        let ids = sql::LedgerIds::new(fresh.iter().map(|u| (u.sent_ms, u.message_id.as_str())));
        let mut look_in = ids.parts.clone();
        look_in.push(sql::LEGACY_PART);
        look_in.sort_unstable();
        // One flight: the lineage, then this pipeline's ledger lock (held to
        // the commit, so commits of a pipeline take turns from here), the
        // check against everything committed before (its snapshot is taken
        // after the lock is granted) and, optimistically, the batch's ids
        // into the ledger: if the check finds some, the whole transaction
        // is rolled back, that record with it.
        let record = tx.prepare_cached(sql::LEDGER_RECORD).await?;
        let lock_params: [&(dyn tokio_postgres::types::ToSql + Sync); 1] = [&self.pipeline];
        let seen_params: [&(dyn tokio_postgres::types::ToSql + Sync); 4] =
            [&self.pipeline, &look_in, &ids.texts, &ids.uuids];
        let record_params: [&(dyn tokio_postgres::types::ToSql + Sync); 8] = [
            &self.pipeline,
            &ids.parts,
            &ids.texts,
            &ids.uuids,
            &ids.text_from,
            &ids.text_to,
            &ids.uuid_from,
            &ids.uuid_to,
        ];
        let (unique, _, _, _, seen, _) = tokio::try_join!(
            unique_key,
            tx.query_one(&lineage, &lineage_params),
            tx.execute(&lock, &lock_params),
            // Statistics lag behind a fast-growing ledger: the look-up must
            // probe its index, never scan it, and never start parallel
            // workers (milliseconds each) for the few rows it reads.
            tx.batch_execute("SET LOCAL enable_seqscan = off; SET LOCAL max_parallel_workers_per_gather = 0"),
            tx.query(&seen, &seen_params),
            tx.execute(&record, &record_params),
        )?;
        if !unique {
            return Err(Attempt::Conflict);
        }
        if !seen.is_empty() {
            return Err(Attempt::Committed(seen.iter().map(|r| r.get(0)).collect()));
        }
        tx.commit().await?;
        Ok(report)
    }
}

/// Why one try at a batch's transaction did not commit.
enum Attempt {
    /// These messages were committed before.
    Committed(Vec<String>),
    /// An object's rows do not follow its committed ones.
    OutOfStep(String),
    /// Rows COPYed straight into an upsert's target met a key already
    /// there or twice in the batch, or the target has no unique index on
    /// the key: the batch goes through staging and the merge (which
    /// without that index fails, naming it). A batch of new keys is loaded
    /// the same either way, at the speed of a plain COPY into the keyed
    /// table.
    Conflict,
    Db(tokio_postgres::Error),
}

impl From<tokio_postgres::Error> for Attempt {
    fn from(e: tokio_postgres::Error) -> Self {
        Attempt::Db(e)
    }
}

enum Failure {
    Data(tokio_postgres::Error),
    Other(SinkError),
}

#[cfg(test)]
mod tests {
    #[test]
    fn quoted_values_are_emptied() {
        assert_eq!(
            super::without_quoted("invalid input syntax for type integer: \"three\""),
            "invalid input syntax for type integer: \"…\""
        );
        assert_eq!(super::without_quoted("value \"99999999999\" is out of range"), "value \"…\" is out of range");
        assert_eq!(
            super::without_quoted("value too long for type character varying(8)"),
            "value too long for type character varying(8)"
        );
    }
}
