//! JSON text to batch records (streaming, no intermediate tree) and batch
//! values back to JSON text. Decode errors describe the problem and position,
//! never the content.

use super::{Batch, BatchBuilder, Cell, NO_KEY, Value};
use serde::de::{DeserializeSeed, Deserializer, Error as _, MapAccess, SeqAccess, Visitor};
use std::fmt;

/// Why a line is not a record.
#[derive(Debug, thiserror::Error, PartialEq)]
pub enum DecodeError {
    #[error("invalid JSON: {0}")]
    Syntax(String),
    #[error("expected a JSON object, found {0}")]
    NotAnObject(&'static str),
    #[error("duplicate key `{0}`")]
    DuplicateKey(String),
    #[error("record is {size} bytes, more than max_record_bytes ({max})")]
    TooLarge { size: usize, max: usize },
}

/// Decodes one JSON object into a new record of `b`. On error nothing is
/// added.
pub fn decode(bytes: &[u8], b: &mut BatchBuilder) -> Result<(), DecodeError> {
    decode_open(bytes, b)?;
    b.end_record();
    Ok(())
}

/// Like [`decode`] but leaves the record open, for more fields.
pub fn decode_open(bytes: &[u8], b: &mut BatchBuilder) -> Result<(), DecodeError> {
    let mut de = serde_json::Deserializer::from_slice(bytes);
    let result = RecordSeed { b: &mut *b }.deserialize(&mut de).and_then(|()| de.end());
    match result {
        Ok(()) => Ok(()),
        Err(e) => {
            b.abandon_record();
            let msg = e.to_string();
            Err(if let Some(kind) = msg.strip_prefix("not an object: ") {
                DecodeError::NotAnObject(kind_name(kind))
            } else if let Some(key) = msg.strip_prefix("duplicate key: ") {
                DecodeError::DuplicateKey(key.split(" at line").next().unwrap_or(key).to_string())
            } else {
                DecodeError::Syntax(msg)
            })
        }
    }
}

fn kind_name(s: &str) -> &'static str {
    ["an array", "a string", "a number", "a boolean", "null"]
        .into_iter()
        .find(|k| s.starts_with(k))
        .unwrap_or("something else")
}

struct RecordSeed<'a> {
    b: &'a mut BatchBuilder,
}

impl<'de> DeserializeSeed<'de> for RecordSeed<'_> {
    type Value = ();
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_any(TopVisitor { b: self.b })
    }
}

struct TopVisitor<'a> {
    b: &'a mut BatchBuilder,
}

impl<'de> Visitor<'de> for TopVisitor<'_> {
    type Value = ();
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a JSON object")
    }
    fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<(), A::Error> {
        read_object(self.b, map)
    }
    fn visit_seq<A: SeqAccess<'de>>(self, _: A) -> Result<(), A::Error> {
        Err(A::Error::custom("not an object: an array"))
    }
    fn visit_str<E: serde::de::Error>(self, _: &str) -> Result<(), E> {
        Err(E::custom("not an object: a string"))
    }
    fn visit_i64<E: serde::de::Error>(self, _: i64) -> Result<(), E> {
        Err(E::custom("not an object: a number"))
    }
    fn visit_u64<E: serde::de::Error>(self, _: u64) -> Result<(), E> {
        Err(E::custom("not an object: a number"))
    }
    fn visit_f64<E: serde::de::Error>(self, _: f64) -> Result<(), E> {
        Err(E::custom("not an object: a number"))
    }
    fn visit_bool<E: serde::de::Error>(self, _: bool) -> Result<(), E> {
        Err(E::custom("not an object: a boolean"))
    }
    fn visit_unit<E: serde::de::Error>(self) -> Result<(), E> {
        Err(E::custom("not an object: null"))
    }
}

fn read_object<'de, A: MapAccess<'de>>(b: &mut BatchBuilder, mut map: A) -> Result<(), A::Error> {
    let mut seen: Vec<u32> = Vec::new();
    while let Some(key) = map.next_key_seed(KeySeed { b: &mut *b })? {
        if seen.contains(&key) {
            // Keys are names, not values: fine to report.
            return Err(A::Error::custom(format!("duplicate key: {}", b.key_name(key))));
        }
        seen.push(key);
        map.next_value_seed(ValueSeed { b: &mut *b, key })?;
    }
    Ok(())
}

struct KeySeed<'a> {
    b: &'a mut BatchBuilder,
}

impl<'de> DeserializeSeed<'de> for KeySeed<'_> {
    type Value = u32;
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<u32, D::Error> {
        d.deserialize_str(self)
    }
}

impl<'de> Visitor<'de> for KeySeed<'_> {
    type Value = u32;
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a key")
    }
    fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<u32, E> {
        Ok(self.b.key(v))
    }
}

struct ValueSeed<'a> {
    b: &'a mut BatchBuilder,
    key: u32,
}

impl<'de> DeserializeSeed<'de> for ValueSeed<'_> {
    type Value = ();
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for ValueSeed<'_> {
    type Value = ();
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a JSON value")
    }
    fn visit_unit<E>(self) -> Result<(), E> {
        self.b.push(self.key, Value::Null);
        Ok(())
    }
    fn visit_bool<E>(self, v: bool) -> Result<(), E> {
        self.b.push(self.key, Value::Boolean(v));
        Ok(())
    }
    fn visit_i64<E>(self, v: i64) -> Result<(), E> {
        self.b.push(self.key, Value::Integer(v));
        Ok(())
    }
    fn visit_u64<E>(self, v: u64) -> Result<(), E> {
        // Beyond i64 a number becomes a float (as in JavaScript).
        let value = i64::try_from(v).map_or(Value::Float(v as f64), Value::Integer);
        self.b.push(self.key, value);
        Ok(())
    }
    fn visit_f64<E>(self, v: f64) -> Result<(), E> {
        self.b.push(self.key, Value::Float(v));
        Ok(())
    }
    fn visit_str<E>(self, v: &str) -> Result<(), E> {
        self.b.push_text(self.key, v);
        Ok(())
    }
    fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<(), A::Error> {
        let at = self.b.open(self.key);
        read_object(self.b, map)?;
        self.b.close(at, false);
        Ok(())
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        let at = self.b.open(self.key);
        while seq.next_element_seed(ValueSeed { b: &mut *self.b, key: NO_KEY })?.is_some() {}
        self.b.close(at, true);
        Ok(())
    }
}

/// Writes a cell's value (with its members) as JSON.
pub fn write_value(out: &mut String, batch: &Batch, cell: &Cell, inner: &[Cell]) {
    use std::fmt::Write;
    match cell.value {
        Value::Null => out.push_str("null"),
        Value::Boolean(b) => out.push_str(if b { "true" } else { "false" }),
        Value::Integer(i) => {
            let _ = write!(out, "{i}");
        }
        Value::Float(f) if f.is_finite() => {
            out.push_str(&serde_json::Number::from_f64(f).map_or("null".into(), |n| n.to_string()))
        }
        Value::Float(_) => out.push_str("null"),
        Value::Text(s) => write_str(out, batch.text(s)),
        Value::Object(_) | Value::Array(_) => {
            let array = matches!(cell.value, Value::Array(_));
            out.push(if array { '[' } else { '{' });
            for (n, (c, m)) in super::fields(inner).enumerate() {
                if n > 0 {
                    out.push(',');
                }
                if !array {
                    write_str(out, &batch.keys[c.key as usize]);
                    out.push(':');
                }
                write_value(out, batch, c, m);
            }
            out.push(if array { ']' } else { '}' });
        }
    }
}

/// Writes `s` as a JSON string.
pub fn write_str(out: &mut String, s: &str) {
    out.push_str(&serde_json::to_string(s).expect("strings serialize"));
}

/// A whole record as a JSON object.
pub fn record_json(batch: &Batch, cells: &[Cell]) -> String {
    let mut out = String::new();
    let top = Cell { key: NO_KEY, value: Value::Object(cells.len() as u32) };
    write_value(&mut out, batch, &top, cells);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn roundtrip(line: &str) -> Result<String, DecodeError> {
        let mut b = BatchBuilder::new();
        decode(line.as_bytes(), &mut b)?;
        let batch = b.finish();
        let cells = batch.iter().next().unwrap();
        Ok(record_json(&batch, cells))
    }

    #[test]
    fn decodes_every_kind_of_value() {
        let line =
            r#"{"s":"x\"y","i":-3,"u":18446744073709551615,"f":1.5,"b":true,"n":null,"o":{"a":[1,{"z":"é"}]},"e":{}}"#;
        let want = r#"{"s":"x\"y","i":-3,"u":1.8446744073709552e+19,"f":1.5,"b":true,"n":null,"o":{"a":[1,{"z":"é"}]},"e":{}}"#;
        assert_eq!(roundtrip(line).unwrap(), want);
    }

    #[test]
    fn malformed_lines_are_errors_without_content() {
        assert_eq!(roundtrip("[1,2]"), Err(DecodeError::NotAnObject("an array")));
        assert_eq!(roundtrip("\"secret\""), Err(DecodeError::NotAnObject("a string")));
        assert_eq!(roundtrip("null"), Err(DecodeError::NotAnObject("null")));
        assert_eq!(roundtrip(r#"{"a":1,"a":2}"#), Err(DecodeError::DuplicateKey("a".into())));
        let Err(DecodeError::Syntax(msg)) = roundtrip(r#"{"ip": "10.0.0.1""#) else { panic!() };
        assert!(!msg.contains("10.0.0.1"), "{msg}");
        assert!(matches!(roundtrip(r#"{"a":1} x"#), Err(DecodeError::Syntax(_))));
        assert!(matches!(roundtrip("{\"a\":\"\u{1}\"}"), Err(DecodeError::Syntax(_))));
    }

    #[test]
    fn invalid_utf8_is_an_error() {
        let mut b = BatchBuilder::new();
        assert!(matches!(decode(b"{\"a\":\"\xff\"}", &mut b), Err(DecodeError::Syntax(_))));
        assert!(b.is_empty());
    }

    #[test]
    fn a_failed_record_leaves_the_batch_as_it_was() {
        let mut b = BatchBuilder::new();
        decode(br#"{"a":1}"#, &mut b).unwrap();
        assert!(decode(br#"{"a":2,"b":"#, &mut b).is_err());
        decode(br#"{"b":"x"}"#, &mut b).unwrap();
        let batch = b.finish();
        assert_eq!(batch.records, vec![1, 1]);
        assert_eq!(batch.text, b"x");
    }
}
