//! Connections to PostgreSQL from `DATABASE_URL`, with the limits every
//! connection of the host gets unless the URL sets its own: a connect
//! timeout for all of them, and for the sink's pool the session timeouts
//! that keep a commit from waiting forever (a statement, a lock, a
//! transaction left idle by a host that stalled).
//!
//! Must not run statements: it only makes connections (the one kept for
//! occasional queries runs them through [`super::pooler::query`]).

use super::SinkError;
use super::tls::Tls;
use std::time::Duration;

/// How long one connection attempt may take (`connect_timeout` in the URL
/// overrides it).
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// The sink's session settings, each unless `options` in the URL sets it:
/// a statement (a commit's COPY included) may run 5 minutes, wait for a
/// lock 1 minute, and a transaction left idle is ended after 5 minutes.
pub const SESSION_TIMEOUTS: [(&str, &str); 3] =
    [("statement_timeout", "300s"), ("lock_timeout", "60s"), ("idle_in_transaction_session_timeout", "300s")];

/// How long one commit attempt may take on the client's side before its
/// connection is dropped: a connection that stalls (a network partition
/// that sends no reset) must not hold a worker for ever.
pub const ATTEMPT_TIMEOUT: Duration = Duration::from_secs(330);

/// TCP keepalives of every connection, each unless the URL sets its own:
/// the first probe after 30 s of silence, then every 10 s, and after 3
/// unanswered the connection is closed. A connection whose server is gone
/// without a word (a partition, a host that died) is then found closed in
/// about a minute, instead of the system's two hours.
pub const KEEPALIVES: (Duration, Duration, u32) = (Duration::from_secs(30), Duration::from_secs(10), 3);

/// tokio-postgres's keepalive idle time when none is set.
const KEEPALIVES_IDLE_DEFAULT: Duration = Duration::from_secs(2 * 60 * 60);

/// The URL's settings, with the connect timeout and keepalives, and its
/// TLS settings (see [`super::tls`]).
pub fn config(url: &str) -> Result<(tokio_postgres::Config, Tls), SinkError> {
    let (rest, tls) = super::tls::split(url).map_err(SinkError::Url)?;
    let mut config: tokio_postgres::Config =
        rest.parse().map_err(|e: tokio_postgres::Error| SinkError::Url(crate::report(&e)))?;
    if config.get_connect_timeout().is_none() {
        config.connect_timeout(CONNECT_TIMEOUT);
    }
    let (idle, interval, retries) = KEEPALIVES;
    if config.get_keepalives_idle() == KEEPALIVES_IDLE_DEFAULT {
        config.keepalives_idle(idle);
    }
    if config.get_keepalives_interval().is_none() {
        config.keepalives_interval(interval);
    }
    if config.get_keepalives_retries().is_none() {
        config.keepalives_retries(retries);
    }
    config.ssl_mode(tls.ssl_mode());
    Ok((config, tls))
}

/// [`config`] with the sink's session timeouts.
pub fn sink_config(url: &str) -> Result<(tokio_postgres::Config, Tls), SinkError> {
    let (mut config, tls) = config(url)?;
    with_settings(&mut config, &SESSION_TIMEOUTS);
    Ok((config, tls))
}

/// Adds session `settings` (name, value) to `config`'s options, each
/// unless the options set it already.
/// Behind a transaction pooler none are added (see [`super::pooler`]).
fn with_settings(config: &mut tokio_postgres::Config, settings: &[(&str, &str)]) {
    if super::pooler::transaction() {
        return;
    }
    let mut options = config.get_options().unwrap_or_default().to_string();
    for (name, value) in settings {
        if !options.contains(name) {
            options.push_str(&format!(" -c {name}={value}"));
        }
    }
    config.options(options.trim());
}

/// `database "NAME" at HOST:PORT` of `url`, for messages (never its
/// user or password).
pub fn database(url: &str) -> String {
    match config(url) {
        Ok((c, _)) => {
            // Without a name, PostgreSQL takes the user's.
            let name = c.get_dbname().or(c.get_user()).unwrap_or("postgres");
            format!("database \"{name}\" at {}", where_to(&c))
        }
        Err(_) => "the database of DATABASE_URL".into(),
    }
}

/// One connection, its driver spawned.
pub async fn connect(url: &str) -> Result<tokio_postgres::Client, ConnectError> {
    connect_with(url, &[]).await
}

/// [`connect`] with session `settings` (see [`with_settings`]).
async fn connect_with(url: &str, settings: &[(&str, &str)]) -> Result<tokio_postgres::Client, ConnectError> {
    let (mut config, tls) = config(url).map_err(ConnectError::Url)?;
    with_settings(&mut config, settings);
    let connector = tls.connector().map_err(ConnectError::Tls)?;
    match config.connect(connector).await {
        Ok((client, conn)) => {
            tokio::spawn(conn);
            Ok(client)
        }
        Err(error) => Err(ConnectError::Connect { at: where_to(&config), mode: tls.mode.name(), error }),
    }
}

/// One connection kept for occasional queries (a readiness probe, the
/// status page), made when first needed and again after it was lost: a
/// `deadpool` pool of one, whose connection is checked (an empty query,
/// within the sink's recycle bound) before each use.
pub struct Kept {
    pool: Result<deadpool_postgres::Pool, String>,
    /// Set for each statement behind a transaction pooler, where the
    /// session's setting does not hold.
    statement_timeout: Option<Duration>,
}

impl Kept {
    pub fn new(url: &str) -> Kept {
        Kept::with_settings(url, &[], None)
    }

    /// [`Kept::new`] whose server ends any statement after `limit` (unless
    /// the URL sets `statement_timeout`): a query the caller stopped
    /// waiting for does not go on working in the database.
    pub fn with_statement_timeout(url: &str, limit: Duration) -> Kept {
        Kept::with_settings(url, &[("statement_timeout", &format!("{}ms", limit.as_millis()))], Some(limit))
    }

    fn with_settings(url: &str, settings: &[(&str, &str)], statement_timeout: Option<Duration>) -> Kept {
        let pool = config(url).map_err(|e| e.to_string()).and_then(|(mut config, tls)| {
            with_settings(&mut config, settings);
            super::pool_of(config, tls, 1).map_err(|e| e.to_string())
        });
        Kept { pool, statement_timeout }
    }

    /// `sql` with `params` on the kept connection, connecting first when
    /// needed, all within `limit`.
    pub async fn query(
        &self,
        sql: &str,
        params: &[&(dyn tokio_postgres::types::ToSql + Sync)],
        limit: Duration,
    ) -> Result<Vec<tokio_postgres::Row>, String> {
        let pool = self.pool.as_ref().map_err(Clone::clone)?;
        let work = async {
            let mut client = match pool.get().await {
                Ok(c) => c,
                Err(deadpool_postgres::PoolError::Backend(e)) => return Err(super::refusal(&e)),
                Err(e) => return Err(SinkError::pool(e).to_string()),
            };
            let result = super::pooler::query_within(&mut client, sql, params, self.statement_timeout).await;
            if result.is_err() {
                // Not back in the pool: a new one is made next time.
                drop(deadpool_postgres::Object::take(client));
            }
            result.map_err(|e| super::refusal(&e))
        };
        // A query cut off by the limit leaves its connection to be checked
        // (and dropped if it does not answer) before its next use.
        tokio::time::timeout(limit, work)
            .await
            .unwrap_or_else(|_| Err(format!("the database does not answer within {} s", limit.as_secs())))
    }
}

/// Connects once, to find what no retry mends (a certificate refused, TLS
/// required and not offered, a password or database refused, a bad URL)
/// before a run starts; a database that does not answer yet is only
/// warned about when the run `waits` for it (a run that does not, such as
/// `--once`, fails at once instead).
pub async fn check(url: &str, waits: bool) -> Result<(), ConnectError> {
    match connect(url).await {
        Ok(_) => Ok(()),
        Err(e) if e.lasting() || !waits => Err(e),
        Err(e) => {
            tracing::warn!(error = %e, "the database does not answer yet; the run waits for it");
            Ok(())
        }
    }
}

/// `host:port` of each host the config names.
fn where_to(config: &tokio_postgres::Config) -> String {
    let ports = config.get_ports();
    config
        .get_hosts()
        .iter()
        .enumerate()
        .map(|(i, h)| {
            let port = ports.get(i).or(ports.first()).copied().unwrap_or(5432);
            match h {
                tokio_postgres::config::Host::Tcp(name) => format!("{name}:{port}"),
                tokio_postgres::config::Host::Unix(path) => format!("{}:{port}", path.display()),
            }
        })
        .collect::<Vec<_>>()
        .join(",")
}

#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    #[error(transparent)]
    Url(SinkError),
    #[error("DATABASE_URL: {0}")]
    Tls(String),
    /// `error` is not a `source`: its causes are in the message already
    /// (a TLS failure's reason is in its causes: "invalid peer
    /// certificate: UnknownIssuer").
    #[error("cannot connect to the database at {at} (sslmode={mode}): {}", super::refusal(.error))]
    Connect { at: String, mode: &'static str, error: tokio_postgres::Error },
}

impl ConnectError {
    /// Whether trying again cannot help.
    pub fn lasting(&self) -> bool {
        match self {
            ConnectError::Url(_) | ConnectError::Tls(_) => true,
            ConnectError::Connect { error, .. } => {
                let code = error.as_db_error().map(|d| d.code().code().to_string()).unwrap_or_default();
                // 28: authorization refused; 3D000: no such database.
                // A certificate refused, or TLS required and not offered (a
                // connection reset during the handshake may mend).
                let text = super::refusal(error);
                code.starts_with("28")
                    || code == "3D000"
                    || text.contains("certificate")
                    || text.contains("does not support TLS")
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keepalives_are_on_unless_the_url_sets_its_own() {
        let (c, _) = config("postgres://u@h/db").unwrap();
        let (idle, interval, retries) = KEEPALIVES;
        assert!(c.get_keepalives());
        assert_eq!(
            (c.get_keepalives_idle(), c.get_keepalives_interval(), c.get_keepalives_retries()),
            (idle, Some(interval), Some(retries))
        );
        let (c, _) = sink_config("postgres://u@h/db?keepalives_idle=5&keepalives_retries=9").unwrap();
        assert_eq!(
            (c.get_keepalives_idle(), c.get_keepalives_interval(), c.get_keepalives_retries()),
            (Duration::from_secs(5), Some(interval), Some(9))
        );
    }

    #[test]
    fn timeouts_are_added_unless_the_url_sets_them() {
        let (c, _) = sink_config("postgres://u@h/db").unwrap();
        assert_eq!(c.get_connect_timeout(), Some(&CONNECT_TIMEOUT));
        assert_eq!(
            c.get_options(),
            Some("-c statement_timeout=300s -c lock_timeout=60s -c idle_in_transaction_session_timeout=300s")
        );
        let (c, _) = sink_config("postgres://u@h/db?connect_timeout=3&options=-c%20lock_timeout%3D5s").unwrap();
        assert_eq!(c.get_connect_timeout(), Some(&Duration::from_secs(3)));
        assert_eq!(
            c.get_options(),
            Some("-c lock_timeout=5s -c statement_timeout=300s -c idle_in_transaction_session_timeout=300s")
        );
    }

    #[test]
    fn a_database_is_named_without_its_credentials() {
        assert_eq!(database("postgres://u:secret@h:6543/etl"), "database \"etl\" at h:6543");
        assert_eq!(database("postgres://u:secret@h"), "database \"u\" at h:5432", "PostgreSQL's default");
        assert_eq!(database("host=/run/pg dbname=x"), "database \"x\" at /run/pg:5432");
        assert_eq!(database("not a url"), "the database of DATABASE_URL");
    }
}
