//! Objects are divided between loaders, and hosts, by a lease per object
//! key of a pipeline ([`crate::sink::lease`]): tried, never waited for,
//! renewed for the whole load, and checked inside every commit of the
//! object's rows, so a loader whose lease was taken over (it stalled past
//! the lease's time) commits nothing more. An object another loader holds
//! is left to it. Per key, not per version: loaders of one key take turns.
//!
//! Must not load anything.

use super::ObjectRef;
use crate::sink::SinkError;
use crate::sink::lease::Lease;

/// The lease name of an object.
fn name(o: &ObjectRef) -> String {
    format!("object {}/{}", o.bucket, o.key)
}

/// The object's lease, or `None` if another loader holds it.
pub(super) async fn try_take(
    pool: &deadpool_postgres::Pool,
    pipeline: &str,
    o: &ObjectRef,
) -> Result<Option<Lease>, SinkError> {
    Lease::try_take(pool, pipeline, &name(o), "object").await
}
