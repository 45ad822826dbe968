//! Dead letters as a source: `host dead-letters replay` reads the kept
//! payloads of a pipeline's dead letters (opening sealed ones with
//! `HOST_DEAD_LETTER_KEY`), runs each through the pipeline as it is now, a
//! unit of one message committed under the ledger as `dead-letter:ID` (so a
//! replay loads once), and acknowledges it by marking the dead letter
//! replayed with its result.
//!
//! Must not print: the caller reports each result.

use crate::config::{Pipeline, S3Mode, Source};
use crate::flow::messages::prepare_replay;
use crate::flow::{Flow, RunError};
use crate::queue::Message;
use crate::sink::dead_letter::Sealer;
use crate::sink::{SinkError, refusal};
use crate::source::s3::{Loader, ObjectRef, Outcome};
use crate::transform::{Engine, TransformChain};
use std::sync::Arc;

#[derive(Debug, thiserror::Error)]
pub enum ReplayError {
    #[error(transparent)]
    Connect(crate::sink::connect::ConnectError),
    #[error("reading or marking dead letters: {}", refusal(.0))]
    Db(tokio_postgres::Error),
    #[error("dead letter {id} is sealed with key {key}; set HOST_DEAD_LETTER_KEY")]
    Sealed { id: i64, key: String },
    #[error("dead letter {id}: {reason}")]
    Open { id: i64, reason: String },
    #[error("{0}")]
    Key(String),
    #[error("dead letter {id}: the transform chain failed: {reason}")]
    Chain { id: i64, reason: String },
    #[error(transparent)]
    Run(#[from] RunError),
    #[error(transparent)]
    Sink(#[from] SinkError),
    /// Retryable: the dead letter is left as it was, to be replayed again.
    #[error("dead letter {id}: {reason}; it is left to replay again")]
    NotNow { id: i64, reason: String },
}

/// Replays dead letters `ids` (all not replayed yet when empty) of
/// `pipeline`; `report(id, result)` after each. Returns (loaded, failed
/// again). A row of an S3 object replays with its file and version; a
/// notification of an S3 notifications pipeline replays as a notification:
/// the objects it announces are loaded (with `aws`).
pub async fn replay(
    pipeline: Pipeline,
    engine: Arc<Engine>,
    database_url: &str,
    aws: &crate::aws::Aws,
    ids: &[i64],
    mut report: impl FnMut(i64, &str),
) -> Result<(usize, usize), ReplayError> {
    let client = connect(database_url).await?;
    let rows = client
        .query(
            "SELECT d.id, d.message_id, p.key_id, p.nonce, p.payload, p.bound, d.source FROM etl.dead_letters d \
             JOIN etl.dead_letter_payloads p ON p.dead_letter_id = d.id \
             WHERE d.pipeline = $1 AND d.replayed_at IS NULL AND (cardinality($2::bigint[]) = 0 OR d.id = ANY($2)) \
             ORDER BY d.id",
            &[&pipeline.name, &ids],
        )
        .await
        .map_err(ReplayError::Db)?;
    let sealer = Sealer::from_env().map_err(ReplayError::Key)?;
    let (e, p) = (engine.clone(), pipeline.clone());
    let mut chain = tokio::task::spawn_blocking(move || TransformChain::build(&e, &p))
        .await
        .expect("no panic")
        .map_err(RunError::from)?;
    let notifications = match &pipeline.source {
        Some(Source::S3(s3)) if s3.mode == S3Mode::Notifications => Some(s3.clone()),
        _ => None,
    };
    let panel = crate::status::Panel::detached(&pipeline.name);
    let mut flow = Flow::new(pipeline, panel, engine, database_url, 2, "replay")?;
    flow.once = true;
    let flow = Arc::new(flow);
    let loader = notifications.map(|config| Loader::new(flow.clone(), config, aws.s3.clone()));
    let (mut loaded, mut failed) = (0, 0);
    for row in rows {
        let id: i64 = row.get(0);
        let key_id: Option<String> = row.get(2);
        let source: String = row.get(6);
        let body: Vec<u8> = match (key_id, &sealer) {
            (None, _) => row.get(4),
            (Some(k), Some(s)) => s
                .open(
                    id,
                    &k,
                    &row.get::<_, Option<Vec<u8>>>(3).unwrap_or_default(),
                    &row.get::<_, Vec<u8>>(4),
                    row.get(5),
                )
                .map_err(|reason| ReplayError::Open { id, reason })?,
            (Some(key), None) => return Err(ReplayError::Sealed { id, key }),
        };
        let result = match (&loader, source.strip_prefix("s3://")) {
            // A notification (its source is the queue): load what it announces.
            (Some(loader), None) => {
                let (c, result) = replay_notification(loader, chain, &body).await;
                chain = c;
                result.map_err(|reason| ReplayError::NotNow { id, reason })?
            }
            _ => {
                // A row of an object keeps its file: `s3://bucket/key#version`.
                let file = source.starts_with("s3://").then(|| source.rsplit_once('#').unwrap_or((&source, "")));
                let (c, result) = replay_record(&flow, chain, id, body, file).await;
                chain = c;
                result?
            }
        };
        let result = match result {
            Ok(done) => {
                loaded += 1;
                done
            }
            Err(why) => {
                failed += 1;
                format!("failed again: {why}")
            }
        };
        client
            .execute(
                "UPDATE etl.dead_letters SET replayed_at = now(), replay_result = $2 WHERE id = $1",
                &[&id, &result],
            )
            .await
            .map_err(ReplayError::Db)?;
        report(id, &result);
    }
    Ok((loaded, failed))
}

/// Replays one record (a message's body, or an object's row) under the
/// ledger key `dead-letter:ID`: what it loaded, or why it failed again.
async fn replay_record(
    flow: &Flow,
    chain: TransformChain,
    id: i64,
    body: Vec<u8>,
    file: Option<(&str, &str)>,
) -> (TransformChain, Result<Result<String, String>, ReplayError>) {
    // A replay's own ledger partition: its dead letter's id.
    let message = Message {
        id: format!("dead-letter:{id}"),
        receipt: String::new(),
        body,
        receive_count: 1,
        sent_ms: -id,
        attributes: Vec::new(),
    };
    let (chain, prepared) = prepare_replay(flow, chain, std::slice::from_ref(&message), file).await;
    let (units, plugins) = match prepared {
        Ok(p) => p,
        Err(reason) => return (chain, Err(ReplayError::Chain { id, reason })),
    };
    let why = units.iter().flat_map(|u| &u.dead).next().map(|d| d.reason.clone());
    let committed = match flow.sink.commit(units, &plugins).await {
        Ok(c) => c,
        Err(e) => return (chain, Err(e.into())),
    };
    let result = match why {
        None if committed.dead_letters == 0 => Ok(format!("loaded {} rows", committed.rows)),
        why => Err(why.unwrap_or_else(|| "the database refused its rows".into())),
    };
    (chain, Ok(result))
}

/// Replays an S3 notification: loads the objects it announces (an object
/// loaded before adds nothing). The outer `Err`: a failure that may pass
/// (S3 or the database failing, the object busy), for which the dead
/// letter is left to replay again; the inner one fails it for good.
async fn replay_notification(
    loader: &Loader,
    chain: TransformChain,
    body: &[u8],
) -> (TransformChain, Result<Result<String, String>, String>) {
    let events = match readers::notification::parse(&String::from_utf8_lossy(body)) {
        Ok(events) => events,
        Err(e) => return (chain, Ok(Err(format!("not an S3 notification: {e}")))),
    };
    let (mut chain, mut rows, mut objects) = (chain, 0, 0);
    for e in events {
        if !loader.wants(&e.bucket, &e.key) {
            continue;
        }
        let object =
            ObjectRef { bucket: e.bucket, key: e.key, version_id: e.version_id, etag: e.etag, sequencer: e.sequencer };
        let (c, mut outcome) = loader.load(chain, &object).await;
        chain = c;
        while matches!(outcome, Ok(Outcome::Busy)) {
            tokio::time::sleep(std::time::Duration::from_millis(200)).await;
            let (c, next) = loader.load(chain, &object).await;
            (chain, outcome) = (c, next);
        }
        match outcome {
            Ok(Outcome::Loaded(r)) => {
                objects += 1;
                rows += r.rows;
            }
            Ok(Outcome::AlreadyLoaded | Outcome::Superseded | Outcome::Gone) => {}
            Ok(Outcome::Busy | Outcome::Interrupted) => return (chain, Err(format!("{}: not loaded", object.uri()))),
            Err(e) if e.retryable() => return (chain, Err(e.to_string())),
            Err(e) => return (chain, Ok(Err(e.to_string()))),
        }
    }
    (chain, Ok(Ok(format!("loaded {objects} objects, {rows} rows"))))
}

/// A plain connection (no pool) to `url`.
pub async fn connect(url: &str) -> Result<tokio_postgres::Client, ReplayError> {
    crate::sink::connect::connect(url).await.map_err(ReplayError::Connect)
}
