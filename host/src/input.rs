//! Message bodies (or lines) to records: JSON decoding, the size limit and
//! the pipeline's required fields. A body that fails gets a reason naming
//! what is wrong, never its content.

use crate::batch::{BatchBuilder, Cell, Value, fields, json};
use crate::config::{Pipeline, Source};
use crate::queue::Message;

/// Decodes bodies for one pipeline.
pub struct Decoder {
    required: Vec<Vec<String>>,
    max_record_bytes: usize,
    /// Name of the field that carries the message's metadata, if wanted.
    metadata_field: Option<String>,
}

impl Decoder {
    pub fn new(p: &Pipeline) -> Self {
        let metadata_field = match &p.source {
            Some(Source::Sqs(s)) => s.metadata_field.clone(),
            Some(Source::S3(_)) | None => None,
        };
        Decoder { required: p.required.clone(), max_record_bytes: p.max_record_bytes, metadata_field }
    }

    /// Adds `bytes` as a record to `b`, or says why not (leaving `b` as it
    /// was).
    pub fn decode(&self, bytes: &[u8], b: &mut BatchBuilder) -> Result<(), String> {
        self.decode_message(bytes, None, b)
    }

    /// [`Decoder::decode`] of a message's body, adding its metadata field
    /// when the pipeline asks for one.
    pub fn decode_message(&self, bytes: &[u8], message: Option<&Message>, b: &mut BatchBuilder) -> Result<(), String> {
        if bytes.len() > self.max_record_bytes {
            let e = json::DecodeError::TooLarge { size: bytes.len(), max: self.max_record_bytes };
            return Err(e.to_string());
        }
        json::decode_open(bytes, b).map_err(|e| e.to_string())?;
        if let (Some(field), Some(m)) = (&self.metadata_field, message) {
            if b.find_key(field).is_some_and(|k| b.open_record().iter().any(|c| c.key == k)) {
                b.abandon_record();
                return Err(format!("the record already has a field `{field}` (the metadata field)"));
            }
            push_metadata(b, field, m);
        }
        b.end_record();
        self.check_required(b)
    }

    /// A CSV row (fields in the order of `columns`; `None` is null) as a
    /// record of text fields; PostgreSQL converts them to the columns' types.
    pub fn decode_fields(
        &self,
        columns: &[String],
        fields: &[Option<String>],
        b: &mut BatchBuilder,
    ) -> Result<(), String> {
        let size: usize = fields.iter().map(|f| f.as_ref().map_or(0, String::len)).sum();
        if size > self.max_record_bytes {
            return Err(json::DecodeError::TooLarge { size, max: self.max_record_bytes }.to_string());
        }
        for (column, field) in columns.iter().zip(fields) {
            let k = b.key(column);
            match field {
                Some(text) => b.push_text(k, text),
                None => b.push(k, Value::Null),
            }
        }
        b.end_record();
        self.check_required(b)
    }

    /// Drops the last record if it lacks a required field.
    fn check_required(&self, b: &mut BatchBuilder) -> Result<(), String> {
        let missing: Vec<String> =
            self.required.iter().filter(|path| !has_path(b, b.last_record(), path)).map(|p| p.join(".")).collect();
        if !missing.is_empty() {
            b.pop_record();
            return Err(format!("missing required fields: {}", missing.join(", ")));
        }
        Ok(())
    }
}

/// A CSV row as a JSON object: how it is kept with a dead letter (and
/// decoded again on replay).
pub fn fields_json(columns: &[String], fields: &[Option<String>]) -> Vec<u8> {
    let mut out = String::from("{");
    for (i, (column, field)) in columns.iter().zip(fields).enumerate() {
        if i > 0 {
            out.push(',');
        }
        json::write_str(&mut out, column);
        out.push(':');
        match field {
            Some(text) => json::write_str(&mut out, text),
            None => out.push_str("null"),
        }
    }
    out.push('}');
    out.into_bytes()
}

fn push_metadata(b: &mut BatchBuilder, field: &str, m: &Message) {
    let k = b.key(field);
    let at = b.open(k);
    let id = b.key("message_id");
    b.push_text(id, &m.id);
    let count = b.key("receive_count");
    b.push(count, Value::Integer(i64::from(m.receive_count)));
    let attrs = b.key("attributes");
    let inner = b.open(attrs);
    for (name, value) in &m.attributes {
        let k = b.key(name);
        b.push_text(k, value);
    }
    b.close(inner, false);
    b.close(at, false);
}

/// Whether the record has the field at `path` (null counts as present).
fn has_path(b: &BatchBuilder, cells: &[Cell], path: &[String]) -> bool {
    let Some((first, rest)) = path.split_first() else {
        return true;
    };
    let Some(key) = b.find_key(first) else {
        return false;
    };
    match fields(cells).find(|(c, _)| c.key == key) {
        None => false,
        Some(_) if rest.is_empty() => true,
        Some((c, inner)) => matches!(c.value, Value::Object(_)) && has_path(b, inner, rest),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn decoder(required: &[&str]) -> Decoder {
        Decoder {
            required: required.iter().map(|r| r.split('.').map(str::to_string).collect()).collect(),
            max_record_bytes: 64,
            metadata_field: None,
        }
    }

    #[test]
    fn names_every_missing_field_in_order() {
        let d = decoder(&["user_id", "ip", "device.id", "locale"]);
        let mut b = BatchBuilder::new();
        let err = d.decode(br#"{"foo": "oops_wrong_msg_type", "bar": "123"}"#, &mut b).unwrap_err();
        assert_eq!(err, "missing required fields: user_id, ip, device.id, locale");
        assert!(b.is_empty());
        let err = d.decode(br#"{"user_id":1,"ip":null,"device":{"x":1},"locale":"RU"}"#, &mut b).unwrap_err();
        assert_eq!(err, "missing required fields: device.id");
        d.decode(br#"{"user_id":1,"ip":null,"device":{"id":1},"locale":null}"#, &mut b).unwrap();
        assert_eq!(b.len(), 1);
    }

    #[test]
    fn csv_fields_become_text_or_null_and_keep_their_json() {
        let d = decoder(&["id"]);
        let mut b = BatchBuilder::new();
        let columns = vec!["id".to_string(), "name".to_string()];
        d.decode_fields(&columns, &[Some("7".into()), None], &mut b).unwrap();
        let err = d.decode_fields(&columns[1..], &[Some("x".into())], &mut b).unwrap_err();
        assert_eq!(err, "missing required fields: id");
        assert_eq!(b.len(), 1);
        let json = fields_json(&columns, &[Some("a \"b\", c".into()), None]);
        assert_eq!(String::from_utf8(json).unwrap(), r#"{"id":"a \"b\", c","name":null}"#);
    }

    #[test]
    fn oversized_bodies_are_refused_before_parsing() {
        let d = decoder(&[]);
        let body = format!(r#"{{"a":"{}"}}"#, "x".repeat(100));
        let err = d.decode(body.as_bytes(), &mut BatchBuilder::new()).unwrap_err();
        assert_eq!(err, "record is 108 bytes, more than max_record_bytes (64)");
    }
}
