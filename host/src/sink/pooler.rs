//! Behind a pooler in transaction mode (`DATABASE_POOLER=transaction`, for
//! PgBouncer's `pool_mode = transaction`), each transaction of a connection
//! may run on another server connection, and nothing of a session lasts
//! from one to the next. The host then:
//!
//! - sends no session settings at connect ([`super::connect`]): PgBouncer
//!   refuses the `options` startup parameter; set the timeouts on the role
//!   (`ALTER ROLE ... SET lock_timeout = '60s'`);
//! - keeps no prepared statement past the transaction it was prepared in
//!   ([`prepare`]: the statement cache is for direct connections), and
//!   drops each before its transaction commits, so its `Close` reaches the
//!   same server connection;
//! - runs a statement that is not part of a transaction in one of its own
//!   ([`query`]): its prepare and its execution must reach one server
//!   connection, and its rows, returned after the commit, hold an unnamed
//!   statement (a named one's `Close` would come after the commit and
//!   could reach another server connection, leaving the name taken there);
//! - takes no session lock: leases ([`super::lease`]) divide work, and
//!   migrations lock with a transaction's lock ([`crate::migrate`]).
//!
//! PgBouncer 1.18 (Debian 12) has no protocol-level prepared statements;
//! this keeps to what it passes through. Must not decide anything else.

use std::sync::OnceLock;
use tokio_postgres::types::ToSql;

static TRANSACTION_POOLER: OnceLock<bool> = OnceLock::new();

/// Sets the mode for the process (once, at the start of a command).
pub fn set(transaction_pooler: bool) {
    let _ = TRANSACTION_POOLER.set(transaction_pooler);
}

/// Whether connections go through a pooler in transaction mode.
pub fn transaction() -> bool {
    TRANSACTION_POOLER.get().copied().unwrap_or(false)
}

/// A statement for use within `tx`: cached on the connection when it is
/// the server's own; behind a transaction pooler, prepared for this
/// transaction alone (drop it before the commit).
pub async fn prepare(
    tx: &deadpool_postgres::Transaction<'_>,
    text: &str,
) -> Result<tokio_postgres::Statement, tokio_postgres::Error> {
    if transaction() { tx.prepare(text).await } else { tx.prepare_cached(text).await }
}

/// One statement outside any transaction of the caller's: as it is on a
/// direct connection; behind a transaction pooler, in a transaction of its
/// own.
pub async fn query(
    client: &mut tokio_postgres::Client,
    text: &str,
    params: &[&(dyn ToSql + Sync)],
) -> Result<Vec<tokio_postgres::Row>, tokio_postgres::Error> {
    query_within(client, text, params, None).await
}

/// [`query`] that the server ends after `statement_timeout`, when given:
/// behind a transaction pooler a session setting does not hold, so it is
/// set for the statement's own transaction.
pub async fn query_within(
    client: &mut tokio_postgres::Client,
    text: &str,
    params: &[&(dyn ToSql + Sync)],
    statement_timeout: Option<std::time::Duration>,
) -> Result<Vec<tokio_postgres::Row>, tokio_postgres::Error> {
    if !transaction() {
        return client.query(text, params).await;
    }
    let tx = client.transaction().await?;
    if let Some(limit) = statement_timeout {
        tx.batch_execute(&format!("SET LOCAL statement_timeout = {}", limit.as_millis())).await?;
    }
    // The parameters' types, from a statement closed at once (within the
    // transaction); the rows come from an unnamed one.
    let prepared = tx.prepare(text).await?;
    let types = prepared.params().to_vec();
    drop(prepared);
    let typed: Vec<(&(dyn ToSql + Sync), tokio_postgres::types::Type)> = params.iter().copied().zip(types).collect();
    let rows = tx.query_typed(text, &typed).await?;
    tx.commit().await?;
    Ok(rows)
}

/// [`query`] of a statement that returns no rows: how many it touched.
pub async fn execute(
    client: &mut tokio_postgres::Client,
    text: &str,
    params: &[&(dyn ToSql + Sync)],
) -> Result<u64, tokio_postgres::Error> {
    if !transaction() {
        return client.execute(text, params).await;
    }
    let tx = client.transaction().await?;
    // `execute` with text prepares a statement and closes it at once:
    // both within the transaction.
    let n = tx.execute(text, params).await?;
    tx.commit().await?;
    Ok(n)
}
