//! Records onto the sink table's columns, and the encoding of the rows that
//! result: which field feeds which column, the generated columns (per
//! batch: `load-date`, `load-time`, `source-file`, `source-version`,
//! `pipeline-revision`, and `batch-id`, whose value the commit alone knows:
//! its places are kept beside the text, [`copy::with_batch_id`]; per row: `source-line`
//! and `message-id`, from the row's [`RowOrigin`]), and each row as COPY
//! text ([`copy`]) or as a JSON object (`host test`).
//!
//! This module is the one owner of a row's encoding: the sink receives rows
//! already encoded and never looks into records. It must not talk to the
//! database.
//!
//! Mapping lives in the host, not in a plugin, because it is about the table
//! (which the host owns and types), it is declarative, and doing it here
//! saves one more pass through the sandbox.

pub mod copy;

use crate::batch::{Batch, Cell, fields, json};
use crate::config::{ColumnSource, Generated, Sink};

/// A sink's columns, resolved against one batch's keys at a time.
pub struct Mapping {
    columns: Vec<(String, ColumnSource)>,
}

/// What feeds a column in one record.
enum Slot<'a> {
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
    /// The revision of the pipeline file the chain's version came from.
    pub revision: Option<String>,
}

/// Where one row came from: what its per-row generated columns hold.
#[derive(Debug, Clone, Copy, Default)]
pub struct RowOrigin<'a> {
    /// The SQS message id (`message-id`).
    pub message_id: Option<&'a str>,
    /// The line (record) of its object, 1-based (`source-line`).
    pub line: Option<u64>,
}

impl LoadTime {
    pub fn now() -> Self {
        Self::at(time::OffsetDateTime::now_utc())
    }

    fn at(t: time::OffsetDateTime) -> Self {
        let (y, m, d) = (t.year(), u8::from(t.month()), t.day());
        LoadTime {
            date: format!("{y:04}-{m:02}-{d:02}"),
            time: format!("{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z", t.hour(), t.minute(), t.second()),
            source_file: None,
            source_version: None,
            revision: None,
        }
    }
}

/// One batch's records against the mapping: the key of each column's field
/// found once per batch, then rows encoded one by one.
pub struct Rows<'a> {
    mapping: &'a Mapping,
    batch: &'a Batch,
    /// Per column, the key index of its field in `batch` (if present).
    keys: Vec<Option<u32>>,
}

impl Mapping {
    pub fn new(sink: &Sink) -> Self {
        Mapping { columns: sink.columns.iter().map(|c| (c.name.clone(), c.source.clone())).collect() }
    }

    /// The columns' names, in order.
    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.columns.iter().map(|(n, _)| n.as_str())
    }

    /// Whether column `i` is generated (the same for any chain's rows).
    pub fn is_generated(&self, i: usize) -> bool {
        matches!(self.columns[i].1, ColumnSource::Generated(_))
    }

    /// The rows of `batch`, ready to encode.
    pub fn rows<'a>(&'a self, batch: &'a Batch) -> Rows<'a> {
        let keys = self
            .columns
            .iter()
            .map(|(_, s)| match s {
                ColumnSource::Field(f) => batch.keys.iter().position(|k| k == f).map(|i| i as u32),
                ColumnSource::Generated(_) => None,
            })
            .collect();
        Rows { mapping: self, batch, keys }
    }
}

impl Rows<'_> {
    /// The record's value for each column.
    fn slots<'c>(&'c self, cells: &'c [Cell]) -> impl Iterator<Item = Slot<'c>> + 'c {
        self.mapping.columns.iter().zip(&self.keys).map(move |((_, source), key)| match source {
            ColumnSource::Generated(g) => Slot::Generated(*g),
            ColumnSource::Field(_) => key
                .and_then(|k| fields(cells).find(|(c, _)| c.key == k))
                .map_or(Slot::Missing, |(c, m)| Slot::Field(c, m)),
        })
    }

    /// Appends the record's row in COPY text format (and a newline) to
    /// `out`; a `batch-id` column's place (its offset in `out`) to
    /// `batch_id_at`, for the commit to fill.
    pub fn write_copy(
        &self,
        out: &mut Vec<u8>,
        batch_id_at: &mut Vec<usize>,
        cells: &[Cell],
        load: &LoadTime,
        origin: RowOrigin<'_>,
    ) {
        let mut first = true;
        for slot in self.slots(cells) {
            if !first {
                out.push(b'\t');
            }
            first = false;
            match slot {
                Slot::Missing => out.extend_from_slice(b"\\N"),
                Slot::Generated(Generated::LoadDate) => out.extend_from_slice(load.date.as_bytes()),
                Slot::Generated(Generated::LoadTime) => out.extend_from_slice(load.time.as_bytes()),
                Slot::Generated(Generated::SourceFile) => copy::text_or_null(out, load.source_file.as_deref()),
                Slot::Generated(Generated::SourceVersion) => copy::text_or_null(out, load.source_version.as_deref()),
                Slot::Generated(Generated::PipelineRevision) => copy::text_or_null(out, load.revision.as_deref()),
                Slot::Generated(Generated::MessageId) => copy::text_or_null(out, origin.message_id),
                Slot::Generated(Generated::SourceLine) => match origin.line {
                    Some(line) => out.extend_from_slice(line.to_string().as_bytes()),
                    None => out.extend_from_slice(b"\\N"),
                },
                Slot::Generated(Generated::BatchId) => batch_id_at.push(out.len()),
                Slot::Field(cell, members) => copy::write_value(out, self.batch, cell, members),
            }
        }
        out.push(b'\n');
    }

    /// Each field column's value in COPY text (as [`Rows::write_copy`]
    /// writes it), `None` for a generated column: what two chains' rows
    /// are compared by (`crate::diff`).
    pub fn cells_text(&self, cells: &[Cell]) -> Vec<Option<Vec<u8>>> {
        self.slots(cells)
            .map(|slot| match slot {
                Slot::Generated(_) => None,
                Slot::Missing => Some(b"\\N".to_vec()),
                Slot::Field(cell, members) => {
                    let mut out = Vec::new();
                    copy::write_value(&mut out, self.batch, cell, members);
                    Some(out)
                }
            })
            .collect()
    }

    /// The row as a JSON object in column order; generated columns are left
    /// out unless `load` is given (`batch-id` is then null: no batch).
    pub fn json(&self, cells: &[Cell], load: Option<&LoadTime>, origin: RowOrigin<'_>) -> String {
        let text = |t: Option<&str>| t.map_or("null".into(), quoted);
        let mut out = String::from("{");
        let mut first = true;
        for ((name, _), slot) in self.mapping.columns.iter().zip(self.slots(cells)) {
            let value = match slot {
                Slot::Field(c, m) => {
                    let mut v = String::new();
                    json::write_value(&mut v, self.batch, c, m);
                    v
                }
                Slot::Missing => "null".into(),
                Slot::Generated(g) => match (g, load) {
                    (_, None) => continue,
                    (Generated::LoadDate, Some(l)) => format!("\"{}\"", l.date),
                    (Generated::LoadTime, Some(l)) => format!("\"{}\"", l.time),
                    (Generated::SourceFile, Some(l)) => text(l.source_file.as_deref()),
                    (Generated::SourceVersion, Some(l)) => text(l.source_version.as_deref()),
                    (Generated::PipelineRevision, Some(l)) => text(l.revision.as_deref()),
                    (Generated::MessageId, Some(_)) => text(origin.message_id),
                    (Generated::SourceLine, Some(_)) => origin.line.map_or("null".into(), |n| n.to_string()),
                    (Generated::BatchId, Some(_)) => "null".into(),
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

/// Days since 1970-01-01 to (year, month, day), proleptic Gregorian.
#[cfg(test)]
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let t = time::OffsetDateTime::UNIX_EPOCH + time::Duration::days(z);
    (i64::from(t.year()), u32::from(u8::from(t.month())), u32::from(t.day()))
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

    fn mapping(source: &str, columns: &str) -> Mapping {
        let text = format!("{source}\n[sink]\ntable = \"t\"\n[sink.columns]\n{columns}");
        let path = std::path::Path::new("p.toml");
        let pipeline = crate::config::validate(path, crate::config::parse_str(path, &text, |_| None).unwrap()).unwrap();
        assert!(pipeline.revision.starts_with("sha256:"));
        Mapping::new(pipeline.sink.as_ref().unwrap())
    }

    #[test]
    fn provenance_columns_hold_the_revision_the_row_origin_and_a_place_for_the_batch_id() {
        let m = mapping(
            "[source.sqs]\nqueue = \"q\"",
            "id = \"id\"\nb = { generated = \"batch-id\" }\nm = { generated = \"message-id\" }\n\
             r = { generated = \"pipeline-revision\" }\nb2 = { generated = \"batch-id\" }",
        );
        let mut builder = crate::batch::BatchBuilder::new();
        crate::batch::json::decode(br#"{"id": 7}"#, &mut builder).unwrap();
        let batch = builder.finish();
        let load = LoadTime { revision: Some("sha256:ab".into()), ..LoadTime::now() };
        let origin = RowOrigin { message_id: Some("m-1\tx"), line: None };
        let (mut out, mut at) = (Vec::new(), Vec::new());
        let rows = m.rows(&batch);
        let cells = batch.iter().next().unwrap();
        rows.write_copy(&mut out, &mut at, cells, &load, origin);
        assert_eq!(out, b"7\t\tm-1\\tx\tsha256:ab\t\n");
        assert_eq!(at, [2, 20]);
        assert_eq!(&*copy::with_batch_id(&out, &at, Some(9)), b"7\t9\tm-1\\tx\tsha256:ab\t9\n");
        assert_eq!(
            rows.json(cells, Some(&load), origin),
            r#"{"id":7,"b":null,"m":"m-1\tx","r":"sha256:ab","b2":null}"#
        );
        assert_eq!(rows.json(cells, None, origin), r#"{"id":7}"#);
    }

    #[test]
    fn a_row_of_an_object_has_its_line() {
        let m = mapping(
            "[source.s3]\nbucket = \"b\"\nqueue = \"q\"\nformat = \"csv\"",
            "id = \"id\"\nline = { generated = \"source-line\" }",
        );
        let mut builder = crate::batch::BatchBuilder::new();
        crate::batch::json::decode(br#"{"id": "x"}"#, &mut builder).unwrap();
        let batch = builder.finish();
        let (mut out, mut at) = (Vec::new(), Vec::new());
        let cells = batch.iter().next().unwrap();
        let origin = RowOrigin { message_id: None, line: Some(12) };
        m.rows(&batch).write_copy(&mut out, &mut at, cells, &LoadTime::now(), origin);
        assert_eq!((out.as_slice(), at.len()), (b"x\t12\n".as_slice(), 0));
        m.rows(&batch).write_copy(&mut out, &mut at, cells, &LoadTime::now(), RowOrigin::default());
        assert_eq!(out, b"x\t12\nx\t\\N\n");
    }

    #[test]
    fn load_time_is_utc_to_the_second() {
        let t = time::OffsetDateTime::UNIX_EPOCH + time::Duration::seconds(20_513 * 86_400 + 3_723);
        let l = LoadTime::at(t);
        assert_eq!((l.date.as_str(), l.time.as_str()), ("2026-03-01", "2026-03-01T01:02:03Z"));
    }
}
