//! One host at a time runs a pipeline's SFTP pass: a PostgreSQL session
//! advisory lock per pipeline, tried, never waited for, and held on a
//! connection of its own for the pass.
//!
//! Must not copy anything: [`super::pass`] does, under it.

use crate::sink::{SinkError, sql};

/// The SFTP pass lock of one pipeline, on a connection of its own.
/// Dropped without [`PassLock::release`] (the pass's future dropped
/// mid-pass, or panicking), the connection is closed rather than pooled:
/// closing is what unlocks it, and a pooled one would keep every later
/// pass of the pipeline out.
pub struct PassLock {
    client: Option<deadpool_postgres::Client>,
    pipeline: String,
}

impl Drop for PassLock {
    fn drop(&mut self) {
        if let Some(client) = self.client.take() {
            drop(deadpool_postgres::Object::take(client));
        }
    }
}

impl PassLock {
    /// The lock, or `None` if another session holds it.
    pub async fn try_take(pool: &deadpool_postgres::Pool, pipeline: &str) -> Result<Option<PassLock>, SinkError> {
        let client = pool.get().await.map_err(SinkError::pool)?;
        let got: bool = client.query_one(sql::SFTP_TRY_LOCK, &[&pipeline]).await.map_err(SinkError::of)?.get(0);
        Ok(got.then(|| PassLock { client: Some(client), pipeline: pipeline.to_string() }))
    }

    /// Unlocks; a connection that cannot unlock is closed (which unlocks).
    pub async fn release(mut self) {
        let client = self.client.take().expect("released once");
        if client.query_one(sql::SFTP_UNLOCK, &[&self.pipeline]).await.is_err() {
            drop(deadpool_postgres::Object::take(client));
        }
    }
}
