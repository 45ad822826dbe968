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
    pub fn new(config: SdkConfig) -> Self {
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
