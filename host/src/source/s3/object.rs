//! Loading one S3 object version: under its lease (see [`super::claim`]),
//! from the row after its last committed one, streamed through the reader
//! (bounded memory), the chain in chunks of `max_records` rows, and the sink
//! in commits of `rows_per_commit` rows, each moving the object's progress
//! in `etl.files` in the same transaction. One commit is in flight while
//! the next chunk is read and transformed.
//!
//! Must not decide which objects to load, nor acknowledge messages: the
//! notification, reconcile and backfill loops do.

use super::{LoadError, ObjectRef, Outcome, claim, s3_error, unquote};
use crate::aws::FaultKind;
use crate::batch::BatchBuilder;
use crate::config::{Generated, S3SourceConfig};
use crate::flow::{Flow, Ran, fill_units, lineage, load_time, plugins_json, run_chain_kept};
use crate::input::fields_json;
use crate::mapping::{LoadTime, RowOrigin};
use crate::sink::dead_letter::{DeadLetter, PayloadForm};
use crate::sink::{FileReceipt, Lineage, Report, Unit};
use crate::transform::TransformChain;
use aws_sdk_s3::error::ProvideErrorMetadata;
use readers::file::{FileOptions, FileReader, Item};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

/// A commit of an object's rows holds at most about this many bytes of
/// rows and payloads (and at most `rows_per_commit` rows): wide rows make
/// smaller commits, not a larger process.
const MAX_COMMIT_BYTES: usize = 64 << 20;

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
    pub(super) s3: aws_sdk_s3::Client,
    pub(super) flow: Arc<Flow>,
    pub(super) config: S3SourceConfig,
    /// The target's `source-file` column: a new version replaces the rows
    /// of the old one.
    pub(super) replace: Option<String>,
    /// Whether the bucket keeps versions: then a listing gives each key's
    /// latest version id, and that is the version loaded and recorded.
    versioned: AtomicBool,
    /// Whether the bucket was found unable to say so (warned once).
    warned: AtomicBool,
    pub progress: Progress,
}

impl Loader {
    /// Loads objects of `config` with `s3`, through `flow`'s chain and sink.
    pub fn new(flow: Arc<Flow>, config: S3SourceConfig, s3: aws_sdk_s3::Client) -> Loader {
        let replace = flow.pipeline.sink.as_ref().and_then(|sink| {
            sink.columns
                .iter()
                .find(|c| c.source == crate::config::ColumnSource::Generated(Generated::SourceFile))
                .map(|c| c.name.clone())
        });
        Loader {
            s3,
            flow,
            config,
            replace,
            versioned: AtomicBool::new(false),
            warned: AtomicBool::new(false),
            progress: Progress::default(),
        }
    }

    /// Asks the bucket whether it keeps versions (versioning enabled or
    /// suspended) and lists it accordingly from now on. GetBucketVersioning;
    /// where a store answers that in a shape the SDK cannot read (moto names
    /// the answer's root element `GetBucketVersioningResponse`), a one-key
    /// version listing under the prefix: a version id other than `null`
    /// means versions are kept. `None` when neither tells (the request
    /// failed, or the listing shows no id but `null`); the way the bucket
    /// is listed then stays as it was (at first, by ETag), so one failed
    /// request never makes every file look changed.
    pub async fn detect_versions(&self) -> Option<bool> {
        let bucket = self.config.bucket.clone()?;
        let asked = match self.s3.get_bucket_versioning().bucket(&bucket).send().await {
            Ok(out) => Some(out.status().is_some()),
            Err(e) if unreadable(&e) => {
                let listed =
                    self.s3.list_object_versions().bucket(&bucket).prefix(&self.config.prefix).max_keys(1).send().await;
                match listed {
                    Ok(page) => {
                        let ids = page.versions().iter().filter_map(|v| v.version_id());
                        let mut ids = ids.chain(page.delete_markers().iter().filter_map(|m| m.version_id()));
                        ids.any(|id| id != "null").then_some(true)
                    }
                    Err(e) => self.cannot_tell(&bucket, &e),
                }
            }
            Err(e) => self.cannot_tell(&bucket, &e),
        };
        if let Some(v) = asked {
            self.versioned.store(v, Ordering::Relaxed);
        }
        asked
    }

    /// Warns (once) that the bucket cannot say whether it keeps versions.
    fn cannot_tell<E>(
        &self,
        bucket: &str,
        e: &aws_sdk_s3::error::SdkError<E, aws_sdk_s3::config::http::HttpResponse>,
    ) -> Option<bool>
    where
        E: ProvideErrorMetadata + std::error::Error + 'static,
    {
        if !self.warned.swap(true, Ordering::Relaxed) {
            tracing::warn!(
                pipeline = %self.pipeline(), bucket = %bucket,
                error = %crate::aws::fault(e),
                "cannot ask whether the bucket keeps versions; it is listed as before (at first, by ETag)"
            );
        }
        None
    }

    /// Whether listings read versions (see [`Loader::detect_versions`]).
    pub(super) fn versioned(&self) -> bool {
        self.versioned.load(Ordering::Relaxed)
    }

    fn pipeline(&self) -> &str {
        &self.flow.pipeline.name
    }

    /// Whether the pipeline loads `key` of `bucket` (its bucket and prefix).
    pub fn wants(&self, bucket: &str, key: &str) -> bool {
        self.config.bucket.as_deref().is_none_or(|b| b == bucket) && key.starts_with(&self.config.prefix)
    }

    /// Loads one object (what is left of it), if it is still the key's
    /// current version: only the latest content of a key is loaded, so a
    /// late or repeated event of an older version, or a listing overtaken
    /// by a put, never replaces newer rows. Gives the chain back.
    pub async fn load(
        &self,
        chain: TransformChain,
        object: &ObjectRef,
    ) -> (TransformChain, Result<Outcome, LoadError>) {
        let uri = object.uri();
        let mut object = object.clone();
        object.version_id = super::version_id(object.version_id.as_deref());
        object.etag = object.etag.as_deref().map(unquote).filter(|e| !e.is_empty());
        if object.version_id.is_none() && object.etag.is_none() {
            match self.head(&object).await {
                Ok(Some(current)) => (object.version_id, object.etag) = (current.version_id, current.etag),
                Ok(None) => return (chain, Ok(Outcome::Gone)),
                Err(e) => return (chain, Err(e)),
            }
        }
        let mut receipt = FileReceipt {
            bucket: object.bucket.clone(),
            key: object.key.clone(),
            version: object.version_id.clone().or_else(|| object.etag.clone()).unwrap_or_default(),
            etag: object.etag.clone(),
            uri: uri.clone(),
            replace: self.replace.clone(),
            sequencer: object.sequencer.clone(),
            end: None,
            replay: None,
            fence: None,
        };
        let sink_err = |error| LoadError::Sink { uri: uri.clone(), error };
        // Objects are divided between loaders (and hosts) by a lease of
        // their own, renewed for the whole load and checked by its commits.
        let lease = match claim::try_take(self.flow.sink.pool(), self.pipeline(), &object).await {
            Ok(Some(lease)) => lease,
            Ok(None) => return (chain, Ok(Outcome::Busy)),
            Err(e) => return (chain, Err(sink_err(e))),
        };
        receipt.fence = Some(lease.fence().clone());
        let (chain, outcome) = match self.locked(chain, &object, receipt).await {
            (chain, Err(LoadError::Sink { error: error @ crate::sink::SinkError::Fenced { .. }, .. })) => {
                // Stalled past the lease's time: another loader took the
                // object over, and this one's commit was refused.
                tracing::warn!(pipeline = %self.pipeline(), object = %uri, reason = %error, "the object is left to the host that took it over");
                (chain, Ok(Outcome::Busy))
            }
            other => other,
        };
        lease.release().await;
        if matches!(outcome, Ok(Outcome::Loaded(_))) {
            self.progress.objects.fetch_add(1, Ordering::Relaxed);
        }
        (chain, outcome)
    }

    /// [`Loader::load`] under the object's lease.
    async fn locked(
        &self,
        chain: TransformChain,
        object: &ObjectRef,
        receipt: FileReceipt,
    ) -> (TransformChain, Result<Outcome, LoadError>) {
        let sink_err = |error| LoadError::Sink { uri: receipt.uri.clone(), error };
        let state = match self.flow.sink.file_state(&receipt).await {
            Ok(s) => s,
            Err(e) => return (chain, Err(sink_err(e))),
        };
        if state.done {
            return (chain, Ok(Outcome::AlreadyLoaded));
        }
        // Asked under the lock: a newer version's loader waits for this one.
        let newer = match self.head(object).await {
            Ok(None) => Some(Outcome::Gone),
            Ok(Some(current)) if !current.is(object) => Some(Outcome::Superseded),
            Ok(Some(_)) => None,
            Err(e) => return (chain, Err(e)),
        };
        if let Some(outcome) = newer {
            if state.rows_done > 0 {
                // Part-loaded, and no longer what the key holds: its rows
                // go (where rows know their file) and so does its record.
                if let Err(e) = self.flow.sink.abandon_file(&receipt).await {
                    return (chain, Err(sink_err(e)));
                }
                tracing::info!(pipeline = %self.pipeline(), object = %receipt.uri, version = %receipt.version,
                    "a part-loaded version is no longer the key's latest; its rows and record are dropped");
            }
            return (chain, Ok(outcome));
        }
        match self.stream(chain, object, receipt.clone(), state.rows_done).await {
            (chain, Err(LoadError::Sink { error: crate::sink::SinkError::Superseded, .. })) => {
                tracing::info!(pipeline = %self.pipeline(), object = %receipt.uri, "a newer version was loaded before; this older one is skipped");
                (chain, Ok(Outcome::Superseded))
            }
            other => other,
        }
    }

    /// The object's current version; `None` if it is gone.
    async fn head(&self, o: &ObjectRef) -> Result<Option<Current>, LoadError> {
        match self.s3.head_object().bucket(&o.bucket).key(&o.key).send().await {
            Ok(out) => {
                Ok(Some(Current { version_id: super::version_id(out.version_id()), etag: out.e_tag().map(unquote) }))
            }
            Err(e) if e.raw_response().is_some_and(|r| r.status().as_u16() == 404) => Ok(None),
            Err(e) => Err(s3_error(o, "HeadObject", &e)),
        }
    }

    /// The object version's reader, from row `rows_done` on: GetObject by
    /// its version id, else by its ETag (a changed object is
    /// [`Outcome::Superseded`], a missing one [`Outcome::Gone`]).
    pub(super) async fn open(&self, object: &ObjectRef, uri: &str, rows_done: u64) -> Result<Opened, LoadError> {
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
                    ("NoSuchKey" | "NoSuchVersion", _) | (_, Some(404)) => Ok(Opened::Not(Outcome::Gone)),
                    ("PreconditionFailed", _) | (_, Some(412)) => Ok(Opened::Not(Outcome::Superseded)),
                    _ => Err(s3_error(object, "GetObject", &e)),
                };
            }
        };
        let encoding = out.content_encoding().map(str::to_string);
        let options = FileOptions {
            format: self.config.format.clone(),
            compression: self.config.compression,
            start_after_row: rows_done,
            max_row_bytes: self.flow.pipeline.max_record_bytes,
        };
        let body = Box::pin(out.body.into_async_read());
        match FileReader::open(body, options, &object.key, encoding.as_deref()).await {
            Ok(r) => Ok(Opened::Reader(r)),
            Err(e) if e.is_retryable() => Err(LoadError::S3 {
                uri: uri.into(),
                action: "reading",
                reason: e.to_string(),
                kind: FaultKind::Unreachable,
            }),
            Err(e) => Ok(Opened::Unreadable(e.to_string())),
        }
    }

    /// Reads the object from row `rows_done` on and commits its rows.
    pub(super) async fn stream(
        &self,
        mut chain: TransformChain,
        object: &ObjectRef,
        receipt: FileReceipt,
        rows_done: u64,
    ) -> (TransformChain, Result<Outcome, LoadError>) {
        let uri = receipt.uri.clone();
        let mut reader = match self.open(object, &uri, rows_done).await {
            Ok(Opened::Reader(r)) => r,
            Ok(Opened::Not(outcome)) => return (chain, Ok(outcome)),
            // The object as a whole cannot be read: one dead letter says why.
            Ok(Opened::Unreadable(reason)) => return self.unreadable(chain, receipt, rows_done, reason).await,
            Err(e) => return (chain, Err(e)),
        };
        let columns = reader.columns().to_vec();
        let lineage = lineage(&chain);
        let mut load = load_time(&chain);
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
                    match self.commit(units, lineage.clone(), receipt.clone()).await {
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
            let commit = self.commit(units, lineage.clone(), next);
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
    pub(super) async fn fill(
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
        // Rows, dead letters and their payloads held for this commit.
        let mut held = 0usize;
        while (units.len() as u64) < self.config.rows_per_commit && held < MAX_COMMIT_BYTES {
            // The run is stopping: loaders end after their current commit.
            if self.flow.stopping() {
                return (chain, Ok(Filled { units: Vec::new(), end: None, broken: None }));
            }
            let chunk = match reader.next_chunk(self.flow.pipeline.max_records, 8 << 20).await {
                Ok(Some(chunk)) => chunk,
                Ok(None) => return (chain, Ok(Filled { units, end: Some(reader.rows_read()), broken: None })),
                Err(e) if e.is_retryable() => {
                    return (
                        chain,
                        Err(LoadError::S3 {
                            uri: uri.into(),
                            action: "reading",
                            reason: e.to_string(),
                            kind: FaultKind::Unreachable,
                        }),
                    );
                }
                Err(e) => return (chain, Ok(Filled { units, end: None, broken: Some(e.to_string()) })),
            };
            let before = units.len();
            chain = match self.transform(chain, columns, chunk, load, &mut units).await {
                Ok(c) => c,
                Err((c, reason)) => return (c, Err(LoadError::Chain { uri: uri.into(), reason })),
            };
            held += units[before..].iter().map(|u| u.rows.len() + u.payload.len()).sum::<usize>();
            let bytes = reader.bytes_read();
            self.progress.bytes.fetch_add(bytes - bytes_seen, Ordering::Relaxed);
            self.flow.panel.bytes_read(bytes - bytes_seen);
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
        // Each unit's line in the object, for its rows' `source-line`.
        let mut lines = Vec::with_capacity(chunk.rows.len());
        for (i, row) in chunk.rows.into_iter().enumerate() {
            let position = chunk.first_row + i as u64 + 1;
            lines.push(row.line);
            let mut unit = Unit { message_id: format!("line {}", row.line), position, ..Unit::default() };
            let decoded = match row.item {
                Ok(Item::Json(bytes)) => {
                    let r = self.flow.decoder.decode(&bytes, &mut builder);
                    unit.payload = bytes;
                    r
                }
                Ok(Item::Fields(fields)) => {
                    let r = self.flow.decoder.decode_fields(columns, &fields, &mut builder);
                    unit.payload = fields_json(columns, &fields);
                    r
                }
                // The row as the file held it, to replay once fixed.
                Err(bad) => {
                    unit.form = if bad.cut { PayloadForm::CutRow } else { PayloadForm::Row };
                    unit.payload = bad.raw;
                    Err(bad.error.to_string())
                }
            };
            match decoded {
                Ok(()) => record_unit.push(units.len() - start),
                Err(reason) => unit.dead.push(DeadLetter::input(format!("line {}: {reason}", row.line))),
            }
            units.push(unit);
        }
        let Ran { chain, batch, out, cpu } = run_chain_kept(chain, builder.finish()).await;
        match out {
            Ok(out) => {
                let origin = |i: usize| RowOrigin { message_id: None, line: Some(lines[i]) };
                fill_units(&self.flow.mapping, load, &out, &record_unit, &mut units[start..], |_| 1, origin);
                let object = load.source_file.as_deref().unwrap_or_default();
                self.flow.shadow(|| crate::shadow::Offer {
                    lineage: plugins_json(&chain),
                    batch,
                    production: out,
                    production_cpu: cpu,
                    labels: record_unit.iter().map(|&u| format!("{object} {}", units[start + u].message_id)).collect(),
                });
                Ok(chain)
            }
            Err(e) => Err((chain, e.to_string())),
        }
    }

    async fn commit(&self, units: Vec<Unit>, lineage: Lineage, receipt: FileReceipt) -> Result<Report, LoadError> {
        let r = self
            .flow
            .sink
            .commit_file(units, &lineage, &receipt)
            .await
            .map_err(|error| LoadError::Sink { uri: receipt.uri.clone(), error })?;
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
        tracing::warn!(pipeline = %self.pipeline(), object = %receipt.uri, reason = %reason, "object unreadable after row {at}");
        let unit = Unit {
            message_id: format!("after row {at}"),
            position: at + 1,
            dead: vec![DeadLetter::source(format!("unreadable after row {at}: {reason}"), 1)],
            ..Unit::default()
        };
        receipt.end = Some(at + 1);
        match self.commit(vec![unit], lineage(&chain), receipt).await {
            Ok(report) => (chain, Ok(Outcome::Loaded(report))),
            Err(e) => (chain, Err(e)),
        }
    }
}

/// A key's current version, as HeadObject gives it.
struct Current {
    version_id: Option<String>,
    etag: Option<String>,
}

impl Current {
    /// Whether `o` is this version: by version id where it has one, else
    /// (written unversioned or while versioning was suspended, or listed by
    /// ETag) by its content's ETag.
    fn is(&self, o: &ObjectRef) -> bool {
        match &o.version_id {
            Some(mine) => self.version_id.as_ref() == Some(mine),
            None => o.etag.is_some() && o.etag == self.etag,
        }
    }
}

/// Rows read and transformed for one commit.
pub(super) struct Filled {
    pub(super) units: Vec<Unit>,
    pub(super) end: Option<u64>,
    pub(super) broken: Option<String>,
}

/// An object version opened for reading, or why not.
pub(super) enum Opened {
    Reader(FileReader),
    /// Gone, or no longer the version asked for.
    Not(Outcome),
    /// It cannot be read as a whole: why.
    Unreadable(String),
}

/// Whether a request was answered (2xx) in a shape the SDK could not read,
/// rather than refused or lost.
fn unreadable<E>(e: &aws_sdk_s3::error::SdkError<E, aws_sdk_s3::config::http::HttpResponse>) -> bool {
    use aws_sdk_s3::error::SdkError;
    match e {
        SdkError::ResponseError(_) => true,
        SdkError::ServiceError(s) => s.raw().status().is_success(),
        _ => false,
    }
}
