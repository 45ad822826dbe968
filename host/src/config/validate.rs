//! Checks a parsed pipeline file and builds the runtime [`Pipeline`]. No I/O:
//! plugins are found and configured later, by the transform engine.
//!
//! Must not read plugins, the network or the database.

use super::sftp::SftpSettings;
use super::shadow::{PromoteWhen, ShadowStep, shadow_settings};
use super::{
    ColumnConfig, CompressionConfig, ConfigError, EmptyConfig, FileFormatConfig, GeneratedConfig, MergeModeConfig,
    PipelineConfig, S3Config, S3ModeConfig, SinkConfig, SourceConfig, StepConfig, TestCaseConfig,
};
use readers::file::{Compression, CsvOptions, EmptyAs, Format};
use std::path::{Path, PathBuf};
use std::time::Duration;
use toml::Spanned;

/// A checked pipeline.
#[derive(Debug, Clone)]
pub struct Pipeline {
    pub name: String,
    /// The file it came from.
    pub file: PathBuf,
    /// Folders from `plugin_path`, resolved against the file's folder.
    pub plugin_path: Vec<PathBuf>,
    pub source: Option<Source>,
    pub max_records: usize,
    pub max_wait: Duration,
    pub workers: usize,
    /// Required fields, each as its path of keys.
    pub required: Vec<Vec<String>>,
    pub max_record_bytes: usize,
    pub steps: Vec<Step>,
    pub sink: Option<Sink>,
    pub tests: Vec<TestCase>,
    /// Whether record values may appear in logs and reports.
    pub record_values_in_logs: bool,
    /// How often `host run` looks for new versions; `None`: never.
    pub reload: Option<Duration>,
    /// The revision of the file it came from (`config::revision`).
    pub revision: String,
    /// `[shadow] promote_when`: a candidate takes over by itself.
    pub promote_when: Option<PromoteWhen>,
    /// `[shadow] queue`: batches waiting for the candidate, at most.
    pub shadow_queue: usize,
}

#[derive(Debug, Clone, PartialEq)]
pub enum Source {
    Sqs(SqsSourceConfig),
    S3(S3SourceConfig),
}

/// A checked `[source.s3]`.
#[derive(Debug, Clone, PartialEq)]
pub struct S3SourceConfig {
    pub mode: S3Mode,
    /// Where notifications arrive (required for `notifications`, optional
    /// for `reconcile`: a notification then starts a pass).
    pub queue: Option<SqsSourceConfig>,
    pub bucket: Option<String>,
    pub prefix: String,
    pub format: Format,
    pub compression: Compression,
    pub rows_per_commit: u64,
    /// Reconcile: the files of an SFTP server copied into the bucket
    /// before each pass (`[source.sftp]`).
    pub sftp: Option<SftpSettings>,
}

#[derive(Debug, Clone, Copy, PartialEq)]
pub enum S3Mode {
    Notifications,
    /// A pass every `interval`, in key ranges of about `range_objects`.
    Reconcile {
        interval: Duration,
        range_objects: u64,
    },
}

/// A checked `[source.sqs]`.
#[derive(Debug, Clone, PartialEq)]
pub struct SqsSourceConfig {
    pub queue: String,
    pub wait: Duration,
    pub visibility: Duration,
    pub receivers: usize,
    pub max_receives: u32,
    pub metadata_field: Option<String>,
}

/// A transform step.
#[derive(Debug, Clone)]
pub struct Step {
    /// 1-based position in the chain.
    pub index: usize,
    /// Plugin name or path, as written.
    pub uses: String,
    /// Line of `uses` in the pipeline file.
    pub line: usize,
    /// The pinned digest (`sha256:...`), if any.
    pub digest: Option<String>,
    /// Parameters as canonical JSON text (`config::canonical_json`), for
    /// `configure` and lineage.
    pub params: String,
    /// The digest of `params` (`config::params_digest`).
    pub params_digest: String,
    /// The line of each parameter in the pipeline file, by its path.
    pub param_lines: Vec<(String, usize)>,
    pub limits: Limits,
    pub grants: Grants,
    /// The candidate run beside this step in shadow, if any.
    pub shadow: Option<ShadowStep>,
}

#[derive(Debug, Clone, Copy)]
pub struct Limits {
    pub max_memory_bytes: usize,
    pub max_call: Duration,
}

#[derive(Debug, Clone, Default)]
pub struct Grants {
    pub clock: bool,
    pub env: Vec<String>,
    /// (secret name, environment variable)
    pub secrets: Vec<(String, String)>,
}

#[derive(Debug, Clone)]
pub struct Sink {
    pub schema: String,
    pub table: String,
    pub mode: MergeMode,
    pub columns: Vec<Column>,
    /// At most this many batches of messages in one transaction.
    pub max_batches_per_commit: usize,
}

#[derive(Debug, Clone, PartialEq)]
pub enum MergeMode {
    Append,
    Upsert { key: Vec<String> },
    DeleteInsert { key: Vec<String> },
}

#[derive(Debug, Clone)]
pub struct Column {
    pub name: String,
    pub source: ColumnSource,
}

#[derive(Debug, Clone, PartialEq)]
pub enum ColumnSource {
    Field(String),
    Generated(Generated),
}

#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Generated {
    LoadDate,
    LoadTime,
    SourceFile,
    SourceVersion,
    SourceLine,
    MessageId,
    BatchId,
    PipelineRevision,
}

impl Generated {
    /// As a pipeline file names it.
    pub fn name(self) -> &'static str {
        match self {
            Generated::LoadDate => "load-date",
            Generated::LoadTime => "load-time",
            Generated::SourceFile => "source-file",
            Generated::SourceVersion => "source-version",
            Generated::SourceLine => "source-line",
            Generated::MessageId => "message-id",
            Generated::BatchId => "batch-id",
            Generated::PipelineRevision => "pipeline-revision",
        }
    }

    /// Whether only rows of objects have it (S3 sources), or only rows of
    /// messages (SQS sources); `None`: any row has it.
    pub fn only_from(self) -> Option<RowsFrom> {
        match self {
            Generated::SourceFile | Generated::SourceVersion | Generated::SourceLine => Some(RowsFrom::Objects),
            Generated::MessageId => Some(RowsFrom::Messages),
            Generated::LoadDate | Generated::LoadTime | Generated::BatchId | Generated::PipelineRevision => None,
        }
    }
}

/// Where a pipeline's rows come from.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum RowsFrom {
    /// S3 objects (`[source.s3]`, `[source.sftp]`).
    Objects,
    /// SQS messages (`[source.sqs]`).
    Messages,
}

#[derive(Debug, Clone)]
pub struct TestCase {
    pub name: String,
    pub input: serde_json::Value,
    pub expect: TestExpect,
}

#[derive(Debug, Clone, PartialEq)]
pub enum TestExpect {
    Row(serde_json::Map<String, serde_json::Value>),
    Reject(String),
    Dropped,
}

/// Checks `config` (read from `path`).
pub fn validate(path: &Path, c: PipelineConfig) -> Result<Pipeline, ConfigError> {
    let err = |message: String| ConfigError::Invalid { path: path.into(), message };
    let name = match c.name {
        Some(n) => n,
        None => path.file_stem().map(|s| s.to_string_lossy().into_owned()).unwrap_or_default(),
    };
    if name.is_empty() || !name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-') {
        return Err(err(format!("`name`: `{name}` must be letters, digits, `_` or `-`")));
    }
    range("[batch] max_records", c.batch.max_records as u64, 1, 100_000).map_err(err)?;
    range("[batch] max_wait_ms", c.batch.max_wait_ms, 0, 3_600_000).map_err(err)?;
    range("[batch] workers", c.batch.workers as u64, 1, 64).map_err(err)?;
    range("[reload] interval_ms", c.reload.interval_ms, 100, 3_600_000).map_err(err)?;
    let base = path.parent().unwrap_or(Path::new("."));
    let source = c.source.map(|s| source(s, base)).transpose().map_err(&err)?;
    range("[input] max_record_bytes", c.input.max_record_bytes as u64, 64, 256 << 20).map_err(err)?;
    let mut required = Vec::new();
    for field in &c.input.required {
        let parts: Vec<String> = field.split('.').map(str::to_string).collect();
        if parts.iter().any(String::is_empty) {
            return Err(err(format!("[input] required: `{field}` has an empty part")));
        }
        required.push(parts);
    }
    let dir = path.parent().unwrap_or(Path::new(".")).to_path_buf();
    let lines = c.step_lines;
    let steps = c
        .transforms
        .into_iter()
        .enumerate()
        .map(|(i, s)| step(i + 1, s, lines.get(i).copied().unwrap_or(0)).map_err(&err))
        .collect::<Result<Vec<_>, _>>()?;
    // A key granted for keyed hashing is not readable as plain text.
    // Candidates' grants count too: they run in the same process.
    fn all_grants(s: &Step) -> impl Iterator<Item = &Grants> {
        [Some(&s.grants), s.shadow.as_ref().map(|c| &c.grants)].into_iter().flatten()
    }
    let keys: Vec<&String> =
        steps.iter().flat_map(all_grants).flat_map(|g| g.secrets.iter().map(|(_, var)| var)).collect();
    for s in &steps {
        if let Some(var) = all_grants(s).flat_map(|g| g.env.iter()).find(|v| keys.contains(v)) {
            return Err(err(format!(
                "[[transforms]] #{}: grants.env may not hand a plugin `{var}`: it holds a key granted as a secret",
                s.index
            )));
        }
    }
    let sink = c.sink.map(sink).transpose().map_err(&err)?;
    if let (Some(Source::S3(s3)), Some(sink)) = (&source, &sink) {
        let file_column = sink.columns.iter().any(|c| c.source == ColumnSource::Generated(Generated::SourceFile));
        if matches!(s3.mode, S3Mode::Reconcile { .. }) && !file_column {
            let what = if s3.sftp.is_some() { "[source.sftp]" } else { "[source.s3] mode `reconcile`" };
            return Err(err(format!(
                "{what} needs a [sink.columns] column with `generated = \"source-file\"`: \
                 it is how a file's rows are found to replace or delete them"
            )));
        }
    }
    if let (Some(source), Some(sink)) = (&source, &sink) {
        columns_fill(path, source, sink, &c.column_lines)?;
    }
    if let Some(Source::Sqs(q)) = &source {
        batch_fits(c.batch.max_wait_ms, q.visibility).map_err(&err)?;
    }
    let tests = c.tests.into_iter().map(test_case).collect::<Result<Vec<_>, _>>().map_err(&err)?;
    let promote_when = shadow_settings(&c.shadow, &steps).map_err(&err)?;
    Ok(Pipeline {
        name,
        file: path.to_path_buf(),
        plugin_path: c.plugin_path.iter().map(|p| dir.join(p)).collect(),
        source,
        max_records: c.batch.max_records,
        max_wait: Duration::from_millis(c.batch.max_wait_ms),
        workers: c.batch.workers,
        required,
        max_record_bytes: c.input.max_record_bytes,
        steps,
        sink,
        tests,
        record_values_in_logs: c.logging.record_values,
        reload: c.reload.enabled.then(|| Duration::from_millis(c.reload.interval_ms)),
        revision: c.revision,
        promote_when,
        shadow_queue: c.shadow.queue,
    })
}

/// Every generated column can be filled from the pipeline's source: an
/// object's rows have no message id, a message's rows no file or line.
/// The error points at the column's line.
fn columns_fill(path: &Path, source: &Source, sink: &Sink, lines: &[(String, usize)]) -> Result<(), ConfigError> {
    let (has, what) = match source {
        Source::Sqs(_) => (RowsFrom::Messages, "[source.sqs] reads messages, which have no file or line"),
        Source::S3(_) => (RowsFrom::Objects, "[source.s3] reads rows of objects, which have no message id"),
    };
    for c in &sink.columns {
        let ColumnSource::Generated(g) = c.source else { continue };
        if g.only_from().is_some_and(|only| only != has) {
            let line = lines.iter().find(|(n, _)| *n == c.name).map_or(0, |(_, l)| *l);
            let name = g.name();
            return Err(ConfigError::InvalidAt {
                path: path.into(),
                line,
                message: format!("[sink.columns] `{}`: `generated = \"{name}\"` cannot be filled: {what}", c.name),
            });
        }
    }
    Ok(())
}

/// A batch's first message waits up to `max_wait_ms` for the rest while
/// SQS hides it for the visibility timeout: the window must end well
/// inside it (half), or every message would live on extensions alone and
/// one late extension would hand it to another consumer mid-batch.
fn batch_fits(max_wait_ms: u64, visibility: Duration) -> Result<(), String> {
    let limit = visibility.as_millis() as u64 / 2;
    if max_wait_ms > limit {
        return Err(format!(
            "[batch] max_wait_ms = {max_wait_ms} does not fit [source.sqs] visibility_timeout_s = {}: a batch's \
             first message would wait for the rest longer than half its visibility timeout; set max_wait_ms to \
             at most {limit} or raise visibility_timeout_s",
            visibility.as_secs()
        ));
    }
    Ok(())
}

fn source(s: SourceConfig, base: &Path) -> Result<Source, String> {
    match s {
        SourceConfig::Sqs(q) => {
            if q.queue.trim().is_empty() {
                return Err("[source.sqs] queue is empty".into());
            }
            range("[source.sqs] wait_time_s", q.wait_time_s, 0, 20)?;
            range("[source.sqs] visibility_timeout_s", q.visibility_timeout_s, 2, 43_200)?;
            range("[source.sqs] receivers", q.receivers as u64, 1, 32)?;
            range("[source.sqs] max_receives", q.max_receives.into(), 1, 1000)?;
            Ok(Source::Sqs(SqsSourceConfig {
                queue: q.queue,
                wait: Duration::from_secs(q.wait_time_s),
                visibility: Duration::from_secs(q.visibility_timeout_s),
                receivers: q.receivers,
                max_receives: q.max_receives,
                metadata_field: q.metadata_field,
            }))
        }
        SourceConfig::S3(s) => s3_source(s).map(Source::S3),
        SourceConfig::Sftp(s) => super::sftp::sftp_source(s, base).map(Source::S3),
    }
}

pub(super) fn s3_source(s: S3Config) -> Result<S3SourceConfig, String> {
    let mode = match s.mode {
        S3ModeConfig::Notifications => {
            if s.queue.is_none() {
                return Err("[source.s3] mode `notifications` needs `queue`".into());
            }
            S3Mode::Notifications
        }
        S3ModeConfig::Reconcile => {
            if s.bucket.is_none() {
                return Err("[source.s3] mode `reconcile` needs `bucket`".into());
            }
            range("[source.s3] interval_s", s.interval_s, 1, 86_400)?;
            range("[source.s3] range_objects", s.range_objects, 2, 100_000_000)?;
            S3Mode::Reconcile { interval: Duration::from_secs(s.interval_s), range_objects: s.range_objects }
        }
    };
    if s.bucket.as_deref().is_some_and(|b| b.trim().is_empty()) {
        return Err("[source.s3] bucket is empty".into());
    }
    range("[source.s3] rows_per_commit", s.rows_per_commit, 1, 10_000_000)?;
    let queue = match s.queue {
        Some(q) => {
            if q.trim().is_empty() {
                return Err("[source.s3] queue is empty".into());
            }
            range("[source.s3] wait_time_s", s.wait_time_s, 0, 20)?;
            range("[source.s3] visibility_timeout_s", s.visibility_timeout_s, 2, 43_200)?;
            range("[source.s3] max_receives", s.max_receives.into(), 1, 1000)?;
            Some(SqsSourceConfig {
                queue: q,
                wait: Duration::from_secs(s.wait_time_s),
                visibility: Duration::from_secs(s.visibility_timeout_s),
                receivers: 1,
                max_receives: s.max_receives,
                metadata_field: None,
            })
        }
        None => None,
    };
    let csv = s.csv;
    let format = match s.format {
        FileFormatConfig::JsonLines | FileFormatConfig::JsonArray
            if csv.columns.len() + csv.empty_as.len() > 0 || !csv.header || csv.delimiter != "," =>
        {
            return Err("[source.s3.csv] applies to `format = \"csv\"` only".into());
        }
        FileFormatConfig::JsonLines => Format::JsonLines,
        FileFormatConfig::JsonArray => Format::JsonArray,
        FileFormatConfig::Csv => {
            let delimiter = match csv.delimiter.as_bytes() {
                [b] if b.is_ascii() && *b != b'"' && *b != b'\n' && *b != b'\r' => *b,
                _ => {
                    return Err(
                        "[source.s3.csv] delimiter must be one ASCII character other than a quote or newline".into()
                    );
                }
            };
            if csv.header && !csv.columns.is_empty() {
                return Err("[source.s3.csv] columns: give them only when `header = false`".into());
            }
            if !csv.header && csv.columns.is_empty() {
                return Err("[source.s3.csv] header = false needs `columns`".into());
            }
            let mut seen = std::collections::HashSet::new();
            for c in &csv.columns {
                if c.is_empty() || !seen.insert(c) {
                    return Err(format!("[source.s3.csv] columns: `{c}` is empty or repeated"));
                }
            }
            let empty = |e: EmptyConfig| match e {
                EmptyConfig::Null => EmptyAs::Null,
                EmptyConfig::EmptyString => EmptyAs::EmptyString,
            };
            if !csv.header {
                if let Some(unknown) = csv.empty_as.keys().find(|k| !csv.columns.contains(k)) {
                    return Err(format!("[source.s3.csv] empty_as: `{unknown}` is not one of the columns"));
                }
            }
            Format::Csv(CsvOptions {
                delimiter,
                header: csv.header,
                columns: csv.columns.clone(),
                empty: empty(csv.empty),
                empty_overrides: csv.empty_as.iter().map(|(k, v)| (k.clone(), empty(*v))).collect(),
            })
        }
    };
    let compression = match s.compression {
        CompressionConfig::Auto => Compression::Auto,
        CompressionConfig::None => Compression::None,
        CompressionConfig::Gzip => Compression::Gzip,
    };
    Ok(S3SourceConfig {
        mode,
        queue,
        bucket: s.bucket,
        prefix: s.prefix,
        format,
        compression,
        rows_per_commit: s.rows_per_commit,
        sftp: None,
    })
}

pub(super) fn range(what: &str, v: u64, min: u64, max: u64) -> Result<(), String> {
    if v < min || v > max {
        return Err(format!("{what} = {v} is out of range ({min} to {max})"));
    }
    Ok(())
}

fn step(index: usize, s: StepConfig, line: usize) -> Result<Step, String> {
    let at = format!("[[transforms]] #{index}");
    let uses = s.uses.into_inner();
    if uses.trim().is_empty() {
        return Err(format!("{at}: `uses` is empty"));
    }
    check_digest(&at, s.digest.as_deref())?;
    range(&format!("{at}: max_memory_mb"), s.max_memory_mb.into(), 1, 4096)?;
    range(&format!("{at}: max_call_ms"), s.max_call_ms, 1, 600_000)?;
    let granted = grants(&at, s.grants)?;
    let params = params_json(s.params);
    let shadow = match s.shadow {
        None => None,
        Some(c) => {
            let at = format!("{at} shadow");
            if c.uses.is_none() && c.digest.is_none() && c.params.is_none() && c.grants.is_none() {
                return Err(format!("{at}: names nothing to try: give `uses`, `digest`, `params` or `grants`"));
            }
            check_digest(&at, c.digest.as_deref())?;
            let given_uses = c.uses.map(Spanned::into_inner);
            if given_uses.as_deref().is_some_and(|u| u.trim().is_empty()) {
                return Err(format!("{at}: `uses` is empty"));
            }
            // Another plugin (or file) is its own version: production's
            // pin says nothing about it.
            let digest = match (&c.digest, &given_uses) {
                (Some(d), _) => Some(d.clone()),
                (None, Some(_)) => None,
                (None, None) => s.digest.clone(),
            };
            Some(ShadowStep {
                uses: given_uses.unwrap_or_else(|| uses.clone()),
                line: c.line.unwrap_or(line),
                digest,
                params: c.params.map_or_else(|| params.clone(), params_json),
                param_lines: if c.param_lines.is_empty() { s.param_lines.clone() } else { c.param_lines },
                grants: match c.grants {
                    Some(g) => grants(&at, g)?,
                    None => granted.clone(),
                },
            })
        }
    };
    Ok(Step {
        index,
        uses,
        line,
        digest: s.digest,
        params_digest: super::params_digest(&params),
        params,
        param_lines: s.param_lines,
        limits: Limits {
            max_memory_bytes: (s.max_memory_mb as usize) << 20,
            max_call: Duration::from_millis(s.max_call_ms),
        },
        grants: granted,
        shadow,
    })
}

fn check_digest(at: &str, digest: Option<&str>) -> Result<(), String> {
    if let Some(d) = digest {
        let hex = d.strip_prefix("sha256:").unwrap_or("");
        if hex.len() != 64 || !hex.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)) {
            return Err(format!("{at}: digest must be `sha256:` and 64 lowercase hex digits"));
        }
    }
    Ok(())
}

fn grants(at: &str, g: super::GrantsConfig) -> Result<Grants, String> {
    for var in g.env.iter().chain(g.secrets.values()) {
        if !is_env_name(var) {
            return Err(format!("{at}: `{var}` is not an environment variable name"));
        }
    }
    if let Some(var) = g.env.iter().find(|v| is_host_secret(v)) {
        return Err(format!(
            "{at}: grants.env may not hand a plugin `{var}`: it is one of the host's own secrets \
             (DATABASE_URL, PG*, AWS_*, HOST_*)"
        ));
    }
    Ok(Grants { clock: g.clock, env: g.env, secrets: g.secrets.into_iter().collect() })
}

/// Params as canonical JSON (`config::canonical_json`): what lineage
/// records and digests.
fn params_json(params: toml::Table) -> String {
    super::canonical_json(&serde_json::Value::Object(params.into_iter().map(|(k, v)| (k, json(v))).collect()))
}

/// Variables that hold the host's own credentials and keys: no plugin may
/// read them.
fn is_host_secret(var: &str) -> bool {
    var == "DATABASE_URL" || ["PG", "AWS_", "HOST_"].iter().any(|p| var.starts_with(p))
}

fn is_env_name(s: &str) -> bool {
    !s.is_empty() && s.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_') && !s.as_bytes()[0].is_ascii_digit()
}

/// TOML to JSON; dates become their RFC 3339 text.
fn json(v: toml::Value) -> serde_json::Value {
    use serde_json::Value as J;
    match v {
        toml::Value::String(s) => J::String(s),
        toml::Value::Integer(i) => J::from(i),
        toml::Value::Float(f) => J::from(f),
        toml::Value::Boolean(b) => J::Bool(b),
        toml::Value::Datetime(d) => J::String(d.to_string()),
        toml::Value::Array(a) => J::Array(a.into_iter().map(json).collect()),
        toml::Value::Table(t) => J::Object(t.into_iter().map(|(k, v)| (k, json(v))).collect()),
    }
}

/// Why PostgreSQL would not take `name` as an identifier, if it would not.
/// Any other text is a name it takes: the SQL the host builds quotes every
/// name (`"Contact Phone Number"`, `"Kunden"`).
pub fn identifier_flaw(name: &str) -> Option<String> {
    if name.is_empty() {
        Some("is empty".into())
    } else if name.contains('\0') {
        Some("holds a NUL character".into())
    } else if name.len() > MAX_IDENTIFIER_BYTES {
        Some(format!(
            "is {} bytes long in UTF-8; PostgreSQL keeps {MAX_IDENTIFIER_BYTES} at most (and would cut it short)",
            name.len()
        ))
    } else {
        None
    }
}

/// The most batches one transaction may hold: a group's rows are in
/// memory together, and a data error in it isolates across all of them.
const MAX_BATCHES_PER_COMMIT: usize = 64;

/// PostgreSQL's `NAMEDATALEN - 1`.
const MAX_IDENTIFIER_BYTES: usize = 63;

fn sink(s: SinkConfig) -> Result<Sink, String> {
    let table = s.table.into_inner();
    for (what, name) in [("schema", &s.schema), ("table", &table)] {
        if let Some(flaw) = identifier_flaw(name) {
            return Err(format!("[sink] {what}: `{}` {flaw}", name.escape_debug()));
        }
    }
    if s.columns.is_empty() {
        return Err("[sink] columns: at least one column is needed".into());
    }
    let mut columns = Vec::new();
    for (name, c) in s.columns {
        if let Some(flaw) = identifier_flaw(&name) {
            return Err(format!("[sink.columns] `{}` {flaw}", name.escape_debug()));
        }
        let source = match c {
            ColumnConfig::Field(f) => ColumnSource::Field(f),
            ColumnConfig::Table(t) => match (t.field, t.generated) {
                (Some(f), None) => ColumnSource::Field(f),
                (None, Some(GeneratedConfig::LoadDate)) => ColumnSource::Generated(Generated::LoadDate),
                (None, Some(GeneratedConfig::LoadTime)) => ColumnSource::Generated(Generated::LoadTime),
                (None, Some(GeneratedConfig::SourceFile)) => ColumnSource::Generated(Generated::SourceFile),
                (None, Some(GeneratedConfig::SourceVersion)) => ColumnSource::Generated(Generated::SourceVersion),
                (None, Some(GeneratedConfig::SourceLine)) => ColumnSource::Generated(Generated::SourceLine),
                (None, Some(GeneratedConfig::MessageId)) => ColumnSource::Generated(Generated::MessageId),
                (None, Some(GeneratedConfig::BatchId)) => ColumnSource::Generated(Generated::BatchId),
                (None, Some(GeneratedConfig::PipelineRevision)) => ColumnSource::Generated(Generated::PipelineRevision),
                _ => {
                    return Err(format!("[sink.columns] `{name}`: give exactly one of `field` or `generated`"));
                }
            },
        };
        columns.push(Column { name, source });
    }
    for k in &s.key {
        if !columns.iter().any(|c| &c.name == k) {
            return Err(format!("[sink] key: `{k}` is not one of the columns"));
        }
    }
    let mode = match (s.mode, s.key.is_empty()) {
        (MergeModeConfig::Append, true) => MergeMode::Append,
        (MergeModeConfig::Append, false) => {
            return Err("[sink] key: mode `append` takes no key".into());
        }
        (_, true) => return Err("[sink] key: modes `upsert` and `delete-insert` need a key".into()),
        (MergeModeConfig::Upsert, false) => MergeMode::Upsert { key: s.key },
        (MergeModeConfig::DeleteInsert, false) => MergeMode::DeleteInsert { key: s.key },
    };
    if !(1..=MAX_BATCHES_PER_COMMIT).contains(&s.max_batches_per_commit) {
        return Err(format!(
            "[sink] max_batches_per_commit: {} is out of range: give 1 (each batch commits alone) to {MAX_BATCHES_PER_COMMIT}",
            s.max_batches_per_commit
        ));
    }
    Ok(Sink { schema: s.schema, table, mode, columns, max_batches_per_commit: s.max_batches_per_commit })
}

fn test_case(t: TestCaseConfig) -> Result<TestCase, String> {
    let at = format!("[[tests]] `{}`", t.name);
    let input: serde_json::Value =
        serde_json::from_str(&t.input).map_err(|e| format!("{at}: input is not JSON: {e}"))?;
    if !input.is_object() {
        return Err(format!("{at}: input must be a JSON object"));
    }
    let expect = match (t.expect, t.reject, t.dropped) {
        (Some(e), None, false) => match serde_json::from_str(&e) {
            Ok(serde_json::Value::Object(row)) => TestExpect::Row(row),
            Ok(_) => return Err(format!("{at}: expect must be a JSON object")),
            Err(e) => return Err(format!("{at}: expect is not JSON: {e}")),
        },
        (None, Some(r), false) => TestExpect::Reject(r),
        (None, None, true) => TestExpect::Dropped,
        _ => {
            return Err(format!("{at}: give exactly one of `expect`, `reject` or `dropped = true`"));
        }
    };
    Ok(TestCase { name: t.name, input, expect })
}

#[cfg(test)]
mod shadow_tests {
    use std::path::Path;

    fn pipeline(shadow: &str) -> super::Pipeline {
        let text = format!(
            "[[transforms]]\nuses = \"flatten\"\n\n[[transforms]]\nuses = \"mask\"\n\
             digest = \"sha256:{}\"\nparams = {{ fields = [\"a\"] }}\ngrants = {{ secrets = {{ k = \"KEY\" }} }}\n{shadow}\n",
            "a".repeat(64)
        );
        let path = Path::new("p.toml");
        super::validate(path, crate::config::parse_str(path, &text, |_| None).unwrap()).unwrap()
    }

    #[test]
    fn a_candidate_is_production_with_the_shadows_keys() {
        let p = pipeline("shadow = { params = { fields = [\"b\"] } }");
        assert!(p.has_shadow());
        let c = p.candidate().unwrap();
        assert!(!c.has_shadow());
        let (old, new) = (&p.steps[1], &c.steps[1]);
        assert_eq!((new.uses.as_str(), new.params.as_str()), ("mask", r#"{"fields":["b"]}"#));
        assert_eq!(new.digest, old.digest, "the same plugin keeps its pin");
        assert_eq!(new.grants.secrets, old.grants.secrets, "grants left out are production's");
        assert_eq!(c.steps[0].params, p.steps[0].params);

        let other = pipeline("shadow = { uses = \"mask-v2.wasm\", grants = {} }").candidate().unwrap();
        assert_eq!(other.steps[1].uses, "mask-v2.wasm");
        assert_eq!(other.steps[1].digest, None, "another plugin is not held to production's pin");
        assert!(other.steps[1].grants.secrets.is_empty(), "grants given are the candidate's whole");
        assert_eq!(other.steps[1].line, 9, "errors point at the shadow");
        assert!(pipeline("").candidate().is_none());
    }
}
