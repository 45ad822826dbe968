//! Plugins kept in S3 (`uses = "s3://bucket/plugins/mask.wasm"`), fetched
//! with the standard AWS configuration (`AWS_ENDPOINT_URL`, `AWS_REGION`,
//! the credential chain). Callers are blocking threads and synchronous
//! commands, so each call runs on a small runtime of its own.

use std::path::Path;

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

fn block_on<F: std::future::Future>(f: F) -> Result<F::Output, String> {
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().map_err(|e| e.to_string())?;
    Ok(runtime.block_on(f))
}

async fn client() -> aws_sdk_s3::Client {
    s3_client(&aws_config::load_from_env().await)
}

/// An S3 client for `config`. A local endpoint (moto, MinIO) serves buckets
/// by path, not by name.
pub fn s3_client(config: &aws_config::SdkConfig) -> aws_sdk_s3::Client {
    let path_style = config.endpoint_url().is_some();
    aws_sdk_s3::Client::from_conf(aws_sdk_s3::config::Builder::from(config).force_path_style(path_style).build())
}

/// The object's bytes.
pub fn fetch(uri: &str) -> Result<Vec<u8>, String> {
    let (bucket, key) = split(uri)?;
    block_on(async {
        let out = client().await.get_object().bucket(bucket).key(key).send().await;
        let out = out.map_err(|e| format!("GetObject {uri}: {}", aws_sdk_s3::error::DisplayErrorContext(e)))?;
        let body = out.body.collect().await.map_err(|e| format!("reading {uri}: {e}"))?;
        Ok(body.into_bytes().to_vec())
    })?
}

/// The object's ETag: changes whenever the object does.
pub fn etag(uri: &str) -> Result<String, String> {
    let (bucket, key) = split(uri)?;
    block_on(async {
        let out = client().await.head_object().bucket(bucket).key(key).send().await;
        let out = out.map_err(|e| format!("HeadObject {uri}: {}", aws_sdk_s3::error::DisplayErrorContext(e)))?;
        Ok(out.e_tag().unwrap_or_default().to_string())
    })?
}
