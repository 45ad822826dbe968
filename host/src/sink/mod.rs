//! The PostgreSQL sink: per batch one transaction that loads the rows (COPY
//! straight into the target for `append`, and for `upsert` while its
//! batches bring new keys; through a staging table and a merge otherwise),
//! writes dead letters and the batch's lineage, then records the batch's
//! receipt ([`receipt`]: the message ledger, or an object's progress) under
//! its lock, and commits. If the receipt finds units committed before, the
//! batch is tried again without them. Transient errors are retried; a data
//! error isolates the units that cause it into dead letters and commits the
//! rest.
//!
//! Rows arrive encoded (COPY text, by the mapping). Must not
//! acknowledge anything: the caller deletes messages after a commit returns.

pub mod connect;
pub mod ddl;
pub mod dead_letter;
mod error;
pub mod fit;
mod group;
pub mod lease;
mod load;
pub mod pooler;
mod receipt;
pub mod replay;
pub mod sql;
pub mod sqlstate;
pub mod table;
pub mod tls;

pub use error::{SinkError, column, condition, data_error, refusal, transient};
pub use receipt::{FileReceipt, FileState, sequencer_after};

use crate::config::{MergeMode, Sink};
use dead_letter::{DeadLetter, Sealer};
use error::{Attempt, Failure};
use receipt::{Ledger, Receipt};
use std::collections::HashSet;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

/// What one message (or one row of an object) brings to a batch's
/// transaction.
#[derive(Debug, Clone, Default)]
pub struct Unit {
    /// The ledger key (SQS message id, or `dead-letter:ID` on replay).
    pub message_id: String,
    /// Its rows in COPY text format.
    pub rows: Vec<u8>,
    /// The places in `rows` of a `batch-id` column, which the commit fills
    /// (`mapping::copy::with_batch_id`).
    pub batch_id_at: Vec<usize>,
    pub row_count: usize,
    /// Its records that could not be loaded.
    pub dead: Vec<DeadLetter>,
    /// The raw message, kept with dead letters.
    pub payload: Vec<u8>,
    /// What `payload` holds: a record, or a row of a file as it was.
    pub form: dead_letter::PayloadForm,
    /// When the source says it was sent (ms; see `queue::Message`): the
    /// same on every delivery. Replays use a stand-in of their own.
    pub sent_ms: i64,
    /// For a row of an S3 object: its 1-based position among the object's
    /// rows (see [`FileReceipt`]).
    pub position: u64,
    /// Which of the batches committed together brought it: their place in
    /// the group (see [`group`]); 0 for a batch that commits alone.
    pub owner: usize,
}

/// What made a batch's rows, recorded with it in `etl.batches`: the
/// chain's steps and the pipeline file's revision.
#[derive(Debug, Clone, PartialEq)]
pub struct Lineage {
    /// Each step's plugin name, digest and params digest, as a JSON array
    /// (`[{"name":..,"digest":..,"params":..}]`).
    pub plugins: String,
    /// The revision of the pipeline file the chain's version came from.
    pub revision: Option<String>,
    /// Each step's params digest and canonical params: kept once in
    /// `etl.step_params`.
    pub params_digests: Vec<String>,
    pub params: Vec<String>,
}

impl Default for Lineage {
    /// No steps, no revision.
    fn default() -> Self {
        Lineage { plugins: "[]".into(), revision: None, params_digests: Vec::new(), params: Vec::new() }
    }
}

/// What a commit did.
#[derive(Debug, Default, Clone, Copy, PartialEq)]
pub struct Report {
    /// Units seen in the receipt before: nothing added for them.
    pub duplicates: usize,
    pub rows: usize,
    pub dead_letters: usize,
    /// Transactions committed (more than one after isolating a data error).
    pub commits: usize,
    /// Dead letters by stage, in the order of `status::metrics::STAGES`.
    pub dead_by_stage: [usize; 4],
}

impl std::ops::AddAssign for Report {
    fn add_assign(&mut self, o: Report) {
        self.duplicates += o.duplicates;
        self.rows += o.rows;
        self.dead_letters += o.dead_letters;
        self.commits += o.commits;
        for (a, b) in self.dead_by_stage.iter_mut().zip(o.dead_by_stage) {
            *a += b;
        }
    }
}

/// How long the check of a pooled connection may take before it is
/// dropped for a new one.
pub const RECYCLE_WITHIN: Duration = Duration::from_secs(2);

/// A connection pool from `DATABASE_URL`. A connection taken from the pool
/// is checked first (an empty query, within [`RECYCLE_WITHIN`]): one that
/// is closed or does not answer is dropped and another one made.
pub fn pool(url: &str, size: usize) -> Result<deadpool_postgres::Pool, SinkError> {
    let (config, tls) = connect::sink_config(url)?;
    pool_of(config, tls, size)
}

/// A pool of `size` connections of `config`, checked as [`pool`]'s are.
pub(crate) fn pool_of(
    config: tokio_postgres::Config,
    tls: tls::Tls,
    size: usize,
) -> Result<deadpool_postgres::Pool, SinkError> {
    let manager = deadpool_postgres::Manager::from_config(
        config,
        tls.connector().map_err(SinkError::Url)?,
        deadpool_postgres::ManagerConfig { recycling_method: deadpool_postgres::RecyclingMethod::Verified },
    );
    deadpool_postgres::Pool::builder(manager)
        .max_size(size)
        .runtime(deadpool_postgres::Runtime::Tokio1)
        .recycle_timeout(Some(RECYCLE_WITHIN))
        .build()
        .map_err(|e| SinkError::Pool(e.to_string()))
}

/// Loads batches of one pipeline into its table.
pub struct PostgresSink {
    pool: deadpool_postgres::Pool,
    pipeline: String,
    /// The lineage's and dead letters' `source` of message batches.
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
    /// Message batches waiting for a commit (see [`group`]).
    group: group::Group,
    pub metrics: crate::status::metrics::Sink,
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
            group: group::Group::new(sink.max_batches_per_commit),
            metrics: crate::status::metrics::Sink::new(pipeline),
        }
    }

    /// The target table, quoted.
    pub fn target(&self) -> &str {
        &self.target
    }

    /// The pool the sink commits through.
    pub fn pool(&self) -> &deadpool_postgres::Pool {
        &self.pool
    }

    /// Whether the database answers a query now (within 5 s). A connection
    /// whose query did not answer in time is dropped, not put back in the
    /// pool: it may still be waiting for that answer.
    pub async fn answers(&self) -> bool {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
        let Ok(Ok(client)) = tokio::time::timeout_at(deadline, self.pool.get()).await else {
            return false;
        };
        match tokio::time::timeout_at(deadline, client.simple_query("SELECT 1")).await {
            Ok(answer) => answer.is_ok(),
            Err(_) => {
                drop(deadpool_postgres::Object::take(client));
                false
            }
        }
    }

    /// Commits message `units` whole or not at all (a replay): a row the
    /// database refuses is [`SinkError::Refused`], and nothing commits,
    /// neither a dead letter nor the ledger entry.
    pub async fn commit_whole(&self, units: Vec<Unit>, lineage: &Lineage) -> Result<Report, SinkError> {
        match self.commit_retrying(&units, lineage, &Ledger, 1).await {
            Ok(reports) => Ok(reports[0]),
            Err(Failure::Data(e)) => Err(SinkError::Refused { reason: refusal(&e) }),
            Err(Failure::Other(e)) => Err(e),
        }
    }

    /// Commits consecutive rows of one object, moving its progress.
    pub async fn commit_file(
        &self,
        units: Vec<Unit>,
        lineage: &Lineage,
        file: &FileReceipt,
    ) -> Result<Report, SinkError> {
        self.commit_with(units, lineage, file).await
    }

    /// One batch's units, alone in their transaction.
    async fn commit_with<R: Receipt>(
        &self,
        units: Vec<Unit>,
        lineage: &Lineage,
        receipt: &R,
    ) -> Result<Report, SinkError> {
        let done = self.commit_measured(units, lineage, receipt, 1).await?;
        // The first unit refused even as a dead letter, as before.
        match done.unstorable.into_iter().next() {
            Some((_, e)) => Err(e),
            None => Ok(done.reports[0]),
        }
    }

    /// [`PostgresSink::commit_isolating`], its time and dead letters
    /// recorded.
    async fn commit_measured<R: Receipt>(
        &self,
        units: Vec<Unit>,
        lineage: &Lineage,
        receipt: &R,
        owners: usize,
    ) -> Result<Isolated, SinkError> {
        let started = std::time::Instant::now();
        let result = self.commit_isolating(units, lineage, receipt, owners).await;
        if let Ok(done) = &result {
            self.metrics.commit.record(started.elapsed());
            for report in &done.reports {
                self.metrics.dead_letters(&report.dead_by_stage);
            }
        }
        result
    }

    /// Commits `units` (brought by `owners` batches, see [`Unit::owner`]),
    /// isolating the units the database refuses into dead letters.
    async fn commit_isolating<R: Receipt>(
        &self,
        units: Vec<Unit>,
        lineage: &Lineage,
        receipt: &R,
        owners: usize,
    ) -> Result<Isolated, SinkError> {
        let mut pending = vec![units];
        let mut done = Isolated { reports: vec![Report::default(); owners], unstorable: Vec::new() };
        while let Some(units) = pending.pop() {
            match self.commit_retrying(&units, lineage, receipt, owners).await {
                Ok(reports) => {
                    for (sum, r) in done.reports.iter_mut().zip(reports) {
                        *sum += r;
                    }
                }
                Err(Failure::Data(e)) if units.len() > 1 => {
                    let mut units = units;
                    let back = units.split_off(units.len() / 2);
                    pending.push(back);
                    pending.push(units);
                    tracing::debug!(pipeline = %self.pipeline, error = %refusal(&e), "data error; isolating");
                }
                Err(Failure::Data(e)) => {
                    let mut unit = units.into_iter().next().expect("one unit");
                    if unit.row_count == 0 && unit.rows.is_empty() {
                        tracing::error!(pipeline = %self.pipeline, message = %dead_letter::storable(&unit.message_id), error = %refusal(&e), "the database refuses this message even without its rows; it stays unacknowledged");
                        done.unstorable.push((
                            unit.owner,
                            SinkError::Unstorable {
                                message_id: dead_letter::storable(&unit.message_id).into_owned(),
                                reason: refusal(&e),
                            },
                        ));
                        continue;
                    }
                    self.refused(&unit, receipt, &e);
                    unit.dead.push(DeadLetter::sink(&e));
                    unit.rows.clear();
                    unit.batch_id_at.clear();
                    unit.row_count = 0;
                    pending.push(vec![unit]);
                }
                Err(Failure::Other(e)) => return Err(e),
            }
        }
        Ok(done)
    }

    /// Says which unit the database refuses, from where, in which column,
    /// and why (never a value).
    fn refused<R: Receipt>(&self, unit: &Unit, receipt: &R, e: &tokio_postgres::Error) {
        let from = receipt.origin().unwrap_or_else(|| self.source.clone());
        let column = e.as_db_error().and_then(error::column);
        tracing::warn!(
            pipeline = %self.pipeline,
            from = %from,
            unit = %dead_letter::storable(&unit.message_id),
            column = column.as_deref().unwrap_or("-"),
            sqlstate = condition(e).as_deref().unwrap_or("-"),
            error = %refusal(e),
            "the database refuses a row; it is a dead letter"
        );
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

    async fn commit_retrying<R: Receipt>(
        &self,
        units: &[Unit],
        lineage: &Lineage,
        receipt: &R,
        owners: usize,
    ) -> Result<Vec<Report>, Failure> {
        let mut attempt = 0;
        // Units found committed before: left out when the batch is tried
        // again (the first try is optimistic: almost every unit is new).
        let mut committed: HashSet<String> = HashSet::new();
        let mut direct = self.direct();
        loop {
            attempt += 1;
            let result = match self.pool.get().await {
                Ok(mut client) => {
                    let attempt = self.try_commit(&mut client, units, lineage, &committed, receipt, direct, owners);
                    match tokio::time::timeout(connect::ATTEMPT_TIMEOUT, attempt).await {
                        Ok(result) => result,
                        Err(_) => {
                            // Not back in the pool: it may be mid-statement.
                            drop(deadpool_postgres::Object::take(client));
                            Err(Attempt::Stalled)
                        }
                    }
                }
                Err(deadpool_postgres::PoolError::Backend(e)) => Err(Attempt::Db(e)),
                Err(e) => return Err(Failure::Other(SinkError::pool(e))),
            };
            let e = match result {
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
                    continue;
                }
                Err(Attempt::Committed(ids)) => {
                    // Not counted as an attempt: each round leaves out more.
                    attempt -= 1;
                    tracing::info!(pipeline = %self.pipeline, messages = ids.len(), "messages of this batch were committed before; leaving them out");
                    committed.extend(ids);
                    continue;
                }
                Err(Attempt::OutOfStep(why)) => return Err(Failure::Other(SinkError::OutOfStep(why))),
                Err(Attempt::Superseded) => return Err(Failure::Other(SinkError::Superseded)),
                Err(Attempt::Fenced(e)) => return Err(Failure::Other(e)),
                Err(Attempt::Stalled) if attempt >= self.max_attempts => {
                    return Err(Failure::Other(SinkError::Stalled { attempts: attempt }));
                }
                Err(Attempt::Stalled) => {
                    self.metrics.retries.increment(1);
                    tracing::warn!(pipeline = %self.pipeline, attempt, timeout_s = connect::ATTEMPT_TIMEOUT.as_secs(), "a commit attempt stalled; its connection is dropped and the commit tried again");
                    continue;
                }
                Err(Attempt::Db(e)) => e,
            };
            if data_error(&e) {
                return Err(Failure::Data(e));
            }
            if !transient(&e) {
                return Err(Failure::Other(SinkError::Permanent(e)));
            }
            if attempt >= self.max_attempts {
                return Err(Failure::Other(SinkError::Transient { attempts: attempt, error: e }));
            }
            // Jittered: workers and hosts that failed together do not all
            // come back at the same moment.
            let wait = crate::backoff::jitter(crate::backoff::doubling(
                Duration::from_millis(200),
                attempt,
                Duration::from_millis(6400),
            ));
            self.metrics.retries.increment(1);
            tracing::warn!(pipeline = %self.pipeline, attempt, wait_ms = wait.as_millis() as u64, error = %refusal(&e), "transient database error; retrying");
            tokio::time::sleep(wait).await;
        }
    }

    /// One try: the steps of a commit in order. Round trips are most of a
    /// small batch's cost: statements are prepared once per connection and
    /// sent in flights without waiting for each answer where the order
    /// allows it. Its report is given for each of the `owners`.
    #[allow(clippy::too_many_arguments)]
    async fn try_commit<R: Receipt>(
        &self,
        client: &mut deadpool_postgres::Client,
        units: &[Unit],
        lineage: &Lineage,
        committed: &HashSet<String>,
        receipt: &R,
        direct: bool,
        owners: usize,
    ) -> Result<Vec<Report>, Attempt> {
        let tx = client.transaction().await?;
        let mut taken = HashSet::new();
        let mut each = vec![Report::default(); owners];
        let fresh: Vec<&Unit> = units
            .iter()
            .filter(|u| {
                let new =
                    !committed.contains(&u.message_id) && (!receipt.dedupe() || taken.insert(u.message_id.as_str()));
                if !new {
                    each[u.owner].duplicates += 1;
                }
                new
            })
            .collect();
        for u in &fresh {
            let r = &mut each[u.owner];
            r.rows += u.row_count;
            r.dead_letters += u.dead.len();
            for d in &u.dead {
                if let Some(i) = crate::status::metrics::STAGES.iter().position(|s| *s == d.stage) {
                    r.dead_by_stage[i] += 1;
                }
            }
        }
        // The transaction counts once, in its first unit's batch.
        each[units.first().map_or(0, |u| u.owner)].commits = 1;
        let mut report = Report::default();
        for r in &each {
            report += *r;
        }
        let origin = receipt.origin();
        let source = origin.as_deref().unwrap_or(&self.source);
        let row_count = report.rows;
        let staged = row_count > 0 && !direct;
        if staged && matches!(self.mode, MergeMode::DeleteInsert { .. }) {
            // A delete and an insert are not one statement: two commits of
            // the same keys would each delete what the other has not yet
            // committed, then both insert. Delete-insert commits of one
            // target take turns from here to their end (first, before any
            // lock a receipt takes, so the order is the same for all).
            let lock = pooler::prepare(&tx, sql::MERGE_LOCK).await?;
            tx.execute(&lock, &[&self.target]).await?;
        }
        let claim = receipt.claim(&tx, self, &fresh).await?;
        // Rows with a `batch-id` column need the batch's id before they
        // load: taken from the sequence first, then given to the lineage.
        let batch_id = if fresh.iter().any(|u| !u.batch_id_at.is_empty()) {
            let next = pooler::prepare(&tx, sql::NEXT_BATCH_ID).await?;
            Some(tx.query_one(&next, &[]).await?.get::<_, i64>(0))
        } else {
            None
        };
        if row_count > 0 {
            self.copy_rows(&tx, &fresh, staged, batch_id).await?;
        }
        self.insert_dead_letters(&tx, source, &fresh).await?;
        let lineage_insert = pooler::prepare(&tx, sql::LINEAGE).await?;
        let merge = sql::merge(&self.mode, &self.target, &self.stage, &self.columns).join("; ");
        // The merge on its own: a row it refuses must come back as that
        // error, not as "transaction aborted" from a statement behind it.
        if staged && !merge.is_empty() {
            tx.batch_execute(&merge).await?;
        }
        let lineage_params: [&(dyn tokio_postgres::types::ToSql + Sync); 10] = [
            &self.pipeline,
            &source,
            &(fresh.len() as i32),
            &(row_count as i32),
            &(report.dead_letters as i32),
            &lineage.plugins,
            &batch_id,
            &lineage.params_digests,
            &lineage.params,
            &lineage.revision,
        ];
        let head = async {
            // In the flight's order (see `receipt::Ledger::record`).
            let (unique, lineage) = tokio::join!(
                self.key_is_unique(&tx, row_count > 0 && direct),
                tx.query_one(&lineage_insert, &lineage_params)
            );
            let (unique, _) = (unique?, lineage?);
            Ok(unique)
        };
        receipt.record(&tx, self, &fresh, claim, &report, head).await?;
        // Closed before the commit, on the same server connection (see
        // `pooler`).
        drop(lineage_insert);
        tx.commit().await?;
        Ok(each)
    }
}

/// What [`PostgresSink::commit_isolating`] committed, for each owner, and
/// the units the database refused even as dead letters (with their owner):
/// the rest committed without them.
struct Isolated {
    reports: Vec<Report>,
    unstorable: Vec<(usize, SinkError)>,
}
