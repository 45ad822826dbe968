//! Schema migrations (`migrations/`, embedded at build time), applied with
//! refinery under a PostgreSQL advisory lock so that several hosts starting
//! at once apply them once.
//!
//! Must not hold DDL itself: every statement is in `migrations/`.

mod embedded {
    refinery::embed_migrations!("../migrations");
}

/// Arbitrary, fixed: the advisory lock key of migrations.
const LOCK_KEY: i64 = 0x6574_6c5f_6d69_67;

#[derive(Debug, thiserror::Error)]
pub enum MigrateError {
    #[error(transparent)]
    Connect(crate::sink::connect::ConnectError),
    #[error("migration failed: {0}")]
    Migration(String),
    #[error("database error while migrating: {}", crate::sink::refusal(.0))]
    Database(tokio_postgres::Error),
}

/// Not `#[from]`: that would make the error its `source` as well, and its
/// words are in the message already.
impl From<tokio_postgres::Error> for MigrateError {
    fn from(e: tokio_postgres::Error) -> Self {
        MigrateError::Database(e)
    }
}

/// Applies pending migrations; returns the names of those applied.
pub async fn run(database_url: &str) -> Result<Vec<String>, MigrateError> {
    run_to(database_url, None).await
}

/// Applies pending migrations up to version `last` (all when `None`); tests
/// use it to check what a migration does to data written before it.
pub async fn run_to(database_url: &str, last: Option<i32>) -> Result<Vec<String>, MigrateError> {
    let mut client = crate::sink::connect::connect(database_url).await.map_err(MigrateError::Connect)?;
    client.execute("SELECT pg_advisory_lock($1)", &[&LOCK_KEY]).await?;
    let mut runner = embedded::migrations::runner();
    if let Some(v) = last {
        runner = runner.set_target(refinery::Target::Version(v));
    }
    let result = runner.run_async(&mut client).await;
    client.execute("SELECT pg_advisory_unlock($1)", &[&LOCK_KEY]).await?;
    drop(client);
    let report = result.map_err(|e| MigrateError::Migration(e.to_string()))?;
    Ok(report.applied_migrations().iter().map(|m| m.to_string()).collect())
}
