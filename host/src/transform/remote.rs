//! Plugins kept in S3 (`uses = "s3://bucket/plugins/mask.wasm"`). One client
//! serves every fetch of a process: the one `host run` shares, else one made
//! from the environment on first use. Callers are blocking threads (which
//! reach the runtime they were spawned from) and synchronous commands (which
//! get one small runtime, made once).
//!
//! Must not cache plugin bytes: the engine's compiled cache is keyed by digest.

use std::path::Path;
use std::sync::OnceLock;

/// Whether `path` names an S3 object rather than a file.
pub fn is_s3(path: &Path) -> bool {
    path.to_str().is_some_and(|s| s.starts_with("s3://"))
}

/// `s3://bucket/key` into its bucket and key.
fn split(uri: &str) -> Result<(&str, &str), String> {
    uri.strip_prefix("s3://")
        .and_then(|rest| rest.split_once('/'))
        .filter(|(bucket, key)| !bucket.is_empty() && !key.is_empty())
        .ok_or_else(|| format!("{uri} is not s3://bucket/key"))
}

/// Where an engine fetches S3 plugins from.
#[derive(Default)]
pub struct Remote {
    client: OnceLock<aws_sdk_s3::Client>,
    /// For callers outside any runtime.
    runtime: OnceLock<Result<tokio::runtime::Runtime, String>>,
}

impl Remote {
    /// Uses `client` for every fetch from now on, unless one is in use
    /// already.
    pub fn share(&self, client: aws_sdk_s3::Client) {
        let _ = self.client.set(client);
    }

    fn block_on<F: std::future::Future>(&self, f: F) -> Result<F::Output, String> {
        if let Ok(handle) = tokio::runtime::Handle::try_current() {
            return Ok(handle.block_on(f));
        }
        let runtime = self.runtime.get_or_init(|| {
            tokio::runtime::Builder::new_current_thread().enable_all().build().map_err(|e| e.to_string())
        });
        Ok(runtime.as_ref().map_err(Clone::clone)?.block_on(f))
    }

    async fn client(&self) -> aws_sdk_s3::Client {
        if let Some(c) = self.client.get() {
            return c.clone();
        }
        let made = crate::aws::Aws::from_env().await.s3;
        self.client.get_or_init(|| made).clone()
    }

    /// The object's bytes.
    pub fn fetch(&self, uri: &str) -> Result<Vec<u8>, String> {
        let (bucket, key) = split(uri)?;
        self.block_on(async {
            let out = self.client().await.get_object().bucket(bucket).key(key).send().await;
            let out = out.map_err(|e| format!("S3 GetObject: {}", crate::aws::fault(&e)))?;
            let body = out.body.collect().await.map_err(|e| format!("reading {uri}: {e}"))?;
            Ok(body.into_bytes().to_vec())
        })?
    }

    /// The object's ETag: changes whenever the object does.
    pub fn etag(&self, uri: &str) -> Result<String, String> {
        let (bucket, key) = split(uri)?;
        self.block_on(async {
            let out = self.client().await.head_object().bucket(bucket).key(key).send().await;
            let out = out.map_err(|e| format!("S3 HeadObject {uri}: {}", crate::aws::fault(&e)))?;
            Ok(out.e_tag().unwrap_or_default().to_string())
        })?
    }
}
