//! Dead letters as a source: `host dead-letters replay` reads the kept
//! payloads of a pipeline's open dead letters (neither replayed nor
//! discarded) a page at a time ([`kept`],
//! opening sealed ones with `HOST_DEAD_LETTER_KEY`), runs each through the
//! pipeline as it is now, a unit of one message committed whole under the
//! ledger as `dead-letter:ID` (so a replay loads once), and acknowledges
//! it by marking the dead letter replayed with its result. One that fails
//! again stays the same dead letter, its attempts counted; a row of an
//! object version replaced since is skipped ([`standing`]).
//!
//! Must not print: the caller reports each result.

pub(crate) mod kept;
mod standing;

use crate::config::{Pipeline, S3Mode, Source};
use crate::flow::messages::{Original, prepare_replay};
use crate::flow::{Flow, RunError};
use crate::mapping::RowOrigin;
use crate::queue::Message;
use crate::sink::dead_letter::{PayloadForm, Sealer};
use crate::sink::{SinkError, refusal};
use crate::source::s3::{Loader, ObjectRef, Outcome};
use crate::transform::{Engine, TransformChain};
use kept::Kept;
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
    /// Boxed: the rest of the variants are small.
    #[error(transparent)]
    Run(Box<RunError>),
    #[error(transparent)]
    Sink(#[from] SinkError),
    /// Retryable: the dead letter is left as it was, to be replayed again.
    #[error("dead letter {id}: {reason}; it is left to replay again")]
    NotNow { id: i64, reason: String },
}

impl From<RunError> for ReplayError {
    fn from(e: RunError) -> Self {
        ReplayError::Run(Box::new(e))
    }
}

/// What a replay did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Replayed {
    pub loaded: usize,
    /// Failed again: they stay dead letters, with why.
    pub failed: usize,
    /// Not replayed, and nothing is left that could be: rows of object
    /// versions replaced since (or of keys gone), rows cut at
    /// `max_record_bytes`, objects unreadable from a row on. They stay
    /// dead letters, saying why.
    pub skipped: usize,
}

impl Replayed {
    fn count(&mut self, replay: &Replay) {
        match replay {
            Replay::Loaded(_) => self.loaded += 1,
            Replay::Failed(_) => self.failed += 1,
            Replay::Skipped(_) => self.skipped += 1,
        }
    }
}

/// What replaying one dead letter came to: what it loaded, or why not.
enum Replay {
    Loaded(String),
    Failed(String),
    Skipped(String),
}

impl Replay {
    /// Whether it loaded, the result reported, and the text kept on the
    /// dead letter (its result, or why it is not loaded).
    fn texts(self) -> (bool, String, String) {
        match self {
            Replay::Loaded(result) => (true, result.clone(), result),
            Replay::Failed(why) => (false, format!("failed again: {why}"), why),
            Replay::Skipped(why) => (false, format!("skipped: {why}"), why),
        }
    }
}

/// Replays dead letters `ids` (all open ones when empty) of
/// `pipeline`, a page at a time; `report(id, result)` after each. A row of
/// an S3 object replays with its file and version (if that version is
/// still the one loaded); a notification of an S3 notifications pipeline
/// replays as a notification: the objects it announces are loaded (with
/// `aws`).
pub async fn replay(
    pipeline: Pipeline,
    engine: Arc<Engine>,
    database_url: &str,
    aws: &crate::aws::Aws,
    ids: &[i64],
    mut report: impl FnMut(i64, &str),
) -> Result<Replayed, ReplayError> {
    let mut replayer = Replayer::new(pipeline, engine, database_url, aws).await?;
    let (mut done, mut after) = (Replayed::default(), 0i64);
    loop {
        let params: [&(dyn tokio_postgres::types::ToSql + Sync); 4] =
            [&replayer.flow.pipeline.name, &ids, &after, &kept::PAGE];
        let page = replayer.client.query(kept::PAGE_SQL, &params).await.map_err(ReplayError::Db)?;
        for row in &page {
            let kept = Kept::open(row, replayer.sealer.as_ref())?;
            after = kept.id;
            let replay = replayer.one(&kept).await?;
            done.count(&replay);
            let (loaded, text, why) = replay.texts();
            kept::mark(&replayer.client, kept.id, loaded, &why).await?;
            report(kept.id, &text);
        }
        if (page.len() as i64) < kept::PAGE {
            return Ok(done);
        }
    }
}

/// What a replay holds for the whole run.
struct Replayer {
    client: tokio_postgres::Client,
    sealer: Option<Sealer>,
    flow: Arc<Flow>,
    /// The chain, between dead letters.
    chain: Option<TransformChain>,
    /// For an S3 notifications pipeline: loads what a notification names.
    loader: Option<Loader>,
}

impl Replayer {
    async fn new(
        pipeline: Pipeline,
        engine: Arc<Engine>,
        database_url: &str,
        aws: &crate::aws::Aws,
    ) -> Result<Replayer, ReplayError> {
        let client = connect(database_url).await?;
        let sealer = Sealer::from_env().map_err(ReplayError::Key)?;
        let (e, p) = (engine.clone(), pipeline.clone());
        let chain = tokio::task::spawn_blocking(move || TransformChain::build(&e, &p))
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
        Ok(Replayer { client, sealer, flow, chain: Some(chain), loader })
    }

    /// Replays one dead letter.
    async fn one(&mut self, kept: &Kept) -> Result<Replay, ReplayError> {
        let chain = self.chain.take().expect("the chain is back between dead letters");
        let (chain, result) = match (&self.loader, kept.source.strip_prefix("s3://")) {
            // A notification (its source is the queue): load what it announces.
            (Some(loader), None) => {
                let (chain, result) = replay_notification(loader, chain, &kept.payload).await;
                let result = result.map(|r| r.map_or_else(Replay::Failed, Replay::Loaded));
                (chain, result.map_err(|reason| ReplayError::NotNow { id: kept.id, reason }))
            }
            _ => self.record(chain, kept).await,
        };
        self.chain = Some(chain);
        result
    }

    /// Replays a message's body, or a row of an object (with its file and
    /// version, if that version is still the one loaded).
    async fn record(&self, chain: TransformChain, kept: &Kept) -> (TransformChain, Result<Replay, ReplayError>) {
        let file = kept.file();
        if let Some((uri, version)) = file.filter(|(_, v)| !v.is_empty()) {
            let standing = match standing::of(&self.client, &self.flow.pipeline.name, uri, version).await {
                Ok(standing) => standing,
                Err(e) => return (chain, Err(e)),
            };
            if let Some(why) = standing.why_not(uri, version) {
                return (chain, Ok(Replay::Skipped(why)));
            }
        }
        let body = match self.body(kept).await {
            Ok(body) => body,
            Err(not) => return (chain, Ok(not)),
        };
        // Its rows keep where they came from at first: the message, or the
        // line of the file (`line N`, as the loader named the row).
        let origin = match file {
            Some(_) => {
                RowOrigin { message_id: None, line: kept.message_id.strip_prefix("line ").and_then(|n| n.parse().ok()) }
            }
            None => RowOrigin { message_id: Some(&kept.message_id), line: None },
        };
        replay_record(&self.flow, chain, kept.id, body, Original { file, origin }).await
    }

    /// The record a dead letter's payload makes: the payload, or the row it
    /// holds read with the pipeline's format as it is now. `Err`: why it
    /// is not replayed (it failed again, or nothing was kept that could).
    async fn body(&self, kept: &Kept) -> Result<Vec<u8>, Replay> {
        let pipeline = &self.flow.pipeline;
        let id = &kept.message_id;
        match (kept.form, &pipeline.source) {
            // An object unreadable from some row on: nothing of it was kept.
            (PayloadForm::Record, _) if kept.payload.is_empty() && kept.file().is_some() => Err(Replay::Skipped(
                format!("{id}: the object could not be read from here on and nothing of it was kept; not replayed"),
            )),
            (PayloadForm::Record, _) => Ok(kept.payload.clone()),
            (PayloadForm::CutRow, _) => Err(Replay::Skipped(format!(
                "{id}: longer than max_record_bytes and only its start was kept; not replayed"
            ))),
            (PayloadForm::Row, Some(Source::S3(s3))) => {
                kept::row_record(&s3.format, pipeline.max_record_bytes, id, kept.payload.clone())
                    .await
                    .map_err(Replay::Failed)
            }
            (PayloadForm::Row, _) => {
                Err(Replay::Failed("kept as a row of a file, and the pipeline reads no files".into()))
            }
        }
    }
}

/// Replays one record (a message's body, or an object's row) under the
/// ledger key `dead-letter:ID`, committed whole or not at all.
async fn replay_record(
    flow: &Flow,
    chain: TransformChain,
    id: i64,
    body: Vec<u8>,
    replayed: Original<'_>,
) -> (TransformChain, Result<Replay, ReplayError>) {
    // A replay's own ledger partition: its dead letter's id.
    let message = Message {
        id: format!("dead-letter:{id}"),
        receipt: String::new(),
        body,
        receive_count: 1,
        sent_ms: -id,
        attributes: Vec::new(),
    };
    let (chain, prepared) = prepare_replay(flow, chain, std::slice::from_ref(&message), replayed).await;
    let (units, lineage) = match prepared {
        Ok(p) => p,
        Err(reason) => return (chain, Err(ReplayError::Chain { id, reason })),
    };
    // A record refused on the way: nothing commits, the dead letter stays.
    if let Some(d) = units.iter().flat_map(|u| &u.dead).next() {
        return (chain, Ok(Replay::Failed(d.reason.clone())));
    }
    let result = match flow.sink.commit_whole(units, &lineage).await {
        Ok(committed) => Ok(Replay::Loaded(format!("loaded {} rows", committed.rows))),
        Err(SinkError::Refused { reason }) => Ok(Replay::Failed(format!("database refused the row: {reason}"))),
        Err(e) => Err(e.into()),
    };
    (chain, result)
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
