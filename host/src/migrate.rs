//! Schema migrations (`migrations/`, embedded at build time): the host's own
//! tables, schema `etl`, and nothing else. Applied with refinery while a
//! second connection holds a PostgreSQL advisory lock in an open
//! transaction, so that several hosts starting at once apply them once: a
//! transaction's lock, unlike a session's, holds through a pooler in
//! transaction mode (the transaction keeps its server connection). Hosts
//! waiting for it try it between short waits, holding no connection of
//! the pooler's meanwhile.
//!
//! A pipeline's table is its owner's: `host sink ddl` prints one to start
//! from and `host check --db` compares it (`sink::table`). Until issue 24
//! the migrations also made the example pipelines' tables (V2 `user_logins`,
//! V7 `transactions`, V8 `customers`, now in `pipelines/tables.sql`); a
//! database that applied them keeps their rows in refinery's history, and
//! those versions are [`RETIRED`]: known, never run again, never missing.
//!
//! Must not hold DDL itself: every statement is in `migrations/`.

use std::time::Duration;

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
    let mut holder = crate::sink::connect::connect(database_url).await.map_err(MigrateError::Connect)?;
    // Tried, not waited for, between short waits: a host waiting behind a
    // pooler must not hold one of its few server connections meanwhile
    // (the one migrating could need it).
    let mut tries = 0u32;
    let lock = loop {
        let tx = holder.transaction().await?;
        tx.batch_execute("SET LOCAL idle_in_transaction_session_timeout = 0").await?;
        let key: [(&(dyn tokio_postgres::types::ToSql + Sync), tokio_postgres::types::Type); 1] =
            [(&LOCK_KEY, tokio_postgres::types::Type::INT8)];
        let got = tx.query_typed("SELECT pg_try_advisory_xact_lock($1)", &key).await?;
        if got.first().is_some_and(|r| r.get::<_, bool>(0)) {
            break tx;
        }
        tx.rollback().await?;
        if tries == 0 {
            tracing::info!("another host applies migrations; waiting for it");
        }
        tries += 1;
        tokio::time::sleep(crate::backoff::doubling(Duration::from_millis(100), tries, Duration::from_secs(2))).await;
    };
    let mut client = crate::sink::connect::connect(database_url).await.map_err(MigrateError::Connect)?;
    let result = apply(&mut client, last).await;
    drop(client);
    lock.commit().await?;
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
    let history =
        crate::sink::pooler::query(client, "SELECT to_regclass('refinery_schema_history') IS NOT NULL", &[]).await?;
    if !history.first().is_some_and(|r| r.get::<_, bool>(0)) {
        return Ok(Vec::new());
    }
    let runner = embedded::migrations::runner();
    let applied =
        runner.get_applied_migrations_async(client).await.map_err(|e| MigrateError::Migration(e.to_string()))?;
    Ok(applied.into_iter().filter(|m| RETIRED.contains(&m.version())).collect())
}

/// The `etl` schema is missing from the database, or lacks what this host
/// needs: the migrations were not applied there (or not all of them).
#[derive(Debug, thiserror::Error)]
#[error("{}", self.text())]
pub struct NotMigrated {
    /// `database "NAME" at HOST:PORT`.
    pub database: String,
    pub lacking: Lacking,
    /// The pipeline file the command was given, for the command to run.
    pub pipeline: std::path::PathBuf,
}

/// What a statement found missing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Lacking {
    /// The schema itself (SQLSTATE 3F000).
    Schema,
    /// A relation of it (42P01), as the server named it: `etl.dead_letters`.
    Relation(String),
    /// A column a later migration adds (42703), as the server put it.
    Column(String),
}

impl NotMigrated {
    fn text(&self) -> String {
        let (database, run) = (&self.database, format!("`host migrate {}`", self.pipeline.display()));
        match &self.lacking {
            Lacking::Schema => format!("the etl schema is missing in {database}: run {run} to create it"),
            Lacking::Relation(r) => {
                format!("the etl schema is missing in {database} (there is no {r}): run {run} to create it")
            }
            Lacking::Column(c) => {
                format!("the etl schema in {database} is older than this host ({c}): run {run} to bring it up to date")
            }
        }
    }
}

/// What `e` says is missing when it is the `etl` schema or one of its
/// relations: SQLSTATE 3F000 (no such schema) naming `etl`, or 42P01 (no
/// such relation) naming an `etl.` one. With `etl_only` (the statement
/// reads only the `etl` tables) a missing column (42703) counts too: a
/// migration that adds it was not applied.
pub fn lacking(e: &tokio_postgres::Error, etl_only: bool) -> Option<Lacking> {
    let db = e.as_db_error()?;
    let message = db.message();
    let quoted = message.split('"').nth(1).unwrap_or_default();
    match db.code().code() {
        "3F000" if quoted == "etl" => Some(Lacking::Schema),
        "42P01" if quoted.starts_with("etl.") => Some(Lacking::Relation(quoted.to_string())),
        "42703" if etl_only => Some(Lacking::Column(message.to_string())),
        _ => None,
    }
}

/// [`NotMigrated`] when `e` is one (see [`lacking`]): the database of
/// `database_url`, and `pipeline` for the command to run.
pub fn not_migrated(
    e: &tokio_postgres::Error,
    etl_only: bool,
    database_url: &str,
    pipeline: &std::path::Path,
) -> Option<NotMigrated> {
    Some(NotMigrated {
        lacking: lacking(e, etl_only)?,
        database: crate::sink::connect::database(database_url),
        pipeline: pipeline.to_path_buf(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_missing_schema_says_which_database_and_what_to_run() {
        let e = |lacking| NotMigrated {
            database: "database \"etl\" at 127.0.0.1:5432".into(),
            lacking,
            pipeline: "pipelines/logins.toml".into(),
        };
        assert_eq!(
            e(Lacking::Schema).to_string(),
            "the etl schema is missing in database \"etl\" at 127.0.0.1:5432: \
             run `host migrate pipelines/logins.toml` to create it"
        );
        assert_eq!(
            e(Lacking::Relation("etl.dead_letters".into())).to_string(),
            "the etl schema is missing in database \"etl\" at 127.0.0.1:5432 (there is no etl.dead_letters): \
             run `host migrate pipelines/logins.toml` to create it"
        );
        assert_eq!(
            e(Lacking::Column("column d.discarded_at does not exist".into())).to_string(),
            "the etl schema in database \"etl\" at 127.0.0.1:5432 is older than this host \
             (column d.discarded_at does not exist): run `host migrate pipelines/logins.toml` to bring it up to date"
        );
    }
}
