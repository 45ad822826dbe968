//! One remote file into one S3 object, streamed: up to [`PART`] bytes in
//! memory at a time (a file that fits is one PutObject, a larger one a
//! multipart upload, aborted if the copy fails), its SHA-256 taken on the
//! way. The object carries the file's path (percent-encoded: S3 metadata
//! is US-ASCII), size and modification time as metadata, so a copy that
//! completed but was never recorded (the host killed in between) is
//! recognised in the bucket and adopted.
//!
//! Must not decide what to copy nor record anything: [`super::pass`] does.

use super::PassError;
use super::client::{Remote, RemoteFile};
use aws_sdk_s3::primitives::ByteStream;
use aws_sdk_s3::types::{CompletedMultipartUpload, CompletedPart};
use sha2::Digest;
use std::collections::HashSet;
use tokio::io::AsyncReadExt;

/// Bytes of a file in memory at a time, and the size of each part of a
/// multipart upload (S3 wants at least 5 MiB for all parts but the last).
pub const PART: usize = 8 << 20;

/// The object metadata that says which file and which state of it an
/// object holds.
const META_PATH: &str = "sftp-path";
const META_SIZE: &str = "sftp-size";
const META_MTIME: &str = "sftp-mtime";

/// What a path keeps of itself in `sftp-path`: letters, digits and
/// `/-_.~`; every other byte (`%` too) is `%XX`.
const PATH_KEPT: &percent_encoding::AsciiSet =
    &percent_encoding::NON_ALPHANUMERIC.remove(b'/').remove(b'-').remove(b'_').remove(b'.').remove(b'~');

/// A remote path as `sftp-path` holds it.
fn path_meta(path: &str) -> String {
    percent_encoding::utf8_percent_encode(path, PATH_KEPT).to_string()
}

/// The remote path an `sftp-path` value names (`None`: not one).
fn path_of_meta(value: &str) -> Option<String> {
    percent_encoding::percent_decode_str(value).decode_utf8().ok().map(|p| p.into_owned())
}

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
    fn error<E>(
        &self,
        key: &str,
        action: &'static str,
        e: aws_sdk_s3::error::SdkError<E, aws_sdk_s3::config::http::HttpResponse>,
    ) -> PassError
    where
        E: aws_sdk_s3::error::ProvideErrorMetadata + std::error::Error + 'static,
    {
        PassError::S3 { uri: format!("s3://{}/{key}", self.name), action, reason: crate::aws::fault(&e).text }
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
        let same = get(META_PATH).and_then(path_of_meta).as_deref() == Some(file.path.as_str())
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
            b.metadata(META_PATH, path_meta(&file.path))
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
            .metadata(META_PATH, path_meta(&file.path))
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

    /// Aborts the multipart uploads under `prefix` to one of `keys` (the
    /// keys this pipeline copies to) begun before `before`: copies of an
    /// earlier run that was killed (the pass holds the pipeline's lock, so
    /// no copy of its own is in flight). Other writers' uploads are left
    /// alone. Pages through all of them.
    pub async fn abort_stale_uploads(
        &self,
        prefix: &str,
        keys: &HashSet<String>,
        before: std::time::SystemTime,
    ) -> Result<usize, PassError> {
        let (mut aborted, mut after) = (0, None);
        loop {
            let (key_marker, upload_marker) = after.clone().unzip();
            let list = self.s3.list_multipart_uploads().bucket(&self.name).prefix(prefix);
            let out = list
                .set_key_marker(key_marker)
                .set_upload_id_marker(upload_marker)
                .send()
                .await
                .map_err(|e| self.error(prefix, "ListMultipartUploads", e))?;
            for u in out.uploads() {
                let started = u.initiated().and_then(|t| std::time::SystemTime::try_from(*t).ok());
                let (Some(key), Some(id)) = (u.key(), u.upload_id()) else { continue };
                if keys.contains(key) && started.is_some_and(|t| t < before) {
                    let abort = self.s3.abort_multipart_upload().bucket(&self.name).key(key).upload_id(id);
                    abort.send().await.map_err(|e| self.error(key, "AbortMultipartUpload", e))?;
                    aborted += 1;
                }
            }
            let next = (out.is_truncated(), out.next_key_marker(), out.next_upload_id_marker());
            match next_page(next, after.as_ref()) {
                Some(markers) => after = Some(markers),
                None => return Ok(aborted),
            }
        }
    }
}

/// The markers of the page of uploads after this one (`truncated`, its
/// next key and upload id markers); `None` at the end, or when S3 gives
/// no markers or the ones it gave before (no progress: stop).
fn next_page(
    (truncated, key, upload): (Option<bool>, Option<&str>, Option<&str>),
    before: Option<&(String, String)>,
) -> Option<(String, String)> {
    let key = key.filter(|k| truncated == Some(true) && !k.is_empty())?;
    let markers = (key.to_string(), upload.unwrap_or_default().to_string());
    (before != Some(&markers)).then_some(markers)
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_path_in_metadata_is_ascii_and_reads_back() {
        for path in ["/out/données-é.csv", "/out/a b%20c.csv", "/out/plain_name-1.csv", "/日本/x.csv"] {
            let meta = path_meta(path);
            assert!(meta.is_ascii() && !meta.contains(' '), "{meta}");
            assert_eq!(path_of_meta(&meta).as_deref(), Some(path));
        }
        assert_eq!(path_meta("/out/données-é.csv"), "/out/donn%C3%A9es-%C3%A9.csv");
        assert_eq!(path_meta("/out/plain_name-1.csv"), "/out/plain_name-1.csv", "as before for plain names");
        assert_eq!(path_of_meta("/out/%FF.csv"), None, "not UTF-8: no path");
    }

    #[test]
    fn upload_pages_follow_the_markers_until_the_end() {
        let marks = |k: &str, u: &str| (k.to_string(), u.to_string());
        assert_eq!(next_page((Some(true), Some("k"), Some("u")), None), Some(marks("k", "u")));
        assert_eq!(next_page((Some(true), Some("k2"), None), Some(&marks("k", "u"))), Some(marks("k2", "")));
        assert_eq!(next_page((Some(false), Some("k"), Some("u")), None), None, "the last page");
        assert_eq!(next_page((None, None, None), None), None);
        assert_eq!(next_page((Some(true), None, None), None), None, "truncated without markers: stop");
        assert_eq!(next_page((Some(true), Some("k"), Some("u")), Some(&marks("k", "u"))), None, "no progress: stop");
    }
}
