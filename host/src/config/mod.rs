//! Pipeline files: the TOML shapes (this file), `${VAR}` interpolation, and
//! validation into the runtime [`Pipeline`].
//!
//! Two phases, both without I/O beyond reading the file: [`parse`] is strict
//! (unknown keys are errors naming file, line and key), [`validate`] checks
//! what serde cannot. Connecting to anything is the caller's business.
//!
//! Must not connect to anything.

mod canonical;
mod interpolate;
mod lines;
mod sftp;
mod shadow;
mod validate;

pub use canonical::{canonical_json, params_digest};
pub use interpolate::{InterpolateError, interpolate};
pub use sftp::{Compare, HostKeyCheck, SftpAuth, SftpSettings};
pub use shadow::{PromoteWhen, ShadowStep};
pub use validate::{
    Column, ColumnSource, Generated, Grants, Limits, MergeMode, Pipeline, RowsFrom, S3Mode, S3SourceConfig, Sink,
    Source, SqsSourceConfig, Step, TestCase, TestExpect, validate,
};

use indexmap::IndexMap;
use serde::Deserialize;
use std::path::{Path, PathBuf};
use toml::Spanned;

/// A pipeline file, as written.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PipelineConfig {
    /// Defaults to the file's stem.
    pub name: Option<String>,
    /// Extra folders to find plugins in, relative to the pipeline file.
    #[serde(default)]
    pub plugin_path: Vec<String>,
    pub source: Option<SourceConfig>,
    #[serde(default)]
    pub batch: BatchConfig,
    #[serde(default)]
    pub input: InputConfig,
    #[serde(default)]
    pub transforms: Vec<StepConfig>,
    pub sink: Option<SinkConfig>,
    #[serde(default)]
    pub tests: Vec<TestCaseConfig>,
    #[serde(default)]
    pub logging: LoggingConfig,
    #[serde(default)]
    pub reload: ReloadConfig,
    /// Shadow runs: when a candidate may take over by itself.
    #[serde(default)]
    pub shadow: ShadowSettingsConfig,
    /// Line of each step's `uses`, filled in by [`parse_str`].
    #[serde(skip)]
    pub step_lines: Vec<usize>,
    /// Line of each `[sink.columns]` key, by name, filled in by [`parse_str`].
    #[serde(skip)]
    pub column_lines: Vec<(String, usize)>,
    /// The file's revision ([`revision`] of its text as written), filled in
    /// by [`parse_str`].
    #[serde(skip)]
    pub revision: String,
}

/// Where records come from; one table per kind (`[source.sqs]`).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub enum SourceConfig {
    Sqs(SqsConfig),
    S3(S3Config),
    Sftp(SftpConfig),
}

/// Objects in S3: those announced by notifications on an SQS queue, or
/// (`mode = "reconcile"`) every object under a bucket and prefix.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct S3Config {
    #[serde(default)]
    pub mode: S3ModeConfig,
    /// The queue S3 notifications (or `s3://bucket/key` bodies) arrive on.
    pub queue: Option<String>,
    /// Notifications: only objects of this bucket load. Reconcile: the bucket.
    pub bucket: Option<String>,
    /// Only keys starting with this.
    #[serde(default)]
    pub prefix: String,
    /// Reconcile: seconds between passes.
    #[serde(default = "default_interval_s")]
    pub interval_s: u64,
    /// Reconcile: a pass is split into key ranges of about this many
    /// objects, each listed and loaded by whichever host takes it.
    #[serde(default = "default_range_objects")]
    pub range_objects: u64,
    pub format: FileFormatConfig,
    #[serde(default)]
    pub compression: CompressionConfig,
    #[serde(default)]
    pub csv: CsvConfig,
    /// Rows of one object committed per transaction; a crash resumes after
    /// the last committed chunk. One commit runs while the next chunk is
    /// read and transformed, so about twice this many rows are in memory.
    #[serde(default = "default_rows_per_commit")]
    pub rows_per_commit: u64,
    #[serde(default = "default_wait_time_s")]
    pub wait_time_s: u64,
    #[serde(default = "default_visibility_timeout_s")]
    pub visibility_timeout_s: u64,
    #[serde(default = "default_max_receives")]
    pub max_receives: u32,
}

/// Files on an SFTP server: each pass copies the new and changed ones into
/// `s3://bucket/prefix/NAME` (a versioned bucket keeps every copy), then
/// reconciles the target with the latest version of each key there, as
/// `[source.s3] mode = "reconcile"` does.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SftpConfig {
    pub host: String,
    /// A number, or a string of one (`port = "${SFTP_PORT:-22}"`).
    #[serde(default = "default_ssh_port")]
    pub port: PortConfig,
    pub user: String,
    /// One of `password` or `private_key` (a path to an OpenSSH private
    /// key), usually from the environment: `password = "${SFTP_PASSWORD}"`.
    pub password: Option<Secret>,
    pub private_key: Option<String>,
    pub private_key_passphrase: Option<Secret>,
    /// The known-hosts file the server's key must be in (default
    /// `~/.ssh/known_hosts`), unless `host_key_fingerprint` pins it.
    pub known_hosts: Option<String>,
    /// `SHA256:...`, as `ssh-keygen -lf` prints it.
    pub host_key_fingerprint: Option<String>,
    /// `false` accepts any host key (`host check` warns).
    #[serde(default = "yes")]
    pub check_host_key: bool,
    /// The remote folder.
    pub dir: String,
    /// Which file names (not paths) are copied.
    #[serde(default = "default_glob")]
    pub glob: String,
    /// Whether files in the folder's subfolders are copied too.
    #[serde(default)]
    pub recursive: bool,
    /// A file is copied once its size and modification time stayed the same
    /// between two looks this many seconds apart.
    #[serde(default = "default_stable_s")]
    pub stable_s: u64,
    /// How a file is known to have changed since it was copied: `mtime`
    /// (size and modification time) or `digest` (SHA-256 of its content).
    #[serde(default)]
    pub compare: CompareConfig,
    /// Whether a file deleted on the server is deleted in the bucket (a
    /// delete marker), and so its rows in the target.
    #[serde(default)]
    pub mirror_deletes: bool,
    /// Seconds to connect and for each SFTP request.
    #[serde(default = "default_sftp_timeout_s")]
    pub timeout_s: u64,
    /// The raw bucket the files are copied to, and their key prefix.
    pub bucket: String,
    #[serde(default)]
    pub prefix: String,
    /// Seconds between passes.
    #[serde(default = "default_interval_s")]
    pub interval_s: u64,
    pub format: FileFormatConfig,
    #[serde(default)]
    pub compression: CompressionConfig,
    #[serde(default)]
    pub csv: CsvConfig,
    #[serde(default = "default_rows_per_commit")]
    pub rows_per_commit: u64,
}

#[derive(Debug, Default, Deserialize, Clone, Copy, PartialEq)]
#[serde(rename_all = "kebab-case")]
pub enum CompareConfig {
    #[default]
    Mtime,
    Digest,
}

/// A password or passphrase: never shown by `Debug`.
#[derive(Clone, PartialEq, Deserialize)]
#[serde(transparent)]
pub struct Secret(pub String);

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Secret(..)")
    }
}

#[derive(Debug, Deserialize)]
#[serde(untagged)]
pub enum PortConfig {
    Number(u16),
    Text(String),
}

fn default_ssh_port() -> PortConfig {
    PortConfig::Number(22)
}
fn default_glob() -> String {
    "*".into()
}
fn default_stable_s() -> u64 {
    5
}
fn default_sftp_timeout_s() -> u64 {
    30
}

#[derive(Debug, Default, Deserialize, Clone, Copy, PartialEq)]
#[serde(rename_all = "kebab-case")]
pub enum S3ModeConfig {
    #[default]
    Notifications,
    Reconcile,
}

#[derive(Debug, Deserialize, Clone, Copy, PartialEq)]
#[serde(rename_all = "kebab-case")]
pub enum FileFormatConfig {
    Csv,
    JsonLines,
    JsonArray,
}

#[derive(Debug, Default, Deserialize, Clone, Copy, PartialEq)]
#[serde(rename_all = "kebab-case")]
pub enum CompressionConfig {
    /// Gzip when the key ends in `.gz` or the object's content encoding says so.
    #[default]
    Auto,
    None,
    Gzip,
}

/// CSV files: RFC 4180 quoting.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CsvConfig {
    #[serde(default = "default_delimiter")]
    pub delimiter: String,
    /// Whether the first line names the columns.
    #[serde(default = "yes")]
    pub header: bool,
    /// The column names of headerless files.
    #[serde(default)]
    pub columns: Vec<String>,
    /// What an empty field becomes: `null` (default) or `empty-string`.
    #[serde(default)]
    pub empty: EmptyConfig,
    /// `empty` per column.
    #[serde(default)]
    pub empty_as: IndexMap<String, EmptyConfig>,
}

impl Default for CsvConfig {
    fn default() -> Self {
        CsvConfig {
            delimiter: default_delimiter(),
            header: true,
            columns: Vec::new(),
            empty: EmptyConfig::Null,
            empty_as: IndexMap::new(),
        }
    }
}

#[derive(Debug, Default, Deserialize, Clone, Copy, PartialEq)]
#[serde(rename_all = "kebab-case")]
pub enum EmptyConfig {
    #[default]
    Null,
    EmptyString,
}

fn default_delimiter() -> String {
    ",".into()
}
fn default_interval_s() -> u64 {
    60
}
pub(super) fn default_range_objects() -> u64 {
    10_000
}

fn default_rows_per_commit() -> u64 {
    50_000
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SqsConfig {
    /// Queue name or URL.
    pub queue: String,
    /// Long-polling wait of each receive (at most 20).
    #[serde(default = "default_wait_time_s")]
    pub wait_time_s: u64,
    /// How long received messages stay invisible to others; extended while
    /// their batch is still in work.
    #[serde(default = "default_visibility_timeout_s")]
    pub visibility_timeout_s: u64,
    /// Concurrent receive loops.
    #[serde(default = "default_receivers")]
    pub receivers: usize,
    /// A message received more often than this goes to the dead letters
    /// instead of being tried again.
    #[serde(default = "default_max_receives")]
    pub max_receives: u32,
    /// If set, each record gets an object field of this name with the
    /// message's `message_id`, `receive_count` and string `attributes`.
    pub metadata_field: Option<String>,
}

fn default_wait_time_s() -> u64 {
    10
}
fn default_visibility_timeout_s() -> u64 {
    60
}
fn default_receivers() -> usize {
    2
}
fn default_max_receives() -> u32 {
    5
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BatchConfig {
    #[serde(default = "default_max_records")]
    pub max_records: usize,
    #[serde(default = "default_max_wait_ms")]
    pub max_wait_ms: u64,
    /// Batches transformed and loaded at once (each worker has its own
    /// plugin instances and database connection).
    #[serde(default = "default_workers")]
    pub workers: usize,
}

impl Default for BatchConfig {
    fn default() -> Self {
        BatchConfig {
            max_records: default_max_records(),
            max_wait_ms: default_max_wait_ms(),
            workers: default_workers(),
        }
    }
}

fn default_workers() -> usize {
    2
}

fn default_max_records() -> usize {
    500
}
fn default_max_wait_ms() -> u64 {
    1000
}

/// How a message or line becomes a record.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct InputConfig {
    #[serde(default)]
    pub format: InputFormat,
    /// Fields (dotted paths into objects) every record must have; a record
    /// without them is rejected naming all that are missing.
    #[serde(default)]
    pub required: Vec<String>,
    #[serde(default = "default_max_record_bytes")]
    pub max_record_bytes: usize,
}

impl Default for InputConfig {
    fn default() -> Self {
        InputConfig { format: InputFormat::Json, required: Vec::new(), max_record_bytes: default_max_record_bytes() }
    }
}

fn default_max_record_bytes() -> usize {
    1 << 20
}

#[derive(Debug, Default, Deserialize, Clone, Copy, PartialEq)]
#[serde(rename_all = "kebab-case")]
pub enum InputFormat {
    #[default]
    Json,
}

/// One transform step: a plugin, its parameters, its limits and grants.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StepConfig {
    /// Plugin name (found on the plugin path) or path to a `.wasm` file.
    pub uses: Spanned<String>,
    /// `sha256:` and 64 hex digits: the only plugin bytes this step accepts.
    pub digest: Option<String>,
    /// Handed to the plugin's `configure` as JSON.
    #[serde(default)]
    pub params: toml::Table,
    /// The line of each key of `params`, by its path (`fields.user_id`,
    /// `all[1].equals`); set by [`parse_str`].
    #[serde(skip)]
    pub param_lines: Vec<(String, usize)>,
    #[serde(default = "default_max_memory_mb")]
    pub max_memory_mb: u32,
    #[serde(default = "default_max_call_ms")]
    pub max_call_ms: u64,
    #[serde(default)]
    pub grants: GrantsConfig,
    /// A candidate run beside this step on the same batches, compared and
    /// never loaded (see `crate::shadow`).
    pub shadow: Option<ShadowConfig>,
}

/// A step's candidate: any key left out is the production step's.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ShadowConfig {
    /// Plugin name, path to a `.wasm` file, or `s3://bucket/key`.
    pub uses: Option<Spanned<String>>,
    /// `sha256:` and 64 hex digits: the only candidate bytes accepted.
    pub digest: Option<String>,
    /// The candidate's params, whole (not merged into production's).
    pub params: Option<toml::Table>,
    /// The candidate's grants, whole.
    pub grants: Option<GrantsConfig>,
    /// The line of each key of `params`; set by [`parse_str`].
    #[serde(skip)]
    pub param_lines: Vec<(String, usize)>,
    /// The line of `uses`, if given; set by [`parse_str`].
    #[serde(skip)]
    pub line: Option<usize>,
}

/// `[shadow]`: what holds for every candidate of the pipeline.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ShadowSettingsConfig {
    /// Promote the candidate by itself once these bounds hold.
    pub promote_when: Option<PromoteWhenConfig>,
    /// Batches waiting for the candidate, at most; more are skipped.
    #[serde(default = "default_shadow_queue")]
    pub queue: usize,
}

impl Default for ShadowSettingsConfig {
    fn default() -> Self {
        ShadowSettingsConfig { promote_when: None, queue: default_shadow_queue() }
    }
}

fn default_shadow_queue() -> usize {
    4
}

/// Bounds over a volume: after `records` compared records, promote if at
/// most these shares of them changed and were rejected by one side only.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PromoteWhenConfig {
    pub records: u64,
    #[serde(default)]
    pub changed_at_most: f64,
    #[serde(default)]
    pub rejected_at_most: f64,
}

fn default_max_memory_mb() -> u32 {
    64
}
fn default_max_call_ms() -> u64 {
    1000
}

/// What a step may reach beyond its input. Nothing by default.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GrantsConfig {
    /// The real wall and monotonic clocks (otherwise both read zero).
    #[serde(default)]
    pub clock: bool,
    /// Environment variables the plugin may read.
    #[serde(default)]
    pub env: Vec<String>,
    /// Secrets for the host's keyed hashing: name = environment variable
    /// holding the key. The key never enters the plugin.
    #[serde(default)]
    pub secrets: IndexMap<String, String>,
}

/// Where rows go.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SinkConfig {
    pub table: Spanned<String>,
    #[serde(default = "default_schema")]
    pub schema: String,
    #[serde(default)]
    pub mode: MergeModeConfig,
    #[serde(default)]
    pub key: Vec<String>,
    /// Target columns in order: `column = "field"`, or
    /// `column = { field = "x" }`, or `column = { generated = "load-date" }`.
    pub columns: IndexMap<String, ColumnConfig>,
    /// Batches of messages that may commit in one transaction when they
    /// wait for the database together (group commit); 1 commits each
    /// batch alone.
    #[serde(default = "default_max_batches_per_commit")]
    pub max_batches_per_commit: usize,
}

fn default_max_batches_per_commit() -> usize {
    8
}

fn default_schema() -> String {
    "public".to_string()
}

#[derive(Debug, Default, Deserialize, Clone, Copy, PartialEq)]
#[serde(rename_all = "kebab-case")]
pub enum MergeModeConfig {
    #[default]
    Append,
    Upsert,
    DeleteInsert,
}

#[derive(Debug)]
pub enum ColumnConfig {
    Field(String),
    Table(ColumnTable),
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ColumnTable {
    pub field: Option<String>,
    pub generated: Option<GeneratedConfig>,
}

#[derive(Debug, Deserialize, Clone, Copy, PartialEq)]
#[serde(rename_all = "kebab-case")]
pub enum GeneratedConfig {
    /// The date (UTC) the batch is loaded.
    LoadDate,
    /// The time (UTC) the batch is loaded.
    LoadTime,
    /// `s3://bucket/key` of the object a row came from (S3 sources).
    SourceFile,
    /// The object's version id, else its ETag (S3 sources).
    SourceVersion,
    /// The line (record) of the object a row came from, 1-based (S3 sources).
    SourceLine,
    /// The SQS message id a row came from (SQS sources).
    MessageId,
    /// The `etl.batches` id of the batch that wrote the row.
    BatchId,
    /// The revision of the pipeline file the running version was made from.
    PipelineRevision,
}

impl<'de> Deserialize<'de> for ColumnConfig {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> serde::de::Visitor<'de> for V {
            type Value = ColumnConfig;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a field name or a table with `field` or `generated`")
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<ColumnConfig, E> {
                Ok(ColumnConfig::Field(v.to_string()))
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(self, map: A) -> Result<ColumnConfig, A::Error> {
                let d = serde::de::value::MapAccessDeserializer::new(map);
                ColumnTable::deserialize(d).map(ColumnConfig::Table)
            }
        }
        d.deserialize_any(V)
    }
}

/// A test case the pipeline carries: `host test PIPELINE` runs it.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TestCaseConfig {
    pub name: String,
    /// The input record as JSON text (TOML has no null).
    pub input: String,
    /// The expected row (mapped onto the sink's columns, generated columns
    /// left out) as JSON text.
    pub expect: Option<String>,
    /// The record must be rejected with a reason containing this text.
    pub reject: Option<String>,
    /// The record must be dropped.
    #[serde(default)]
    pub dropped: bool,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LoggingConfig {
    /// Allow record values (PII) in logs and error reports, such as a
    /// plugin's panic message. Off by default.
    #[serde(default)]
    pub record_values: bool,
}

/// Live swap while `host run` runs: the pipeline file and its plugins are
/// checked for changes every `interval_ms`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReloadConfig {
    #[serde(default = "yes")]
    pub enabled: bool,
    #[serde(default = "default_reload_ms")]
    pub interval_ms: u64,
}

impl Default for ReloadConfig {
    fn default() -> Self {
        ReloadConfig { enabled: true, interval_ms: default_reload_ms() }
    }
}

fn yes() -> bool {
    true
}
fn default_reload_ms() -> u64 {
    1000
}

/// A pipeline file that could not be read, parsed or validated.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("{path}: cannot read: {error}")]
    Read { path: PathBuf, error: std::io::Error },
    #[error("{path}:{line}:{column}: {message}")]
    Parse { path: PathBuf, line: usize, column: usize, message: String },
    #[error("{path}: {message}")]
    Invalid { path: PathBuf, message: String },
    #[error("{path}:{line}: {message}")]
    InvalidAt { path: PathBuf, line: usize, message: String },
}

/// Reads, interpolates and parses a pipeline file.
pub fn parse(path: &Path) -> Result<PipelineConfig, ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|error| ConfigError::Read { path: path.into(), error })?;
    parse_str(path, &text, |name| std::env::var(name).ok())
}

/// [`parse`] of text already read; `lookup` resolves `${VAR}`.
pub fn parse_str(
    path: &Path,
    text: &str,
    lookup: impl Fn(&str) -> Option<String>,
) -> Result<PipelineConfig, ConfigError> {
    let at = |e: InterpolateError| ConfigError::Parse {
        path: path.into(),
        line: e.line,
        column: e.column,
        message: e.message,
    };
    let written = text;
    let interpolate::Interpolated { mut text, mut whole } =
        interpolate::interpolate_marked(text, lookup).map_err(at)?;
    // A string of one whole `${...}` where a number or boolean is wanted
    // is written bare, and the file parsed again (once per such string).
    let mut config: PipelineConfig = loop {
        let e = match toml::from_str(&text) {
            Ok(config) => break config,
            Err(e) => e,
        };
        let message = e.message().trim_end().to_string();
        if let Some(span) = e.span()
            && interpolate::retype(&mut text, &mut whole, span, &message).map_err(at)?
        {
            continue;
        }
        let (line, column) = e.span().map_or((1, 1), |s| interpolate::position(&text, s.start));
        return Err(ConfigError::Parse { path: path.into(), line, column, message });
    };
    config.step_lines = config.transforms.iter().map(|s| interpolate::position(&text, s.uses.span().start).0).collect();
    for shadow in config.transforms.iter_mut().filter_map(|s| s.shadow.as_mut()) {
        shadow.line = shadow.uses.as_ref().map(|u| interpolate::position(&text, u.span().start).0);
    }
    lines::param_lines(&text, &mut config.transforms);
    config.column_lines = lines::column_lines(&text);
    config.revision = revision(written.as_bytes());
    Ok(config)
}

/// A pipeline file's revision: the SHA-256 of its text as written (before
/// `${VAR}` is expanded), `sha256:` and 64 hex digits. The status page,
/// the reload watcher, lineage and the `pipeline-revision` column all use
/// this one definition.
pub fn revision(text: &[u8]) -> String {
    use sha2::Digest;
    format!("sha256:{:x}", sha2::Sha256::digest(text))
}

/// Parses and validates a pipeline file (no I/O beyond reading it).
pub fn load(path: &Path) -> Result<Pipeline, ConfigError> {
    let config = parse(path)?;
    validate(path, config)
}

#[cfg(test)]
mod tests {
    use super::*;

    const FILE: &str = "[source.s3]\nmode = \"reconcile\"\nbucket = \"b\"\nformat = \"csv\"\ninterval_s = \"${IVL:-30}\"\n\
        rows_per_commit = '${ROWS}'\n\n[reload]\nenabled = \"${RELOAD:-false}\"\n\n[batch]\nmax_records = \"${MAX}\"\n";

    fn parsed(env: &'static [(&'static str, &'static str)]) -> Result<PipelineConfig, ConfigError> {
        let lookup = |name: &str| env.iter().find(|(n, _)| *n == name).map(|(_, v)| v.to_string());
        parse_str(Path::new("p.toml"), FILE, lookup)
    }

    #[test]
    fn a_whole_variable_fills_a_number_or_a_boolean() {
        let config = parsed(&[("ROWS", "1000"), ("MAX", "250"), ("RELOAD", "true")]).unwrap();
        let Some(SourceConfig::S3(s3)) = &config.source else { panic!("an S3 source") };
        assert_eq!((s3.interval_s, s3.rows_per_commit), (30, 1000));
        assert!(config.reload.enabled);
        assert_eq!(config.batch.max_records, 250);
        assert!(!parsed(&[("ROWS", "1000"), ("MAX", "250")]).unwrap().reload.enabled, "the default");
    }

    #[test]
    fn a_whole_variable_that_does_not_fit_names_file_position_and_variable() {
        let err = parsed(&[("ROWS", "1000"), ("MAX", "many")]).unwrap_err();
        assert_eq!(err.to_string(), "p.toml:12:16: `${MAX}` is \"many\", not a whole number, which this key takes");
        let err = parsed(&[("ROWS", "1000"), ("MAX", "1"), ("RELOAD", "yes")]).unwrap_err();
        assert_eq!(
            err.to_string(),
            "p.toml:9:12: `${RELOAD:-false}` is \"yes\", not `true` or `false`, which this key takes"
        );
        // A number written as a string by hand stays a type error.
        let err = parse_str(Path::new("p.toml"), "[batch]\nmax_records = \"250\"\n", |_| None).unwrap_err();
        assert_eq!(err.to_string(), "p.toml:2:15: invalid type: string \"250\", expected usize");
    }
}
