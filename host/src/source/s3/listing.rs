//! What is in the bucket and what was loaded from it: the objects under a
//! prefix (ListObjectsV2, or in a versioned bucket ListObjectVersions' latest
//! versions, paginated) and the object versions `etl.files`
//! says are completely loaded, both a page at a time in the byte order of
//! keys. Reconcile walks the two side by side.
//!
//! Must not load or remove anything.

use super::object::Loader;
use super::{LoadError, ObjectRef, unquote, version_id};
use crate::sink::{SinkError, sql};

/// An object in a listing: in a versioned bucket, its latest version.
#[derive(Debug, Clone)]
pub struct Listed {
    pub key: String,
    pub etag: String,
    pub size: u64,
    /// Listed from a versioned bucket (ListObjectVersions), unless `null`
    /// (written while the bucket kept no versions, or had them suspended).
    pub version_id: Option<String>,
    /// When it was written, as the listing says.
    pub modified: Option<std::time::SystemTime>,
}

impl Listed {
    /// What `etl.files` records of it: the version id, else the ETag.
    pub fn version(&self) -> &str {
        self.version_id.as_deref().unwrap_or(&self.etag)
    }

    /// The object to load: this very version.
    pub fn object(&self, bucket: &str) -> ObjectRef {
        ObjectRef {
            bucket: bucket.to_string(),
            key: self.key.clone(),
            version_id: self.version_id.clone(),
            etag: Some(self.etag.clone()),
            sequencer: None,
        }
    }
}

/// Where the next page of a listing starts.
#[derive(Debug, Clone)]
pub enum Token {
    /// ListObjectsV2's continuation token.
    Continue(String),
    /// ListObjectVersions' markers.
    Versions { key: String, version: Option<String> },
    /// The first page of a range: the keys after this one.
    StartAfter(String),
}

/// Keys a listing page or a page of loaded files holds at most.
pub const PAGE: usize = 1000;

impl Loader {
    /// One page of the objects under the bucket and prefix (in byte order
    /// of keys), and where the next starts, if anywhere. In a versioned
    /// bucket each key's latest version (a key whose latest version is a
    /// delete marker is not listed: it is gone).
    pub async fn list_page(
        &self,
        prefix: &str,
        token: Option<Token>,
    ) -> Result<(Vec<Listed>, Option<Token>), LoadError> {
        let bucket = self.config.bucket.clone().unwrap_or_default();
        let failed = |action: &'static str, fault: crate::aws::Fault| LoadError::S3 {
            uri: format!("s3://{bucket}/{prefix}"),
            action,
            reason: fault.text,
            kind: fault.kind,
        };
        if self.versioned() {
            let (key, version) = match token {
                Some(Token::Versions { key, version }) => (Some(key), version),
                Some(Token::StartAfter(key)) => (Some(key), None),
                _ => (None, None),
            };
            let page = self
                .s3
                .list_object_versions()
                .bucket(&bucket)
                .prefix(prefix)
                .max_keys(PAGE as i32)
                .set_key_marker(key)
                .set_version_id_marker(version)
                .send()
                .await
                .map_err(|e| failed("ListObjectVersions", crate::aws::fault(&e)))?;
            let objects = page.versions().iter().filter(|v| v.is_latest() == Some(true)).filter_map(latest).collect();
            let next = match (page.is_truncated(), page.next_key_marker()) {
                (Some(true), Some(key)) => Some(Token::Versions {
                    key: key.to_string(),
                    version: page.next_version_id_marker().map(str::to_string),
                }),
                _ => None,
            };
            return Ok((objects, next));
        }
        let (token, start_after) = match token {
            Some(Token::Continue(t)) => (Some(t), None),
            Some(Token::StartAfter(key)) => (None, Some(key)),
            _ => (None, None),
        };
        let page = self
            .s3
            .list_objects_v2()
            .bucket(&bucket)
            .prefix(prefix)
            .max_keys(PAGE as i32)
            .set_continuation_token(token)
            .set_start_after(start_after)
            .send()
            .await
            .map_err(|e| failed("ListObjectsV2", crate::aws::fault(&e)))?;
        let objects = page.contents().iter().filter_map(listed).collect();
        let next = page.is_truncated().unwrap_or(false).then(|| page.next_continuation_token().map(str::to_string));
        Ok((objects, next.flatten().map(Token::Continue)))
    }

    /// A page of the object versions loaded under `prefix` (key, version,
    /// whether completely), after (`key`, `version`), in byte order of keys,
    /// within the keys after `from` and up to `upto` (a range's).
    pub async fn loaded_page(
        &self,
        prefix: &str,
        after: (&str, &str),
        (from, upto): (&str, Option<&str>),
    ) -> Result<Vec<(String, String, bool)>, SinkError> {
        let bucket = self.config.bucket.clone().unwrap_or_default();
        let mut client = self.flow.sink.pool().get().await.map_err(SinkError::pool)?;
        let rows = crate::sink::pooler::query(
            &mut client,
            sql::FILES_LOADED_PAGE,
            &[&self.flow.pipeline.name, &bucket, &prefix, &after.0, &after.1, &(PAGE as i64), &from, &upto],
        )
        .await
        .map_err(SinkError::of)?;
        Ok(rows.iter().map(|r| (r.get(0), r.get(1), r.get(2))).collect())
    }

    /// Every object under the bucket and prefix (a backfill's totals).
    pub async fn list(&self, prefix: &str) -> Result<Vec<Listed>, LoadError> {
        let mut objects = Vec::new();
        let mut token = None;
        loop {
            let (page, next) = self.list_page(prefix, token).await?;
            objects.extend(page);
            match next {
                Some(t) => token = Some(t),
                None => return Ok(objects),
            }
        }
    }
}

/// An object of a listing page (folders' markers are not objects).
fn listed(o: &aws_sdk_s3::types::Object) -> Option<Listed> {
    let (Some(key), Some(etag)) = (o.key(), o.e_tag()) else { return None };
    let size = o.size().unwrap_or(0).max(0) as u64;
    let modified = o.last_modified().and_then(|t| std::time::SystemTime::try_from(*t).ok());
    (!key.ends_with('/')).then(|| Listed {
        key: key.to_string(),
        etag: unquote(etag),
        size,
        version_id: None,
        modified,
    })
}

/// The latest version of a key in a versioned listing.
fn latest(v: &aws_sdk_s3::types::ObjectVersion) -> Option<Listed> {
    let (Some(key), Some(etag), Some(version)) = (v.key(), v.e_tag(), v.version_id()) else { return None };
    let size = v.size().unwrap_or(0).max(0) as u64;
    (!key.ends_with('/')).then(|| Listed {
        key: key.to_string(),
        etag: unquote(etag),
        size,
        version_id: version_id(Some(version)),
        modified: v.last_modified().and_then(|t| std::time::SystemTime::try_from(*t).ok()),
    })
}
