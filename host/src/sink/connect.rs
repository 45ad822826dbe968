//! Connections to PostgreSQL from `DATABASE_URL`, with the limits every
//! connection of the host gets unless the URL sets its own: a connect
//! timeout for all of them, and for the sink's pool the session timeouts
//! that keep a commit from waiting forever (a statement, a lock, a
//! transaction left idle by a host that stalled).
//!
//! Must not run statements: it only makes connections.

use super::SinkError;
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

/// The URL's settings, with the connect timeout.
pub fn config(url: &str) -> Result<tokio_postgres::Config, SinkError> {
    let mut config: tokio_postgres::Config =
        url.parse().map_err(|e: tokio_postgres::Error| SinkError::Url(e.to_string()))?;
    if config.get_connect_timeout().is_none() {
        config.connect_timeout(CONNECT_TIMEOUT);
    }
    Ok(config)
}

/// [`config`] with the sink's session timeouts.
pub fn sink_config(url: &str) -> Result<tokio_postgres::Config, SinkError> {
    let mut config = config(url)?;
    let mut options = config.get_options().unwrap_or_default().to_string();
    for (name, value) in SESSION_TIMEOUTS {
        if !options.contains(name) {
            options.push_str(&format!(" -c {name}={value}"));
        }
    }
    config.options(options.trim());
    Ok(config)
}

/// One connection, its driver spawned.
pub async fn connect(url: &str) -> Result<tokio_postgres::Client, ConnectError> {
    let config = config(url).map_err(ConnectError::Url)?;
    let (client, conn) = config.connect(tokio_postgres::NoTls).await.map_err(ConnectError::Connect)?;
    tokio::spawn(conn);
    Ok(client)
}

#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    #[error(transparent)]
    Url(SinkError),
    #[error("cannot connect to the database: {}", super::refusal(.0))]
    Connect(tokio_postgres::Error),
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timeouts_are_added_unless_the_url_sets_them() {
        let c = sink_config("postgres://u@h/db").unwrap();
        assert_eq!(c.get_connect_timeout(), Some(&CONNECT_TIMEOUT));
        assert_eq!(
            c.get_options(),
            Some("-c statement_timeout=300s -c lock_timeout=60s -c idle_in_transaction_session_timeout=300s")
        );
        let c = sink_config("postgres://u@h/db?connect_timeout=3&options=-c%20lock_timeout%3D5s").unwrap();
        assert_eq!(c.get_connect_timeout(), Some(&Duration::from_secs(3)));
        assert_eq!(
            c.get_options(),
            Some("-c lock_timeout=5s -c statement_timeout=300s -c idle_in_transaction_session_timeout=300s")
        );
    }
}
