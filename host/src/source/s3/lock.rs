//! Objects are divided between loaders, and hosts, by a PostgreSQL session
//! advisory lock per object of a pipeline: tried, never waited for, and
//! held on a connection of its own for the whole load. An object another
//! loader holds is left to it.
//!
//! Must not load anything.

use super::ObjectRef;
use crate::sink::{SinkError, sql};

/// The advisory lock key of an object of a pipeline.
pub(super) fn lock_key(pipeline: &str, o: &ObjectRef) -> (String, String) {
    (format!("etl.files {pipeline}"), format!("{}/{}", o.bucket, o.key))
}

/// A session advisory lock on one object, on a connection of its own.
/// Dropped without [`ObjectLock::release`] (its unit abandoned or
/// panicking), the connection is closed rather than pooled: closing is
/// what unlocks it, and a pooled one would keep the object busy.
pub(super) struct ObjectLock {
    client: Option<deadpool_postgres::Client>,
    key: (String, String),
}

impl Drop for ObjectLock {
    fn drop(&mut self) {
        if let Some(client) = self.client.take() {
            drop(deadpool_postgres::Object::take(client));
        }
    }
}

impl ObjectLock {
    pub(super) async fn try_take(
        pool: &deadpool_postgres::Pool,
        pipeline: &str,
        o: &ObjectRef,
    ) -> Result<Option<ObjectLock>, SinkError> {
        let client = pool.get().await.map_err(SinkError::pool)?;
        let key = lock_key(pipeline, o);
        let got: bool = client
            .query_one(sql::OBJECT_TRY_LOCK, &[&key.0, &key.1])
            .await
            .map_err(|e| SinkError::Transient { attempts: 1, error: e })?
            .get(0);
        Ok(got.then_some(ObjectLock { client: Some(client), key }))
    }

    /// Unlocks; a connection that cannot unlock is closed (which unlocks).
    pub(super) async fn release(mut self) {
        let client = self.client.take().expect("released once");
        let unlocked = client.query_one(sql::OBJECT_UNLOCK, &[&self.key.0, &self.key.1]).await;
        if unlocked.is_err() {
            drop(deadpool_postgres::Object::take(client));
        }
    }
}
