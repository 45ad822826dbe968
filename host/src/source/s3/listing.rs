//! What is in the bucket and what was loaded from it: the objects under a
//! prefix (ListObjectsV2, paginated) and the object versions `etl.files`
//! says are completely loaded, both a page at a time in the byte order of
//! keys. Reconcile walks the two side by side.
//!
//! Must not load or remove anything.

use super::object::Loader;
use super::{LoadError, unquote};
use crate::sink::{SinkError, sql};

/// An object in a listing.
#[derive(Debug, Clone)]
pub struct Listed {
    pub key: String,
    pub etag: String,
    pub size: u64,
}

/// Keys a listing page or a page of loaded files holds at most.
pub const PAGE: usize = 1000;

impl Loader {
    /// One page of the objects under the bucket and prefix (in byte order
    /// of keys), and the token of the next, if any.
    pub async fn list_page(
        &self,
        prefix: &str,
        token: Option<String>,
    ) -> Result<(Vec<Listed>, Option<String>), LoadError> {
        let bucket = self.config.bucket.clone().unwrap_or_default();
        let page = self
            .s3
            .list_objects_v2()
            .bucket(&bucket)
            .prefix(prefix)
            .max_keys(PAGE as i32)
            .set_continuation_token(token)
            .send()
            .await
            .map_err(|e| LoadError::S3 {
                uri: format!("s3://{bucket}/{prefix}"),
                action: "ListObjectsV2",
                reason: aws_sdk_s3::error::DisplayErrorContext(e).to_string(),
            })?;
        let objects = page.contents().iter().filter_map(listed).collect();
        let next = page.is_truncated().unwrap_or(false).then(|| page.next_continuation_token().map(str::to_string));
        Ok((objects, next.flatten()))
    }

    /// A page of the object versions completely loaded under `prefix`,
    /// after (`key`, `version`), in byte order of keys.
    pub async fn loaded_page(&self, prefix: &str, after: (&str, &str)) -> Result<Vec<(String, String)>, SinkError> {
        let bucket = self.config.bucket.clone().unwrap_or_default();
        let client = self.flow.sink.pool().get().await.map_err(SinkError::pool)?;
        let rows = client
            .query(
                sql::FILES_LOADED_PAGE,
                &[&self.flow.pipeline.name, &bucket, &prefix, &after.0, &after.1, &(PAGE as i64)],
            )
            .await
            .map_err(SinkError::of)?;
        Ok(rows.iter().map(|r| (r.get(0), r.get(1))).collect())
    }

    /// Every object under the bucket and prefix (a backfill's totals).
    pub async fn list(&self, prefix: &str) -> Result<Vec<Listed>, LoadError> {
        let bucket = self.config.bucket.clone().unwrap_or_default();
        let mut pages = self.s3.list_objects_v2().bucket(&bucket).prefix(prefix).into_paginator().send();
        let mut objects = Vec::new();
        while let Some(page) = pages.next().await {
            let page = page.map_err(|e| LoadError::S3 {
                uri: format!("s3://{bucket}/{prefix}"),
                action: "ListObjectsV2",
                reason: aws_sdk_s3::error::DisplayErrorContext(e).to_string(),
            })?;
            objects.extend(page.contents().iter().filter_map(listed));
        }
        Ok(objects)
    }
}

/// An object of a listing page (folders' markers are not objects).
fn listed(o: &aws_sdk_s3::types::Object) -> Option<Listed> {
    let (Some(key), Some(etag)) = (o.key(), o.e_tag()) else { return None };
    let size = o.size().unwrap_or(0).max(0) as u64;
    (!key.ends_with('/')).then(|| Listed { key: key.to_string(), etag: unquote(etag), size })
}
