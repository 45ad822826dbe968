//! Schema migrations (`migrations/`, embedded at build time): the host's own
//! tables, schema `etl`, and nothing else. Applied with refinery under a
//! PostgreSQL advisory lock so that several hosts starting at once apply
//! them once.
//!
//! A pipeline's table is its owner's: `host sink ddl` prints one to start
//! from and `host check --db` compares it (`sink::table`). Until issue 24
//! the migrations also made the example pipelines' tables (V2 `user_logins`,
//! V7 `transactions`, V8 `customers`, now in `pipelines/tables.sql`); a
//! database that applied them keeps their rows in refinery's history, and
//! those versions are [`RETIRED`]: known, never run again, never missing.
//!
//! Must not hold DDL itself: every statement is in `migrations/`.

mod embedded {
    refinery::embed_migrations!("../migrations");
}

/// Arbitrary, fixed: the advisory lock key of migrations.
const LOCK_KEY: i64 = 0x6574_6c5f_6d69_67;

/// Versions that made the example pipelines' tables, no longer embedded.
const RETIRED: [i32; 3] = [2, 7, 8];

#[derive(Debug, thiserror::Error)]
pub enum MigrateError {
    #[error(transparent)]
    Connect(crate::sink::connect::ConnectError),
    #[error("migration failed: {0}")]
    Migration(String),
    #[error("database error while migrating: {}", crate::sink::refusal(.0))]
    Database(#[from] tokio_postgres::Error),
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
    let result = apply(&mut client, last).await;
    client.execute("SELECT pg_advisory_unlock($1)", &[&LOCK_KEY]).await?;
    drop(client);
    result
}

async fn apply(client: &mut tokio_postgres::Client, last: Option<i32>) -> Result<Vec<String>, MigrateError> {
    let mut migrations = embedded::migrations::runner().get_migrations().clone();
    migrations.extend(retired_applied(client).await?);
    let mut runner = refinery::Runner::new(&migrations);
    if let Some(v) = last {
        runner = runner.set_target(refinery::Target::Version(v));
    }
    let report = runner.run_async(client).await.map_err(|e| MigrateError::Migration(e.to_string()))?;
    Ok(report.applied_migrations().iter().map(|m| m.to_string()).collect())
}

/// The [`RETIRED`] migrations this database applied, as its history has
/// them: handed to refinery with the embedded ones, they match what was
/// applied and are not run.
async fn retired_applied(client: &mut tokio_postgres::Client) -> Result<Vec<refinery::Migration>, MigrateError> {
    let history = client.query_one("SELECT to_regclass('refinery_schema_history') IS NOT NULL", &[]).await?;
    if !history.get::<_, bool>(0) {
        return Ok(Vec::new());
    }
    let runner = embedded::migrations::runner();
    let applied =
        runner.get_applied_migrations_async(client).await.map_err(|e| MigrateError::Migration(e.to_string()))?;
    Ok(applied.into_iter().filter(|m| RETIRED.contains(&m.version())).collect())
}
