//! Dead letters as a source: `host dead-letters replay` reads the kept
//! payloads of a pipeline's dead letters (opening sealed ones with
//! `HOST_DEAD_LETTER_KEY`), runs each through the pipeline as it is now, a
//! unit of one message committed under the ledger as `dead-letter:ID` (so a
//! replay loads once), and acknowledges it by marking the dead letter
//! replayed with its result.
//!
//! Must not print: the caller reports each result.

use crate::config::Pipeline;
use crate::flow::messages::prepare_replay;
use crate::flow::{Flow, RunError};
use crate::queue::Message;
use crate::sink::dead_letter::Sealer;
use crate::sink::{SinkError, refusal};
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
}

/// Replays dead letters `ids` (all not replayed yet when empty) of
/// `pipeline`; `report(id, result)` after each. Returns (loaded, failed
/// again).
pub async fn replay(
    pipeline: Pipeline,
    engine: Arc<Engine>,
    database_url: &str,
    ids: &[i64],
    mut report: impl FnMut(i64, &str),
) -> Result<(usize, usize), ReplayError> {
    let client = connect(database_url).await?;
    let rows = client
        .query(
            "SELECT d.id, d.message_id, p.key_id, p.nonce, p.payload, p.bound FROM etl.dead_letters d \
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
    let mut flow = Flow::new(pipeline, engine, database_url, 2, "replay")?;
    flow.once = true;
    let (mut loaded, mut failed) = (0, 0);
    for row in rows {
        let id: i64 = row.get(0);
        let key_id: Option<String> = row.get(2);
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
        // A replay's own ledger partition: its dead letter's id.
        let message = Message {
            id: format!("dead-letter:{id}"),
            receipt: String::new(),
            body,
            receive_count: 1,
            sent_ms: -id,
            attributes: Vec::new(),
        };
        let (c, prepared) = prepare_replay(&flow, chain, std::slice::from_ref(&message)).await;
        chain = c;
        let (units, plugins) = prepared.map_err(|reason| ReplayError::Chain { id, reason })?;
        let why = units.iter().flat_map(|u| &u.dead).next().map(|d| d.reason.clone());
        let committed = flow.sink.commit(units, &plugins).await?;
        let result = match why {
            None if committed.dead_letters == 0 => {
                loaded += 1;
                format!("loaded {} rows", committed.rows)
            }
            why => {
                failed += 1;
                format!("failed again: {}", why.as_deref().unwrap_or("the database refused its rows"))
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

/// A plain connection (no pool) to `url`.
pub async fn connect(url: &str) -> Result<tokio_postgres::Client, ReplayError> {
    crate::sink::connect::connect(url).await.map_err(ReplayError::Connect)
}
