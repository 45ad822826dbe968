//! Records onto the sink table's columns: which field feeds which column,
//! and the generated columns (`load-date`, `load-time`).
//!
//! Mapping lives in the host, not in a plugin, because it is about the table
//! (which the host owns and types), it is declarative, and doing it here
//! saves one more pass through the sandbox.

use crate::batch::{Batch, Cell, fields, json};
use crate::config::{ColumnSource, Generated, Sink};
use std::time::{SystemTime, UNIX_EPOCH};

/// A sink's columns, resolved against one batch's keys at a time.
pub struct Mapping {
    columns: Vec<(String, ColumnSource)>,
}

/// What feeds a column in one record.
pub enum Slot<'a> {
    Field(&'a Cell, &'a [Cell]),
    Missing,
    Generated(Generated),
}

/// The load date and time of a batch, fixed once per batch, and for rows
/// from an S3 object, the object they came from.
pub struct LoadTime {
    pub date: String,
    pub time: String,
    /// `s3://bucket/key`.
    pub source_file: Option<String>,
    /// Version id, else ETag.
    pub source_version: Option<String>,
}

impl LoadTime {
    pub fn now() -> Self {
        let secs = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
        let (y, m, d) = civil_from_days((secs / 86_400) as i64);
        let s = secs % 86_400;
        LoadTime {
            date: format!("{y:04}-{m:02}-{d:02}"),
            time: format!("{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z", s / 3600, s / 60 % 60, s % 60),
            source_file: None,
            source_version: None,
        }
    }
}

/// Days since 1970-01-01 to (year, month, day), proleptic Gregorian.
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (yoe + era * 400 + i64::from(m <= 2), m, d)
}

impl Mapping {
    pub fn new(sink: &Sink) -> Self {
        Mapping { columns: sink.columns.iter().map(|c| (c.name.clone(), c.source.clone())).collect() }
    }

    /// Per column, the key index of its field in `batch` (if present).
    pub fn keys(&self, batch: &Batch) -> Vec<Option<u32>> {
        self.columns
            .iter()
            .map(|(_, s)| match s {
                ColumnSource::Field(f) => batch.keys.iter().position(|k| k == f).map(|i| i as u32),
                ColumnSource::Generated(_) => None,
            })
            .collect()
    }

    /// The record's value for each column.
    pub fn slots<'a>(&'a self, keys: &'a [Option<u32>], cells: &'a [Cell]) -> impl Iterator<Item = Slot<'a>> + 'a {
        self.columns.iter().zip(keys).map(move |((_, source), key)| match source {
            ColumnSource::Generated(g) => Slot::Generated(*g),
            ColumnSource::Field(_) => key
                .and_then(|k| fields(cells).find(|(c, _)| c.key == k))
                .map_or(Slot::Missing, |(c, m)| Slot::Field(c, m)),
        })
    }

    /// The row as a JSON object in column order; generated columns are left
    /// out unless `load` is given.
    pub fn row_json(&self, batch: &Batch, keys: &[Option<u32>], cells: &[Cell], load: Option<&LoadTime>) -> String {
        let mut out = String::from("{");
        let mut first = true;
        for ((name, _), slot) in self.columns.iter().zip(self.slots(keys, cells)) {
            let value = match slot {
                Slot::Field(c, m) => {
                    let mut v = String::new();
                    json::write_value(&mut v, batch, c, m);
                    v
                }
                Slot::Missing => "null".into(),
                Slot::Generated(g) => match (g, load) {
                    (_, None) => continue,
                    (Generated::LoadDate, Some(l)) => format!("\"{}\"", l.date),
                    (Generated::LoadTime, Some(l)) => format!("\"{}\"", l.time),
                    (Generated::SourceFile, Some(l)) => l.source_file.as_deref().map_or("null".into(), quoted),
                    (Generated::SourceVersion, Some(l)) => l.source_version.as_deref().map_or("null".into(), quoted),
                },
            };
            if !first {
                out.push(',');
            }
            first = false;
            json::write_str(&mut out, name);
            out.push(':');
            out.push_str(&value);
        }
        out.push('}');
        out
    }
}

fn quoted(text: &str) -> String {
    let mut out = String::new();
    json::write_str(&mut out, text);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn civil_dates() {
        assert_eq!(civil_from_days(0), (1970, 1, 1));
        assert_eq!(civil_from_days(19_358), (2023, 1, 1));
        assert_eq!(civil_from_days(20_513), (2026, 3, 1));
        assert_eq!(civil_from_days(-1), (1969, 12, 31));
    }
}
