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

/// What kind of failure an AWS call met: how a source's health counts it
/// (`etl_source_errors_total{kind}`) and whether waiting can heal it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FaultKind {
    /// No answer: the endpoint refused the connection, or took too long.
    Unreachable,
    /// The queue, bucket or object does not exist.
    NotFound,
    /// The credentials were refused, or may not do this.
    Denied,
    /// The service asked to slow down.
    Throttled,
    /// The service failed (HTTP 5xx).
    Server,
    Other,
}

impl FaultKind {
    pub fn label(self) -> &'static str {
        match self {
            FaultKind::Unreachable => "unreachable",
            FaultKind::NotFound => "not_found",
            FaultKind::Denied => "denied",
            FaultKind::Throttled => "throttled",
            FaultKind::Server => "server",
            FaultKind::Other => "other",
        }
    }

    /// Waiting does not heal it: the configuration or the account must
    /// change (a queue or bucket that is gone, access refused).
    pub fn lasting(self) -> bool {
        matches!(self, FaultKind::NotFound | FaultKind::Denied)
    }

    /// The kind a service's error code (or, without a known code, its HTTP
    /// status) says.
    pub fn of(code: &str, status: u16) -> FaultKind {
        const NOT_FOUND: &[&str] =
            &["AWS.SimpleQueueService.NonExistentQueue", "QueueDoesNotExist", "NoSuchBucket", "NoSuchKey", "NotFound"];
        const DENIED: &[&str] = &[
            "AccessDenied",
            "AccessDeniedException",
            "InvalidClientTokenId",
            "InvalidAccessKeyId",
            "SignatureDoesNotMatch",
            "UnrecognizedClientException",
            "ExpiredToken",
            "InvalidSecurity",
            "AllAccessDisabled",
        ];
        const THROTTLED: &[&str] =
            &["Throttling", "ThrottlingException", "RequestThrottled", "SlowDown", "RequestLimitExceeded"];
        match code {
            c if NOT_FOUND.contains(&c) => FaultKind::NotFound,
            c if DENIED.contains(&c) => FaultKind::Denied,
            c if THROTTLED.contains(&c) => FaultKind::Throttled,
            _ => match status {
                500..=599 => FaultKind::Server,
                429 => FaultKind::Throttled,
                404 => FaultKind::NotFound,
                401 | 403 => FaultKind::Denied,
                _ => FaultKind::Other,
            },
        }
    }
}

/// An AWS call's failure in words: `code: message (request ID)` for an
/// answer of the service, what kept it from answering otherwise; never the
/// SDK's debug form (which carries the whole raw response).
#[derive(Debug, Clone, PartialEq)]
pub struct Fault {
    pub kind: FaultKind,
    pub text: String,
}

impl std::fmt::Display for Fault {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.text)
    }
}

impl Fault {
    /// A failure that is no call's (a request that could not be built).
    pub fn other(text: impl Into<String>) -> Fault {
        Fault { kind: FaultKind::Other, text: text.into() }
    }
}

/// The failure of one SDK call (of any service: S3 and SQS share the type).
pub fn fault<E>(e: &aws_sdk_sqs::error::SdkError<E, aws_sdk_sqs::config::http::HttpResponse>) -> Fault
where
    E: aws_sdk_sqs::error::ProvideErrorMetadata + std::error::Error + 'static,
{
    use aws_sdk_sqs::error::{ProvideErrorMetadata, SdkError};
    use aws_sdk_sqs::operation::RequestId;
    match e {
        SdkError::TimeoutError(_) => Fault { kind: FaultKind::Unreachable, text: "no answer in time".into() },
        SdkError::DispatchFailure(d) => {
            // The connector error's own text is only its kind (`io`,
            // `timeout`, `other`): what it says is in its causes.
            let causes = d
                .as_connector_error()
                .map(|c| match std::error::Error::source(c) {
                    Some(cause) => chain(cause),
                    None => c.to_string(),
                })
                .unwrap_or_default();
            let text = if d.is_timeout() {
                "no answer in time".to_string()
            } else if causes.is_empty() {
                "cannot reach the endpoint".to_string()
            } else {
                format!("cannot reach the endpoint: {causes}")
            };
            let kind = if d.is_user() { FaultKind::Other } else { FaultKind::Unreachable };
            Fault { kind, text }
        }
        SdkError::ResponseError(r) => {
            let status = r.raw().status().as_u16();
            Fault { kind: FaultKind::of("", status), text: format!("an answer that could not be read (HTTP {status})") }
        }
        SdkError::ServiceError(s) => {
            let status = s.raw().status().as_u16();
            let code = e.code().unwrap_or_default();
            let mut text = match (code, e.message()) {
                ("", Some(m)) => format!("HTTP {status}: {m}"),
                ("", None) => format!("HTTP {status}"),
                (c, Some(m)) if !m.is_empty() => format!("{c}: {}", m.trim_end_matches('.')),
                (c, _) => c.to_string(),
            };
            if let Some(id) = e.request_id() {
                text.push_str(&format!(" (request {id})"));
            }
            Fault { kind: FaultKind::of(code, status), text }
        }
        other => Fault::other(format!("the request could not be made: {}", chain(other))),
    }
}

/// An error and its causes, each said once ([`crate::report`]).
fn chain(e: &(dyn std::error::Error + 'static)) -> String {
    crate::report(e)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_say_whether_waiting_heals() {
        assert_eq!(FaultKind::of("AWS.SimpleQueueService.NonExistentQueue", 400), FaultKind::NotFound);
        assert_eq!(FaultKind::of("NoSuchBucket", 404), FaultKind::NotFound);
        assert_eq!(FaultKind::of("AccessDenied", 403), FaultKind::Denied);
        assert_eq!(FaultKind::of("SlowDown", 503), FaultKind::Throttled);
        assert_eq!(FaultKind::of("InternalError", 500), FaultKind::Server);
        assert_eq!(FaultKind::of("", 403), FaultKind::Denied);
        assert!(FaultKind::NotFound.lasting() && FaultKind::Denied.lasting());
        assert!(!FaultKind::Unreachable.lasting() && !FaultKind::Server.lasting());
    }

    #[test]
    fn a_chain_says_each_cause_once() {
        let io = std::io::Error::new(std::io::ErrorKind::ConnectionRefused, "connection refused");
        #[derive(Debug, thiserror::Error)]
        #[error("io error: {0}")]
        struct Wrapped(#[source] std::io::Error);
        assert_eq!(chain(&Wrapped(io)), "io error: connection refused");
    }
}
