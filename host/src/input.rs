//! Message bodies (or lines) to records: JSON decoding, the size limit and
//! the pipeline's required fields. A body that fails gets a reason naming
//! what is wrong, never its content.

use crate::batch::{BatchBuilder, Cell, Value, fields, json};
use crate::config::Pipeline;

/// Decodes bodies for one pipeline.
pub struct Decoder {
    required: Vec<Vec<String>>,
    max_record_bytes: usize,
}

impl Decoder {
    pub fn new(p: &Pipeline) -> Self {
        Decoder { required: p.required.clone(), max_record_bytes: p.max_record_bytes }
    }

    /// Adds `bytes` as a record to `b`, or says why not (leaving `b` as it
    /// was).
    pub fn decode(&self, bytes: &[u8], b: &mut BatchBuilder) -> Result<(), String> {
        if bytes.len() > self.max_record_bytes {
            let e = json::DecodeError::TooLarge { size: bytes.len(), max: self.max_record_bytes };
            return Err(e.to_string());
        }
        json::decode(bytes, b).map_err(|e| e.to_string())?;
        let missing: Vec<String> =
            self.required.iter().filter(|path| !has_path(b, b.last_record(), path)).map(|p| p.join(".")).collect();
        if !missing.is_empty() {
            b.pop_record();
            return Err(format!("missing required fields: {}", missing.join(", ")));
        }
        Ok(())
    }
}

/// Whether the record has the field at `path` (null counts as present).
fn has_path(b: &BatchBuilder, cells: &[Cell], path: &[String]) -> bool {
    let Some((first, rest)) = path.split_first() else { return true };
    let Some(key) = b.find_key(first) else { return false };
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
    fn oversized_bodies_are_refused_before_parsing() {
        let d = decoder(&[]);
        let body = format!(r#"{{"a":"{}"}}"#, "x".repeat(100));
        let err = d.decode(body.as_bytes(), &mut BatchBuilder::new()).unwrap_err();
        assert_eq!(err, "record is 108 bytes, more than max_record_bytes (64)");
    }
}
