//! What an SQS message body asks to load: an S3 event notification (maybe
//! wrapped by SNS), an `s3:TestEvent`, or a plain `s3://bucket/key`.
//!
//! Only object-created events come out; everything else a well-formed
//! message may carry (removals, test events) is skipped. This module owns
//! the message shapes and key decoding; it neither fetches objects nor
//! deletes messages. Errors say what is wrong, never the body's content.

use percent_encoding::percent_decode_str;
use serde::Deserialize;

/// One object to load.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ObjectEvent {
    pub bucket: String,
    /// The object key, URL-decoded (S3 events carry it form-encoded).
    pub key: String,
    pub version_id: Option<String>,
    pub etag: Option<String>,
    pub size: Option<u64>,
    /// Orders events for the same key (hex, compare as equal-length strings).
    pub sequencer: Option<String>,
    /// As S3 names it (`ObjectCreated:Put`, ...), or `uri` for a plain
    /// `s3://` body.
    pub event_name: String,
}

/// Why a body is not a notification. Never retryable: the same body fails
/// the same way.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum NotificationError {
    #[error("invalid JSON at line {line}, column {column}")]
    Json { line: usize, column: usize },
    #[error("a JSON value of the wrong type at line {line}, column {column}")]
    Shape { line: usize, column: usize },
    #[error("{0}")]
    Message(&'static str),
    /// `record` counts from 0 in `Records`.
    #[error("{problem} (record {record})")]
    Record { record: usize, problem: &'static str },
}

/// The objects `body` asks to load, in the order it lists them.
pub fn parse(body: &str) -> Result<Vec<ObjectEvent>, NotificationError> {
    let body = body.trim();
    if let Some(rest) = body.strip_prefix("s3://") {
        return parse_uri(rest).map(|e| vec![e]);
    }
    if !body.starts_with('{') {
        return Err(NotificationError::Message("not a JSON object and not an s3:// URI"));
    }
    let envelope: Envelope = from_json(body)?;
    if envelope.kind.is_some() {
        if envelope.kind.as_deref() != Some("Notification") {
            return Err(NotificationError::Message("an SNS message whose Type is not Notification"));
        }
        let message = envelope.message.ok_or(NotificationError::Message("an SNS notification without Message"))?;
        let inner: Envelope = from_json(&message)?;
        if inner.kind.is_some() {
            return Err(NotificationError::Message("an SNS notification wrapping another SNS message"));
        }
        return s3_events(inner);
    }
    s3_events(envelope)
}

/// The top level of an S3 event, a test event or an SNS notification.
/// Unknown keys are allowed: AWS adds fields.
#[derive(Deserialize)]
struct Envelope {
    #[serde(rename = "Records")]
    records: Option<Vec<Record>>,
    #[serde(rename = "Event")]
    event: Option<String>,
    #[serde(rename = "Type")]
    kind: Option<String>,
    #[serde(rename = "Message")]
    message: Option<String>,
}

#[derive(Deserialize)]
struct Record {
    #[serde(rename = "eventName")]
    event_name: Option<String>,
    s3: Option<S3>,
}

#[derive(Deserialize)]
struct S3 {
    bucket: Option<Bucket>,
    object: Option<Object>,
}

#[derive(Deserialize)]
struct Bucket {
    name: Option<String>,
}

#[derive(Deserialize)]
struct Object {
    key: Option<String>,
    size: Option<u64>,
    #[serde(rename = "eTag")]
    etag: Option<String>,
    #[serde(rename = "versionId")]
    version_id: Option<String>,
    sequencer: Option<String>,
}

fn from_json<'a, T: Deserialize<'a>>(text: &'a str) -> Result<T, NotificationError> {
    // serde_json's own messages may quote the input, so only the position is kept.
    serde_json::from_str(text).map_err(|e| {
        let (line, column) = (e.line(), e.column());
        match e.classify() {
            serde_json::error::Category::Data => NotificationError::Shape { line, column },
            _ => NotificationError::Json { line, column },
        }
    })
}

fn s3_events(envelope: Envelope) -> Result<Vec<ObjectEvent>, NotificationError> {
    match (envelope.records, envelope.event.as_deref()) {
        (Some(records), _) => {
            records.into_iter().enumerate().filter_map(|(i, r)| object_event(i, r).transpose()).collect()
        }
        (None, Some("s3:TestEvent")) => Ok(Vec::new()),
        (None, Some(_)) => Err(NotificationError::Message("an Event other than s3:TestEvent")),
        (None, None) => Err(NotificationError::Message("a JSON object without Records, Event or Type")),
    }
}

/// The record's object, or `None` for events other than object-created.
fn object_event(record: usize, r: Record) -> Result<Option<ObjectEvent>, NotificationError> {
    let problem = |problem| NotificationError::Record { record, problem };
    let event_name = r.event_name.ok_or(problem("a record lacks eventName"))?;
    if !event_name.starts_with("ObjectCreated:") {
        return Ok(None);
    }
    let s3 = r.s3.ok_or(problem("a record lacks s3"))?;
    let bucket = s3.bucket.and_then(|b| b.name).ok_or(problem("a record lacks s3.bucket.name"))?;
    let object = s3.object.ok_or(problem("a record lacks s3.object"))?;
    let key = object.key.ok_or(problem("a record lacks s3.object.key"))?;
    let key = decode_key(&key).ok_or(problem("s3.object.key is not UTF-8 once URL-decoded"))?;
    Ok(Some(ObjectEvent {
        bucket,
        key,
        version_id: object.version_id,
        etag: object.etag,
        size: object.size,
        sequencer: object.sequencer,
        event_name,
    }))
}

/// S3 event keys are form-encoded: `+` is a space, `%XX` a byte.
fn decode_key(key: &str) -> Option<String> {
    let spaced = key.replace('+', " ");
    percent_decode_str(&spaced).decode_utf8().ok().map(|k| k.into_owned())
}

/// `rest` is what follows `s3://`; the key is taken literally.
fn parse_uri(rest: &str) -> Result<ObjectEvent, NotificationError> {
    let (bucket, key) = rest.split_once('/').unwrap_or((rest, ""));
    if bucket.is_empty() {
        return Err(NotificationError::Message("s3:// URI without a bucket"));
    }
    if key.is_empty() {
        return Err(NotificationError::Message("s3:// URI without a key"));
    }
    Ok(ObjectEvent {
        bucket: bucket.to_owned(),
        key: key.to_owned(),
        version_id: None,
        etag: None,
        size: None,
        sequencer: None,
        event_name: "uri".to_owned(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An event as moto and AWS send it for a PUT (trimmed of nothing).
    const PUT: &str = r#"{"Records":[{"eventVersion":"2.1","eventSource":"aws:s3","awsRegion":"us-east-1",
        "eventTime":"2024-05-01T12:00:00.000Z","eventName":"ObjectCreated:Put",
        "userIdentity":{"principalId":"AWS:AIDAEXAMPLE"},"requestParameters":{"sourceIPAddress":"127.0.0.1"},
        "responseElements":{"x-amz-request-id":"C3D13FE58DE4C810","x-amz-id-2":"FMyUVURIY8/IgAtTv8xRjskZQpcIZ9KG4V5Wp6S7S/JRWeUWerMUE5JgHvANOjpD"},
        "s3":{"s3SchemaVersion":"1.0","configurationId":"load",
            "bucket":{"name":"landing","ownerIdentity":{"principalId":"A3NL1KOZZKExample"},"arn":"arn:aws:s3:::landing"},
            "object":{"key":"data/my+file%3D1.csv","size":1024,"eTag":"d41d8cd98f00b204e9800998ecf8427e",
                "versionId":"096fKKXTRTtl3on89fVO.nfljtsv6qko","sequencer":"0055AED6DCD90281E5"}}}]}"#;

    fn put_event() -> ObjectEvent {
        ObjectEvent {
            bucket: "landing".into(),
            key: "data/my file=1.csv".into(),
            version_id: Some("096fKKXTRTtl3on89fVO.nfljtsv6qko".into()),
            etag: Some("d41d8cd98f00b204e9800998ecf8427e".into()),
            size: Some(1024),
            sequencer: Some("0055AED6DCD90281E5".into()),
            event_name: "ObjectCreated:Put".into(),
        }
    }

    fn record(event_name: &str, key: &str) -> String {
        format!(r#"{{"eventName":"{event_name}","s3":{{"bucket":{{"name":"b"}},"object":{{"key":"{key}"}}}}}}"#)
    }

    #[test]
    fn s3_event_with_encoded_key() {
        assert_eq!(parse(PUT), Ok(vec![put_event()]));
    }

    #[test]
    fn only_created_records_are_returned() {
        let body = format!(
            r#"{{"Records":[{},{},{}]}}"#,
            record("ObjectRemoved:Delete", "gone"),
            record("ObjectCreated:CompleteMultipartUpload", "a%2Bb+c"),
            record("ObjectRestore:Completed", "cold"),
        );
        let events = parse(&body).unwrap();
        assert_eq!(events.len(), 1);
        assert_eq!((events[0].key.as_str(), events[0].size), ("a+b c", None));
        assert_eq!(events[0].event_name, "ObjectCreated:CompleteMultipartUpload");
    }

    #[test]
    fn test_event_is_empty() {
        let body = r#"{"Service":"Amazon S3","Event":"s3:TestEvent","Time":"2024-05-01T12:00:00.000Z",
            "Bucket":"landing","RequestId":"5582815E1AEA5ADF","HostId":"8cLeGAmw098X5cv4Zkwcmo8vvZa3eH3eKxsPzbB9wrR+YstdA6Knx4Ip8EXAMPLE"}"#;
        assert_eq!(parse(body), Ok(vec![]));
    }

    #[test]
    fn sns_wrapped_event_is_unwrapped() {
        let body = serde_json::json!({
            "Type": "Notification",
            "MessageId": "22b80b92-fdea-4c2c-8f9d-bdfb0c7bf324",
            "TopicArn": "arn:aws:sns:us-east-1:123456789012:landing",
            "Subject": "Amazon S3 Notification",
            "Message": PUT,
            "Timestamp": "2024-05-01T12:00:00.000Z",
        });
        assert_eq!(parse(&body.to_string()), Ok(vec![put_event()]));
        let test_event = serde_json::json!({"Type": "Notification", "Message": r#"{"Event":"s3:TestEvent"}"#});
        assert_eq!(parse(&test_event.to_string()), Ok(vec![]));
    }

    #[test]
    fn plain_uri_key_is_literal() {
        let events = parse("  s3://landing/data/my+file%3D1.csv\n").unwrap();
        assert_eq!((events[0].bucket.as_str(), events[0].key.as_str()), ("landing", "data/my+file%3D1.csv"));
        assert_eq!((events[0].event_name.as_str(), events[0].size), ("uri", None));
    }

    #[test]
    fn errors_say_what_is_wrong_without_content() {
        let cases = [
            ("secret text", "not a JSON object and not an s3:// URI"),
            ("s3://landing", "s3:// URI without a key"),
            ("s3://landing/", "s3:// URI without a key"),
            ("s3:///secret", "s3:// URI without a bucket"),
            (r#"{"secret": 1"#, "invalid JSON at line 1, column 12"),
            (r#"{"Records": "secret"}"#, "a JSON value of the wrong type at line 1, column 20"),
            (r#"{"secret": 1}"#, "a JSON object without Records, Event or Type"),
            (r#"{"Event": "secret"}"#, "an Event other than s3:TestEvent"),
            (r#"{"Type": "SubscriptionConfirmation"}"#, "an SNS message whose Type is not Notification"),
            (r#"{"Type": "Notification"}"#, "an SNS notification without Message"),
            (r#"{"Type": "Notification", "Message": "secret"}"#, "invalid JSON at line 1, column 1"),
            (r#"{"Records": [{"s3": {}}]}"#, "a record lacks eventName (record 0)"),
            (
                r#"{"Records": [{"eventName": "ObjectCreated:Put", "s3": {}}]}"#,
                "a record lacks s3.bucket.name (record 0)",
            ),
        ];
        for (body, expected) in cases {
            let message = parse(body).unwrap_err().to_string();
            assert_eq!(message, expected, "for {body}");
            assert!(!message.contains("secret"));
        }
        let no_key = format!(
            r#"{{"Records":[{},{{"eventName":"ObjectCreated:Put","s3":{{"bucket":{{"name":"b"}},"object":{{}}}}}}]}}"#,
            record("ObjectCreated:Put", "k")
        );
        assert_eq!(parse(&no_key).unwrap_err().to_string(), "a record lacks s3.object.key (record 1)");
    }

    #[test]
    fn key_invalid_utf8_after_decoding_is_an_error() {
        let body = format!(r#"{{"Records":[{}]}}"#, record("ObjectCreated:Put", "bad%FF"));
        assert_eq!(parse(&body).unwrap_err().to_string(), "s3.object.key is not UTF-8 once URL-decoded (record 0)");
    }
}
