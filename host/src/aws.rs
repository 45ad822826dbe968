//! The AWS side of a process: its configuration (endpoint, region and
//! credentials from the environment: `AWS_ENDPOINT_URL`, `AWS_REGION`, the
//! standard chain) and the clients made from it, made once and shared by
//! the sources and by plugin fetching.
//!
//! Must not call AWS: the sources and the engine's `Remote` do.

use aws_config::SdkConfig;

/// One AWS configuration and its S3 client. Clone-cheap.
#[derive(Clone, Debug)]
pub struct Aws {
    pub config: SdkConfig,
    pub s3: aws_sdk_s3::Client,
}

impl Aws {
    /// Clients of `config`, with [`timeouts`] unless it sets its own.
    pub fn new(config: SdkConfig) -> Self {
        let has_own = config.timeout_config().is_some_and(|t| t.operation_attempt_timeout().is_some());
        let config = if has_own { config } else { config.to_builder().timeout_config(timeouts()).build() };
        let s3 = s3_client(&config);
        Aws { config, s3 }
    }

    /// The environment's configuration.
    pub async fn from_env() -> Self {
        Aws::new(aws_config::load_from_env().await)
    }
}

impl From<&SdkConfig> for Aws {
    fn from(config: &SdkConfig) -> Self {
        Aws::new(config.clone())
    }
}

/// An S3 client for `config`. A local endpoint (moto, MinIO) serves buckets
/// by path, not by name.
pub fn s3_client(config: &SdkConfig) -> aws_sdk_s3::Client {
    let path_style = config.endpoint_url().is_some();
    aws_sdk_s3::Client::from_conf(aws_sdk_s3::config::Builder::from(config).force_path_style(path_style).build())
}

/// The SDK sets no limit on waiting for an answer: an endpoint that
/// accepts a call and never answers would hold a receiver or a worker for
/// ever. An attempt may take 45 s (a 20 s long poll and a slow endpoint),
/// a call with its retries 2 minutes. Bodies streamed after the answer
/// are covered by the SDK's stalled-stream protection instead.
pub fn timeouts() -> aws_config::timeout::TimeoutConfig {
    aws_config::timeout::TimeoutConfig::builder()
        .connect_timeout(std::time::Duration::from_secs(5))
        .operation_attempt_timeout(std::time::Duration::from_secs(45))
        .operation_timeout(std::time::Duration::from_secs(120))
        .build()
}
