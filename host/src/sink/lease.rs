//! Leases on shared work (`etl.leases`, migration V21): an object being
//! loaded, a pipeline's SFTP pass. A lease is taken by one host at a time
//! for [`ttl`], renewed every third of it in a short statement of its own,
//! and released by deleting its row; one not renewed in time (its host
//! killed, stalled or cut off) is taken over by the next host that asks,
//! under a new epoch. Commits made under a lease check its [`Fence`] in
//! their own transaction, so a host whose lease was taken over commits
//! nothing more under it, whatever it still believes.
//!
//! Every statement here is one unnamed statement in one round trip
//! (`query_typed`), or part of its caller's transaction: nothing is session
//! state, so leases hold through a transaction pooler (PgBouncer's
//! `pool_mode = transaction`), where session advisory locks silently do not.
//!
//! Must not load anything: the loaders do, under a lease.

use super::SinkError;
use metrics::{counter, gauge};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Duration;
use tokio_postgres::types::{ToSql, Type};

/// How long a lease lasts without renewal when `HOST_LEASE_S` is not set.
pub const DEFAULT_TTL: Duration = Duration::from_secs(30);

static TTL: OnceLock<Duration> = OnceLock::new();

/// Sets this process's lease time (once, at the start of a command).
pub fn set_ttl(ttl: Duration) {
    let _ = TTL.set(ttl);
}

/// How long a lease lasts without renewal: a host killed holding one
/// leaves its work to others after this long.
pub fn ttl() -> Duration {
    TTL.get().copied().unwrap_or(DEFAULT_TTL)
}

/// This process as a holder: its host name, process id and a random part
/// (a restarted process that got the same pid is another holder).
pub fn holder() -> &'static str {
    static HOLDER: OnceLock<String> = OnceLock::new();
    HOLDER.get_or_init(|| {
        let nonce = rand::random::<u32>();
        format!("{} pid {} {nonce:08x}", crate::status::metrics::host_name(), std::process::id())
    })
}

/// Takes lease `$2` of pipeline `$1` for holder `$3` and `$4` seconds, if
/// it is free or expired; returns the new epoch, the holder it was taken
/// over from (none for a free one) and the database's clock at the take
/// (seconds since the epoch). A live lease is seen without locking its row
/// (the insert would wait for the holder's commit under way); an expired
/// one is locked, so its takeover waits for the commit under way.
const TAKE: &str = "WITH before AS (SELECT holder, expires_at FROM etl.leases WHERE pipeline = $1 AND name = $2) \
     INSERT INTO etl.leases AS l (pipeline, name, holder, epoch, expires_at) \
     SELECT $1, $2, $3, nextval('etl.lease_epochs'), now() + $4 * interval '1 second' \
     WHERE NOT EXISTS (SELECT 1 FROM before WHERE expires_at >= now()) \
     ON CONFLICT (pipeline, name) DO UPDATE SET holder = excluded.holder, epoch = excluded.epoch, \
     taken_at = now(), expires_at = excluded.expires_at WHERE l.expires_at < now() \
     RETURNING l.epoch, (SELECT holder FROM before), extract(epoch FROM now())::float8";

/// Renews the lease (`$1`..`$4`: pipeline, name, holder, epoch) for `$5`
/// seconds; no row if it was taken over.
const RENEW: &str = "UPDATE etl.leases SET expires_at = now() + $5 * interval '1 second' \
     WHERE pipeline = $1 AND name = $2 AND holder = $3 AND epoch = $4 RETURNING epoch";

/// Releases the lease, if it is still this holder's under this epoch.
const RELEASE: &str = "DELETE FROM etl.leases WHERE pipeline = $1 AND name = $2 AND holder = $3 AND epoch = $4";

/// Releases every lease of pipeline `$1` that holder `$2` still has.
const RELEASE_ALL: &str = "DELETE FROM etl.leases WHERE pipeline = $1 AND holder = $2 RETURNING epoch";

/// The fence: the lease's row as it was given, locked against a takeover
/// until the transaction ends.
const FENCE: &str =
    "SELECT epoch FROM etl.leases WHERE pipeline = $1 AND name = $2 AND holder = $3 AND epoch = $4 FOR SHARE";

const KEY_TYPES: [Type; 4] = [Type::TEXT, Type::TEXT, Type::TEXT, Type::INT8];

/// What a commit under a lease checks: the lease is still this holder's
/// under this epoch.
#[derive(Debug, Clone, PartialEq)]
pub struct Fence {
    pub pipeline: String,
    pub name: String,
    pub holder: String,
    pub epoch: i64,
}

impl Fence {
    fn params(&self) -> [(&(dyn ToSql + Sync), Type); 4] {
        let [a, b, c, d] = KEY_TYPES;
        [(&self.pipeline, a), (&self.name, b), (&self.holder, c), (&self.epoch, d)]
    }

    /// Inside the commit's transaction: whether the lease is still ours;
    /// its row is then locked until the transaction ends, so a takeover
    /// waits for this commit.
    pub(crate) async fn holds(&self, tx: &deadpool_postgres::Transaction<'_>) -> Result<bool, tokio_postgres::Error> {
        Ok(tx.query_typed(FENCE, &self.params()).await?.len() == 1)
    }

    /// Begins a transaction on `client` with the fence checked first:
    /// [`SinkError::Fenced`] if the lease was taken over.
    pub async fn begin<'c>(
        &self,
        client: &'c mut deadpool_postgres::Client,
    ) -> Result<deadpool_postgres::Transaction<'c>, SinkError> {
        let tx = client.transaction().await.map_err(SinkError::of)?;
        if !self.holds(&tx).await.map_err(SinkError::of)? {
            return Err(self.refused());
        }
        Ok(tx)
    }

    /// The error of a commit this fence refused.
    pub fn refused(&self) -> SinkError {
        SinkError::Fenced { lease: self.name.clone(), epoch: self.epoch }
    }
}

/// A lease this process holds, renewed by a task of its own until it is
/// released or dropped (dropped, it is released in the background, or
/// expires).
pub struct Lease {
    pool: deadpool_postgres::Pool,
    fence: Fence,
    kind: &'static str,
    /// The database's clock when it was taken (seconds since the epoch).
    taken_at: f64,
    lost: Arc<AtomicBool>,
    renewer: tokio::task::JoinHandle<()>,
    released: bool,
}

impl Lease {
    /// Takes lease `name` of `pipeline` if no other host holds it (or its
    /// holder let it expire); `None` if one does. `kind` labels its
    /// metrics (`object`, `sftp`).
    pub async fn try_take(
        pool: &deadpool_postgres::Pool,
        pipeline: &str,
        name: &str,
        kind: &'static str,
    ) -> Result<Option<Lease>, SinkError> {
        let client = pool.get().await.map_err(SinkError::pool)?;
        let ttl = ttl();
        let holder = holder();
        let secs = ttl.as_secs_f64();
        let params: [(&(dyn ToSql + Sync), Type); 4] =
            [(&pipeline, Type::TEXT), (&name, Type::TEXT), (&holder, Type::TEXT), (&secs, Type::FLOAT8)];
        let rows = client.query_typed(TAKE, &params).await.map_err(SinkError::of)?;
        let Some(row) = rows.first() else { return Ok(None) };
        let (epoch, taken_at): (i64, f64) = (row.get(0), row.get(2));
        took().lock().expect("not poisoned").insert(pipeline.to_string());
        if let Some(before) = row.get::<_, Option<String>>(1) {
            tracing::info!(pipeline, lease = name, epoch, from = %before, "took over a lease its holder let expire");
        }
        let fence = Fence { pipeline: pipeline.into(), name: name.into(), holder: holder.into(), epoch };
        gauge!(crate::status::metrics::LEASES_HELD, "pipeline" => pipeline.to_string(), "kind" => kind).increment(1.0);
        gauge!(crate::status::metrics::LEASE_EPOCH, "pipeline" => pipeline.to_string(), "kind" => kind)
            .set(epoch as f64);
        let lost = Arc::new(AtomicBool::new(false));
        let renewer = tokio::spawn(renew(pool.clone(), fence.clone(), kind, lost.clone(), ttl));
        Ok(Some(Lease { pool: pool.clone(), fence, kind, taken_at, lost, renewer, released: false }))
    }

    /// What commits under this lease check.
    pub fn fence(&self) -> &Fence {
        &self.fence
    }

    /// When it was taken, by the database's clock (seconds since the
    /// epoch).
    pub fn taken_at(&self) -> f64 {
        self.taken_at
    }

    /// Whether a renewal found the lease taken over: work under it stops
    /// (its commits are refused anyway).
    pub fn lost(&self) -> bool {
        self.lost.load(Ordering::Relaxed)
    }

    /// [`Lease::lost`], for work that does not hold the lease itself.
    pub fn watch(&self) -> LeaseWatch {
        LeaseWatch(self.lost.clone())
    }

    /// Releases the lease now (a failure, or no answer within 2 s, leaves
    /// it to expire).
    pub async fn release(mut self) {
        self.released = true;
        self.renewer.abort();
        match tokio::time::timeout(Duration::from_secs(2), release(&self.pool, &self.fence)).await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => {
                tracing::debug!(pipeline = %self.fence.pipeline, lease = %self.fence.name, error = %e, "a lease could not be released; it expires")
            }
            Err(_) => {
                tracing::debug!(pipeline = %self.fence.pipeline, lease = %self.fence.name, "a lease release got no answer; it expires")
            }
        }
    }
}

/// Whether a lease was found taken over, seen from the work done under it.
#[derive(Clone, Debug)]
pub struct LeaseWatch(Arc<AtomicBool>);

impl LeaseWatch {
    pub fn lost(&self) -> bool {
        self.0.load(Ordering::Relaxed)
    }
}

impl Drop for Lease {
    fn drop(&mut self) {
        self.renewer.abort();
        gauge!(crate::status::metrics::LEASES_HELD, "pipeline" => self.fence.pipeline.clone(), "kind" => self.kind)
            .decrement(1.0);
        if !self.released
            && let Ok(runtime) = tokio::runtime::Handle::try_current()
        {
            // Dropped with its work (a unit abandoned, a panic): released
            // in the background; if the process ends first, it expires.
            let (pool, fence) = (self.pool.clone(), self.fence.clone());
            runtime.spawn(async move {
                let _ = release(&pool, &fence).await;
            });
        }
    }
}

async fn release(pool: &deadpool_postgres::Pool, fence: &Fence) -> Result<(), SinkError> {
    let client = pool.get().await.map_err(SinkError::pool)?;
    client.query_typed(RELEASE, &fence.params()).await.map_err(SinkError::of)?;
    Ok(())
}

/// The pipelines this process took a lease of.
fn took() -> &'static std::sync::Mutex<std::collections::HashSet<String>> {
    static TOOK: OnceLock<std::sync::Mutex<std::collections::HashSet<String>>> = OnceLock::new();
    TOOK.get_or_init(Default::default)
}

/// Releases every lease of `pipeline` this process still holds (at the end
/// of a run, after its work was dropped): others take them at once rather
/// than after [`ttl`]. Nothing to do (and no connection asked for) for a
/// pipeline that never took one, such as a queue's.
pub async fn release_all(pool: &deadpool_postgres::Pool, pipeline: &str) -> Result<u64, SinkError> {
    if !took().lock().expect("not poisoned").contains(pipeline) {
        return Ok(0);
    }
    let client = pool.get().await.map_err(SinkError::pool)?;
    let holder = holder();
    let params: [(&(dyn ToSql + Sync), Type); 2] = [(&pipeline, Type::TEXT), (&holder, Type::TEXT)];
    let rows = client.query_typed(RELEASE_ALL, &params).await.map_err(SinkError::of)?;
    Ok(rows.len() as u64)
}

/// Renews every third of `ttl` until aborted, or until the lease is found
/// taken over. A renewal that fails (the database away) is tried at the
/// next round: the fence keeps commits right meanwhile.
async fn renew(pool: deadpool_postgres::Pool, fence: Fence, kind: &'static str, lost: Arc<AtomicBool>, ttl: Duration) {
    let every = ttl / 3;
    let secs = ttl.as_secs_f64();
    let mut renewed_at = tokio::time::Instant::now();
    let mut warned = false;
    loop {
        tokio::time::sleep(every).await;
        let renewed = async {
            let client = pool.get().await.map_err(SinkError::pool)?;
            let [a, b, c, d] = fence.params();
            let params = [a, b, c, d, (&secs as &(dyn ToSql + Sync), Type::FLOAT8)];
            client.query_typed(RENEW, &params).await.map_err(SinkError::of).map(|rows| !rows.is_empty())
        };
        // Each try within its round: one that hangs must not outlast the
        // lease unnoticed.
        let renewed = tokio::time::timeout(every, renewed)
            .await
            .unwrap_or_else(|_| Err(SinkError::Pool(format!("no answer within {} ms", every.as_millis()))));
        match renewed {
            Ok(true) => {
                renewed_at = tokio::time::Instant::now();
                warned = false;
            }
            Ok(false) => {
                lost.store(true, Ordering::Relaxed);
                counter!(crate::status::metrics::LEASES_LOST, "pipeline" => fence.pipeline.clone(), "kind" => kind)
                    .increment(1);
                tracing::warn!(pipeline = %fence.pipeline, lease = %fence.name, epoch = fence.epoch,
                    "this host's lease was taken over by another; its work under it stops and commits nothing more");
                return;
            }
            Err(e) if renewed_at.elapsed() >= ttl && !warned => {
                warned = true;
                tracing::warn!(pipeline = %fence.pipeline, lease = %fence.name, error = %e,
                    "this host's lease could not be renewed for its whole time: another host may take its work over, and then this one's commits are refused");
            }
            Err(e) => {
                tracing::debug!(pipeline = %fence.pipeline, lease = %fence.name, error = %e, "a lease renewal failed; tried again")
            }
        }
    }
}
