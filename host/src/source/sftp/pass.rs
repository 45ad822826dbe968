//! One SFTP pass: under the pipeline's SFTP lock (one host copies at a
//! time), list the remote folder, take the files that are new or changed
//! since `etl.sftp_files` says they were copied, look again after
//! `stable` and leave those still changing for the next pass, copy the
//! rest into the bucket one at a time (recording each copy right after
//! it), and, with `mirror_deletes`, delete in the bucket the files gone
//! from the server.
//!
//! Must not load rows: the reconcile pass after it does.

use super::PassError;
use super::client::{Remote, RemoteFile};
use super::copy::Bucket;
use crate::config::{Compare, SftpSettings};
use crate::flow::Flow;
use crate::sink::{SinkError, sql};
use std::collections::{HashMap, HashSet};
use std::sync::Arc;

/// A pipeline's SFTP side: where files come from and where they go.
pub struct Sftp {
    pub settings: SftpSettings,
    glob: globset::GlobMatcher,
    pub bucket: Bucket,
    /// Keys are this and the file's path below the remote folder.
    prefix: String,
}

/// A file as `etl.sftp_files` says it was copied.
struct Record {
    size: i64,
    mtime: i64,
    digest: String,
    key: String,
}

/// What a pass did.
#[derive(Debug, Default)]
struct Report {
    listed: usize,
    copied: usize,
    adopted: usize,
    same_content: usize,
    waiting: usize,
    deleted: usize,
}

impl Sftp {
    pub fn new(settings: SftpSettings, bucket: Bucket, prefix: &str) -> Result<Sftp, String> {
        let glob = globset::Glob::new(&settings.glob).map_err(|e| format!("glob `{}`: {e}", settings.glob))?;
        Ok(Sftp { glob: glob.compile_matcher(), settings, bucket, prefix: prefix.to_string() })
    }

    /// The object key of a file `name` below the remote folder.
    pub fn key(&self, name: &str) -> String {
        key(&self.prefix, name)
    }

    /// One pass, under the pipeline's lock; `Ok` without doing anything if
    /// another host holds it.
    pub async fn pass(&self, flow: &Arc<Flow>) -> Result<(), PassError> {
        let pipeline = flow.pipeline.name.as_str();
        let client = flow.sink.pool().get().await.map_err(|e| PassError::Db(SinkError::pool(e)))?;
        let got: bool = client
            .query_one(sql::SFTP_TRY_LOCK, &[&pipeline])
            .await
            .map_err(|e| PassError::Db(SinkError::of(e)))?
            .get(0);
        if !got {
            tracing::info!(pipeline, "another host runs this pipeline's SFTP pass; this one leaves it");
            return Ok(());
        }
        let result = self.locked(flow).await;
        if client.query_one(sql::SFTP_UNLOCK, &[&pipeline]).await.is_err() {
            // Closing the connection is what unlocks it then.
            drop(deadpool_postgres::Object::take(client));
        }
        result
    }

    async fn locked(&self, flow: &Arc<Flow>) -> Result<(), PassError> {
        let started = std::time::SystemTime::now();
        let remote = Remote::connect(&self.settings).await?;
        match self.bucket.abort_stale_uploads(&self.prefix, started).await {
            Ok(0) => {}
            Ok(n) => tracing::info!(pipeline = %flow.pipeline.name, n, "aborted copies an earlier run left unfinished"),
            Err(e) => tracing::warn!(pipeline = %flow.pipeline.name, error = %e, "cannot look for unfinished copies"),
        }
        let result = self.walk(flow, &remote).await;
        remote.close().await;
        let report = result?;
        tracing::info!(
            pipeline = %flow.pipeline.name,
            listed = report.listed,
            copied = report.copied,
            adopted = report.adopted,
            same_content = report.same_content,
            waiting = report.waiting,
            deleted = report.deleted,
            "SFTP pass"
        );
        Ok(())
    }

    async fn walk(&self, flow: &Arc<Flow>, remote: &Remote) -> Result<Report, PassError> {
        let files = remote.list(&self.settings, &self.glob).await?;
        let mut records = self.records(flow).await?;
        let mut report = Report { listed: files.len(), ..Report::default() };
        let changed: Vec<&RemoteFile> = files
            .iter()
            .filter(|f| records.get(&f.path).is_none_or(|r| (r.size, r.mtime) != (f.size as i64, f.mtime)))
            .collect();
        // A second look: a file still being written waits for a later pass.
        let mut stable = Vec::new();
        if !changed.is_empty() && !self.settings.stable.is_zero() {
            tokio::select! {
                () = tokio::time::sleep(self.settings.stable) => {}
                () = flow.stopped() => return Err(PassError::Stopped),
            }
        }
        for f in changed {
            let now =
                if self.settings.stable.is_zero() { Some((f.size, f.mtime)) } else { remote.stat(&f.path).await? };
            if now == Some((f.size, f.mtime)) {
                stable.push(f);
            } else {
                tracing::info!(pipeline = %flow.pipeline.name, file = %f.path, "still changing; left for the next pass");
                report.waiting += 1;
            }
        }
        for f in stable {
            if flow.stopping() {
                return Err(PassError::Stopped);
            }
            self.take(flow, remote, f, records.remove(&f.path), &mut report).await?;
        }
        if self.settings.mirror_deletes {
            let listed: HashSet<&str> = files.iter().map(|f| f.path.as_str()).collect();
            for (path, record) in records.iter().filter(|(p, _)| !listed.contains(p.as_str()) && self.covers(p)) {
                if flow.stopping() {
                    return Err(PassError::Stopped);
                }
                self.bucket.delete(&record.key, None).await?;
                execute(flow, sql::SFTP_FORGET, &[&flow.pipeline.name, path]).await?;
                tracing::info!(pipeline = %flow.pipeline.name, file = %path, key = %record.key, "deleted on the server: deleted in the bucket");
                flow.tally(|s| s.files_deleted += 1);
                report.deleted += 1;
            }
        }
        Ok(report)
    }

    /// Copies one stable file that differs from its record (or adopts the
    /// copy an earlier run made), and records it.
    async fn take(
        &self,
        flow: &Arc<Flow>,
        remote: &Remote,
        f: &RemoteFile,
        record: Option<Record>,
        report: &mut Report,
    ) -> Result<(), PassError> {
        let key = self.key(&f.name);
        if let (Compare::Digest, Some(r)) = (self.settings.compare, &record) {
            let (digest, _) = remote.digest(&f.path).await?;
            if digest == r.digest && r.key == key {
                // Touched, not changed: the copy stands.
                execute(flow, sql::SFTP_TOUCH, &[&flow.pipeline.name, &f.path, &(f.size as i64), &f.mtime]).await?;
                report.same_content += 1;
                return Ok(());
            }
        }
        if let Some(version) = self.bucket.copy_of(&key, f).await? {
            self.record(flow, f, &key, "", version.as_deref()).await?;
            tracing::info!(pipeline = %flow.pipeline.name, file = %f.path, "copied before and not recorded: the copy is kept");
            report.adopted += 1;
            return Ok(());
        }
        let copied = self.bucket.copy(remote, f, &key, || flow.stopping()).await?;
        let now = remote.stat(&f.path).await?;
        if copied.bytes != f.size || now != Some((f.size, f.mtime)) {
            // It changed while it was copied: that copy is no state the
            // file was in. Without versions it cannot be taken back.
            if let Some(v) = &copied.version_id {
                self.bucket.delete(&key, Some(v)).await?;
            }
            tracing::info!(pipeline = %flow.pipeline.name, file = %f.path, "changed while it was copied; copied again next pass");
            report.waiting += 1;
            return Ok(());
        }
        self.record(flow, f, &key, &copied.digest, copied.version_id.as_deref()).await?;
        flow.panel.sftp_bytes(copied.bytes);
        flow.tally(|s| s.files_copied += 1);
        tracing::info!(pipeline = %flow.pipeline.name, file = %f.path, key = %key, bytes = copied.bytes, "copied");
        report.copied += 1;
        Ok(())
    }

    /// What `etl.sftp_files` holds for the pipeline, by path.
    async fn records(&self, flow: &Flow) -> Result<HashMap<String, Record>, PassError> {
        let client = flow.sink.pool().get().await.map_err(|e| PassError::Db(SinkError::pool(e)))?;
        let rows =
            client.query(sql::SFTP_FILES, &[&flow.pipeline.name]).await.map_err(|e| PassError::Db(SinkError::of(e)))?;
        Ok(rows
            .iter()
            .map(|r| (r.get(0), Record { size: r.get(1), mtime: r.get(2), digest: r.get(3), key: r.get(4) }))
            .collect())
    }

    /// Records `f` as copied to `key`.
    async fn record(
        &self,
        flow: &Flow,
        f: &RemoteFile,
        key: &str,
        digest: &str,
        version: Option<&str>,
    ) -> Result<(), PassError> {
        let (size, bucket) = (f.size as i64, self.bucket.name.as_str());
        execute(
            flow,
            sql::SFTP_RECORD,
            &[&flow.pipeline.name, &f.path, &size, &f.mtime, &digest, &bucket, &key, &version],
        )
        .await
    }

    /// Whether a recorded path is one this pipeline's listing would show
    /// (a record from before its folder or glob changed is not mirrored).
    fn covers(&self, path: &str) -> bool {
        let dir = self.settings.dir.trim_end_matches('/');
        let Some(below) = path.strip_prefix(dir).and_then(|p| p.strip_prefix('/')) else { return false };
        let name = below.rsplit('/').next().unwrap_or(below);
        (self.settings.recursive || !below.contains('/')) && self.glob.is_match(name)
    }
}

/// One statement on a pooled connection.
async fn execute(
    flow: &Flow,
    statement: &str,
    params: &[&(dyn tokio_postgres::types::ToSql + Sync)],
) -> Result<(), PassError> {
    let client = flow.sink.pool().get().await.map_err(|e| PassError::Db(SinkError::pool(e)))?;
    client.execute(statement, params).await.map(drop).map_err(|e| PassError::Db(SinkError::of(e)))
}

/// `prefix` and `name`, one `/` between them when the prefix has no
/// trailing one.
fn key(prefix: &str, name: &str) -> String {
    if prefix.is_empty() || prefix.ends_with('/') { format!("{prefix}{name}") } else { format!("{prefix}/{name}") }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{HostKeyCheck, Secret, SftpAuth};
    use std::time::Duration;

    fn sftp(dir: &str, glob: &str, recursive: bool) -> Sftp {
        let settings = SftpSettings {
            host: "h".into(),
            port: 22,
            user: "u".into(),
            auth: SftpAuth::Password(Secret("p".into())),
            host_key: HostKeyCheck::Off,
            dir: dir.into(),
            glob: glob.into(),
            recursive,
            stable: Duration::ZERO,
            compare: Compare::Mtime,
            mirror_deletes: true,
            timeout: Duration::from_secs(1),
        };
        let s3 = aws_sdk_s3::Client::from_conf(
            aws_sdk_s3::Config::builder().behavior_version(aws_sdk_s3::config::BehaviorVersion::latest()).build(),
        );
        Sftp::new(settings, Bucket { s3, name: "raw".into() }, "in").unwrap()
    }

    #[test]
    fn keys_are_the_prefix_and_the_path_below_the_folder() {
        assert_eq!(key("", "a.csv"), "a.csv");
        assert_eq!(key("raw/", "a.csv"), "raw/a.csv");
        assert_eq!(key("raw", "sub/a.csv"), "raw/sub/a.csv");
    }

    #[test]
    fn only_files_the_listing_would_show_are_mirrored() {
        let flat = sftp("/out", "*.csv", false);
        assert!(flat.covers("/out/a.csv"));
        assert!(!flat.covers("/out/sub/a.csv"), "not recursive");
        assert!(!flat.covers("/out/a.txt"), "not the glob");
        assert!(!flat.covers("/elsewhere/a.csv"));
        assert!(!flat.covers("/outer/a.csv"));
        let deep = sftp("/out/", "*.csv", true);
        assert!(deep.covers("/out/sub/a.csv"));
        assert!(sftp("/", "*", false).covers("/a"));
    }
}
