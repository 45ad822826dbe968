//! S3 objects into PostgreSQL: the objects S3 notifications announce on an
//! SQS queue, or (reconcile) every object under a bucket and prefix, kept
//! equal to the rows the target holds for them.
//!
//! An object streams through the reader (bounded memory), the transform
//! chain in batches of `max_records` rows, and the sink in commits of
//! `rows_per_commit` rows. Each commit moves the object's progress in
//! `etl.files` in the same transaction, so a crash resumes after the last
//! committed row and a second delivery of a notification adds nothing. A
//! notification is deleted only after all its objects' rows committed.
//!
//! Hosts divide objects with a session advisory lock per object (tried, not
//! waited for): an object another host is loading is left to it.

use crate::batch::BatchBuilder;
use crate::config::{Generated, Pipeline, S3Mode, S3SourceConfig, Source, SqsSourceConfig};
use crate::input::{Decoder, fields_json};
use crate::mapping::{LoadTime, Mapping};
use crate::reload::Generation;
use crate::run::{RunError, RunOptions, Summary, fill_units, run_chain, take_new_version};
use crate::sink::dead_letter::DeadLetter;
use crate::sink::{FileReceipt, PostgresSink, Receipt, Report, SinkError, Unit, sql};
use crate::source::{Message, SqsSource};
use crate::transform::{Engine, TransformChain};
use aws_sdk_s3::error::ProvideErrorMetadata;
use readers::file::{FileOptions, FileReader, Item};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};
use tokio::sync::watch;

/// One object to load. Without a version id or ETag, the object's current
/// ones are looked up first.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ObjectRef {
    pub bucket: String,
    pub key: String,
    pub version_id: Option<String>,
    pub etag: Option<String>,
}

impl ObjectRef {
    pub fn uri(&self) -> String {
        format!("s3://{}/{}", self.bucket, self.key)
    }
}

/// What became of one object.
#[derive(Debug, Clone, PartialEq)]
pub enum Outcome {
    /// Its rows (the rest of them, after a crash) committed.
    Loaded(Report),
    /// This version was loaded before: nothing to do.
    AlreadyLoaded,
    /// Another loader holds it; it is left to that one.
    Busy,
    /// It changed since it was announced: a newer notification follows.
    Superseded,
    /// It no longer exists.
    Gone,
    /// The run is stopping; what committed stays, the rest loads next time.
    Interrupted,
}

#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    /// Retryable: the object loads again from its last committed row.
    #[error("{uri}: {action} failed: {reason}")]
    S3 { uri: String, action: &'static str, reason: String },
    #[error("{uri}: {source}")]
    Sink { uri: String, source: SinkError },
    #[error("{uri}: the transform chain failed: {reason}")]
    Chain { uri: String, reason: String },
}

impl LoadError {
    pub fn retryable(&self) -> bool {
        match self {
            LoadError::Sink { source, .. } => source.retryable(),
            _ => true,
        }
    }
}

/// What loaders did so far, for progress lines.
#[derive(Debug, Default)]
pub struct Progress {
    pub objects: AtomicU64,
    pub rows: AtomicU64,
    /// Object bytes read (before decompression).
    pub bytes: AtomicU64,
}

/// Loads objects of one pipeline; shared by its workers.
pub struct Loader {
    s3: aws_sdk_s3::Client,
    pool: deadpool_postgres::Pool,
    sink: PostgresSink,
    pipeline: String,
    config: S3SourceConfig,
    mapping: Mapping,
    decoder: Decoder,
    max_records: usize,
    max_row_bytes: usize,
    /// The target's `source-file` column: a new version replaces the rows
    /// of the old one.
    replace: Option<String>,
    pub progress: Progress,
    /// Set when the run stops: loaders end after their current commit.
    pub stopping: AtomicBool,
}

impl Loader {
    pub fn new(
        pipeline: &Pipeline,
        aws: &aws_config::SdkConfig,
        database_url: &str,
    ) -> Result<(Loader, S3SourceConfig), RunError> {
        let name = pipeline.file.display().to_string();
        let (Some(Source::S3(config)), Some(sink_config)) = (pipeline.source.clone(), pipeline.sink.clone()) else {
            return Err(RunError::Incomplete(name));
        };
        // Each worker: a connection holding its object's lock, one committing.
        let pool = crate::sink::pool(database_url, 2 * pipeline.workers + 1)?;
        let sealer = crate::sink::dead_letter::Sealer::from_env().map_err(RunError::Stopped)?;
        let source = match (&config.queue, &config.bucket) {
            (Some(q), _) => format!("sqs:{}", q.queue),
            (None, Some(b)) => format!("s3://{b}/{}", config.prefix),
            (None, None) => "s3".to_string(),
        };
        let sink = PostgresSink::new(pool.clone(), &pipeline.name, &source, &sink_config, sealer);
        let replace = sink_config
            .columns
            .iter()
            .find(|c| c.source == crate::config::ColumnSource::Generated(Generated::SourceFile))
            .map(|c| c.name.clone());
        let loader = Loader {
            s3: crate::transform::remote::s3_client(aws),
            pool,
            sink,
            pipeline: pipeline.name.clone(),
            config: config.clone(),
            mapping: Mapping::new(&sink_config),
            decoder: Decoder::new(pipeline),
            max_records: pipeline.max_records,
            max_row_bytes: pipeline.max_record_bytes,
            replace,
            progress: Progress::default(),
            stopping: AtomicBool::new(false),
        };
        Ok((loader, config))
    }

    /// Whether the pipeline loads `key` of `bucket` (its bucket and prefix).
    pub fn wants(&self, bucket: &str, key: &str) -> bool {
        self.config.bucket.as_deref().is_none_or(|b| b == bucket) && key.starts_with(&self.config.prefix)
    }

    /// Loads one object (what is left of it). Gives the chain back.
    pub async fn load(
        &self,
        chain: TransformChain,
        object: &ObjectRef,
    ) -> (TransformChain, Result<Outcome, LoadError>) {
        let uri = object.uri();
        let mut object = object.clone();
        if object.version_id.is_none() && object.etag.is_none() {
            match self.head(&object).await {
                Ok(Some((version_id, etag))) => (object.version_id, object.etag) = (version_id, etag),
                Ok(None) => return (chain, Ok(Outcome::Gone)),
                Err(e) => return (chain, Err(e)),
            }
        }
        let version = object.version_id.clone().or_else(|| object.etag.clone()).unwrap_or_default();
        let receipt = FileReceipt {
            bucket: object.bucket.clone(),
            key: object.key.clone(),
            version,
            uri: uri.clone(),
            replace: self.replace.clone(),
            end: None,
        };
        let sink_err = |source| LoadError::Sink { uri: uri.clone(), source };
        // Objects are divided between loaders (and hosts) by a lock of
        // their own, held on a connection of its own for the whole load.
        let lock = match ObjectLock::try_take(&self.pool, &self.pipeline, &object).await {
            Ok(Some(lock)) => lock,
            Ok(None) => return (chain, Ok(Outcome::Busy)),
            Err(e) => return (chain, Err(sink_err(e))),
        };
        let state = match self.sink.file_state(&receipt).await {
            Ok(s) => s,
            Err(e) => {
                lock.release().await;
                return (chain, Err(sink_err(e)));
            }
        };
        if state.done {
            lock.release().await;
            return (chain, Ok(Outcome::AlreadyLoaded));
        }
        let (chain, outcome) = self.stream(chain, &object, receipt, state.rows_done).await;
        lock.release().await;
        if matches!(outcome, Ok(Outcome::Loaded(_))) {
            self.progress.objects.fetch_add(1, Ordering::Relaxed);
        }
        (chain, outcome)
    }

    /// The object's current version id and ETag; `None` if it is gone.
    async fn head(&self, o: &ObjectRef) -> Result<Option<(Option<String>, Option<String>)>, LoadError> {
        match self.s3.head_object().bucket(&o.bucket).key(&o.key).send().await {
            Ok(out) => Ok(Some((out.version_id().map(str::to_string), out.e_tag().map(unquote)))),
            Err(e) if e.raw_response().is_some_and(|r| r.status().as_u16() == 404) => Ok(None),
            Err(e) => Err(s3_error(o, "HeadObject", e)),
        }
    }

    /// Reads the object from row `rows_done` on and commits its rows.
    async fn stream(
        &self,
        mut chain: TransformChain,
        object: &ObjectRef,
        receipt: FileReceipt,
        rows_done: u64,
    ) -> (TransformChain, Result<Outcome, LoadError>) {
        let uri = receipt.uri.clone();
        let mut get = self.s3.get_object().bucket(&object.bucket).key(&object.key);
        get = match (&object.version_id, &object.etag) {
            (Some(v), _) => get.version_id(v),
            (None, Some(etag)) => get.if_match(format!("\"{etag}\"")),
            (None, None) => get,
        };
        let out = match get.send().await {
            Ok(out) => out,
            Err(e) => {
                let code = e.as_service_error().and_then(|s| s.code()).unwrap_or_default().to_string();
                let status = e.raw_response().map(|r| r.status().as_u16());
                return match (code.as_str(), status) {
                    ("NoSuchKey" | "NoSuchVersion", _) | (_, Some(404)) => (chain, Ok(Outcome::Gone)),
                    ("PreconditionFailed", _) | (_, Some(412)) => (chain, Ok(Outcome::Superseded)),
                    _ => (chain, Err(s3_error(object, "GetObject", e))),
                };
            }
        };
        let encoding = out.content_encoding().map(str::to_string);
        let options = FileOptions {
            format: self.config.format.clone(),
            compression: self.config.compression,
            start_after_row: rows_done,
            max_row_bytes: self.max_row_bytes,
        };
        let body = Box::pin(out.body.into_async_read());
        let mut reader = match FileReader::open(body, options, &object.key, encoding.as_deref()).await {
            Ok(r) => r,
            Err(e) if e.is_retryable() => {
                return (chain, Err(LoadError::S3 { uri, action: "reading", reason: e.to_string() }));
            }
            // The object as a whole cannot be read: one dead letter says why.
            Err(e) => return self.unreadable(chain, receipt, rows_done, e.to_string()).await,
        };
        let columns = reader.columns().to_vec();
        let plugins = plugins_json(&chain);
        let mut load = LoadTime::now();
        load.source_file = Some(uri.clone());
        load.source_version = Some(receipt.version.clone());
        let mut report = Report::default();
        // One commit in flight while the next one's rows are read and
        // transformed: the database and the chain work at the same time.
        let mut in_flight: Option<std::pin::Pin<Box<dyn std::future::Future<Output = _> + Send + '_>>> = None;
        loop {
            let fill = self.fill(chain, &mut reader, &columns, &load, &uri);
            let ((c, filled), committed) = match in_flight.take() {
                Some(commit) => {
                    let (f, c) = futures_util::future::join(fill, commit).await;
                    (f, Some(c))
                }
                None => (fill.await, None),
            };
            chain = c;
            if let Some(committed) = committed {
                match committed {
                    Ok(r) => report += r,
                    Err(e) => return (chain, Err(e)),
                }
            }
            let Filled { units, end, broken } = match filled {
                Ok(f) => f,
                Err(e) => return (chain, Err(e)),
            };
            if let Some(reason) = broken {
                // Rows before the break load; the rest of the object is
                // one dead letter.
                if !units.is_empty() {
                    match self.commit(units, plugins.clone(), receipt.clone()).await {
                        Ok(r) => report += r,
                        Err(e) => return (chain, Err(e)),
                    }
                }
                return self.unreadable(chain, receipt, reader.rows_read(), reason).await;
            }
            if end.is_none() && units.is_empty() {
                // Stopping: what committed stays, the rest loads next time.
                return (chain, Ok(Outcome::Interrupted));
            }
            let mut next = receipt.clone();
            next.end = end;
            let commit = self.commit(units, plugins.clone(), next);
            if end.is_some() {
                return match commit.await {
                    Ok(r) => {
                        report += r;
                        (chain, Ok(Outcome::Loaded(report)))
                    }
                    Err(e) => (chain, Err(e)),
                };
            }
            in_flight = Some(Box::pin(commit));
        }
    }

    /// Reads and transforms rows until there are `rows_per_commit` of them
    /// or the object ends (`end`: its row count) or breaks (`broken`: why).
    /// No rows and no end: the run is stopping.
    async fn fill(
        &self,
        chain: TransformChain,
        reader: &mut FileReader,
        columns: &[String],
        load: &LoadTime,
        uri: &str,
    ) -> (TransformChain, Result<Filled, LoadError>) {
        let mut chain = chain;
        let mut units: Vec<Unit> = Vec::new();
        let mut bytes_seen = reader.bytes_read();
        while (units.len() as u64) < self.config.rows_per_commit {
            if self.stopping.load(Ordering::Relaxed) {
                return (chain, Ok(Filled { units: Vec::new(), end: None, broken: None }));
            }
            let chunk = match reader.next_chunk(self.max_records, 8 << 20).await {
                Ok(Some(chunk)) => chunk,
                Ok(None) => return (chain, Ok(Filled { units, end: Some(reader.rows_read()), broken: None })),
                Err(e) if e.is_retryable() => {
                    return (chain, Err(LoadError::S3 { uri: uri.into(), action: "reading", reason: e.to_string() }));
                }
                Err(e) => return (chain, Ok(Filled { units, end: None, broken: Some(e.to_string()) })),
            };
            chain = match self.transform(chain, columns, chunk, load, &mut units).await {
                Ok(c) => c,
                Err((c, reason)) => return (c, Err(LoadError::Chain { uri: uri.into(), reason })),
            };
            let bytes = reader.bytes_read();
            self.progress.bytes.fetch_add(bytes - bytes_seen, Ordering::Relaxed);
            bytes_seen = bytes;
        }
        (chain, Ok(Filled { units, end: None, broken: None }))
    }

    /// One chunk of rows through the chain, into `units` (one per row).
    async fn transform(
        &self,
        chain: TransformChain,
        columns: &[String],
        chunk: readers::file::Chunk,
        load: &LoadTime,
        units: &mut Vec<Unit>,
    ) -> Result<TransformChain, (TransformChain, String)> {
        let start = units.len();
        let mut builder = BatchBuilder::new();
        let mut record_unit = Vec::new();
        for (i, row) in chunk.rows.into_iter().enumerate() {
            let position = chunk.first_row + i as u64 + 1;
            let mut unit = Unit { message_id: format!("line {}", row.line), position, ..Unit::default() };
            let decoded = match row.item {
                Ok(Item::Json(bytes)) => {
                    let r = self.decoder.decode(&bytes, &mut builder);
                    unit.payload = bytes;
                    r
                }
                Ok(Item::Fields(fields)) => {
                    let r = self.decoder.decode_fields(columns, &fields, &mut builder);
                    unit.payload = fields_json(columns, &fields);
                    r
                }
                Err(e) => Err(e.to_string()),
            };
            match decoded {
                Ok(()) => record_unit.push(units.len() - start),
                Err(reason) => unit.dead.push(input_dead_letter(format!("line {}: {reason}", row.line))),
            }
            units.push(unit);
        }
        let (chain, out) = run_chain(chain, builder.finish()).await;
        match out {
            Ok(out) => {
                fill_units(&self.mapping, load, &out, &record_unit, &mut units[start..], |_| 1);
                Ok(chain)
            }
            Err(e) => Err((chain, e.to_string())),
        }
    }

    async fn commit(&self, units: Vec<Unit>, plugins: String, receipt: FileReceipt) -> Result<Report, LoadError> {
        let r = self
            .sink
            .commit_as(units, &plugins, Receipt::File(&receipt))
            .await
            .map_err(|source| LoadError::Sink { uri: receipt.uri.clone(), source })?;
        self.progress.rows.fetch_add(r.rows as u64, Ordering::Relaxed);
        Ok(r)
    }

    /// An object that cannot be read (further) from row `at`: a dead letter
    /// saying why, and the object counts as loaded.
    async fn unreadable(
        &self,
        chain: TransformChain,
        mut receipt: FileReceipt,
        at: u64,
        reason: String,
    ) -> (TransformChain, Result<Outcome, LoadError>) {
        tracing::warn!(pipeline = %self.pipeline, object = %receipt.uri, reason = %reason, "object unreadable after row {at}");
        let unit = Unit {
            message_id: format!("after row {at}"),
            position: at + 1,
            dead: vec![DeadLetter {
                stage: "source",
                ..input_dead_letter(format!("unreadable after row {at}: {reason}"))
            }],
            ..Unit::default()
        };
        receipt.end = Some(at + 1);
        match self.commit(vec![unit], plugins_json(&chain), receipt).await {
            Ok(report) => (chain, Ok(Outcome::Loaded(report))),
            Err(e) => (chain, Err(e)),
        }
    }

    /// Removes the rows of a file whose object is gone, and its ledger rows.
    /// `false` if another loader holds the file.
    pub async fn remove(&self, bucket: &str, key: &str) -> Result<bool, SinkError> {
        let Some(column) = &self.replace else { return Ok(false) };
        let object = ObjectRef { bucket: bucket.into(), key: key.into(), ..ObjectRef::default() };
        let mut client = self.pool.get().await.map_err(|e| SinkError::Pool(e.to_string()))?;
        let db = |e: tokio_postgres::Error| {
            if crate::sink::transient(&e) {
                SinkError::Transient { attempts: 1, source: e }
            } else {
                SinkError::Permanent(e)
            }
        };
        let tx = client.transaction().await.map_err(db)?;
        let (a, b) = lock_key(&self.pipeline, &object);
        let got: bool = tx.query_one(sql::OBJECT_TRY_XACT_LOCK, &[&a, &b]).await.map_err(db)?.get(0);
        if !got {
            return Ok(false);
        }
        let target = self.sink.target();
        tx.execute(&sql::delete_file_rows(target, column), &[&object.uri()]).await.map_err(db)?;
        tx.execute(sql::FILE_FORGET, &[&self.pipeline, &bucket, &key]).await.map_err(db)?;
        tx.commit().await.map_err(db)?;
        Ok(true)
    }

    /// Every object under the bucket and prefix.
    pub async fn list(&self, prefix: &str) -> Result<Vec<Listed>, LoadError> {
        let bucket = self.config.bucket.clone().unwrap_or_default();
        let mut pages = self.s3.list_objects_v2().bucket(&bucket).prefix(prefix).into_paginator().send();
        let mut objects = Vec::new();
        while let Some(page) = pages.next().await {
            let page = page.map_err(|e| LoadError::S3 {
                uri: format!("s3://{bucket}/{prefix}"),
                action: "ListObjectsV2",
                reason: aws_sdk_s3::error::DisplayErrorContext(e).to_string(),
            })?;
            for o in page.contents() {
                let (Some(key), Some(etag)) = (o.key(), o.e_tag()) else { continue };
                if !key.ends_with('/') {
                    let size = o.size().unwrap_or(0).max(0) as u64;
                    objects.push(Listed { key: key.to_string(), etag: unquote(etag), size });
                }
            }
        }
        Ok(objects)
    }

    /// The object versions completely loaded under `prefix`: key and version.
    pub async fn loaded(&self, prefix: &str) -> Result<Vec<(String, String)>, SinkError> {
        let bucket = self.config.bucket.clone().unwrap_or_default();
        let client = self.pool.get().await.map_err(|e| SinkError::Pool(e.to_string()))?;
        let rows = client
            .query(sql::FILES_LOADED, &[&self.pipeline, &bucket, &prefix])
            .await
            .map_err(|e| SinkError::Transient { attempts: 1, source: e })?;
        Ok(rows.iter().map(|r| (r.get(0), r.get(1))).collect())
    }
}

/// Rows read and transformed for one commit.
struct Filled {
    units: Vec<Unit>,
    end: Option<u64>,
    broken: Option<String>,
}

/// An object in a listing.
#[derive(Debug, Clone)]
pub struct Listed {
    pub key: String,
    pub etag: String,
    pub size: u64,
}

fn plugins_json(chain: &TransformChain) -> String {
    let plugins: Vec<serde_json::Value> =
        chain.plugins().map(|p| serde_json::json!({"name": p.name, "digest": p.digest})).collect();
    serde_json::Value::Array(plugins).to_string()
}

fn input_dead_letter(reason: String) -> DeadLetter {
    DeadLetter {
        record_index: 0,
        stage: "input",
        step: None,
        plugin: None,
        plugin_digest: None,
        reason,
        received_count: 1,
    }
}

fn unquote(etag: &str) -> String {
    etag.trim_matches('"').to_string()
}

fn s3_error<E: std::error::Error + 'static>(o: &ObjectRef, action: &'static str, e: E) -> LoadError {
    LoadError::S3 { uri: o.uri(), action, reason: aws_sdk_s3::error::DisplayErrorContext(e).to_string() }
}

/// The advisory lock key of an object of a pipeline.
fn lock_key(pipeline: &str, o: &ObjectRef) -> (String, String) {
    (format!("etl.files {pipeline}"), format!("{}/{}", o.bucket, o.key))
}

/// A session advisory lock on one object, on a connection of its own.
struct ObjectLock {
    client: deadpool_postgres::Client,
    key: (String, String),
}

impl ObjectLock {
    async fn try_take(
        pool: &deadpool_postgres::Pool,
        pipeline: &str,
        o: &ObjectRef,
    ) -> Result<Option<ObjectLock>, SinkError> {
        let client = pool.get().await.map_err(|e| SinkError::Pool(e.to_string()))?;
        let key = lock_key(pipeline, o);
        let got: bool = client
            .query_one(sql::OBJECT_TRY_LOCK, &[&key.0, &key.1])
            .await
            .map_err(|e| SinkError::Transient { attempts: 1, source: e })?
            .get(0);
        Ok(got.then_some(ObjectLock { client, key }))
    }

    /// Unlocks; a connection that cannot unlock is closed (which unlocks).
    async fn release(self) {
        let unlocked = self.client.query_one(sql::OBJECT_UNLOCK, &[&self.key.0, &self.key.1]).await;
        if unlocked.is_err() {
            let _ = deadpool_postgres::Object::take(self.client);
        }
    }
}

/// `host run` of an S3 source: notifications or reconcile passes until
/// `shutdown` (or, with `once`, until there is nothing left to do).
pub async fn run_files(
    pipeline: Pipeline,
    engine: Arc<Engine>,
    database_url: &str,
    aws: &aws_config::SdkConfig,
    opts: RunOptions,
    shutdown: impl std::future::Future<Output = ()>,
) -> Result<Summary, RunError> {
    let started = Instant::now();
    let (loader, config) = Loader::new(&pipeline, aws, database_url)?;
    let loader = Arc::new(loader);
    let queue = match &config.queue {
        Some(q) => Some((SqsSource::with_config(aws, &q.queue).await?, q.clone())),
        None => None,
    };
    let versions = crate::run::Versions::start(&engine, &pipeline).await?;
    let (stop_tx, stop_rx) = watch::channel(false);
    let (chains, generations, watching) = versions.watch(stop_rx.clone());
    let shared = Arc::new(Shared {
        engine,
        loader: loader.clone(),
        queue,
        summary: Default::default(),
        fatal: Default::default(),
    });
    let work = async {
        match config.mode {
            S3Mode::Notifications => notifications(&shared, chains, generations, stop_rx.clone(), opts).await,
            S3Mode::Reconcile { interval } => {
                reconcile(&shared, chains, generations, stop_rx.clone(), opts, interval).await
            }
        }
    };
    tokio::pin!(work);
    tokio::pin!(shutdown);
    tokio::select! {
        _ = &mut work => {}
        _ = &mut shutdown => {
            loader.stopping.store(true, Ordering::Relaxed);
            let _ = stop_tx.send(true);
            work.await;
        }
    }
    let _ = stop_tx.send(true);
    shared.finish(watching, started).await
}

struct Shared {
    engine: Arc<Engine>,
    loader: Arc<Loader>,
    queue: Option<(SqsSource, SqsSourceConfig)>,
    summary: std::sync::Mutex<Summary>,
    fatal: std::sync::Mutex<Option<String>>,
}

impl Shared {
    fn count(&self, outcome: &Result<Outcome, LoadError>) {
        let mut s = self.summary.lock().expect("not poisoned");
        match outcome {
            Ok(Outcome::Loaded(r)) => {
                s.objects += 1;
                s.rows += r.rows;
                s.dead_letters += r.dead_letters;
                s.batches += r.commits;
            }
            Ok(_) => {}
            Err(e) => {
                s.failed_batches += 1;
                if e.retryable() {
                    tracing::error!(pipeline = %self.loader.pipeline, error = %e, "object not loaded; it is tried again later");
                } else {
                    tracing::error!(pipeline = %self.loader.pipeline, error = %e, "stopping: the object cannot be loaded as configured");
                    *self.fatal.lock().expect("not poisoned") = Some(e.to_string());
                }
            }
        }
    }

    /// The run's summary once its watcher stopped, or why it had to stop.
    async fn finish(&self, watching: crate::run::Watching, started: Instant) -> Result<Summary, RunError> {
        let mut summary = self.summary.lock().expect("not poisoned").clone();
        watching.finish(&mut summary).await;
        summary.elapsed = started.elapsed();
        match self.fatal.lock().expect("not poisoned").take() {
            Some(why) => Err(RunError::Stopped(why)),
            None => Ok(summary),
        }
    }

    fn fatal(&self) -> bool {
        self.fatal.lock().expect("not poisoned").is_some()
    }
}

/// Workers each receive one notification at a time, load its objects, and
/// delete it once they all committed.
async fn notifications(
    shared: &Arc<Shared>,
    chains: Vec<TransformChain>,
    generations: watch::Receiver<Arc<Generation>>,
    stop: watch::Receiver<bool>,
    opts: RunOptions,
) {
    // Workers still busy: `--once` ends when none is and the queue is empty.
    let busy = Arc::new(AtomicU64::new(0));
    let workers: Vec<_> = chains
        .into_iter()
        .map(|chain| {
            let (shared, mut generations, stop, busy) =
                (shared.clone(), generations.clone(), stop.clone(), busy.clone());
            tokio::spawn(async move {
                let (source, queue) = shared.queue.as_ref().expect("notifications have a queue");
                let wait = if opts.once { queue.wait.min(Duration::from_secs(1)) } else { queue.wait };
                let mut chain = chain;
                while !*stop.borrow() && !shared.fatal() {
                    let received = match source.receive_up_to(1, wait, queue.visibility).await {
                        Ok(m) => m,
                        Err(e) => {
                            tracing::warn!(error = %e, "receive failed; retrying in 1 s");
                            tokio::time::sleep(Duration::from_secs(1)).await;
                            continue;
                        }
                    };
                    let Some(message) = received.into_iter().next() else {
                        if opts.once && busy.load(Ordering::SeqCst) == 0 {
                            return;
                        }
                        continue;
                    };
                    busy.fetch_add(1, Ordering::SeqCst);
                    chain = take_new_version(&shared.engine, chain, &mut generations).await;
                    chain = notification(&shared, chain, message, queue).await;
                    busy.fetch_sub(1, Ordering::SeqCst);
                }
            })
        })
        .collect();
    for w in workers {
        let _ = w.await;
    }
}

/// One notification, start to delete.
async fn notification(
    shared: &Arc<Shared>,
    chain: TransformChain,
    message: Message,
    queue: &SqsSourceConfig,
) -> TransformChain {
    let (source, _) = shared.queue.as_ref().expect("notifications have a queue");
    let keeper = keep_visible(source.clone(), message.clone(), queue.visibility);
    let finished = async {
        let mut chain = chain;
        if message.receive_count > queue.max_receives {
            let reason = format!("received {} times (max_receives = {})", message.receive_count, queue.max_receives);
            return (chain, message_dead_letter(shared, &message, reason).await);
        }
        let events = match readers::notification::parse(&String::from_utf8_lossy(&message.body)) {
            Ok(events) => events,
            Err(e) => {
                let reason = format!("not an S3 notification: {e}");
                return (chain, message_dead_letter(shared, &message, reason).await);
            }
        };
        let mut settled = true;
        for e in events {
            if !shared.loader.wants(&e.bucket, &e.key) {
                tracing::info!(pipeline = %shared.loader.pipeline, object = %format!("s3://{}/{}", e.bucket, e.key), "not under the pipeline's bucket and prefix; skipped");
                continue;
            }
            let object = ObjectRef { bucket: e.bucket, key: e.key, version_id: e.version_id, etag: e.etag };
            let (c, mut outcome) = shared.loader.load(chain, &object).await;
            chain = c;
            // Another loader has the object (two notifications of one key):
            // wait for it, then find what it committed.
            while matches!(outcome, Ok(Outcome::Busy)) && !shared.loader.stopping.load(Ordering::Relaxed) {
                tokio::time::sleep(Duration::from_millis(200)).await;
                let (c, next) = shared.loader.load(chain, &object).await;
                (chain, outcome) = (c, next);
            }
            shared.count(&outcome);
            match outcome {
                Ok(Outcome::Loaded(_) | Outcome::AlreadyLoaded | Outcome::Superseded) => {}
                Ok(Outcome::Gone) => {
                    tracing::warn!(pipeline = %shared.loader.pipeline, object = %object.uri(), "the announced object no longer exists; nothing to load")
                }
                Ok(Outcome::Busy | Outcome::Interrupted) | Err(_) => {
                    settled = false;
                    break;
                }
            }
        }
        (chain, settled)
    };
    let (chain, settled) = finished.await;
    keeper.abort();
    let refs = [&message];
    if settled {
        shared.summary.lock().expect("not poisoned").messages += 1;
        if let Err(e) = source.delete(&refs).await {
            tracing::warn!(error = %e, "delete failed; the notification comes back and adds nothing");
        }
    } else if let Err(e) = source.set_visibility(&refs, Duration::from_secs(5)).await {
        tracing::warn!(error = %e, "could not shorten the visibility of a notification not done");
    }
    chain
}

/// A message that cannot be loaded as a notification: a dead letter, under
/// the message ledger. Returns whether it committed.
async fn message_dead_letter(shared: &Shared, m: &Message, reason: String) -> bool {
    let unit = Unit {
        message_id: m.id.clone(),
        sent_ms: m.sent_ms,
        payload: m.body.clone(),
        dead: vec![DeadLetter { stage: "source", received_count: m.receive_count as i32, ..input_dead_letter(reason) }],
        ..Unit::default()
    };
    match shared.loader.sink.commit(vec![unit], "[]").await {
        Ok(r) => {
            shared.summary.lock().expect("not poisoned").dead_letters += r.dead_letters;
            true
        }
        Err(e) => {
            tracing::error!(error = %e, "could not record a dead letter; the message comes back");
            false
        }
    }
}

fn keep_visible(source: SqsSource, m: Message, visibility: Duration) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        loop {
            tokio::time::sleep(visibility / 2).await;
            if let Err(e) = source.set_visibility(&[&m], visibility).await {
                tracing::warn!(error = %e, "could not extend visibility");
            }
        }
    })
}

/// Reconcile: a pass now and then every `interval` (or when a notification
/// arrives, if the pipeline names a queue); `--once` runs one pass.
async fn reconcile(
    shared: &Arc<Shared>,
    chains: Vec<TransformChain>,
    generations: watch::Receiver<Arc<Generation>>,
    mut stop: watch::Receiver<bool>,
    opts: RunOptions,
    interval: Duration,
) {
    let mut chains: Vec<TransformChain> = chains;
    loop {
        let mut g = generations.clone();
        let mut next = Vec::new();
        for chain in chains {
            next.push(take_new_version(&shared.engine, chain, &mut g).await);
        }
        chains = pass(shared, next).await;
        if opts.once || *stop.borrow() || shared.fatal() {
            return;
        }
        let until = tokio::time::Instant::now() + interval;
        loop {
            let woken = match &shared.queue {
                Some((source, q)) => {
                    let wait = q.wait.min(until.saturating_duration_since(tokio::time::Instant::now()));
                    tokio::select! {
                        r = source.receive_up_to(10, wait, q.visibility) => match r {
                            Ok(m) if !m.is_empty() => {
                                // The pass about to run covers what they announce.
                                let refs: Vec<&Message> = m.iter().collect();
                                let _ = source.delete(&refs).await;
                                true
                            }
                            _ => false,
                        },
                        _ = stop.changed() => return,
                    }
                }
                None => {
                    tokio::select! {
                        _ = tokio::time::sleep_until(until) => true,
                        _ = stop.changed() => return,
                    }
                }
            };
            if woken || tokio::time::Instant::now() >= until {
                break;
            }
        }
    }
}

/// One reconcile pass: loads new and changed objects (each worker takes
/// the next), then removes the rows of files whose object is gone.
async fn pass(shared: &Arc<Shared>, chains: Vec<TransformChain>) -> Vec<TransformChain> {
    let loader = &shared.loader;
    let prefix = loader.config.prefix.clone();
    let bucket = loader.config.bucket.clone().unwrap_or_default();
    let (listed, loaded) = match (loader.list(&prefix).await, loader.loaded(&prefix).await) {
        (Ok(l), Ok(d)) => (l, d),
        (Err(e), _) => {
            shared.count(&Err(e));
            return chains;
        }
        (_, Err(e)) => {
            shared.count(&Err(LoadError::Sink { uri: format!("s3://{bucket}/{prefix}"), source: e }));
            return chains;
        }
    };
    let have: std::collections::HashMap<&str, &str> = loaded.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    let todo: Vec<ObjectRef> = listed
        .iter()
        .filter(|o| have.get(o.key.as_str()) != Some(&o.etag.as_str()))
        .map(|o| ObjectRef { bucket: bucket.clone(), key: o.key.clone(), version_id: None, etag: Some(o.etag.clone()) })
        .collect();
    let listed_keys: std::collections::HashSet<&str> = listed.iter().map(|o| o.key.as_str()).collect();
    let gone: Vec<String> =
        loaded.iter().filter(|(k, _)| !listed_keys.contains(k.as_str())).map(|(k, _)| k.clone()).collect();
    tracing::info!(pipeline = %loader.pipeline, listed = listed.len(), to_load = todo.len(), gone = gone.len(), "reconcile pass");
    let mut back = Vec::new();
    for w in load_each(shared, chains, todo) {
        back.push(w.await.expect("workers do not panic"));
    }
    for key in gone {
        match loader.remove(&bucket, &key).await {
            Ok(true) => shared.summary.lock().expect("not poisoned").objects_removed += 1,
            Ok(false) => {}
            Err(e) => shared.count(&Err(LoadError::Sink { uri: format!("s3://{bucket}/{key}"), source: e })),
        }
    }
    back
}

/// Workers, one per chain, each taking the next of `objects` until none is
/// left (or the run stops); each gives its chain back.
fn load_each(
    shared: &Arc<Shared>,
    chains: Vec<TransformChain>,
    objects: Vec<ObjectRef>,
) -> Vec<tokio::task::JoinHandle<TransformChain>> {
    let queue = Arc::new(std::sync::Mutex::new(objects.into_iter()));
    chains
        .into_iter()
        .map(|chain| {
            let (shared, queue) = (shared.clone(), queue.clone());
            tokio::spawn(async move {
                let mut chain = chain;
                loop {
                    if shared.loader.stopping.load(Ordering::Relaxed) || shared.fatal() {
                        return chain;
                    }
                    let Some(object) = queue.lock().expect("not poisoned").next() else { return chain };
                    let (c, outcome) = shared.loader.load(chain, &object).await;
                    chain = c;
                    match outcome {
                        Ok(Outcome::Gone) => {
                            tracing::info!(pipeline = %shared.loader.pipeline, object = %object.uri(), "gone before it was read")
                        }
                        // Done before: it counts as done in the progress.
                        Ok(Outcome::AlreadyLoaded) => {
                            shared.loader.progress.objects.fetch_add(1, Ordering::Relaxed);
                        }
                        _ => {}
                    }
                    shared.count(&outcome);
                }
            })
        })
        .collect()
}

/// `host backfill`: every object under `prefix` of the pipeline's bucket,
/// loaded as a notification for each would load it. `report` is called
/// about once a second with the progress so far.
pub async fn backfill(
    pipeline: Pipeline,
    engine: Arc<Engine>,
    database_url: &str,
    aws: &aws_config::SdkConfig,
    prefix: &str,
    report: impl Fn(&BackfillProgress),
) -> Result<Summary, RunError> {
    let started = Instant::now();
    let (loader, config) = Loader::new(&pipeline, aws, database_url)?;
    if config.bucket.is_none() {
        return Err(RunError::Stopped(format!(
            "{}: [source.s3] needs `bucket` for a backfill",
            pipeline.file.display()
        )));
    }
    let loader = Arc::new(loader);
    let listed = loader.list(prefix).await.map_err(|e| RunError::Stopped(e.to_string()))?;
    let versions = crate::run::Versions::start(&engine, &pipeline).await?;
    let (stop_tx, stop_rx) = watch::channel(false);
    let (chains, _generations, watching) = versions.watch(stop_rx);
    let shared = Arc::new(Shared {
        engine,
        loader: loader.clone(),
        queue: None,
        summary: Default::default(),
        fatal: Default::default(),
    });
    let total_bytes: u64 = listed.iter().map(|o| o.size).sum();
    let count = listed.len() as u64;
    let bucket = config.bucket.clone().unwrap_or_default();
    let objects = listed
        .into_iter()
        .map(|o| ObjectRef { bucket: bucket.clone(), key: o.key, version_id: None, etag: Some(o.etag) })
        .collect();
    let workers = load_each(&shared, chains, objects);
    let all = futures_util::future::join_all(workers);
    tokio::pin!(all);
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    loop {
        tokio::select! {
            _ = &mut all => break,
            _ = tick.tick() => report(&BackfillProgress::of(&loader.progress, count, total_bytes, started)),
        }
    }
    report(&BackfillProgress::of(&loader.progress, count, total_bytes, started));
    let _ = stop_tx.send(true);
    shared.finish(watching, started).await
}

/// A backfill's progress at one moment.
#[derive(Debug, Clone, Copy)]
pub struct BackfillProgress {
    pub objects_done: u64,
    pub objects: u64,
    pub rows: u64,
    pub bytes: u64,
    /// Bytes of all the objects listed.
    pub total_bytes: u64,
    pub elapsed: Duration,
}

impl BackfillProgress {
    fn of(p: &Progress, objects: u64, total_bytes: u64, started: Instant) -> Self {
        BackfillProgress {
            objects_done: p.objects.load(Ordering::Relaxed),
            objects,
            total_bytes,
            rows: p.rows.load(Ordering::Relaxed),
            bytes: p.bytes.load(Ordering::Relaxed),
            elapsed: started.elapsed(),
        }
    }

    /// Rows per second so far.
    pub fn rate(&self) -> f64 {
        self.rows as f64 / self.elapsed.as_secs_f64().max(1e-3)
    }

    /// Time left at the byte rate so far, once there is one.
    pub fn eta(&self) -> Option<Duration> {
        let rate = self.bytes as f64 / self.elapsed.as_secs_f64().max(1e-3);
        (self.bytes > 0 && rate > 0.0)
            .then(|| Duration::from_secs_f64(self.total_bytes.saturating_sub(self.bytes) as f64 / rate))
    }
}
