//! `host replay`: the objects under a prefix of an S3 pipeline's bucket
//! read again, each as the version `etl.files` records as loaded (else the
//! key's current one), through a chosen chain (the pipeline's steps, some
//! replaced: `crate::transform::choice`), streamed in chunks as the loader
//! reads them (bounded memory), one object after the other. Then:
//! - `Diff`: the candidate's rows beside the rows production holds for the
//!   object, compared in the database (`crate::sink::replay`), summed up
//!   in a [`Summary`]; nothing is written.
//! - `Into`: the candidate's rows written into a side table (made like the
//!   target when missing), each object's in one transaction, replacing
//!   what an earlier replay wrote there for it (where rows know their
//!   file).
//! - `Apply`: the candidate's rows in place of production's, through the
//!   object's receipt (a `FileReceipt` with the chain's digest, its
//!   progress in `etl.replays`): under the object's lease, resumed after a
//!   crash from the last committed row, done once per chain (a second
//!   identical apply changes nothing), refused for a version production
//!   replaced meanwhile, and each commit's lineage names the candidate's
//!   plugins.
//!
//! Must not print: the CLI turns what this reports into lines and a bar.

use super::claim;
use super::object::{Filled, Opened};
use super::{Listed, LoadError, Loader, ObjectRef, Outcome};
use crate::config::{ColumnSource, Generated, MergeMode, Pipeline, Sink, Source};
use crate::diff::Summary;
use crate::flow::{RunError, lineage, load_time};
use crate::sink::replay::{self as compare, By};
use crate::sink::{FileReceipt, SinkError, Unit, sql};
use crate::transform::{Engine, TransformChain, digest_of};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Instant, SystemTime};

pub use super::backfill::BackfillProgress as ReplayProgress;

/// What to do with the candidate's rows.
#[derive(Debug, Clone, PartialEq)]
pub enum Action {
    Diff,
    /// A side table: schema (the sink's when not given) and name.
    Into {
        schema: Option<String>,
        table: String,
    },
    Apply,
}

/// Which objects, and what to do.
#[derive(Debug, Clone)]
pub struct Request {
    /// `s3://bucket/prefix`.
    pub from: String,
    /// Only objects written at or after this time (the listing's).
    pub since: Option<SystemTime>,
    /// Only objects written before this time.
    pub until: Option<SystemTime>,
    pub action: Action,
}

/// What a replay did.
#[derive(Debug, Default)]
pub struct Replayed {
    /// Objects read through the candidate chain (and compared, written or
    /// applied).
    pub objects: u64,
    /// Rows the candidate gave.
    pub rows: u64,
    /// Records the candidate rejected (dead letters with `--apply`).
    pub rejected: u64,
    /// `--apply`: objects applied through the same chain before.
    pub already: u64,
    /// Objects left alone: never loaded by the pipeline (`--apply`),
    /// changed or gone since.
    pub skipped: u64,
    /// Objects that failed (each reported).
    pub failed: u64,
    /// `--diff`: the comparison, summed over the objects.
    pub diff: Summary,
    /// `--diff`: how rows were matched.
    pub matched_by: String,
    /// The candidate chain's plugins (lineage JSON) and digest.
    pub plugins: String,
    pub chain: String,
}

#[derive(Debug, thiserror::Error)]
pub enum ReplayError {
    #[error("{0}: `host replay` reads the objects of an [source.s3] pipeline with a [sink]")]
    NotS3(String),
    #[error("--from `{0}` is not s3://BUCKET/PREFIX")]
    From(String),
    #[error("--from {from}: the pipeline reads bucket `{bucket}`")]
    Bucket { from: String, bucket: String },
    #[error("--from {from}: outside the pipeline's prefix `{prefix}`")]
    Prefix { from: String, prefix: String },
    #[error("no objects under {0}")]
    NoObjects(String),
    #[error(
        "{action}: the rows of an object cannot be told apart in table {table}: the sink has no key and no \
         `{{ generated = \"source-file\" }}` column"
    )]
    Unmatched { action: &'static str, table: String },
    #[error("table {table} {problem}")]
    Target { table: String, problem: String },
    #[error("--into {table}: the table exists with other columns than the sink's table: {}; drop it or name another", .problems.join("; "))]
    Side { table: String, problems: Vec<String> },
    #[error("--into `{0}`: expected TABLE or SCHEMA.TABLE")]
    SideName(String),
    #[error("{what}")]
    Db {
        what: String,
        #[source]
        source: tokio_postgres::Error,
    },
    #[error(transparent)]
    Sink(#[from] SinkError),
    #[error(transparent)]
    Run(Box<RunError>),
    #[error(transparent)]
    Load(#[from] LoadError),
}

impl From<RunError> for ReplayError {
    fn from(e: RunError) -> ReplayError {
        ReplayError::Run(Box::new(e))
    }
}

fn db(what: impl Into<String>) -> impl FnOnce(tokio_postgres::Error) -> ReplayError {
    let what = what.into();
    move |source| ReplayError::Db { what, source }
}

/// Bucket and prefix of `s3://bucket/prefix`.
pub fn parse_from(from: &str) -> Result<(String, String), ReplayError> {
    let rest = from.strip_prefix("s3://").ok_or_else(|| ReplayError::From(from.into()))?;
    let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
    if bucket.is_empty() {
        return Err(ReplayError::From(from.into()));
    }
    Ok((bucket.to_string(), prefix.to_string()))
}

/// The identity of a chain for `etl.replays`: the digest of its plugins'
/// names and digests and its steps' params.
pub fn chain_digest(plugins: &str, pipeline: &Pipeline) -> String {
    let params: Vec<&str> = pipeline.steps.iter().map(|s| s.params.as_str()).collect();
    digest_of(format!("{plugins}\n{}", params.join("\n")).as_bytes())
}

/// The sink's column of generated value `g`, if it has one.
fn generated_column(sink: &Sink, g: Generated) -> Option<&str> {
    sink.columns.iter().find(|c| c.source == ColumnSource::Generated(g)).map(|c| c.name.as_str())
}

/// The sink's column holding each row's file, if it has one.
fn file_column(sink: &Sink) -> Option<&str> {
    generated_column(sink, Generated::SourceFile)
}

/// The sink's column holding each row's line in its file (`source-line`):
/// where there is one, rows are matched by it rather than by their order.
fn line_column(sink: &Sink) -> Option<&str> {
    generated_column(sink, Generated::SourceLine)
}

fn key_of(sink: &Sink) -> Option<&[String]> {
    match &sink.mode {
        MergeMode::Upsert { key } | MergeMode::DeleteInsert { key } => Some(key),
        MergeMode::Append => None,
    }
}

/// Everything one replay run shares.
struct Run<'a> {
    loader: Loader,
    sink: Sink,
    request: &'a Request,
    bucket: String,
    /// The target's column types, for the sink's columns.
    types: Vec<(String, String)>,
    /// `--into`: the side table, quoted.
    side: Option<String>,
    chain: String,
    note: &'a (dyn Fn(&str) + Sync),
}

/// Replays `request` for `pipeline` (its steps already chosen);
/// `progress` about once a second and at the end, `note` for each object
/// skipped or failed.
pub async fn replay(
    mut pipeline: Pipeline,
    engine: Arc<Engine>,
    database_url: &str,
    aws: &crate::aws::Aws,
    request: &Request,
    progress: impl Fn(&ReplayProgress),
    note: &(dyn Fn(&str) + Sync),
) -> Result<Replayed, ReplayError> {
    let file = pipeline.file.display().to_string();
    let (Some(Source::S3(config)), Some(sink)) = (pipeline.source.clone(), pipeline.sink.clone()) else {
        return Err(ReplayError::NotS3(file));
    };
    let (bucket, prefix) = parse_from(&request.from)?;
    if let Some(b) = config.bucket.as_ref().filter(|b| **b != bucket) {
        return Err(ReplayError::Bucket { from: request.from.clone(), bucket: b.clone() });
    }
    if !prefix.starts_with(&config.prefix) {
        return Err(ReplayError::Prefix { from: request.from.clone(), prefix: config.prefix.clone() });
    }
    let table = sql::readable_qualified(&sink.schema, &sink.table);
    let action = match request.action {
        Action::Diff => "--diff",
        Action::Into { .. } => "--into",
        Action::Apply => "--apply",
    };
    if key_of(&sink).is_none() && file_column(&sink).is_none() && !matches!(request.action, Action::Into { .. }) {
        return Err(ReplayError::Unmatched { action, table });
    }
    // One worker, no watcher: the chain chosen is the chain run.
    pipeline.workers = 1;
    pipeline.reload = None;
    let panel = crate::status::Panel::detached(&pipeline.name);
    let (mut flow, mut config) = super::flow(pipeline, panel, engine, database_url)?;
    flow.once = true;
    config.bucket = Some(bucket.clone());
    let flow = Arc::new(flow);
    let chains = flow.chains().await?;
    let mut chain = chains.chains.into_iter().next().expect("one worker");
    let mut done = Replayed { plugins: lineage(&chain).plugins, ..Replayed::default() };
    done.chain = chain_digest(&done.plugins, &flow.pipeline);
    let loader = Loader::new(flow.clone(), config, aws.s3.clone());
    loader.detect_versions().await;
    let types = target_types(&loader, &sink, &table).await?;
    let mut run = Run { loader, sink, request, bucket, types, side: None, chain: done.chain.clone(), note };
    if let Action::Into { schema, table } = &request.action {
        run.side = Some(run.side_table(schema.as_deref(), table).await?);
    }
    done.matched_by = run.matched_by();
    // First the totals (a bar with an end), then the work, a page at a time.
    let (count, total_bytes) = run.count(&prefix).await?;
    if count == 0 {
        return Err(ReplayError::NoObjects(request.from.clone()));
    }
    let started = Instant::now();
    let now = || ReplayProgress::of(&run.loader.progress, count, total_bytes, started);
    let mut token = None;
    let mut tick = Instant::now();
    loop {
        let (page, next) = run.loader.list_page(&prefix, token).await?;
        let page: Vec<Listed> = page.into_iter().filter(|o| run.wanted(o)).collect();
        let recorded = run.recorded(&page).await?;
        for listed in &page {
            let object = recorded.iter().find(|o| o.key == listed.key).cloned();
            chain = run.one(chain, listed, object, &mut done).await;
            run.loader.progress.objects.fetch_add(1, Ordering::Relaxed);
            if tick.elapsed().as_secs() >= 1 {
                progress(&now());
                tick = Instant::now();
            }
        }
        match next {
            Some(t) => token = Some(t),
            None => break,
        }
    }
    progress(&now());
    let _ = flow.finish(chains.watching).await;
    Ok(done)
}

/// The target's type of each of the sink's columns.
async fn target_types(loader: &Loader, sink: &Sink, table: &str) -> Result<Vec<(String, String)>, ReplayError> {
    let client = loader.flow.sink.pool().get().await.map_err(SinkError::pool)?;
    let columns = table_columns(&client, &sink.schema, &sink.table).await?;
    let Some(columns) = columns else {
        return Err(ReplayError::Target { table: table.into(), problem: "does not exist".into() });
    };
    let mut types = Vec::new();
    for c in &sink.columns {
        match columns.iter().find(|(n, _)| *n == c.name) {
            Some((_, ty)) => types.push((c.name.clone(), ty.clone())),
            None => {
                let problem = format!("has no column {}", sql::readable(&c.name));
                return Err(ReplayError::Target { table: table.into(), problem });
            }
        }
    }
    Ok(types)
}

/// A table's columns (name, type), or `None` if it does not exist.
async fn table_columns(
    client: &tokio_postgres::Client,
    schema: &str,
    table: &str,
) -> Result<Option<Vec<(String, String)>>, ReplayError> {
    let what = || format!("reading the columns of {}", sql::readable_qualified(schema, table));
    let found = client.query_opt(sql::TABLE_OF, &[&schema, &table]).await.map_err(db(what()))?;
    let Some(oid) = found.and_then(|r| r.get::<_, Option<u32>>(0)) else { return Ok(None) };
    let rows = client.query(sql::COLUMNS_OF, &[&oid]).await.map_err(db(what()))?;
    Ok(Some(rows.iter().map(|r| (r.get(0), r.get(1))).collect()))
}

impl Run<'_> {
    fn pipeline(&self) -> &str {
        &self.loader.flow.pipeline.name
    }

    fn target(&self) -> String {
        sql::qualified(&self.sink.schema, &self.sink.table)
    }

    fn matched_by(&self) -> String {
        match (key_of(&self.sink), file_column(&self.sink), line_column(&self.sink)) {
            (Some(key), Some(_), _) => format!("by the sink's key ({})", key.join(", ")),
            (Some(key), None, _) => format!(
                "by the sink's key ({}); the table has no source-file column, so rows it holds for an object \
                 under keys the candidate does not give are not seen (not counted as dropped)",
                key.join(", ")
            ),
            (None, Some(_), Some(line)) => format!("by file and line (column {line})"),
            (None, Some(file), None) => format!(
                "by file (column {file}) and the order the table holds its rows in (the table has no \
                 source-line column)"
            ),
            (None, None, _) => "not matched".into(),
        }
    }

    /// Whether the listing's time of `o` is within `--since` and `--until`.
    fn wanted(&self, o: &Listed) -> bool {
        let after = self.request.since.is_none_or(|t| o.modified.is_some_and(|m| m >= t));
        let before = self.request.until.is_none_or(|t| o.modified.is_some_and(|m| m < t));
        after && before
    }

    /// How many objects, and how many bytes, the replay will read.
    async fn count(&self, prefix: &str) -> Result<(u64, u64), ReplayError> {
        let (mut count, mut bytes, mut token) = (0, 0, None);
        loop {
            let (page, next) = self.loader.list_page(prefix, token).await?;
            for o in page.iter().filter(|o| self.wanted(o)) {
                count += 1;
                bytes += o.size;
            }
            match next {
                Some(t) => token = Some(t),
                None => return Ok((count, bytes)),
            }
        }
    }

    /// The versions `etl.files` records as loaded for the keys of `page`.
    async fn recorded(&self, page: &[Listed]) -> Result<Vec<ObjectRef>, ReplayError> {
        let keys: Vec<&str> = page.iter().map(|o| o.key.as_str()).collect();
        let client = self.loader.flow.sink.pool().get().await.map_err(SinkError::pool)?;
        let rows = client
            .query(sql::FILES_DONE_OF, &[&self.pipeline(), &self.bucket, &keys])
            .await
            .map_err(db("reading which versions the pipeline loaded"))?;
        Ok(rows
            .iter()
            .map(|r| {
                let (key, version, etag): (String, String, Option<String>) = (r.get(0), r.get(1), r.get(2));
                // A version recorded by its ETag: the bucket gave no id.
                let by_etag = etag.as_deref() == Some(version.as_str());
                ObjectRef {
                    bucket: self.bucket.clone(),
                    key,
                    version_id: (!by_etag).then(|| version.clone()),
                    etag: etag.or(Some(version).filter(|_| by_etag)),
                    sequencer: None,
                }
            })
            .collect())
    }

    /// One object: the recorded version (`recorded`) or the listed one.
    async fn one(
        &self,
        chain: TransformChain,
        listed: &Listed,
        recorded: Option<ObjectRef>,
        done: &mut Replayed,
    ) -> TransformChain {
        let uri = format!("s3://{}/{}", self.bucket, listed.key);
        let (chain, outcome) = match (&self.request.action, recorded) {
            (Action::Apply, None) => (chain, Err(Skip::Left("never loaded by the pipeline; left to it".into()))),
            (Action::Apply, Some(object)) => self.apply(chain, &object, &uri, done).await,
            (_, recorded) => {
                let object = recorded.unwrap_or_else(|| listed.object(&self.bucket));
                self.read(chain, &object, &uri, done).await
            }
        };
        match outcome {
            Ok(()) => done.objects += 1,
            Err(Skip::Left(why)) => {
                done.skipped += 1;
                (self.note)(&format!("{uri}: skipped: {why}"));
            }
            Err(Skip::Failed(why)) => {
                done.failed += 1;
                (self.note)(&format!("{uri}: failed: {why}"));
            }
            Err(Skip::Already) => {
                done.already += 1;
                (self.note)(&format!("{uri}: applied through this chain before; nothing to do"));
            }
        }
        chain
    }
}

/// Why an object was not replayed.
enum Skip {
    Left(String),
    Failed(String),
    Already,
}

impl From<LoadError> for Skip {
    fn from(e: LoadError) -> Skip {
        Skip::Failed(crate::report(&e))
    }
}

impl Run<'_> {
    /// `--diff` and `--into`: the object through the chain, its rows into
    /// the candidate table (then compared) or the side table.
    async fn read(
        &self,
        mut chain: TransformChain,
        object: &ObjectRef,
        uri: &str,
        done: &mut Replayed,
    ) -> (TransformChain, Result<(), Skip>) {
        let failed = |e: tokio_postgres::Error| Skip::Failed(crate::sink::refusal(&e));
        let mut reader = match self.loader.open(object, uri, 0).await {
            Ok(Opened::Reader(r)) => r,
            Ok(Opened::Not(Outcome::Gone)) => return (chain, Err(Skip::Left("gone".into()))),
            Ok(Opened::Not(_)) => return (chain, Err(Skip::Left("changed since it was loaded".into()))),
            Ok(Opened::Unreadable(why)) => return (chain, Err(Skip::Failed(format!("unreadable: {why}")))),
            Err(e) => return (chain, Err(e.into())),
        };
        let mut client = match self.loader.flow.sink.pool().get().await {
            Ok(c) => c,
            Err(e) => return (chain, Err(Skip::Failed(SinkError::pool(e).to_string()))),
        };
        let tx = match client.transaction().await {
            Ok(tx) => tx,
            Err(e) => return (chain, Err(failed(e))),
        };
        let names: Vec<String> = self.types.iter().map(|(n, _)| n.clone()).collect();
        let (copy, start) = match &self.side {
            None => (compare::copy_candidate(&names), tx.batch_execute(&compare::create_candidate(&self.types)).await),
            Some(side) => {
                let clear = match file_column(&self.sink) {
                    Some(file) => tx.execute(&sql::delete_file_rows(side, file), &[&uri]).await.map(|_| ()),
                    None => Ok(()),
                };
                (sql::copy_in(side, &names, false), clear)
            }
        };
        if let Err(e) = start {
            return (chain, Err(failed(e)));
        }
        let version = object.version_id.clone().or_else(|| object.etag.clone()).unwrap_or_default();
        let mut load = load_time(&chain);
        load.source_file = Some(uri.to_string());
        load.source_version = Some(version.clone());
        let columns = reader.columns().to_vec();
        let (mut rows, mut records) = (0u64, 0u64);
        loop {
            let (c, filled) = self.loader.fill(chain, &mut reader, &columns, &load, uri).await;
            chain = c;
            let Filled { units, end, broken } = match filled {
                Ok(f) => f,
                Err(e) => return (chain, Err(e.into())),
            };
            records += units.len() as u64;
            let (text, dead) = candidate_text(&units, self.side.is_none());
            rows += units.iter().map(|u| u.row_count as u64).sum::<u64>();
            done.rejected += units.iter().filter(|u| !u.dead.is_empty()).count() as u64;
            if let Err(e) = compare::copy_text(&tx, &copy, text).await {
                return (chain, Err(failed(e)));
            }
            if self.side.is_none() && !dead.is_empty() {
                let copy_dead = sql::copy_in(&sql::ident(compare::CANDIDATE_DEAD), &["_id".into()], false);
                if let Err(e) = compare::copy_text(&tx, &copy_dead, dead).await {
                    return (chain, Err(failed(e)));
                }
            }
            if let Some(why) = broken {
                (self.note)(&format!("{uri}: unreadable after row {records}: {why}; the rows before it count"));
                break;
            }
            if end.is_some() {
                break;
            }
            if units.is_empty() {
                return (chain, Err(Skip::Failed("stopped".into())));
            }
        }
        done.rows += rows;
        self.loader.progress.rows.fetch_add(rows, Ordering::Relaxed);
        let result = match &self.side {
            Some(_) => tx.commit().await,
            None => {
                let origin = format!("{uri}#{version}");
                let summary = self.compare(&tx, &origin, uri, records).await;
                match summary {
                    Ok(s) => {
                        done.diff.absorb(&s);
                        tx.rollback().await
                    }
                    Err(e) => Err(e),
                }
            }
        };
        (chain, result.map_err(failed))
    }

    /// Compares the candidate table (one object's rows) with production's.
    async fn compare(
        &self,
        tx: &tokio_postgres::Transaction<'_>,
        origin: &str,
        uri: &str,
        records: u64,
    ) -> Result<Summary, tokio_postgres::Error> {
        let fields: Vec<String> = self
            .sink
            .columns
            .iter()
            .filter(|c| matches!(c.source, ColumnSource::Field(_)))
            .map(|c| c.name.clone())
            .collect();
        let file = file_column(&self.sink);
        let by = match (key_of(&self.sink), file) {
            (Some(key), file) => By::Key { key, file },
            (None, Some(file)) => By::Position { file, line: line_column(&self.sink) },
            (None, None) => unreachable!("refused before: no way to match rows"),
        };
        let statement = compare::compare(&self.target(), &fields, by);
        let pipeline = self.pipeline().to_string();
        let mut params: Vec<&(dyn tokio_postgres::types::ToSql + Sync)> = vec![&pipeline, &origin];
        if file.is_some() {
            params.push(&uri);
        }
        compare::run_compare(tx, &statement, &params, &fields, records, |line| format!("{uri} line {line}")).await
    }

    /// `--apply`: the object's rows replaced through its receipt.
    async fn apply(
        &self,
        chain: TransformChain,
        object: &ObjectRef,
        uri: &str,
        done: &mut Replayed,
    ) -> (TransformChain, Result<(), Skip>) {
        let flow = &self.loader.flow;
        let mut receipt = FileReceipt {
            bucket: object.bucket.clone(),
            key: object.key.clone(),
            version: object.version_id.clone().or_else(|| object.etag.clone()).unwrap_or_default(),
            etag: object.etag.clone(),
            uri: uri.to_string(),
            replace: self.loader.replace.clone(),
            sequencer: None,
            end: None,
            replay: Some(self.chain.clone()),
            fence: None,
        };
        let lease = match claim::try_take(flow.sink.pool(), self.pipeline(), object).await {
            Ok(Some(lease)) => lease,
            Ok(None) => return (chain, Err(Skip::Failed("another loader holds it; run the replay again".into()))),
            Err(e) => return (chain, Err(Skip::Failed(crate::report(&e)))),
        };
        receipt.fence = Some(lease.fence().clone());
        let state = match flow.sink.file_state(&receipt).await {
            Ok(s) => s,
            Err(e) => {
                lease.release().await;
                return (chain, Err(Skip::Failed(crate::report(&e))));
            }
        };
        if state.done {
            lease.release().await;
            return (chain, Err(Skip::Already));
        }
        let (chain, outcome) = self.loader.stream(chain, object, receipt, state.rows_done).await;
        lease.release().await;
        let result = match outcome {
            Ok(Outcome::Loaded(report)) => {
                done.rows += report.rows as u64;
                done.rejected += report.dead_letters as u64;
                Ok(())
            }
            Ok(Outcome::Gone) => Err(Skip::Left("gone".into())),
            Ok(Outcome::Superseded) | Err(LoadError::Sink { error: SinkError::Superseded, .. }) => {
                Err(Skip::Left("the pipeline loaded another version since".into()))
            }
            Ok(Outcome::Interrupted) => Err(Skip::Failed("stopped; the replay resumes where it stopped".into())),
            Ok(Outcome::AlreadyLoaded | Outcome::Busy) => Err(Skip::Already),
            Err(e) => Err(e.into()),
        };
        (chain, result)
    }

    /// `--into`: the side table, made `LIKE` the target when missing; one
    /// that exists must have the sink's columns with the target's types.
    async fn side_table(&self, schema: Option<&str>, table: &str) -> Result<String, ReplayError> {
        let schema = schema.unwrap_or(&self.sink.schema);
        let side = sql::qualified(schema, table);
        let readable = sql::readable_qualified(schema, table);
        let client = self.loader.flow.sink.pool().get().await.map_err(SinkError::pool)?;
        match table_columns(&client, schema, table).await? {
            None => {
                let create = compare::create_side(&side, &self.target());
                client.batch_execute(&create).await.map_err(db(format!("creating table {readable}")))?;
            }
            Some(columns) => {
                let problems = compare::misfits(&self.types, &columns);
                if !problems.is_empty() {
                    return Err(ReplayError::Side { table: readable, problems });
                }
            }
        }
        Ok(side)
    }
}

/// The COPY text of `units`' rows, each line led by its line in the file
/// and its place among that line's rows when `numbered` (the candidate
/// table); and the ids of units with dead letters, one a line.
fn candidate_text(units: &[Unit], numbered: bool) -> (Vec<u8>, Vec<u8>) {
    let (mut text, mut dead) = (Vec::new(), Vec::new());
    for u in units {
        if !u.dead.is_empty() {
            dead.extend_from_slice(u.message_id.as_bytes());
            dead.push(b'\n');
        }
        if !numbered {
            text.extend_from_slice(&u.rows);
            continue;
        }
        let line = u.message_id.strip_prefix("line ").and_then(|l| l.parse::<u64>().ok()).unwrap_or(u.position);
        for (n, row) in u.rows.split_inclusive(|b| *b == b'\n').enumerate() {
            text.extend_from_slice(format!("{line}\t{n}\t").as_bytes());
            text.extend_from_slice(row);
        }
    }
    (text, dead)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn from_names_a_bucket_and_a_prefix() {
        assert_eq!(parse_from("s3://b/in/2024/").unwrap(), ("b".to_string(), "in/2024/".to_string()));
        assert_eq!(parse_from("s3://b").unwrap(), ("b".to_string(), String::new()));
        for bad in ["b/in", "s3:///x", "http://b/x"] {
            assert!(matches!(parse_from(bad), Err(ReplayError::From(_))), "{bad}");
        }
    }

    #[test]
    fn candidate_rows_carry_their_line_and_place() {
        let unit = |id: &str, rows: &[u8], dead: bool| Unit {
            message_id: id.into(),
            rows: rows.to_vec(),
            row_count: rows.iter().filter(|b| **b == b'\n').count(),
            dead: if dead { vec![crate::sink::dead_letter::DeadLetter::input("no".into())] } else { Vec::new() },
            ..Unit::default()
        };
        let units = [unit("line 2", b"a\t1\nb\t2\n", false), unit("line 3", b"", true)];
        let (text, dead) = candidate_text(&units, true);
        assert_eq!(String::from_utf8(text).unwrap(), "2\t0\ta\t1\n2\t1\tb\t2\n");
        assert_eq!(dead, b"line 3\n");
        assert_eq!(candidate_text(&units, false).0, b"a\t1\nb\t2\n");
    }
}
