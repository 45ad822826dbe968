//! A batch's rows and dead letters into its open transaction: COPY straight
//! into the target, or into the staging table (numbered, so the later row of
//! a key wins) and then the merge; the dead letters with their payloads; the
//! check that a direct upsert's key is really kept unique.
//!
//! Must not commit, nor look at receipts: [`super::PostgresSink`] orders
//! the steps of a commit.

use super::dead_letter;
use super::error::Attempt;
use super::{PostgresSink, Unit, sql};
use crate::config::MergeMode;
use bytes::Bytes;
use deadpool_postgres::Transaction;
use futures_util::SinkExt;
use tokio_postgres::error::SqlState;

impl PostgresSink {
    /// COPYs the units' rows (there are some) into the staging table
    /// (`staged`) or straight into the target, `batch_id` in the places of a
    /// `batch-id` column.
    pub(super) async fn copy_rows(
        &self,
        tx: &Transaction<'_>,
        fresh: &[&Unit],
        staged: bool,
        batch_id: Option<i64>,
    ) -> Result<(), Attempt> {
        let into = if staged { &self.stage } else { &self.target };
        // A COPY's table is looked up when it runs, not when it is
        // prepared: the statement is prepared (once per connection) before
        // the staging table exists.
        let statement = super::pooler::prepare(tx, &sql::copy_in(into, &self.columns, staged)).await?;
        let copy = if staged {
            // The staging table (made by the connection's first merge, then
            // emptied by every commit) in one flight with the COPY: its
            // CREATE ... IF NOT EXISTS costs no round trip of its own
            // (0.3 ms of the update path's commit, measured: see
            // bench/sink-sql/FINDINGS.md). Sent first, so the COPY meets the
            // table; if it fails, so does the COPY, with its error behind.
            let create = sql::create_staging(&self.stage, &self.target, &self.columns);
            // In the flight's order: a failed CREATE is the error, not the
            // COPY's "transaction aborted" behind it.
            let (create, copy) = tokio::join!(tx.batch_execute(&create), tx.copy_in(&statement));
            create?;
            copy?
        } else {
            tx.copy_in(&statement).await?
        };
        futures_util::pin_mut!(copy);
        let mut buf =
            Vec::with_capacity(fresh.iter().map(|u| u.rows.len() + if staged { u.row_count * 8 } else { 0 }).sum());
        let mut seq = 0;
        for u in fresh {
            let rows = crate::mapping::copy::with_batch_id(&u.rows, &u.batch_id_at, batch_id);
            if staged {
                seq = numbered(&mut buf, &rows, seq);
            } else {
                buf.extend_from_slice(&rows);
            }
        }
        let sent = match copy.send(Bytes::from(buf)).await {
            Ok(()) => copy.finish().await.map(|_| ()),
            Err(e) => Err(e),
        };
        match sent {
            // Upsert straight into the target met a key already there (or
            // twice in the batch): merge instead.
            Err(e) if !staged && self.mode != MergeMode::Append && e.code() == Some(&SqlState::UNIQUE_VIOLATION) => {
                Err(Attempt::Conflict)
            }
            r => Ok(r?),
        }
    }

    /// Inserts the units' dead letters (with their payloads).
    pub(super) async fn insert_dead_letters(
        &self,
        tx: &Transaction<'_>,
        source: &str,
        fresh: &[&Unit],
    ) -> Result<(), Attempt> {
        for u in fresh {
            for d in &u.dead {
                dead_letter::insert(tx, &self.pipeline, source, u, d, self.sealer.as_ref()).await?;
            }
        }
        Ok(())
    }

    /// Whether the target still refuses what is already there. Upsert
    /// straight in holds only while a unique index on the key does: checked
    /// after the COPY (`checked`), under its lock on the table, so the
    /// index cannot go before this commit.
    pub(super) async fn key_is_unique(
        &self,
        tx: &Transaction<'_>,
        checked: bool,
    ) -> Result<bool, tokio_postgres::Error> {
        match &self.mode {
            MergeMode::Upsert { key } if checked => {
                let check = super::pooler::prepare(tx, sql::KEY_IS_UNIQUE).await?;
                Ok(tx.query_one(&check, &[&self.target, key]).await?.get::<_, bool>(0))
            }
            _ => Ok(true),
        }
    }
}

/// Appends `rows` to `out` with each row's 0-based number after `first` as
/// a last column: the staging table's order, where the later row of a key
/// wins.
pub(super) fn numbered(out: &mut Vec<u8>, rows: &[u8], first: u64) -> u64 {
    use std::io::Write;
    let mut n = first;
    for row in rows.split_inclusive(|&b| b == b'\n') {
        out.extend_from_slice(&row[..row.len() - 1]);
        // Formatted in place: no string per row.
        write!(out, "\t{n}\n").expect("writing to a Vec cannot fail");
        n += 1;
    }
    n
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_rows_across_units() {
        let mut out = Vec::new();
        let next = numbered(&mut out, b"a\tb\nc\\nd\te\n", 0);
        assert_eq!(numbered(&mut out, b"f\t\\N\n", next), 3);
        assert_eq!(out, b"a\tb\t0\nc\\nd\te\t1\nf\t\\N\t2\n");
    }
}
