//! What makes a commit once-only: its receipt, recorded in the batch's own
//! transaction. Two kinds exist: the message ledger (`etl.receipts`: the
//! ids of the messages committed, so a redelivery adds nothing) and an S3
//! object's progress (`etl.files`: the rows of the object committed so far,
//! so a crash resumes after them; for a replay through another chain,
//! `etl.replays`, beside it). Both are written under a lock that makes
//! concurrent commits of the same work take turns.
//!
//! Must not load rows: that is [`super::load`]'s, and the order of the steps
//! of a commit is [`super::PostgresSink`]'s.

use super::error::{Attempt, SinkError};
use super::{PostgresSink, Report, Unit, sql};
use deadpool_postgres::Transaction;
use std::future::Future;
use tokio_postgres::types::ToSql;

/// One kind of receipt; see the module docs.
pub(crate) trait Receipt: Sync {
    /// What [`Receipt::claim`] learns for [`Receipt::record`].
    type Claim: Send;

    /// Whether units with the same id count once (a message delivered
    /// twice into one batch). An object's rows are distinct by position.
    fn dedupe(&self) -> bool;

    /// The `source` of the batch's lineage and dead letters, when not the
    /// sink's own.
    fn origin(&self) -> Option<String>;

    /// Before the rows load: takes the receipt's lock where it must be held
    /// first, and refuses units committed before or out of order.
    fn claim(
        &self,
        tx: &Transaction<'_>,
        sink: &PostgresSink,
        fresh: &[&Unit],
    ) -> impl Future<Output = Result<Self::Claim, Attempt>> + Send;

    /// After the rows: records the receipt in one flight with `head` (the
    /// sink's own last statements; `false` if the rows conflict with the
    /// target's keys). Refuses the commit if some units were committed
    /// before.
    fn record(
        &self,
        tx: &Transaction<'_>,
        sink: &PostgresSink,
        fresh: &[&Unit],
        claim: Self::Claim,
        report: &Report,
        head: impl Future<Output = Result<bool, tokio_postgres::Error>> + Send,
    ) -> impl Future<Output = Result<(), Attempt>> + Send;
}

/// Messages: their ids go into the pipeline's ledger.
pub(crate) struct Ledger;

impl Receipt for Ledger {
    type Claim = ();

    fn dedupe(&self) -> bool {
        true
    }

    fn origin(&self) -> Option<String> {
        None
    }

    async fn claim(&self, _: &Transaction<'_>, _: &PostgresSink, _: &[&Unit]) -> Result<(), Attempt> {
        Ok(())
    }

    async fn record(
        &self,
        tx: &Transaction<'_>,
        sink: &PostgresSink,
        fresh: &[&Unit],
        (): (),
        _: &Report,
        head: impl Future<Output = Result<bool, tokio_postgres::Error>> + Send,
    ) -> Result<(), Attempt> {
        let lock = super::pooler::prepare(tx, sql::LEDGER_LOCK).await?;
        let seen = super::pooler::prepare(tx, sql::LEDGER_SEEN).await?;
        let ids = sql::LedgerIds::new(fresh.iter().map(|u| (u.sent_ms, u.message_id.as_str())));
        // The ranges of partitions whose rows may hold these ids: the
        // batch's own, reached back by the widest span a row may have, and
        // the legacy partition.
        let (look_from, look_lo, look_hi) = ids.look_up();
        // One flight: the sink's statements, then this pipeline's ledger
        // lock (held to the commit, so commits of a pipeline take turns
        // from here), the check against everything committed before (its
        // snapshot is taken after the lock is granted) and, optimistically,
        // the batch's ids into the ledger: if the check finds some, the
        // whole transaction is rolled back, that record with it.
        let record = super::pooler::prepare(tx, sql::LEDGER_RECORD).await?;
        let lock_params: [&(dyn ToSql + Sync); 1] = [&sink.pipeline];
        let seen_params: [&(dyn ToSql + Sync); 6] =
            [&sink.pipeline, &look_from, &look_lo, &look_hi, &ids.texts, &ids.uuids];
        let record_params: [&(dyn ToSql + Sync); 9] = [
            &sink.pipeline,
            &ids.parts,
            &ids.lasts,
            &ids.texts,
            &ids.uuids,
            &ids.text_from,
            &ids.text_to,
            &ids.uuid_from,
            &ids.uuid_to,
        ];
        let (unique, lock, set, seen, record) = tokio::join!(
            head,
            tx.execute(&lock, &lock_params),
            // Statistics lag behind a fast-growing ledger: the look-up must
            // probe its index, never scan it, and never start parallel
            // workers (milliseconds each) for the few rows it reads.
            tx.batch_execute("SET LOCAL enable_seqscan = off; SET LOCAL max_parallel_workers_per_gather = 0"),
            tx.query(&seen, &seen_params),
            tx.execute(&record, &record_params),
        );
        // The first statement to fail, in the flight's order, is the error:
        // those behind it only say the transaction is aborted (`try_join!`
        // gave whichever it happened to poll first, and a data error could
        // come back as 25P02, which is not one).
        let (unique, _, _, seen, _) = (unique?, lock?, set?, seen?, record?);
        if !unique {
            return Err(Attempt::Conflict);
        }
        if !seen.is_empty() {
            return Err(Attempt::Committed(seen.iter().map(|r| r.get(0)).collect()));
        }
        Ok(())
    }
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
    /// The object's ETag, when known: recorded, so that a version named by
    /// it (no version id) can be found again.
    pub etag: Option<String>,
    /// `s3://bucket/key`, as the target's `source-file` column holds it.
    pub uri: String,
    /// The target's column naming each row's file: before the object's
    /// first rows, the rows of its earlier versions are deleted by it.
    pub replace: Option<String>,
    /// The S3 event's sequencer of this version, when a notification gave
    /// it: a version older than one loaded before is refused
    /// ([`SinkError::Superseded`]).
    pub sequencer: Option<String>,
    /// The object's row count, once the reader reached its end.
    pub end: Option<u64>,
    /// A replay through another chain (`host replay --apply`): the chain's
    /// digest. Its progress is kept in `etl.replays`, beside the version's
    /// `etl.files` row, which must hold the version as loaded.
    pub replay: Option<String>,
    /// The object's lease, checked first in every commit: a loader whose
    /// lease was taken over commits nothing more.
    pub fence: Option<super::lease::Fence>,
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

impl Receipt for FileReceipt {
    /// The last row this commit covers.
    type Claim = u64;

    fn dedupe(&self) -> bool {
        false
    }

    fn origin(&self) -> Option<String> {
        Some(FileReceipt::origin(self))
    }

    /// The object's ledger row is locked first, so loaders of one object
    /// take turns, and rows committed before are left out.
    async fn claim(&self, tx: &Transaction<'_>, sink: &PostgresSink, fresh: &[&Unit]) -> Result<u64, Attempt> {
        if let Some(fence) = &self.fence
            && !fence.holds(tx).await?
        {
            return Err(Attempt::Fenced(fence.refused()));
        }
        if let Some(chain) = &self.replay {
            return self.claim_replay(tx, sink, fresh, chain).await;
        }
        let key: [&(dyn ToSql + Sync); 4] = [&sink.pipeline, &self.bucket, &self.key, &self.version];
        let claim = super::pooler::prepare(tx, sql::FILE_CLAIM).await?;
        tx.execute(&claim, &[&sink.pipeline, &self.bucket, &self.key, &self.version, &self.sequencer, &self.etag])
            .await?;
        let state = super::pooler::prepare(tx, sql::FILE_LOCK).await?;
        let done = tx.query_one(&state, &key).await?.get::<_, i64>(0) as u64;
        self.in_step(fresh, done)?;
        if let Some(mine) = &self.sequencer {
            // A late or retried notification of an older version (also one
            // part-loaded before the newer one came): the rows of the newer
            // one stay, whatever the mode (replaced by file, merged by key,
            // or appended). Loaders of one key take turns: the object lock
            // is per key, not per version.
            let others = super::pooler::prepare(tx, sql::FILE_SEQUENCERS).await?;
            let newer = tx.query(&others, &key).await?.iter().any(|r| sequencer_after(r.get(0), mine));
            if newer {
                return Err(Attempt::Superseded);
            }
        }
        if let (Some(column), 0) = (&self.replace, done) {
            // The object's first rows: what its earlier versions wrote goes.
            tx.execute(&sql::delete_file_rows(sink.target(), column), &[&self.uri]).await?;
            let forget = super::pooler::prepare(tx, sql::FILE_FORGET_OTHERS).await?;
            tx.execute(&forget, &key).await?;
        }
        Ok(fresh.last().map_or(done, |u| u.position))
    }

    async fn record(
        &self,
        tx: &Transaction<'_>,
        sink: &PostgresSink,
        fresh: &[&Unit],
        file_done: u64,
        report: &Report,
        head: impl Future<Output = Result<bool, tokio_postgres::Error>> + Send,
    ) -> Result<(), Attempt> {
        let rows: usize = fresh.iter().map(|u| u.row_count).sum();
        let done = self.end == Some(file_done);
        if let Some(chain) = &self.replay {
            let progress = super::pooler::prepare(tx, sql::REPLAY_PROGRESS).await?;
            let params: [&(dyn ToSql + Sync); 9] = [
                &sink.pipeline,
                &self.bucket,
                &self.key,
                &self.version,
                chain,
                &(file_done as i64),
                &(rows as i64),
                &(report.dead_letters as i64),
                &done,
            ];
            // In the flight's order (see `Ledger::record`).
            let (unique, progress) = tokio::join!(head, tx.execute(&progress, &params));
            let (unique, _) = (unique?, progress?);
            return if unique { Ok(()) } else { Err(Attempt::Conflict) };
        }
        let progress = super::pooler::prepare(tx, sql::FILE_PROGRESS).await?;
        let params: [&(dyn ToSql + Sync); 8] = [
            &sink.pipeline,
            &self.bucket,
            &self.key,
            &self.version,
            &(file_done as i64),
            &(rows as i64),
            &(report.dead_letters as i64),
            &done,
        ];
        // In the flight's order (see `Ledger::record`).
        let (unique, progress) = tokio::join!(head, tx.execute(&progress, &params));
        let (unique, _) = (unique?, progress?);
        if !unique {
            return Err(Attempt::Conflict);
        }
        Ok(())
    }
}

impl FileReceipt {
    /// Refuses units committed before (at or below row `done`) or not
    /// starting right after it.
    fn in_step(&self, fresh: &[&Unit], done: u64) -> Result<(), Attempt> {
        let before: Vec<String> = fresh.iter().filter(|u| u.position <= done).map(|u| u.message_id.clone()).collect();
        if !before.is_empty() {
            return Err(Attempt::Committed(before));
        }
        if let Some(first) = fresh.first()
            && first.position != done + 1
        {
            return Err(Attempt::OutOfStep(format!(
                "{}: rows up to {done} are committed, this load starts at row {}; the object is loaded again from there",
                self.uri, first.position
            )));
        }
        Ok(())
    }

    /// [`Receipt::claim`] of a replay: the version must still be the one
    /// `etl.files` holds as loaded (else [`Attempt::Superseded`]); the
    /// replay's first rows remove the object's rows in the table (where
    /// rows know their file) and the other chains' replays of it.
    async fn claim_replay(
        &self,
        tx: &Transaction<'_>,
        sink: &PostgresSink,
        fresh: &[&Unit],
        chain: &String,
    ) -> Result<u64, Attempt> {
        let key: [&(dyn ToSql + Sync); 5] = [&sink.pipeline, &self.bucket, &self.key, &self.version, chain];
        let loaded = super::pooler::prepare(tx, sql::REPLAY_LOADED).await?;
        if tx.query_opt(&loaded, &key[..4]).await?.is_none() {
            return Err(Attempt::Superseded);
        }
        let claim = super::pooler::prepare(tx, sql::REPLAY_CLAIM).await?;
        tx.execute(&claim, &key).await?;
        let state = super::pooler::prepare(tx, sql::REPLAY_LOCK).await?;
        let done = tx.query_one(&state, &key).await?.get::<_, i64>(0) as u64;
        self.in_step(fresh, done)?;
        if done == 0 {
            if let Some(column) = &self.replace {
                tx.execute(&sql::delete_file_rows(sink.target(), column), &[&self.uri]).await?;
            }
            let forget = super::pooler::prepare(tx, sql::REPLAY_FORGET_OTHERS).await?;
            tx.execute(&forget, &key).await?;
        }
        Ok(fresh.last().map_or(done, |u| u.position))
    }
}

/// Whether S3 event sequencer `a` comes after `b` (hex; the shorter is
/// right-padded with zeros, then they compare as text).
pub fn sequencer_after(a: &str, b: &str) -> bool {
    let width = a.len().max(b.len());
    let pad = |s: &str| format!("{:0<width$}", s.to_ascii_uppercase());
    pad(a) > pad(b)
}

impl PostgresSink {
    /// Where an object version stands (nothing done if it is not known).
    pub async fn file_state(&self, f: &FileReceipt) -> Result<FileState, SinkError> {
        let mut client = self.pool.get().await.map_err(SinkError::pool)?;
        let key: [&(dyn ToSql + Sync); 4] = [&self.pipeline, &f.bucket, &f.key, &f.version];
        let rows = match &f.replay {
            Some(chain) => {
                super::pooler::query(&mut client, sql::REPLAY_PEEK, &[key[0], key[1], key[2], key[3], chain]).await
            }
            None => super::pooler::query(&mut client, sql::FILE_PEEK, &key).await,
        }
        .map_err(SinkError::of)?;
        Ok(rows
            .first()
            .map_or(FileState::default(), |r| FileState { rows_done: r.get::<_, i64>(0) as u64, done: r.get(1) }))
    }

    /// Drops a part-loaded object version that is no longer its key's
    /// latest: its rows (where rows know their file) and its record, in one
    /// transaction. A version done meanwhile is left alone.
    pub async fn abandon_file(&self, f: &FileReceipt) -> Result<(), SinkError> {
        let mut client = self.pool.get().await.map_err(SinkError::pool)?;
        let tx = match &f.fence {
            Some(fence) => fence.begin(&mut client).await?,
            None => client.transaction().await.map_err(SinkError::of)?,
        };
        let key: [&(dyn ToSql + Sync); 4] = [&self.pipeline, &f.bucket, &f.key, &f.version];
        let dropped = tx.execute(sql::FILE_ABANDON, &key).await.map_err(SinkError::of)?;
        if let (Some(column), 1) = (&f.replace, dropped) {
            tx.execute(&sql::delete_file_rows(self.target(), column), &[&f.uri]).await.map_err(SinkError::of)?;
        }
        tx.commit().await.map_err(SinkError::of)
    }

    /// Object versions of this pipeline left part-loaded (bucket, key,
    /// version, ETag), at most `limit`.
    pub async fn part_loaded(&self, limit: i64) -> Result<Vec<[Option<String>; 4]>, SinkError> {
        let mut client = self.pool.get().await.map_err(SinkError::pool)?;
        let params: [&(dyn ToSql + Sync); 2] = [&self.pipeline, &limit];
        let rows = super::pooler::query(&mut client, sql::FILES_PART_LOADED, &params).await.map_err(SinkError::of)?;
        Ok(rows.iter().map(|r| [r.get(0), r.get(1), r.get(2), r.get(3)]).collect())
    }

    /// Removes the ledger rows of messages sent before `sent_ms` (ms since
    /// the epoch); returns how many rows went.
    pub async fn prune_ledger(&self, sent_ms: i64) -> Result<u64, SinkError> {
        let mut client = self.pool.get().await.map_err(SinkError::pool)?;
        let params: [&(dyn ToSql + Sync); 2] = [&self.pipeline, &sql::ledger_part(sent_ms)];
        super::pooler::execute(&mut client, sql::LEDGER_PRUNE, &params)
            .await
            .map_err(|e| SinkError::Transient { attempts: 1, error: e })
    }
}

#[cfg(test)]
mod tests {
    use super::sequencer_after;

    #[test]
    fn sequencers_compare_right_padded() {
        assert!(sequencer_after("0055AED6DCD90281E6", "0055AED6DCD90281E5"));
        assert!(!sequencer_after("0055AED6DCD90281E5", "0055AED6DCD90281E5"));
        // A longer one with the same start is later: the shorter is padded.
        assert!(sequencer_after("0055AED6DCD90281E501", "0055AED6DCD90281E5"));
        assert!(!sequencer_after("0055AED6DCD90281E4FF", "0055AED6DCD90281E5"));
        assert!(sequencer_after("0055aed6dcd90281e6", "0055AED6DCD90281E5"));
    }
}
