//! A reconcile pass's key ranges (`etl.reconcile_ranges`): the keys under
//! a pipeline's bucket and prefix, cut where earlier passes found about
//! `range_objects` objects, each range passed by whichever host takes its
//! lease. A range counts as passed from the start of its last walk that
//! ended. A range holds the keys after its `after` (exclusive; '' for the
//! first) up to the next range's `after` (inclusive); a pass that listed
//! more than `range_objects` in one range cuts it there, so N hosts list
//! and load a large bucket in parallel, and one host walks it as before.
//!
//! Must not list or load: [`super::reconcile`] walks a range.

use super::Objects;
use crate::sink::lease::Fence;
use crate::sink::{SinkError, pooler};
use tokio_postgres::types::ToSql;

/// Makes the first range (from the start of the keys) if there is none.
const FIRST: &str = "INSERT INTO etl.reconcile_ranges (pipeline, bucket, prefix, after) VALUES ($1, $2, $3, '') \
     ON CONFLICT DO NOTHING";

/// The database's clock, as seconds since the epoch.
const NOW: &str = "SELECT extract(epoch FROM now())::float8";

/// Every range, in key order, with when its last walk began.
const ALL: &str = "SELECT after, extract(epoch FROM passed_at)::float8 FROM etl.reconcile_ranges \
     WHERE pipeline = $1 AND bucket = $2 AND prefix = $3 ORDER BY after COLLATE \"C\"";

/// Marks range `$4` passed by a walk that began at `$6` (seconds since the
/// epoch) and listed `$5` objects.
const PASSED: &str = "UPDATE etl.reconcile_ranges SET passed_at = to_timestamp($6), objects = $5 \
     WHERE pipeline = $1 AND bucket = $2 AND prefix = $3 AND after = $4";

/// A new range from key `$4` on, cut from a range whose walk began at `$5`
/// (so passed then).
const CUT: &str = "INSERT INTO etl.reconcile_ranges (pipeline, bucket, prefix, after, passed_at, objects) \
     VALUES ($1, $2, $3, $4, to_timestamp($5), 0) ON CONFLICT DO NOTHING";

/// One range of keys: after `after`, up to `upto` (inclusive; to the end
/// of the keys if `None`).
#[derive(Debug, Clone, PartialEq)]
pub(super) struct Range {
    pub after: String,
    pub upto: Option<String>,
    /// When the last walk of it that ended began (seconds since the epoch,
    /// the database's clock): what it listed was there by then.
    pub passed_at: Option<f64>,
}

/// A pipeline's ranges under its bucket and prefix.
pub(super) struct Ranges<'a> {
    objects: &'a Objects,
    bucket: String,
    prefix: String,
}

impl<'a> Ranges<'a> {
    pub(super) fn of(objects: &'a Objects) -> Ranges<'a> {
        let config = &objects.loader.config;
        Ranges { objects, bucket: config.bucket.clone().unwrap_or_default(), prefix: config.prefix.clone() }
    }

    fn pool(&self) -> &deadpool_postgres::Pool {
        self.objects.flow.sink.pool()
    }

    fn pipeline(&self) -> &str {
        &self.objects.flow.pipeline.name
    }

    /// The lease name of the range after `after`.
    pub(super) fn lease_name(&self, after: &str) -> String {
        format!("reconcile s3://{}/{} after {after:?}", self.bucket, self.prefix)
    }

    /// Makes the first range if needed; the database's clock now.
    pub(super) async fn start(&self) -> Result<f64, SinkError> {
        let mut client = self.pool().get().await.map_err(SinkError::pool)?;
        let key: [&(dyn ToSql + Sync); 3] = [&self.pipeline(), &self.bucket, &self.prefix];
        pooler::execute(&mut client, FIRST, &key).await.map_err(SinkError::of)?;
        let now = pooler::query(&mut client, NOW, &[]).await.map_err(SinkError::of)?;
        Ok(now.first().map_or(0.0, |r| r.get(0)))
    }

    /// Every range, in key order.
    pub(super) async fn all(&self) -> Result<Vec<Range>, SinkError> {
        let mut client = self.pool().get().await.map_err(SinkError::pool)?;
        let key: [&(dyn ToSql + Sync); 3] = [&self.pipeline(), &self.bucket, &self.prefix];
        let rows = pooler::query(&mut client, ALL, &key).await.map_err(SinkError::of)?;
        let afters: Vec<(String, Option<f64>)> = rows.iter().map(|r| (r.get(0), r.get(1))).collect();
        Ok(afters
            .iter()
            .enumerate()
            .map(|(i, (after, passed_at))| Range {
                after: after.clone(),
                upto: afters.get(i + 1).map(|(next, _)| next.clone()),
                passed_at: *passed_at,
            })
            .collect())
    }

    /// Records a walk of the range after `after`, begun at `began`, that
    /// listed `listed` objects, and cuts the range at `cuts` (keys within
    /// it), under the range's lease: a host whose lease was taken over
    /// records nothing.
    pub(super) async fn passed(
        &self,
        fence: &Fence,
        (after, began): (&str, f64),
        listed: usize,
        cuts: &[String],
    ) -> Result<(), SinkError> {
        let mut client = self.pool().get().await.map_err(SinkError::pool)?;
        let tx = fence.begin(&mut client).await?;
        let (pipeline, listed) = (self.pipeline(), listed as i64);
        let params: [&(dyn ToSql + Sync); 6] = [&pipeline, &self.bucket, &self.prefix, &after, &listed, &began];
        tx.execute(PASSED, &params).await.map_err(SinkError::of)?;
        for cut in cuts {
            let params: [&(dyn ToSql + Sync); 5] = [&pipeline, &self.bucket, &self.prefix, cut, &began];
            tx.execute(CUT, &params).await.map_err(SinkError::of)?;
        }
        tx.commit().await.map_err(SinkError::of)?;
        if !cuts.is_empty() {
            tracing::info!(pipeline, bucket = %self.bucket, after, listed, ranges = cuts.len() + 1,
                "a reconcile range holds many objects: cut, so that several hosts pass it in parallel");
        }
        Ok(())
    }
}

/// Where to cut a range, found as its pass lists it (without holding its
/// listing): after every `size`-th key, never after the last (that part
/// would be empty), so that each part holds about `size`.
pub(super) struct Cutter {
    size: usize,
    pub listed: usize,
    cuts: Vec<String>,
    last: Option<String>,
}

impl Cutter {
    pub(super) fn new(size: u64) -> Cutter {
        Cutter { size: size.max(1) as usize, listed: 0, cuts: Vec::new(), last: None }
    }

    /// The next key listed in the range.
    pub(super) fn saw(&mut self, key: &str) {
        self.listed += 1;
        if self.listed % self.size == 0 {
            self.cuts.push(key.to_string());
        }
        self.last = Some(key.to_string());
    }

    pub(super) fn cuts(mut self) -> Vec<String> {
        if self.cuts.last() == self.last.as_ref() {
            self.cuts.pop();
        }
        self.cuts
    }
}

#[cfg(test)]
mod tests {
    use super::Cutter;

    fn cuts(n: usize, size: u64) -> Vec<String> {
        let mut c = Cutter::new(size);
        for i in 1..=n {
            c.saw(&format!("k{i:02}"));
        }
        c.cuts()
    }

    #[test]
    fn a_range_is_cut_after_every_size_th_key_but_never_after_its_last() {
        assert_eq!(cuts(10, 4), ["k04", "k08"]);
        assert_eq!(cuts(10, 5), ["k05"], "the last key makes no empty range");
        assert_eq!(cuts(10, 10), Vec::<String>::new());
        assert_eq!(cuts(10, 100), Vec::<String>::new());
        assert_eq!(cuts(0, 3), Vec::<String>::new());
    }
}
