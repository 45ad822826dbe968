//! The Prometheus metrics: their names (README lists them with their
//! meanings), the recorder, and the per-pipeline handles.
//!
//! The `metrics` crate's facade: a counter or histogram handle made before
//! a recorder is installed does nothing, and without `--admin` none is
//! installed, so a run that is not watched pays nothing. Handles are made
//! once (per pipeline, per step) and kept: the hot paths never look a name
//! up.

use super::Summary;
use metrics::{Counter, Gauge, Histogram};
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};

pub const MESSAGES_RECEIVED: &str = "etl_messages_received_total";
pub const MESSAGES_LOADED: &str = "etl_messages_loaded_total";
pub const MESSAGES_DELETED: &str = "etl_messages_deleted_total";
pub const MESSAGES_RELEASED: &str = "etl_messages_released_total";
pub const VISIBILITY_EXTENSIONS: &str = "etl_visibility_extensions_total";
pub const OLDEST_MESSAGE_AGE: &str = "etl_oldest_message_age_seconds";
pub const ROWS_WRITTEN: &str = "etl_rows_written_total";
pub const DEAD_LETTERS: &str = "etl_dead_letters_total";
pub const DUPLICATES: &str = "etl_duplicates_skipped_total";
pub const BATCHES: &str = "etl_batches_committed_total";
pub const BATCHES_FAILED: &str = "etl_batches_failed_total";
pub const BATCH_SIZE: &str = "etl_batch_messages";
pub const BATCH_LATENCY: &str = "etl_batch_latency_seconds";
pub const PLUGIN_CALL: &str = "etl_plugin_call_seconds";
pub const PLUGIN_FAILURES: &str = "etl_plugin_failures_total";
pub const SINK_COMMIT: &str = "etl_sink_commit_seconds";
pub const SINK_RETRIES: &str = "etl_sink_retries_total";
pub const BATCHES_PER_COMMIT: &str = "etl_sink_batches_per_commit";
pub const VERSIONS_SWAPPED: &str = "etl_versions_swapped_total";
pub const VERSIONS_REFUSED: &str = "etl_versions_refused_total";
pub const OBJECTS_LOADED: &str = "etl_objects_loaded_total";
pub const OBJECTS_REMOVED: &str = "etl_objects_removed_total";
pub const FILES_COPIED: &str = "etl_sftp_files_copied_total";
pub const FILES_DELETED: &str = "etl_sftp_files_deleted_total";
pub const FILES_FAILED: &str = "etl_sftp_files_failed_total";
pub const SFTP_BYTES_COPIED: &str = "etl_sftp_bytes_copied_total";
pub const SFTP_PASSES_FAILED: &str = "etl_sftp_passes_failed_total";
pub const S3_BYTES_READ: &str = "etl_s3_bytes_read_total";
pub const PIPELINE_UP: &str = "etl_pipeline_up";
pub const SOURCE_UP: &str = "etl_source_up";
pub const SOURCE_ERRORS: &str = "etl_source_errors_total";
pub const SHADOW_RECORDS: &str = "etl_shadow_records_total";
pub const SHADOW_COLUMNS: &str = "etl_shadow_column_changes_total";
pub const SHADOW_BATCHES: &str = "etl_shadow_batches_total";
pub const SHADOW_CPU: &str = "etl_shadow_cpu_seconds_total";
pub const IN_FLIGHT: &str = "etl_messages_in_flight";
pub const DRAINING: &str = "etl_draining";
pub const LEASES_HELD: &str = "etl_leases_held";
pub const LEASE_EPOCH: &str = "etl_lease_epoch";
pub const LEASES_LOST: &str = "etl_leases_lost_total";

/// Every metric with its one-line meaning (for `# HELP` and the README).
pub const DESCRIPTIONS: &[(&str, &str)] = &[
    (MESSAGES_RECEIVED, "Messages received from the queue (a redelivery counts again)."),
    (MESSAGES_LOADED, "Messages whose rows and dead letters committed (each message once)."),
    (MESSAGES_DELETED, "Messages deleted from the queue after their commit."),
    (MESSAGES_RELEASED, "Messages made visible again without being loaded (stop, outage)."),
    (VISIBILITY_EXTENSIONS, "Visibility timeout extensions of held messages."),
    (
        OLDEST_MESSAGE_AGE,
        "Queue lag: now minus the SentTimestamp of the oldest message in the latest receive (0 after an empty receive).",
    ),
    (IN_FLIGHT, "Messages this host holds: received, not yet deleted or released (kept invisible meanwhile)."),
    (LEASES_HELD, "Leases this host holds, by kind (object: an object being loaded; sftp: the SFTP pass)."),
    (LEASE_EPOCH, "The epoch of the newest lease this host took, by kind (epochs rise at every take and takeover)."),
    (LEASES_LOST, "Leases this host found taken over by another (its commits under them are refused)."),
    (DRAINING, "1 from the signal that stops the process until it exits: readiness fails, nothing new is received."),
    (ROWS_WRITTEN, "Rows committed into the pipeline's table."),
    (DEAD_LETTERS, "Dead letters committed, by stage (source, input, transform, sink)."),
    (DUPLICATES, "Messages or units already committed before: nothing added for them."),
    (BATCHES, "Transactions committed."),
    (BATCHES_FAILED, "Batches or objects that did not commit (tried again later, or fatal)."),
    (BATCH_SIZE, "Messages per batch."),
    (BATCH_LATENCY, "From a batch's first receive to its commit."),
    (PLUGIN_CALL, "Time of one plugin call on one batch, by step and plugin digest."),
    (PLUGIN_FAILURES, "Plugin calls that failed, by kind (trap, timeout, memory, malformed)."),
    (SINK_COMMIT, "Time to commit one batch, or batches committed together (retries included)."),
    (SINK_RETRIES, "Commit attempts tried again after a transient error or a stall."),
    (BATCHES_PER_COMMIT, "Batches of messages committed in one transaction (group commit)."),
    (VERSIONS_SWAPPED, "New plugin or pipeline versions checked and swapped in."),
    (VERSIONS_REFUSED, "New versions refused (the running one went on)."),
    (OBJECTS_LOADED, "S3 objects loaded completely."),
    (OBJECTS_REMOVED, "Files whose rows were removed because their object is gone."),
    (S3_BYTES_READ, "Bytes read from S3 objects."),
    (FILES_COPIED, "Files an SFTP pass copied into the bucket (new or changed)."),
    (FILES_DELETED, "Files deleted in the bucket because they were deleted on the SFTP server."),
    (FILES_FAILED, "Attempts at one SFTP file that failed (unreadable, its copy refused); each is tried again later."),
    (SFTP_BYTES_COPIED, "Bytes copied from the SFTP server into the bucket."),
    (SFTP_PASSES_FAILED, "SFTP passes that failed (the server unreachable, refused, or a copy failed)."),
    (
        SHADOW_RECORDS,
        "Records a shadow candidate was compared on, by outcome (same, changed, added, dropped, rejected_by_production_only, rejected_by_candidate_only).",
    ),
    (SHADOW_COLUMNS, "Rows a shadow candidate changed, by column."),
    (SHADOW_BATCHES, "Batches offered to a shadow candidate, by outcome (compared, skipped, trapped)."),
    (SHADOW_CPU, "CPU time spent in the chain, by side (production, candidate), while a candidate runs in shadow."),
    (
        PIPELINE_UP,
        "1 while the pipeline runs and every part of its source answers; 0 when a part is degraded, or it is starting, stopped or failed.",
    ),
    (
        SOURCE_UP,
        "1 while a part of a pipeline's source (queue, bucket, sftp, plugins) answers, 0 while it is degraded or failed.",
    ),
    (
        SOURCE_ERRORS,
        "Failed calls to a part of a pipeline's source, by kind (unreachable, not_found, denied, throttled, server, other).",
    ),
];

/// Histogram buckets, in seconds for the latencies.
const SECONDS: &[f64] = &[0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0];
const MESSAGES: &[f64] = &[1.0, 5.0, 10.0, 25.0, 50.0, 100.0, 250.0, 500.0, 1000.0, 5000.0];
const GROUPS: &[f64] = &[1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0];

/// Installs the process's Prometheus recorder; from now on handles made
/// record. Call once, before any pipeline starts. Every series carries
/// the label `host` ([`host_name`]): several replicas' series stay apart
/// wherever they are gathered.
pub fn install() -> Result<PrometheusHandle, String> {
    use metrics_exporter_prometheus::Matcher;
    let handle = PrometheusBuilder::new()
        .add_global_label("host", host_name())
        .set_buckets_for_metric(Matcher::Suffix("_seconds".into()), SECONDS)
        .and_then(|b| b.set_buckets_for_metric(Matcher::Full(BATCH_SIZE.into()), MESSAGES))
        .and_then(|b| b.set_buckets_for_metric(Matcher::Full(BATCHES_PER_COMMIT.into()), GROUPS))
        .and_then(PrometheusBuilder::install_recorder)
        .map_err(|e| format!("cannot install the metrics recorder: {e}"))?;
    for (name, help) in DESCRIPTIONS {
        if name.ends_with("_seconds") && *name != OLDEST_MESSAGE_AGE || *name == BATCH_SIZE {
            metrics::describe_histogram!(*name, *help);
        } else if [OLDEST_MESSAGE_AGE, PIPELINE_UP, SOURCE_UP, SHADOW_CPU, IN_FLIGHT, DRAINING].contains(name) {
            metrics::describe_gauge!(*name, *help);
        } else {
            metrics::describe_counter!(*name, *help);
        }
    }
    metrics::gauge!(DRAINING).set(0.0);
    Ok(handle)
}

/// This process's name among replicas: `HOST_NAME`, else `HOSTNAME` (a
/// Kubernetes pod's name), else the kernel's host name, else `host`.
pub fn host_name() -> String {
    let given = ["HOST_NAME", "HOSTNAME"].iter().find_map(|v| std::env::var(v).ok().filter(|n| !n.trim().is_empty()));
    given
        .or_else(|| std::fs::read_to_string("/proc/sys/kernel/hostname").ok().filter(|n| !n.trim().is_empty()))
        .map_or_else(|| "host".to_string(), |n| n.trim().to_string())
}

/// A pipeline's counters, made once.
pub struct Counters {
    pub received: Counter,
    pub deleted: Counter,
    pub released: Counter,
    pub extended: Counter,
    pub bytes_read: Counter,
    pub sftp_bytes: Counter,
    pub sftp_failed: Counter,
    pub oldest_age: Gauge,
    pub in_flight: Gauge,
    loaded: Counter,
    rows: Counter,
    duplicates: Counter,
    batches: Counter,
    failed: Counter,
    swapped: Counter,
    refused: Counter,
    objects: Counter,
    removed: Counter,
    copied: Counter,
    deleted_files: Counter,
    failed_files: Counter,
}

impl Counters {
    pub fn new(pipeline: &str) -> Counters {
        let c = |name: &'static str| metrics::counter!(name, "pipeline" => pipeline.to_string());
        Counters {
            received: c(MESSAGES_RECEIVED),
            deleted: c(MESSAGES_DELETED),
            released: c(MESSAGES_RELEASED),
            extended: c(VISIBILITY_EXTENSIONS),
            bytes_read: c(S3_BYTES_READ),
            sftp_bytes: c(SFTP_BYTES_COPIED),
            sftp_failed: c(SFTP_PASSES_FAILED),
            oldest_age: metrics::gauge!(OLDEST_MESSAGE_AGE, "pipeline" => pipeline.to_string()),
            in_flight: metrics::gauge!(IN_FLIGHT, "pipeline" => pipeline.to_string()),
            loaded: c(MESSAGES_LOADED),
            rows: c(ROWS_WRITTEN),
            duplicates: c(DUPLICATES),
            batches: c(BATCHES),
            failed: c(BATCHES_FAILED),
            swapped: c(VERSIONS_SWAPPED),
            refused: c(VERSIONS_REFUSED),
            objects: c(OBJECTS_LOADED),
            removed: c(OBJECTS_REMOVED),
            copied: c(FILES_COPIED),
            deleted_files: c(FILES_DELETED),
            failed_files: c(FILES_FAILED),
        }
    }

    /// Moves each counter by what its count in the summary moved. Dead
    /// letters are counted by stage where they commit (see [`Sink`]).
    pub fn moved(&self, before: &Summary, after: &Summary) {
        let pairs = [
            (&self.loaded, before.messages, after.messages),
            (&self.rows, before.rows, after.rows),
            (&self.duplicates, before.duplicates, after.duplicates),
            (&self.batches, before.batches, after.batches),
            (&self.failed, before.failed_batches, after.failed_batches),
            (&self.swapped, before.swaps, after.swaps),
            (&self.refused, before.refused_versions, after.refused_versions),
            (&self.objects, before.objects, after.objects),
            (&self.removed, before.objects_removed, after.objects_removed),
            (&self.copied, before.files_copied, after.files_copied),
            (&self.deleted_files, before.files_deleted, after.files_deleted),
            (&self.failed_files, before.files_failed, after.files_failed),
        ];
        for (counter, b, a) in pairs {
            if a > b {
                counter.increment((a - b) as u64);
            }
        }
    }
}

/// The stages a dead letter can come from, in the order of
/// the sink's `Report::dead_by_stage`.
pub const STAGES: [&str; 4] = ["source", "input", "transform", "sink"];

/// The sink's metrics for one pipeline.
pub struct Sink {
    pub commit: Histogram,
    pub retries: Counter,
    pub batches_per_commit: Histogram,
    pub batch_size: Histogram,
    pub latency: Histogram,
    dead: [Counter; 4],
}

impl Sink {
    pub fn new(pipeline: &str) -> Sink {
        let p = || pipeline.to_string();
        Sink {
            commit: metrics::histogram!(SINK_COMMIT, "pipeline" => p()),
            retries: metrics::counter!(SINK_RETRIES, "pipeline" => p()),
            batches_per_commit: metrics::histogram!(BATCHES_PER_COMMIT, "pipeline" => p()),
            batch_size: metrics::histogram!(BATCH_SIZE, "pipeline" => p()),
            latency: metrics::histogram!(BATCH_LATENCY, "pipeline" => p()),
            dead: STAGES.map(|stage| metrics::counter!(DEAD_LETTERS, "pipeline" => p(), "stage" => stage)),
        }
    }

    pub fn dead_letters(&self, by_stage: &[usize; 4]) {
        for (counter, n) in self.dead.iter().zip(by_stage) {
            if *n > 0 {
                counter.increment(*n as u64);
            }
        }
    }
}

/// One step's plugin metrics.
pub struct Step {
    pub call: Histogram,
    pub trap: Counter,
    pub timeout: Counter,
    pub memory: Counter,
    pub malformed: Counter,
}

impl Step {
    pub fn new(pipeline: &str, step: usize, plugin: &str, digest: &str) -> Step {
        let labels = [
            ("pipeline", pipeline.to_string()),
            ("step", step.to_string()),
            ("plugin", plugin.to_string()),
            ("digest", digest.to_string()),
        ];
        let failures = |kind: &'static str| {
            let mut l: Vec<metrics::Label> = labels.iter().map(|(k, v)| metrics::Label::new(*k, v.clone())).collect();
            l.push(metrics::Label::new("kind", kind));
            metrics::counter!(PLUGIN_FAILURES, l)
        };
        let call: Vec<metrics::Label> = labels.iter().map(|(k, v)| metrics::Label::new(*k, v.clone())).collect();
        Step {
            call: metrics::histogram!(PLUGIN_CALL, call),
            trap: failures("trap"),
            timeout: failures("timeout"),
            memory: failures("memory"),
            malformed: failures("malformed"),
        }
    }
}
