//! Batches from and to `serde_json` values, for plugin tests and fixtures.
//! Not on any hot path: the host has its own streaming codec.

use crate::{Batch, Cell, NO_KEY, Outcome, Output, Value, members};
use serde_json::{Map, Value as Json};

/// A batch holding `records` (each must be a JSON object).
pub fn batch(records: &[Json]) -> Batch {
    let mut b = Batch { keys: Vec::new(), text: Vec::new(), cells: Vec::new(), records: Vec::new() };
    for r in records {
        let start = b.cells.len();
        let obj = r.as_object().expect("records are JSON objects");
        for (k, v) in obj {
            let key = key(&mut b, k);
            push(&mut b, key, v);
        }
        b.records.push((b.cells.len() - start) as u32);
    }
    b
}

fn key(b: &mut Batch, name: &str) -> u32 {
    match b.keys.iter().position(|k| k == name) {
        Some(i) => i as u32,
        None => {
            b.keys.push(name.to_string());
            (b.keys.len() - 1) as u32
        }
    }
}

fn push(b: &mut Batch, key: u32, v: &Json) {
    let value = match v {
        Json::Null => Value::Null,
        Json::Bool(x) => Value::Boolean(*x),
        Json::Number(n) => match n.as_i64() {
            Some(i) => Value::Integer(i),
            None => Value::Float(n.as_f64().unwrap_or(f64::NAN)),
        },
        Json::String(s) => {
            let offset = b.text.len() as u32;
            b.text.extend_from_slice(s.as_bytes());
            Value::Text(crate::Span { offset, len: s.len() as u32 })
        }
        Json::Array(items) => {
            let at = open(b, key);
            for item in items {
                push(b, NO_KEY, item);
            }
            return close(b, at, true);
        }
        Json::Object(map) => {
            let at = open(b, key);
            for (k, item) in map {
                let k = self::key(b, k);
                push(b, k, item);
            }
            return close(b, at, false);
        }
    };
    b.cells.push(Cell { key, value });
}

fn open(b: &mut Batch, key: u32) -> usize {
    b.cells.push(Cell { key, value: Value::Null });
    b.cells.len() - 1
}

fn close(b: &mut Batch, at: usize, array: bool) {
    let n = (b.cells.len() - at - 1) as u32;
    b.cells[at].value = if array { Value::Array(n) } else { Value::Object(n) };
}

/// One input record's result, as JSON.
#[derive(Debug, PartialEq)]
pub enum Result {
    Emit(Vec<Json>),
    Drop,
    Reject(String),
}

/// The output as one result per input record.
pub fn results(out: &Output) -> Vec<Result> {
    let records = records(&out.batch);
    let mut next = records.into_iter();
    out.outcomes
        .iter()
        .map(|o| match o {
            Outcome::Emit(n) => Result::Emit(next.by_ref().take(*n as usize).collect()),
            Outcome::Drop => Result::Drop,
            Outcome::Reject(r) => Result::Reject(r.clone()),
        })
        .collect()
}

/// The batch's records as JSON objects.
pub fn records(b: &Batch) -> Vec<Json> {
    let mut start = 0;
    b.records
        .iter()
        .map(|&n| {
            let cells = &b.cells[start..start + n as usize];
            start += n as usize;
            Json::Object(object(b, cells))
        })
        .collect()
}

fn object(b: &Batch, cells: &[Cell]) -> Map<String, Json> {
    let mut map = Map::new();
    let mut i = 0;
    while i < cells.len() {
        let n = members(&cells[i]);
        map.insert(b.keys[cells[i].key as usize].clone(), value(b, &cells[i], &cells[i + 1..i + 1 + n]));
        i += 1 + n;
    }
    map
}

fn value(b: &Batch, cell: &Cell, inner: &[Cell]) -> Json {
    match cell.value {
        Value::Null => Json::Null,
        Value::Boolean(x) => Json::Bool(x),
        Value::Integer(i) => Json::from(i),
        Value::Float(f) => Json::from(f),
        Value::Text(s) => {
            let bytes = &b.text[s.offset as usize..(s.offset + s.len) as usize];
            Json::String(String::from_utf8_lossy(bytes).into_owned())
        }
        Value::Object(_) => Json::Object(object(b, inner)),
        Value::Array(_) => {
            let mut items = Vec::new();
            let mut i = 0;
            while i < inner.len() {
                let n = members(&inner[i]);
                items.push(value(b, &inner[i], &inner[i + 1..i + 1 + n]));
                i += 1 + n;
            }
            Json::Array(items)
        }
    }
}
