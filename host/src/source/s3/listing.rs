//! What is in the bucket and what was loaded from it: the objects under a
//! prefix (ListObjectsV2, paginated) and the object versions `etl.files`
//! says are completely loaded. Reconcile compares the two.
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

impl Loader {
    /// Every object under the bucket and prefix.
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
            for o in page.contents() {
                let (Some(key), Some(etag)) = (o.key(), o.e_tag()) else { continue };
                if !key.ends_with('/') {
                    let size = o.size().unwrap_or(0).max(0) as u64;
                    objects.push(Listed { key: key.to_string(), etag: unquote(etag), size });
                }
            }
        }
        Ok(objects)
    }

    /// The object versions completely loaded under `prefix`: key and version.
    pub async fn loaded(&self, prefix: &str) -> Result<Vec<(String, String)>, SinkError> {
        let bucket = self.config.bucket.clone().unwrap_or_default();
        let client = self.flow.sink.pool().get().await.map_err(SinkError::pool)?;
        let rows = client
            .query(sql::FILES_LOADED, &[&self.flow.pipeline.name, &bucket, &prefix])
            .await
            .map_err(|e| SinkError::Transient { attempts: 1, source: e })?;
        Ok(rows.iter().map(|r| (r.get(0), r.get(1))).collect())
    }
}
