//! One SFTP pass: under the pipeline's SFTP lease (one host copies at a
//! time; each copy is recorded under its fence), list the remote folder, abort the unfinished uploads of this
//! pipeline's keys an earlier run left, take the files that are new or
//! changed since `etl.sftp_files` says they were copied (or that map to
//! another key now), look again after `stable` and leave those still
//! changing for the next pass, copy the rest into the bucket one at a time
//! (recording each copy right after it), and, with `mirror_deletes`,
//! delete in the bucket the files gone from the listing.
//!
//! One file's failure is its own: it is counted, logged once per reason,
//! and tried again after a backoff ([`crate::source::failures`]); the other files
//! and the deletes go on. A listed entry that cannot be looked at is
//! unknown this pass, never gone.
//!
//! Must not load rows: the reconcile pass after it does.

use super::PassError;
use super::client::{Listing, Remote, RemoteFile};
use super::copy::Bucket;
use crate::config::{Compare, SftpSettings};
use crate::flow::Flow;
use crate::sink::lease::{Fence, Lease, LeaseWatch};
use crate::sink::{SinkError, sql};
use crate::source::failures::Failures;
use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::{Instant, SystemTime};

/// A pipeline's SFTP side: where files come from and where they go.
pub struct Sftp {
    pub settings: SftpSettings,
    glob: globset::GlobMatcher,
    pub bucket: Bucket,
    /// Keys are this and the file's path below the remote folder.
    prefix: String,
    /// The files that failed, from pass to pass (one pass at a time).
    failures: Mutex<Failures>,
    /// The pass's lease while a pass runs: every record checks it, and
    /// the pass stops once a renewal finds it taken over.
    fence: Mutex<Option<(Fence, LeaseWatch)>>,
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
    /// Tries at one file that failed, and files left to their backoff.
    failed: usize,
    backing_off: usize,
}

impl Sftp {
    pub fn new(settings: SftpSettings, bucket: Bucket, prefix: &str) -> Result<Sftp, String> {
        let glob = globset::Glob::new(&settings.glob).map_err(|e| format!("glob `{}`: {e}", settings.glob))?;
        let failures = Mutex::default();
        let glob = glob.compile_matcher();
        Ok(Sftp { glob, settings, bucket, prefix: prefix.to_string(), failures, fence: Mutex::default() })
    }

    /// The object key of a file `name` below the remote folder.
    pub fn key(&self, name: &str) -> String {
        key(&self.prefix, name)
    }

    /// One pass, under the pipeline's lease; `Ok` without doing anything
    /// if another host holds it.
    pub async fn pass(&self, flow: &Arc<Flow>) -> Result<(), PassError> {
        let pipeline = flow.pipeline.name.as_str();
        let mut lease = Lease::try_take(flow.sink.pool(), pipeline, "sftp", "sftp").await.map_err(PassError::Db)?;
        // `--once` is one pass: it waits for the host that holds it (or
        // for its lease to expire, if that host died).
        while lease.is_none() && flow.once && !flow.stopping() {
            tokio::select! {
                _ = tokio::time::sleep(std::time::Duration::from_secs(1)) => {}
                () = flow.stopped() => return Err(PassError::Stopped),
            }
            lease = Lease::try_take(flow.sink.pool(), pipeline, "sftp", "sftp").await.map_err(PassError::Db)?;
        }
        let Some(lease) = lease else {
            tracing::info!(pipeline, "another host runs this pipeline's SFTP pass; this one leaves it");
            return Ok(());
        };
        *self.fence.lock().expect("not poisoned") = Some((lease.fence().clone(), lease.watch()));
        let result = self.locked(flow).await;
        self.fence.lock().expect("not poisoned").take();
        lease.release().await;
        result
    }

    async fn locked(&self, flow: &Arc<Flow>) -> Result<(), PassError> {
        let started = SystemTime::now();
        let remote = Remote::connect(&self.settings).await?;
        let result = self.walk(flow, &remote, started).await;
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
            failed = report.failed,
            backing_off = report.backing_off,
            "SFTP pass"
        );
        Ok(())
    }

    async fn walk(&self, flow: &Arc<Flow>, remote: &Remote, started: SystemTime) -> Result<Report, PassError> {
        let listing = remote.list(&self.settings, &self.glob).await?;
        let mut records = self.records(flow).await?;
        let mut report = Report { listed: listing.files.len(), ..Report::default() };
        self.abort_stale_uploads(flow, &listing, &records, started).await;
        let present: HashSet<&str> = listed(&listing).chain(records.keys().map(String::as_str)).collect();
        self.failures.lock().expect("not poisoned").keep_only(&present);
        for u in &listing.unknown {
            self.file_failed(flow, &u.path, None, &u.why, &mut report);
        }
        let changed = self.changed(&listing.files, &records, &mut report);
        for f in self.stable(flow, remote, changed, &mut report).await? {
            if flow.stopping() {
                return Err(PassError::Stopped);
            }
            self.still_held()?;
            match self.take(flow, remote, f, records.remove(&f.path), &mut report).await {
                Ok(()) => self.file_taken(flow, &f.path),
                Err(e) if e.of_one_file() && !remote.closed() => {
                    self.file_failed(flow, &f.path, Some((f.size, f.mtime)), &e.to_string(), &mut report);
                }
                Err(e) => return Err(e),
            }
        }
        if self.settings.mirror_deletes {
            self.mirror_deletes(flow, &listing, &records, &mut report).await?;
        }
        Ok(report)
    }

    /// The listed files that differ from their record (or have none, or
    /// map to another key now) and are not waiting out a failure.
    fn changed<'f>(
        &self,
        files: &'f [RemoteFile],
        records: &HashMap<String, Record>,
        report: &mut Report,
    ) -> Vec<&'f RemoteFile> {
        let (failures, now) = (self.failures.lock().expect("not poisoned"), Instant::now());
        let differs = |f: &RemoteFile| {
            records
                .get(&f.path)
                .is_none_or(|r| (r.size, r.mtime) != (f.size as i64, f.mtime) || r.key != self.key(&f.name))
        };
        let mut changed = Vec::new();
        for f in files.iter().filter(|f| differs(f)) {
            if failures.due(&f.path, Some(&(f.size, f.mtime)), now) {
                changed.push(f);
            } else {
                report.backing_off += 1;
            }
        }
        changed
    }

    /// A second look after `stable`: a file still being written waits for
    /// a later pass; one that cannot be looked at fails alone.
    async fn stable<'f>(
        &self,
        flow: &Arc<Flow>,
        remote: &Remote,
        changed: Vec<&'f RemoteFile>,
        report: &mut Report,
    ) -> Result<Vec<&'f RemoteFile>, PassError> {
        if changed.is_empty() || self.settings.stable.is_zero() {
            return Ok(changed);
        }
        tokio::select! {
            () = tokio::time::sleep(self.settings.stable) => {}
            () = flow.stopped() => return Err(PassError::Stopped),
        }
        let mut stable = Vec::new();
        for f in changed {
            match remote.stat(&f.path).await {
                Ok(now) if now == Some((f.size, f.mtime)) => stable.push(f),
                Ok(_) => {
                    tracing::info!(pipeline = %flow.pipeline.name, file = %f.path, "still changing; left for the next pass");
                    report.waiting += 1;
                }
                Err(e) if !remote.closed() => {
                    self.file_failed(flow, &f.path, Some((f.size, f.mtime)), &e.to_string(), report);
                }
                Err(e) => return Err(e.into()),
            }
        }
        Ok(stable)
    }

    /// With `mirror_deletes`: deletes in the bucket the recorded files
    /// absent from the listing (a listed file, readable or not, stays).
    async fn mirror_deletes(
        &self,
        flow: &Arc<Flow>,
        listing: &Listing,
        records: &HashMap<String, Record>,
        report: &mut Report,
    ) -> Result<(), PassError> {
        let listed: HashSet<&str> = listed(listing).collect();
        for (path, record) in records.iter().filter(|(p, _)| !listed.contains(p.as_str()) && self.covers(p)) {
            if flow.stopping() {
                return Err(PassError::Stopped);
            }
            self.still_held()?;
            if let Err(e) = self.bucket.delete(&record.key, None).await {
                self.file_failed(flow, path, None, &e.to_string(), report);
                continue;
            }
            self.execute(flow, sql::SFTP_FORGET, &[&flow.pipeline.name, path]).await?;
            tracing::info!(pipeline = %flow.pipeline.name, file = %path, key = %record.key, "deleted on the server: deleted in the bucket");
            flow.tally(|s| s.files_deleted += 1);
            report.deleted += 1;
        }
        Ok(())
    }

    /// Aborts the multipart uploads an earlier run of this pipeline left
    /// unfinished: only to keys of files it lists or recorded.
    async fn abort_stale_uploads(
        &self,
        flow: &Flow,
        listing: &Listing,
        records: &HashMap<String, Record>,
        started: SystemTime,
    ) {
        let listed = listing.files.iter().map(|f| self.key(&f.name));
        let keys: HashSet<String> = listed.chain(records.values().map(|r| r.key.clone())).collect();
        match self.bucket.abort_stale_uploads(&self.prefix, &keys, started).await {
            Ok(0) => {}
            Ok(n) => tracing::info!(pipeline = %flow.pipeline.name, n, "aborted copies an earlier run left unfinished"),
            Err(e) => tracing::warn!(pipeline = %flow.pipeline.name, error = %e, "cannot look for unfinished copies"),
        }
    }

    /// One file failed (`seen`: its size and time, if known): counted,
    /// logged as a warning when its reason is new, tried again later.
    fn file_failed(&self, flow: &Flow, path: &str, seen: Option<(u64, i64)>, why: &str, report: &mut Report) {
        report.failed += 1;
        flow.tally(|s| s.files_failed += 1);
        let new = self.failures.lock().expect("not poisoned").failed(path, seen, why, Instant::now());
        if new {
            tracing::warn!(pipeline = %flow.pipeline.name, file = %path, error = %why,
                "this file cannot be taken; the others go on, and it is tried again later");
        } else {
            tracing::debug!(pipeline = %flow.pipeline.name, file = %path, error = %why, "this file failed again");
        }
    }

    fn file_taken(&self, flow: &Flow, path: &str) {
        if let Some(tries) = self.failures.lock().expect("not poisoned").succeeded(path) {
            tracing::info!(pipeline = %flow.pipeline.name, file = %path, failed_tries = tries, "taken after failing");
        }
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
                self.execute(flow, sql::SFTP_TOUCH, &[&flow.pipeline.name, &f.path, &(f.size as i64), &f.mtime])
                    .await?;
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
            // file was in. Without versions (or with `null`, versioning
            // suspended: the current object) it cannot be taken back.
            if let Some(v) = own_version(copied.version_id.as_deref()) {
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
        let mut client = flow.sink.pool().get().await.map_err(|e| PassError::Db(SinkError::pool(e)))?;
        let rows = crate::sink::pooler::query(&mut client, sql::SFTP_FILES, &[&flow.pipeline.name])
            .await
            .map_err(|e| PassError::Db(SinkError::of(e)))?;
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
        self.execute(
            flow,
            sql::SFTP_RECORD,
            &[&flow.pipeline.name, &f.path, &size, &f.mtime, &digest, &bucket, &key, &version],
        )
        .await
    }

    /// Refused once a renewal found the pass's lease taken over: the other
    /// host copies now.
    fn still_held(&self) -> Result<(), PassError> {
        match &*self.fence.lock().expect("not poisoned") {
            Some((fence, watch)) if watch.lost() => Err(PassError::Db(fence.refused())),
            _ => Ok(()),
        }
    }

    /// One statement in a transaction of its own, under the pass's fence:
    /// a host whose lease was taken over records nothing more.
    async fn execute(
        &self,
        flow: &Flow,
        statement: &str,
        params: &[&(dyn tokio_postgres::types::ToSql + Sync)],
    ) -> Result<(), PassError> {
        let (fence, _) =
            self.fence.lock().expect("not poisoned").clone().expect("recorded during a pass, under its lease");
        let mut client = flow.sink.pool().get().await.map_err(|e| PassError::Db(SinkError::pool(e)))?;
        let tx = fence.begin(&mut client).await.map_err(PassError::Db)?;
        tx.execute(statement, params).await.map_err(|e| PassError::Db(SinkError::of(e)))?;
        tx.commit().await.map_err(|e| PassError::Db(SinkError::of(e)))
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

/// The paths a listing shows: its files and the entries it could not
/// look at.
fn listed(listing: &Listing) -> impl Iterator<Item = &str> {
    listing.files.iter().map(|f| f.path.as_str()).chain(listing.unknown.iter().map(|u| u.path.as_str()))
}

/// The version a copy wrote that is its own to delete: none for a bucket
/// without versions, nor for `null` (versioning suspended: deleting
/// version `null` deletes the current object, an earlier copy's too).
fn own_version(version: Option<&str>) -> Option<&str> {
    version.filter(|v| *v != "null")
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
    fn a_copy_is_taken_back_by_its_own_version_only() {
        assert_eq!(own_version(Some("3HL4kqtJvjVBH40Nrjfkd")), Some("3HL4kqtJvjVBH40Nrjfkd"));
        assert_eq!(own_version(None), None, "no versions");
        assert_eq!(own_version(Some("null")), None, "versioning suspended: the current object");
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
