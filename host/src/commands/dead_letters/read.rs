//! Dead letters as the commands read them: everything about each (never
//! its payload unless asked), a page at a time, and where each came from.
//!
//! Must not print or log: the commands print what they read.

use super::filter::{Filter, Param, refs};
use crate::sink::dead_letter::Sealer;
use crate::source::dead_letters::kept::Kept;

/// Dead letters read at a time by `export` (and with their payloads).
pub const PAGE: i64 = 500;

/// A time as the commands show it: RFC 3339 in UTC, to the microsecond.
macro_rules! utc {
    ($column:literal) => {
        concat!("to_char(", $column, " AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.US\"Z\"')")
    };
}

/// The columns read: first those [`Kept::open`] takes (the payload only
/// when asked, as `$PAYLOAD`), then the rest of the dead letter.
const COLUMNS: &str = concat!(
    "d.id, d.message_id, d.source, coalesce(p.form, 'record'), p.key_id, p.nonce, $PAYLOAD, \
     coalesce(p.bound, false), ",
    utc!("d.failed_at"),
    ", d.stage, d.step, d.plugin, d.plugin_digest, d.reason, d.received_count, ",
    utc!("d.replayed_at"),
    ", d.replay_result, d.replay_attempts, ",
    utc!("d.last_replay_at"),
    ", d.last_replay_reason, ",
    utc!("d.discarded_at"),
    ", d.discarded_by, octet_length(p.payload)"
);

/// The statement reading `pipeline`'s dead letters that `filter` means, in
/// id order after `$2`, at most `$3`; their payloads with `payload`.
pub fn select_sql(filter: &Filter, payload: bool) -> (String, Vec<Param>) {
    let (condition, params) = filter.sql(4);
    let columns = COLUMNS.replace("$PAYLOAD", if payload { "coalesce(p.payload, '')" } else { "NULL::bytea" });
    let sql = format!(
        "SELECT {columns} FROM etl.dead_letters d LEFT JOIN etl.dead_letter_payloads p ON p.dead_letter_id = d.id \
         WHERE d.pipeline = $1 AND d.id > $2{condition} ORDER BY d.id LIMIT $3"
    );
    (sql, params)
}

/// One dead letter, all it holds but the payload.
#[derive(Debug, Clone, PartialEq)]
pub struct Listed {
    pub id: i64,
    pub message_id: String,
    /// `sqs:QUEUE`, or `s3://bucket/key#version` for a row of an object.
    pub source: String,
    /// How its payload was kept: `record`, `row` or `cut-row`.
    pub form: String,
    pub failed_at: String,
    pub stage: String,
    pub step: Option<i32>,
    pub plugin: Option<String>,
    pub plugin_digest: Option<String>,
    pub reason: String,
    pub received_count: i32,
    pub replayed_at: Option<String>,
    pub replay_result: Option<String>,
    pub replay_attempts: i32,
    pub last_replay_at: Option<String>,
    pub last_replay_reason: Option<String>,
    pub discarded_at: Option<String>,
    pub discarded_by: Option<String>,
    /// The payload's stored size (sealed: a little more than its own).
    pub payload_bytes: Option<i32>,
    /// The id of the key its payload is sealed with; `None`: not sealed.
    pub sealed_with: Option<String>,
}

impl Listed {
    fn from_row(r: &tokio_postgres::Row) -> Listed {
        Listed {
            id: r.get(0),
            message_id: r.get(1),
            source: r.get(2),
            form: r.get(3),
            sealed_with: r.get(4),
            failed_at: r.get(8),
            stage: r.get(9),
            step: r.get(10),
            plugin: r.get(11),
            plugin_digest: r.get(12),
            reason: r.get(13),
            received_count: r.get(14),
            replayed_at: r.get(15),
            replay_result: r.get(16),
            replay_attempts: r.get(17),
            last_replay_at: r.get(18),
            last_replay_reason: r.get(19),
            discarded_at: r.get(20),
            discarded_by: r.get(21),
            payload_bytes: r.get(22),
        }
    }

    /// Where it came from.
    pub fn origin(&self) -> Origin<'_> {
        let Some(rest) = self.source.strip_prefix("s3://") else {
            return Origin::Message(&self.message_id);
        };
        let (object, version) = rest.rsplit_once('#').unwrap_or((rest, ""));
        let (bucket, key) = object.split_once('/').unwrap_or((object, ""));
        // `line N`; an object unreadable from some row on: `after row N`.
        let line = self.message_id.strip_prefix("line ").and_then(|n| n.parse().ok());
        Origin::Object { bucket, key, version, line, at: &self.message_id }
    }

    /// Its state: `open`, `replayed` or `discarded`.
    pub fn state(&self) -> &'static str {
        match (&self.replayed_at, &self.discarded_at) {
            (Some(_), _) => "replayed",
            (None, Some(_)) => "discarded",
            (None, None) => "open",
        }
    }
}

/// Where a dead letter came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Origin<'a> {
    /// A message (its id), or a whole object announced by one.
    Message(&'a str),
    /// A row of an object version (a line of the file when `line` is
    /// known: `at` says `line N`, or `after row N` for the rest of an
    /// object that could not be read).
    Object { bucket: &'a str, key: &'a str, version: &'a str, line: Option<u64>, at: &'a str },
}

/// A page of the dead letters `filter` means, after id `after`, at most
/// `limit`; with their payloads opened (`sealer`) when `payload`.
pub async fn page(
    client: &tokio_postgres::Client,
    pipeline: &str,
    filter: &Filter,
    after: i64,
    limit: i64,
    payload: Option<Option<&Sealer>>,
) -> Result<Vec<(Listed, Option<Vec<u8>>)>, Read> {
    let (sql, extra) = select_sql(filter, payload.is_some());
    let mut params: Vec<&(dyn tokio_postgres::types::ToSql + Sync)> = vec![&pipeline, &after, &limit];
    params.extend(refs(&extra));
    let rows = client.query(&sql, &params).await.map_err(Read::Db)?;
    rows.iter()
        .map(|r| {
            let opened = match payload {
                Some(sealer) => Some(Kept::open(r, sealer).map_err(|e| Read::Payload(e.to_string()))?.payload),
                None => None,
            };
            Ok((Listed::from_row(r), opened))
        })
        .collect()
}

/// Dead letter `id` of `pipeline`, its payload opened when `payload`.
pub async fn one(
    client: &tokio_postgres::Client,
    pipeline: &str,
    id: i64,
    payload: Option<Option<&Sealer>>,
) -> Result<Option<(Listed, Option<Vec<u8>>)>, Read> {
    let all = Filter { all: true, ..Filter::default() };
    Ok(page(client, pipeline, &all, id.saturating_sub(1), 1, payload).await?.into_iter().find(|(d, _)| d.id == id))
}

/// Why dead letters could not be read.
#[derive(Debug)]
pub enum Read {
    Db(tokio_postgres::Error),
    /// A payload that does not open (sealed, and no key or not its key).
    Payload(String),
}

#[cfg(test)]
mod tests {
    use super::*;

    fn listed(source: &str, message_id: &str) -> Listed {
        Listed {
            id: 1,
            message_id: message_id.into(),
            source: source.into(),
            form: "record".into(),
            failed_at: "2024-05-01T10:00:00.000000Z".into(),
            stage: "input".into(),
            step: None,
            plugin: None,
            plugin_digest: None,
            reason: "r".into(),
            received_count: 1,
            replayed_at: None,
            replay_result: None,
            replay_attempts: 0,
            last_replay_at: None,
            last_replay_reason: None,
            discarded_at: None,
            discarded_by: None,
            payload_bytes: Some(2),
            sealed_with: None,
        }
    }

    #[test]
    fn a_row_of_an_object_names_its_key_version_and_line() {
        let row = listed("s3://b/customers/a#1.csv#v1", "line 7");
        assert_eq!(
            row.origin(),
            Origin::Object { bucket: "b", key: "customers/a#1.csv", version: "v1", line: Some(7), at: "line 7" }
        );
        let rest = listed("s3://b/k.csv#e1", "after row 20");
        assert_eq!(
            rest.origin(),
            Origin::Object { bucket: "b", key: "k.csv", version: "e1", line: None, at: "after row 20" }
        );
        assert_eq!(listed("sqs:login-queue", "6f1c").origin(), Origin::Message("6f1c"));
    }

    #[test]
    fn the_statement_reads_a_page_by_id_and_the_payload_only_when_asked() {
        let (sql, params) = select_sql(&Filter { stage: Some("input".into()), ..Filter::default() }, false);
        assert!(sql.starts_with(
            "SELECT d.id, d.message_id, d.source, coalesce(p.form, 'record'), p.key_id, p.nonce, NULL::bytea,"
        ));
        assert!(sql.contains("to_char(d.failed_at AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.US\"Z\"')"), "{sql}");
        assert!(sql.ends_with(
            "WHERE d.pipeline = $1 AND d.id > $2 AND d.stage = $4 \
             AND d.replayed_at IS NULL AND d.discarded_at IS NULL ORDER BY d.id LIMIT $3"
        ));
        assert_eq!(params.len(), 1);
        let (sql, _) = select_sql(&Filter::default(), true);
        assert!(sql.contains(", coalesce(p.payload, ''), coalesce(p.bound, false),"), "{sql}");
    }
}
