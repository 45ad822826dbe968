//! One remote file into one S3 object, streamed: up to [`PART`] bytes in
//! memory at a time (a file that fits is one PutObject, a larger one a
//! multipart upload, aborted if the copy fails), its SHA-256 taken on the
//! way. The object carries the file's path, size and modification time as
//! metadata, so a copy that completed but was never recorded (the host
//! killed in between) is recognised in the bucket and adopted.
//!
//! Must not decide what to copy nor record anything: [`super::pass`] does.

use super::PassError;
use super::client::{Remote, RemoteFile};
use aws_sdk_s3::primitives::ByteStream;
use aws_sdk_s3::types::{CompletedMultipartUpload, CompletedPart};
use sha2::Digest;
use tokio::io::AsyncReadExt;

/// Bytes of a file in memory at a time, and the size of each part of a
/// multipart upload (S3 wants at least 5 MiB for all parts but the last).
pub const PART: usize = 8 << 20;

/// The object metadata that says which file and which state of it an
/// object holds.
const META_PATH: &str = "sftp-path";
const META_SIZE: &str = "sftp-size";
const META_MTIME: &str = "sftp-mtime";

/// What a copy wrote.
#[derive(Debug, Clone, PartialEq)]
pub struct Copied {
    /// The object version written (`None` in a bucket that keeps none).
    pub version_id: Option<String>,
    /// Hex SHA-256 of the bytes copied (empty for an adopted copy).
    pub digest: String,
    pub bytes: u64,
}

/// Where files go.
pub struct Bucket {
    pub s3: aws_sdk_s3::Client,
    pub name: String,
}

impl Bucket {
    fn error(&self, key: &str, action: &'static str, e: impl std::error::Error + 'static) -> PassError {
        PassError::S3 {
            uri: format!("s3://{}/{key}", self.name),
            action,
            reason: aws_sdk_s3::error::DisplayErrorContext(e).to_string(),
        }
    }

    /// The current object at `key`, if it is a copy of `file` as it is now
    /// (the same path, size and modification time): its version id.
    pub async fn copy_of(&self, key: &str, file: &RemoteFile) -> Result<Option<Option<String>>, PassError> {
        let out = match self.s3.head_object().bucket(&self.name).key(key).send().await {
            Ok(out) => out,
            Err(e) if e.raw_response().is_some_and(|r| r.status().as_u16() == 404) => return Ok(None),
            Err(e) => return Err(self.error(key, "HeadObject", e)),
        };
        let meta = out.metadata();
        let get = |k: &str| meta.and_then(|m| m.get(k)).map(String::as_str);
        let same = get(META_PATH) == Some(file.path.as_str())
            && get(META_SIZE) == Some(file.size.to_string().as_str())
            && get(META_MTIME) == Some(file.mtime.to_string().as_str());
        Ok(same.then(|| out.version_id().map(str::to_string)))
    }

    /// Copies `file` to `key`. `stopping` is asked between parts: a copy
    /// the run stops in is aborted, and made again next time.
    pub async fn copy(
        &self,
        remote: &Remote,
        file: &RemoteFile,
        key: &str,
        stopping: impl Fn() -> bool,
    ) -> Result<Copied, PassError> {
        let mut reader = remote.open(&file.path).await?;
        let mut hash = sha2::Sha256::new();
        let mut bytes = 0u64;
        let first = fill(&mut reader, remote, &file.path).await?;
        hash.update(&first);
        bytes += first.len() as u64;
        let meta = |b: aws_sdk_s3::operation::put_object::builders::PutObjectFluentBuilder| {
            b.metadata(META_PATH, &file.path)
                .metadata(META_SIZE, file.size.to_string())
                .metadata(META_MTIME, file.mtime.to_string())
        };
        if first.len() < PART {
            let put = meta(self.s3.put_object().bucket(&self.name).key(key)).body(ByteStream::from(first));
            let out = put.send().await.map_err(|e| self.error(key, "PutObject", e))?;
            let version_id = out.version_id().map(str::to_string);
            return Ok(Copied { version_id, digest: hex::encode(hash.finalize()), bytes });
        }
        let created = self
            .s3
            .create_multipart_upload()
            .bucket(&self.name)
            .key(key)
            .metadata(META_PATH, &file.path)
            .metadata(META_SIZE, file.size.to_string())
            .metadata(META_MTIME, file.mtime.to_string())
            .send()
            .await
            .map_err(|e| self.error(key, "CreateMultipartUpload", e))?;
        let Some(upload) = created.upload_id().map(str::to_string) else {
            return Err(PassError::S3 {
                uri: format!("s3://{}/{key}", self.name),
                action: "CreateMultipartUpload",
                reason: "no upload id in the answer".into(),
            });
        };
        let parts = async {
            let mut parts = Vec::new();
            let mut chunk = first;
            loop {
                let number = parts.len() as i32 + 1;
                let out = self
                    .s3
                    .upload_part()
                    .bucket(&self.name)
                    .key(key)
                    .upload_id(&upload)
                    .part_number(number)
                    .body(ByteStream::from(chunk))
                    .send()
                    .await
                    .map_err(|e| self.error(key, "UploadPart", e))?;
                parts.push(
                    CompletedPart::builder().part_number(number).set_e_tag(out.e_tag().map(str::to_string)).build(),
                );
                if stopping() {
                    return Err(PassError::Stopped);
                }
                chunk = fill(&mut reader, remote, &file.path).await?;
                if chunk.is_empty() {
                    return Ok(parts);
                }
                hash.update(&chunk);
                bytes += chunk.len() as u64;
            }
        };
        let completed = match parts.await {
            Ok(parts) => self
                .s3
                .complete_multipart_upload()
                .bucket(&self.name)
                .key(key)
                .upload_id(&upload)
                .multipart_upload(CompletedMultipartUpload::builder().set_parts(Some(parts)).build())
                .send()
                .await
                .map_err(|e| self.error(key, "CompleteMultipartUpload", e)),
            Err(e) => Err(e),
        };
        match completed {
            Ok(out) => Ok(Copied {
                version_id: out.version_id().map(str::to_string),
                digest: hex::encode(hash.finalize()),
                bytes,
            }),
            Err(e) => {
                let _ = self.s3.abort_multipart_upload().bucket(&self.name).key(key).upload_id(&upload).send().await;
                Err(e)
            }
        }
    }

    /// Deletes the object at `key`: in a versioned bucket a delete marker,
    /// or with `version` that version only.
    pub async fn delete(&self, key: &str, version: Option<&str>) -> Result<(), PassError> {
        let delete = self.s3.delete_object().bucket(&self.name).key(key).set_version_id(version.map(str::to_string));
        delete.send().await.map(drop).map_err(|e| self.error(key, "DeleteObject", e))
    }

    /// Aborts the multipart uploads under `prefix` begun before `before`:
    /// copies of an earlier run that was killed (the pass holds the
    /// pipeline's lock, so no copy of its own is in flight).
    pub async fn abort_stale_uploads(&self, prefix: &str, before: std::time::SystemTime) -> Result<usize, PassError> {
        let out = self
            .s3
            .list_multipart_uploads()
            .bucket(&self.name)
            .prefix(prefix)
            .send()
            .await
            .map_err(|e| self.error(prefix, "ListMultipartUploads", e))?;
        let mut aborted = 0;
        for u in out.uploads() {
            let started = u.initiated().and_then(|t| std::time::SystemTime::try_from(*t).ok());
            let (Some(key), Some(id)) = (u.key(), u.upload_id()) else { continue };
            if started.is_some_and(|t| t < before) {
                let abort = self.s3.abort_multipart_upload().bucket(&self.name).key(key).upload_id(id);
                abort.send().await.map_err(|e| self.error(key, "AbortMultipartUpload", e))?;
                aborted += 1;
            }
        }
        Ok(aborted)
    }
}

/// Up to [`PART`] bytes of `reader` (fewer only at its end).
async fn fill(reader: &mut russh_sftp::client::fs::File, remote: &Remote, path: &str) -> Result<Vec<u8>, PassError> {
    let mut buf = vec![0u8; PART];
    let mut n = 0;
    while n < PART {
        let read = reader.read(&mut buf[n..]).await.map_err(|e| remote.read_error(path, e))?;
        if read == 0 {
            break;
        }
        n += read;
    }
    buf.truncate(n);
    Ok(buf)
}
