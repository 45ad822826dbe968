//! How the sink fails, and how PostgreSQL's errors are told apart: which
//! may go away by themselves, which are about one row's data, and what of
//! the server's message may be shown (never record values).

use tokio_postgres::error::SqlState;

#[derive(Debug, thiserror::Error)]
pub enum SinkError {
    #[error("DATABASE_URL is not a valid connection string: {0}")]
    Url(String),
    #[error("database unreachable or failing after {attempts} attempts (retryable): {}", refusal(error))]
    Transient { attempts: u32, error: tokio_postgres::Error },
    #[error("database refused the batch (check the table and the pipeline's [sink]): {}", refusal(.0))]
    Permanent(tokio_postgres::Error),
    #[error("database connection pool: {0}")]
    Pool(String),
    #[error("database stalled: {attempts} commit attempts got no answer within {} s (retryable)", super::connect::ATTEMPT_TIMEOUT.as_secs())]
    Stalled { attempts: u32 },
    #[error("{0}")]
    OutOfStep(String),
    /// An object version older than one loaded before (by the S3 event
    /// sequencer): nothing of it is loaded.
    #[error("a newer version of the object was loaded before; this one is skipped")]
    Superseded,
    /// The lease this work was done under was taken over by another host
    /// (its epoch is no longer the lease's): nothing of it committed.
    #[error("lease `{lease}` (epoch {epoch}) was taken over by another host; this one commits nothing more under it")]
    Fenced { lease: String, epoch: i64 },
    /// Retryable: the rest of its batch committed; it comes back until its
    /// receive count passes `max_receives`, and then it is a dead letter
    /// that names only that.
    #[error(
        "message {message_id}: the database refuses it even as a dead letter without its rows: {reason}; it stays unacknowledged"
    )]
    Unstorable { message_id: String, reason: String },
    /// A commit that must be whole (a replay) has a row the database
    /// refuses: nothing of it committed.
    #[error("database refused the row: {reason}")]
    Refused { reason: String },
    /// The failure of a transaction that held several batches (group
    /// commit): each of them is given it.
    #[error("{0}")]
    Shared(std::sync::Arc<SinkError>),
    /// The transaction that was to hold this batch was abandoned before it
    /// ended (its committer stopped): nothing of the batch was
    /// acknowledged, it comes back.
    #[error("the commit holding this batch was abandoned before it ended; its messages come back")]
    Abandoned,
}

impl SinkError {
    /// Whether trying again later may succeed.
    pub fn retryable(&self) -> bool {
        matches!(
            self,
            SinkError::Transient { .. }
                | SinkError::Pool(_)
                | SinkError::Stalled { .. }
                | SinkError::OutOfStep(_)
                | SinkError::Unstorable { .. }
                | SinkError::Abandoned
        ) || matches!(self, SinkError::Shared(e) if e.retryable())
    }

    /// Whether the database did not answer (unreachable, restarting, out
    /// of connections): nothing is wrong with the batch, and it commits
    /// once the database is back.
    pub fn unavailable(&self) -> bool {
        match self {
            SinkError::Pool(_) | SinkError::Stalled { .. } => true,
            SinkError::Shared(e) => e.unavailable(),
            // Not a timeout, a deadlock or a serialization failure: the
            // server answered those, and the batch itself may be why.
            SinkError::Transient { error, .. } => error.code().is_none_or(|c| {
                let c = c.code();
                c.starts_with("08") || c.starts_with("53") || c.starts_with("57P")
            }),
            _ => false,
        }
    }

    /// A failed statement outside a batch's commit: transient or not as
    /// the server says, after one attempt.
    pub fn of(e: tokio_postgres::Error) -> SinkError {
        if transient(&e) { SinkError::Transient { attempts: 1, error: e } } else { SinkError::Permanent(e) }
    }

    /// A connection that could not be had from the pool.
    pub fn pool(e: deadpool_postgres::PoolError) -> SinkError {
        match e {
            // Its own text would be "db error": the server's words instead.
            deadpool_postgres::PoolError::Backend(e) => SinkError::Pool(refusal(&e)),
            e => SinkError::Pool(e.to_string()),
        }
    }
}

/// What PostgreSQL said, with the column it names and its SQLSTATE as a
/// condition name, and without record values: messages of class 22 (data
/// exceptions) quote the value that failed (`invalid input syntax for type
/// integer: "..."`), and those quotes are emptied. Other classes quote
/// names of tables, columns and constraints, which stay. The DETAIL, which
/// holds key values, is never included (nor the server's error as a cause:
/// its text holds the DETAIL). For example `column "id": invalid input
/// syntax for type integer: "…" (invalid_text_representation, SQLSTATE
/// 22P02)`. An error the server did not send (refused, reset, TLS) comes
/// with its causes.
pub fn refusal(e: &tokio_postgres::Error) -> String {
    let Some(db) = e.as_db_error() else { return crate::report(e) };
    let code = db.code().code();
    let message = if code.starts_with("22") { without_quoted(db.message()) } else { db.message().to_string() };
    let at = match column(db) {
        Some(c) if !message.contains(&format!("\"{c}\"")) => format!("column \"{c}\": "),
        _ => String::new(),
    };
    let name = super::sqlstate::name(code).map(|n| format!("{n}, ")).unwrap_or_default();
    format!("{at}{message} ({name}SQLSTATE {code})")
}

/// The column a refusal is about: the server's own field (a not-null or
/// check violation), else COPY's context, `COPY items, line 3, column id:
/// "..."` (whose value is left out).
pub fn column(db: &tokio_postgres::error::DbError) -> Option<String> {
    if let Some(c) = db.column() {
        return Some(c.to_string());
    }
    copy_column(db.where_()?)
}

/// The column of COPY's context line (the first line of `where_`).
fn copy_column(where_: &str) -> Option<String> {
    let line = where_.lines().next()?;
    if !line.starts_with("COPY ") {
        return None;
    }
    let (_, rest) = line.split_once(", column ")?;
    // `: "value"` follows the name when the value is known.
    let name = rest.split_once(": \"").map_or(rest, |(name, _)| name);
    Some(name.to_string())
}

/// A database error's SQLSTATE in words: `invalid_text_representation
/// (22P02)`; `None` for an error the server did not send.
pub fn condition(e: &tokio_postgres::Error) -> Option<String> {
    e.code().map(|c| super::sqlstate::describe(c.code()))
}

/// `text` with every double-quoted part replaced by `"…"`.
fn without_quoted(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut parts = text.split('"');
    out.push_str(parts.next().unwrap_or_default());
    let mut inside = true;
    for part in parts {
        if inside {
            out.push_str("\"…\"");
        } else {
            out.push_str(part);
        }
        inside = !inside;
    }
    out
}

/// Whether an error may go away by itself (connection lost, server
/// restarting, serialization failure, deadlock, out of resources, a
/// statement or lock wait that timed out).
pub fn transient(e: &tokio_postgres::Error) -> bool {
    let Some(code) = e.code() else { return true };
    let c = code.code();
    c.starts_with("08")
        || c.starts_with("53")
        || c.starts_with("57P")
        || *code == SqlState::T_R_SERIALIZATION_FAILURE
        || *code == SqlState::T_R_DEADLOCK_DETECTED
        || *code == SqlState::QUERY_CANCELED
        || *code == SqlState::LOCK_NOT_AVAILABLE
        || *code == SqlState::IDLE_IN_TRANSACTION_SESSION_TIMEOUT
}

/// Whether an error is about the data of some row (wrong type, too long,
/// constraint violated): the offending message is a dead letter.
pub fn data_error(e: &tokio_postgres::Error) -> bool {
    e.code().is_some_and(|c| c.code().starts_with("22") || c.code().starts_with("23"))
}

/// Why one try at a batch's transaction did not commit.
pub(crate) enum Attempt {
    /// These units were committed before.
    Committed(Vec<String>),
    /// An object's rows do not follow its committed ones.
    OutOfStep(String),
    /// Rows COPYed straight into an upsert's target met a key already
    /// there or twice in the batch, or the target has no unique index on
    /// the key: the batch goes through staging and the merge (which
    /// without that index fails, naming it). A batch of new keys is loaded
    /// the same either way, at the speed of a plain COPY into the keyed
    /// table.
    Conflict,
    /// No answer within [`super::connect::ATTEMPT_TIMEOUT`].
    Stalled,
    /// A newer version of the object was loaded before.
    Superseded,
    /// The lease of the work was taken over (see [`SinkError::Fenced`]).
    Fenced(SinkError),
    Db(tokio_postgres::Error),
}

impl From<tokio_postgres::Error> for Attempt {
    fn from(e: tokio_postgres::Error) -> Self {
        Attempt::Db(e)
    }
}

/// Why a batch (after its retries) did not commit.
pub(crate) enum Failure {
    /// A row's data: the batch is split to find its unit.
    Data(tokio_postgres::Error),
    Other(SinkError),
}

#[cfg(test)]
mod tests {
    #[test]
    fn quoted_values_are_emptied() {
        assert_eq!(
            super::without_quoted("invalid input syntax for type integer: \"three\""),
            "invalid input syntax for type integer: \"…\""
        );
        assert_eq!(super::without_quoted("value \"99999999999\" is out of range"), "value \"…\" is out of range");
        assert_eq!(
            super::without_quoted("value too long for type character varying(8)"),
            "value too long for type character varying(8)"
        );
    }

    #[test]
    fn the_column_of_a_copy_context_comes_without_its_value() {
        let column = super::copy_column;
        assert_eq!(column("COPY items, line 3, column id: \"three\"").as_deref(), Some("id"));
        assert_eq!(column("COPY items, line 1, column name").as_deref(), Some("name"));
        assert_eq!(column("COPY items, line 1, column Contact Phone: \"a: \"b\"\"").as_deref(), Some("Contact Phone"));
        assert_eq!(column("COPY items, line 2: \"1\tx\"").as_deref(), None);
        assert_eq!(column("SQL statement \"INSERT ...\"").as_deref(), None);
    }
}
