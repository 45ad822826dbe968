//! Rows streamed out of an object's bytes (CSV, JSON lines, a JSON array;
//! plain or gzip), in memory bounded by a chunk and a channel of rows,
//! whatever the object's size.
//!
//! The async input is counted, decompressed, and bridged to a blocking
//! thread where the `csv` crate or serde_json parse it; rows come back over
//! a bounded channel, so a slow consumer pauses the parser. A malformed row
//! is a [`BadRow`] (its [`RowError`] and its raw bytes, to replay by hand)
//! and reading goes on; only a stream that cannot be read further is a
//! [`FileError`]. No error shows the content. This module
//! knows nothing of S3: the caller adds bucket, key and version to a row's
//! line number for lineage.

mod csv;
mod json;
#[cfg(test)]
mod tests;

use std::collections::HashMap;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::task::{Context, Poll};

use async_compression::tokio::bufread::GzipDecoder;
use tokio::io::{AsyncRead, ReadBuf};
use tokio::sync::{mpsc, oneshot};
use tokio::task::{JoinError, JoinHandle};
use tokio_util::io::SyncIoBridge;

/// Rows parsed ahead of the consumer: the bound on rows held in memory
/// besides the chunk being built.
const ROWS_AHEAD: usize = 1024;
/// Rows cross to the consumer in groups of at most this many (or of
/// [`GROUP_BYTES`] of content): one wake-up of each side per group. A
/// channel message per row cost about 15% of a JSON-lines load's CPU in
/// wake-ups alone (`perf`, 1,000,000 rows).
const GROUP_ROWS: usize = 128;
const GROUP_BYTES: usize = 256 * 1024;
/// Bytes the parsing thread reads from the (decompressed) stream at a time.
const READ_BUFFER: usize = 64 * 1024;

/// How to read one object.
#[derive(Debug, Clone)]
pub struct FileOptions {
    pub format: Format,
    pub compression: Compression,
    /// Rows (good or malformed) to read and discard first: resumes a file
    /// after its last committed row. See [`FileReader::rows_read`].
    pub start_after_row: u64,
    /// The most content one row may have: bytes of a JSON value, or of a CSV
    /// row's fields (and at most this many fields). A longer row is a
    /// [`RowError::TooLong`]; JSON lines and CSV never hold more than about
    /// twice this of one row, a JSON array element is held whole first.
    pub max_row_bytes: usize,
}

#[derive(Debug, Clone, PartialEq)]
pub enum Format {
    Csv(CsvOptions),
    /// One JSON value per line; blank lines are skipped.
    JsonLines,
    /// One top-level JSON array, one row per element.
    JsonArray,
}

/// RFC 4180 CSV. Fields may be quoted (`""` escapes a quote) and hold
/// delimiters and newlines; lines end in LF or CRLF, the last one maybe not.
#[derive(Debug, Clone, PartialEq)]
pub struct CsvOptions {
    pub delimiter: u8,
    /// Whether the first line names the columns. It is not a row.
    pub header: bool,
    /// The column names when `header` is false; must be empty when it is
    /// true. Every row must have this many fields.
    pub columns: Vec<String>,
    /// What an empty field becomes.
    pub empty: EmptyAs,
    /// `empty` for particular columns.
    pub empty_overrides: HashMap<String, EmptyAs>,
}

impl Default for CsvOptions {
    fn default() -> Self {
        CsvOptions {
            delimiter: b',',
            header: true,
            columns: Vec::new(),
            empty: EmptyAs::Null,
            empty_overrides: HashMap::new(),
        }
    }
}

/// What an empty CSV field becomes. (CSV cannot tell `,,` from `,"",`.)
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum EmptyAs {
    #[default]
    Null,
    EmptyString,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Compression {
    None,
    /// Gzip, one member or several concatenated.
    Gzip,
    /// [`Compression::detect`] from the object's key and content encoding.
    #[default]
    Auto,
}

impl Compression {
    /// Gzip when the key ends in `.gz` or the content encoding is gzip;
    /// otherwise none. Never `Auto`.
    pub fn detect(key: &str, content_encoding: Option<&str>) -> Compression {
        let gz_key = key.len() >= 3 && key.as_bytes()[key.len() - 3..].eq_ignore_ascii_case(b".gz");
        let gz_encoding = content_encoding.is_some_and(|e| {
            e.split(',').any(|c| c.trim().eq_ignore_ascii_case("gzip") || c.trim().eq_ignore_ascii_case("x-gzip"))
        });
        if gz_key || gz_encoding { Compression::Gzip } else { Compression::None }
    }
}

/// Up to `max_rows` rows and about `max_bytes` of content.
#[derive(Debug)]
pub struct Chunk {
    /// How many rows of the file came before this chunk's first.
    pub first_row: u64,
    pub rows: Vec<Row>,
    /// The content bytes of `rows` (JSON text, or CSV fields).
    pub bytes: usize,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Row {
    /// The 1-based line the row starts on; for a JSON array, the element's
    /// 1-based index.
    pub line: u64,
    pub item: Result<Item, BadRow>,
}

/// A row that cannot be used: why, and what the file held of it. Shown
/// (`Display`, `Debug`) without its bytes.
#[derive(Clone, PartialEq, Eq)]
pub struct BadRow {
    pub error: RowError,
    /// The row as the file held it, without its line end: a JSON line or
    /// array element, or a CSV record after the file's header line (when
    /// it has one), so that it reads as a file of one row with the same
    /// options. At most `max_row_bytes` of the row (and of the header).
    pub raw: Vec<u8>,
    /// Whether `raw` holds only the start of the row (or of the header).
    pub cut: bool,
}

impl std::fmt::Display for BadRow {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.error.fmt(f)
    }
}

impl std::fmt::Debug for BadRow {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BadRow")
            .field("error", &self.error)
            .field("raw_bytes", &self.raw.len())
            .field("cut", &self.cut)
            .finish()
    }
}

impl BadRow {
    /// `error` of a row whose bytes were `raw`, cut to `max` bytes.
    pub(crate) fn new(error: RowError, raw: &[u8], max: usize) -> BadRow {
        BadRow { error, raw: raw[..raw.len().min(max)].to_vec(), cut: raw.len() > max }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Item {
    /// The text of one JSON value: an array's element, checked (valid JSON
    /// and UTF-8), or a JSON line as the file holds it, unchecked (its
    /// consumer parses it and names what is wrong).
    Json(Vec<u8>),
    /// CSV fields in the order of [`FileReader::columns`].
    Fields(Vec<Option<String>>),
}

/// Why one row is unusable; the rows after it are still read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RowError {
    #[error("expected {expected} fields, found {found}")]
    FieldCount { expected: usize, found: usize },
    /// `field` counts from 1.
    #[error("field {field} is not valid UTF-8")]
    FieldNotUtf8 { field: usize },
    #[error("longer than {max} bytes")]
    TooLong { max: usize },
}

/// Why the object cannot be read (further).
#[derive(Debug, thiserror::Error)]
pub enum FileError {
    /// From the input: retryable.
    #[error("reading the object failed: {0}")]
    Read(io::Error),
    /// Corrupt or truncated gzip.
    #[error("the object is not valid gzip: {0}")]
    Gzip(io::Error),
    #[error("the CSV header is {0}")]
    Header(&'static str),
    #[error("the document is not a JSON array")]
    NotJsonArray,
    /// `element` counts from 1.
    #[error("the JSON array breaks at element {element}: {reason}")]
    JsonArray { element: u64, reason: String },
    #[error("{0}")]
    Options(&'static str),
    #[error("empty_overrides names `{0}`, which is not a column of the file")]
    UnknownColumn(String),
    #[error("the parsing thread failed: {0}")]
    Worker(JoinError),
}

/// Not `#[from]`: the join error's words are in the message already, and
/// a `source` as well would print them twice.
impl From<JoinError> for FileError {
    fn from(e: JoinError) -> Self {
        FileError::Worker(e)
    }
}

impl FileError {
    /// Whether reading the object again may succeed.
    pub fn is_retryable(&self) -> bool {
        matches!(self, FileError::Read(_))
    }
}

/// Streams the rows of one object. Dropping it stops the parsing thread at
/// its next row.
pub struct FileReader {
    rows: mpsc::Receiver<Vec<Row>>,
    /// The parsing thread until it has been awaited.
    worker: Option<JoinHandle<Result<(), FileError>>>,
    columns: Vec<String>,
    /// What the input has given, shared with the thread.
    input: Arc<InputState>,
    gzip: bool,
    rows_read: u64,
    /// Rows received and not yet returned, in order.
    pending: std::collections::VecDeque<Row>,
}

impl FileReader {
    /// Starts reading `input`, the object `key` stored with
    /// `content_encoding` (both only used by [`Compression::Auto`]). For CSV
    /// with a header, the header has been read when this returns.
    pub async fn open<R>(
        input: R,
        options: FileOptions,
        key: &str,
        content_encoding: Option<&str>,
    ) -> Result<FileReader, FileError>
    where
        R: AsyncRead + Unpin + Send + 'static,
    {
        if let Format::Csv(o) = &options.format {
            csv::check(o)?;
        }
        let state = Arc::new(InputState::default());
        let counted = Counted { inner: input, state: state.clone() };
        let gzip = match options.compression {
            Compression::Auto => Compression::detect(key, content_encoding),
            c => c,
        } == Compression::Gzip;
        let input = io::BufReader::with_capacity(READ_BUFFER, SyncIoBridge::new(decompress(counted, gzip)));
        let (rows_tx, rows) = mpsc::channel(ROWS_AHEAD / GROUP_ROWS);
        let (columns_tx, columns) = oneshot::channel();
        let (skip, max) = (options.start_after_row, options.max_row_bytes);
        let is_csv = matches!(options.format, Format::Csv(_));
        let worker = tokio::task::spawn_blocking(move || {
            let mut rows = RowSender { tx: rows_tx, group: Vec::new(), bytes: 0 };
            let result = match options.format {
                Format::Csv(o) => csv::read(input, &o, max, skip, columns_tx, &mut rows),
                Format::JsonLines => json::lines(input, max, skip, &mut rows),
                Format::JsonArray => json::array(input, max, skip, &mut rows),
            };
            // The rows before an error (or the end) reach the reader first.
            rows.flush();
            result
        });
        let mut reader = FileReader {
            rows,
            worker: Some(worker),
            columns: Vec::new(),
            input: state,
            gzip,
            rows_read: skip,
            pending: Default::default(),
        };
        if is_csv {
            match columns.await {
                Ok(columns) => reader.columns = columns,
                // The thread failed before naming them.
                Err(_) => reader.finish().await?,
            }
        }
        Ok(reader)
    }

    /// The next rows: at most `max_rows` (at least 1), and no more than
    /// `max_bytes` of content unless a single row is larger. `None` once
    /// the file is done. An error ends the file; rows before it have been
    /// returned. Not cancel-safe: a cancelled call loses its rows.
    pub async fn next_chunk(&mut self, max_rows: usize, max_bytes: usize) -> Result<Option<Chunk>, FileError> {
        let mut rows = Vec::new();
        let mut bytes = 0;
        while rows.len() < max_rows.max(1) {
            let row = match self.pending.pop_front() {
                Some(row) => row,
                None => match self.rows.recv().await {
                    Some(group) => {
                        self.pending = group.into();
                        continue;
                    }
                    None => break,
                },
            };
            let size = row.size();
            if !rows.is_empty() && bytes + size > max_bytes {
                self.pending.push_front(row);
                break;
            }
            bytes += size;
            rows.push(row);
        }
        if rows.is_empty() {
            self.finish().await?;
            return Ok(None);
        }
        let first_row = self.rows_read;
        self.rows_read += rows.len() as u64;
        Ok(Some(Chunk { first_row, rows, bytes }))
    }

    /// The CSV column names; empty for JSON.
    pub fn columns(&self) -> &[String] {
        &self.columns
    }

    /// Bytes taken from the input so far, before decompression.
    pub fn bytes_read(&self) -> u64 {
        self.input.bytes.load(Ordering::Relaxed)
    }

    /// Rows of the file returned or skipped so far: the `start_after_row`
    /// that resumes right after the last chunk returned.
    pub fn rows_read(&self) -> u64 {
        self.rows_read
    }

    /// The parsing thread's outcome, once. A read error the input did not
    /// give came from the gzip decoder.
    async fn finish(&mut self) -> Result<(), FileError> {
        let Some(worker) = self.worker.take() else { return Ok(()) };
        match worker.await? {
            Err(FileError::Read(e)) if self.gzip && !self.input.failed.load(Ordering::Relaxed) => {
                Err(FileError::Gzip(e))
            }
            result => result,
        }
    }
}

impl Row {
    fn size(&self) -> usize {
        match &self.item {
            Ok(Item::Json(text)) => text.len(),
            Ok(Item::Fields(fields)) => fields.iter().flatten().map(String::len).sum(),
            Err(bad) => bad.raw.len(),
        }
    }
}

fn decompress(input: impl AsyncRead + Unpin + Send + 'static, gzip: bool) -> Box<dyn AsyncRead + Unpin + Send> {
    if !gzip {
        return Box::new(input);
    }
    let mut decoder = GzipDecoder::new(tokio::io::BufReader::new(input));
    decoder.multiple_members(true);
    Box::new(decoder)
}

/// The parsing thread's end of the channel: rows go to the reader in
/// groups (see [`GROUP_ROWS`]).
pub(super) struct RowSender {
    tx: mpsc::Sender<Vec<Row>>,
    group: Vec<Row>,
    bytes: usize,
}

impl RowSender {
    /// Hands a row to the reader; false once the reader is gone.
    fn send(&mut self, row: Row) -> bool {
        self.bytes += row.size();
        self.group.push(row);
        if self.group.len() >= GROUP_ROWS || self.bytes >= GROUP_BYTES {
            return self.flush();
        }
        !self.tx.is_closed()
    }

    /// Sends the rows of the group so far; false once the reader is gone.
    fn flush(&mut self) -> bool {
        if self.group.is_empty() {
            return !self.tx.is_closed();
        }
        self.bytes = 0;
        let group = std::mem::replace(&mut self.group, Vec::with_capacity(GROUP_ROWS));
        self.tx.blocking_send(group).is_ok()
    }

    fn is_closed(&self) -> bool {
        self.tx.is_closed()
    }
}

#[derive(Default)]
struct InputState {
    bytes: AtomicU64,
    /// Whether the input returned an error.
    failed: AtomicBool,
}

/// Records in `state` what passes through it.
struct Counted<R> {
    inner: R,
    state: Arc<InputState>,
}

impl<R: AsyncRead + Unpin> AsyncRead for Counted<R> {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let poll = Pin::new(&mut self.inner).poll_read(cx, buf);
        self.state.bytes.fetch_add((buf.filled().len() - before) as u64, Ordering::Relaxed);
        if let Poll::Ready(Err(_)) = poll {
            self.state.failed.store(true, Ordering::Relaxed);
        }
        poll
    }
}
