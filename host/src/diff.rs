//! Two versions of a chain on the same input, compared row by row as the
//! table would receive them: what a candidate would change before it takes
//! over (shadow runs) or before stored data is replayed through it.
//!
//! Rows are matched by the sink's key where it has one (upsert,
//! delete-insert), else by input record and the order of the rows it
//! emitted. Each input record ends as one of: its rows the same on both
//! sides, changed (and in which columns), added or dropped (rows only one
//! side emitted), or rejected by one side only. Generated columns
//! (`load-time`, `source-file`, ...) are the same for any chain and are not
//! compared.
//!
//! Holds no values: a [`Summary`] has counts, column names and labels of
//! the records that differ (the caller's, e.g. a message id or an object's
//! line), and key values only when the pipeline lets values into logs
//! (`[logging] record_values`). Must not talk to the database.

use crate::mapping::Mapping;
use crate::transform::ChainOutput;
use std::collections::{BTreeMap, HashMap};

/// How many differing records a summary names, at most.
pub const SAMPLE: usize = 20;

/// What two chains did differently with the same records.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Summary {
    /// Input records compared.
    pub records: u64,
    /// Rows (matched by key, or by record and order) equal in every column.
    pub same: u64,
    /// Rows present on both sides that differ in at least one column.
    pub changed: u64,
    /// Rows only the candidate emits.
    pub added: u64,
    /// Rows only production emits.
    pub dropped: u64,
    /// Records production rejects and the candidate does not.
    pub rejected_by_production_only: u64,
    /// Records the candidate rejects and production does not.
    pub rejected_by_candidate_only: u64,
    /// Per column, how many changed rows differ there.
    pub columns: BTreeMap<String, u64>,
    /// Labels of records that differ, the first [`SAMPLE`].
    pub sample: Vec<String>,
}

impl Summary {
    /// Adds `other`'s counts to these; the sample keeps its first entries.
    pub fn absorb(&mut self, other: &Summary) {
        self.records += other.records;
        self.same += other.same;
        self.changed += other.changed;
        self.added += other.added;
        self.dropped += other.dropped;
        self.rejected_by_production_only += other.rejected_by_production_only;
        self.rejected_by_candidate_only += other.rejected_by_candidate_only;
        for (column, n) in &other.columns {
            *self.columns.entry(column.clone()).or_default() += n;
        }
        for label in &other.sample {
            if self.sample.len() >= SAMPLE {
                break;
            }
            if !self.sample.contains(label) {
                self.sample.push(label.clone());
            }
        }
    }

    /// Rows or records that differ in any way.
    pub fn differences(&self) -> u64 {
        self.changed + self.added + self.dropped + self.rejected_by_production_only + self.rejected_by_candidate_only
    }

    fn note(&mut self, label: impl FnOnce() -> String) {
        if self.sample.len() < SAMPLE {
            let label = label();
            if !self.sample.contains(&label) {
                self.sample.push(label);
            }
        }
    }

    /// The summary as lines for a terminal: the counts, then each changed
    /// column with its count, then the sample.
    pub fn text(&self) -> String {
        let mut out = format!(
            "records compared: {}\nrows same: {}\nrows changed: {}\nrows added: {}\nrows dropped: {}\n\
             rejected by production only: {}\nrejected by the candidate only: {}\n",
            self.records,
            self.same,
            self.changed,
            self.added,
            self.dropped,
            self.rejected_by_production_only,
            self.rejected_by_candidate_only
        );
        if !self.columns.is_empty() {
            out.push_str("changed columns:\n");
            let width = self.columns.keys().map(|c| c.chars().count()).max().unwrap_or(0);
            for (column, n) in &self.columns {
                out.push_str(&format!("  {column:width$}  {n} rows\n"));
            }
        }
        if !self.sample.is_empty() {
            out.push_str(&format!("records that differ (first {}):\n", SAMPLE));
            for label in &self.sample {
                out.push_str(&format!("  {label}\n"));
            }
        }
        out
    }
}

/// How rows are matched.
pub enum Match<'a> {
    /// By the values of these sink columns (an upsert's key).
    Key(&'a [String]),
    /// By input record, then the order of its rows.
    Position,
}

/// One row: the input record it came from and its field columns' text.
struct Row {
    origin: u32,
    cells: Vec<Option<Vec<u8>>>,
}

fn rows(mapping: &Mapping, output: &ChainOutput) -> Vec<Row> {
    let rows = mapping.rows(&output.batch);
    output
        .batch
        .iter()
        .zip(&output.origin)
        .map(|(cells, &origin)| Row { origin, cells: rows.cells_text(cells) })
        .collect()
}

/// Compares `production` and `candidate`, the outputs of two chains on the
/// same `records` input records. `label` names input record `i` in the
/// sample (never with its values); with `show_keys`, a keyed row's label
/// also gives its key's values.
pub fn compare(
    mapping: &Mapping,
    by: &Match<'_>,
    records: usize,
    production: &ChainOutput,
    candidate: &ChainOutput,
    label: &dyn Fn(u32) -> String,
    show_keys: bool,
) -> Summary {
    let names: Vec<&str> = mapping.names().collect();
    let mut summary = Summary { records: records as u64, ..Summary::default() };
    let rejected = |out: &ChainOutput| {
        let mut r: Vec<u32> = out.rejected.iter().map(|r| r.record).collect();
        r.sort_unstable();
        r.dedup();
        r
    };
    let (rejected_p, rejected_c) = (rejected(production), rejected(candidate));
    let only = |a: &[u32], b: &[u32]| a.iter().filter(|r| b.binary_search(r).is_err()).copied().collect::<Vec<_>>();
    let (only_p, only_c) = (only(&rejected_p, &rejected_c), only(&rejected_c, &rejected_p));
    summary.rejected_by_production_only = only_p.len() as u64;
    summary.rejected_by_candidate_only = only_c.len() as u64;
    for &r in only_p.iter().chain(&only_c) {
        summary.note(|| label(r));
    }
    // A record one side rejected is counted once, there, not again as rows
    // added or dropped.
    let counted = |r: u32| only_p.binary_search(&r).is_ok() || only_c.binary_search(&r).is_ok();
    let (p, c) = (rows(mapping, production), rows(mapping, candidate));
    let (p, c): (Vec<Row>, Vec<Row>) = (
        p.into_iter().filter(|r| !counted(r.origin)).collect(),
        c.into_iter().filter(|r| !counted(r.origin)).collect(),
    );

    let compare_rows = |summary: &mut Summary, a: &Row, b: &Row, key: Option<&str>| {
        let mut differs = false;
        for (i, (x, y)) in a.cells.iter().zip(&b.cells).enumerate() {
            if x != y {
                differs = true;
                *summary.columns.entry(names[i].to_string()).or_default() += 1;
            }
        }
        if differs {
            summary.changed += 1;
            summary.note(|| labelled(label(b.origin), key));
        } else {
            summary.same += 1;
        }
    };
    match by {
        Match::Key(key) => {
            let at: Vec<usize> = key.iter().filter_map(|k| names.iter().position(|n| n == k)).collect();
            let key_of = |row: &Row| -> Vec<u8> {
                let mut k = Vec::new();
                for &i in &at {
                    k.extend_from_slice(row.cells[i].as_deref().unwrap_or_default());
                    k.push(b'\t');
                }
                k
            };
            let readable = |k: &[u8]| String::from_utf8_lossy(k.strip_suffix(b"\t").unwrap_or(k)).replace('\t', ", ");
            // The last row of a key wins, as the upsert would have it.
            let mut production: HashMap<Vec<u8>, &Row> = HashMap::new();
            for row in &p {
                production.insert(key_of(row), row);
            }
            let mut candidate: HashMap<Vec<u8>, &Row> = HashMap::new();
            let mut order = Vec::new();
            for row in &c {
                let k = key_of(row);
                if candidate.insert(k.clone(), row).is_none() {
                    order.push(k);
                }
            }
            for k in &order {
                let b = candidate[k];
                let shown = show_keys.then(|| readable(k));
                match production.remove(k) {
                    Some(a) => compare_rows(&mut summary, a, b, shown.as_deref()),
                    None => {
                        summary.added += 1;
                        summary.note(|| labelled(label(b.origin), shown.as_deref()));
                    }
                }
            }
            let mut left: Vec<(&Vec<u8>, &&Row)> = production.iter().collect();
            left.sort_by_key(|(_, r)| r.origin);
            for (k, a) in left {
                summary.dropped += 1;
                let shown = show_keys.then(|| readable(k));
                summary.note(|| labelled(label(a.origin), shown.as_deref()));
            }
        }
        Match::Position => {
            // Both sides' rows are in input order: walk them together.
            let (mut i, mut j) = (0, 0);
            while i < p.len() || j < c.len() {
                let origin = match (p.get(i), c.get(j)) {
                    (Some(a), Some(b)) => a.origin.min(b.origin),
                    (Some(a), None) => a.origin,
                    (None, Some(b)) => b.origin,
                    (None, None) => break,
                };
                let (from_p, from_c) = (i, j);
                while p.get(i).is_some_and(|r| r.origin == origin) {
                    i += 1;
                }
                while c.get(j).is_some_and(|r| r.origin == origin) {
                    j += 1;
                }
                let (a, b) = (&p[from_p..i], &c[from_c..j]);
                for (x, y) in a.iter().zip(b) {
                    compare_rows(&mut summary, x, y, None);
                }
                if a.len() > b.len() {
                    summary.dropped += (a.len() - b.len()) as u64;
                    summary.note(|| label(origin));
                } else if b.len() > a.len() {
                    summary.added += (b.len() - a.len()) as u64;
                    summary.note(|| label(origin));
                }
            }
        }
    }
    summary
}

fn labelled(label: String, key: Option<&str>) -> String {
    match key {
        Some(k) => format!("{label} (key {k})"),
        None => label,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::batch::BatchBuilder;
    use crate::transform::Rejection;

    fn sink(mode: &str) -> crate::config::Sink {
        let text = format!(
            "[source.sqs]\nqueue = \"q\"\n[sink]\ntable = \"t\"\nmode = \"{mode}\"\n{}\
             [sink.columns]\nid = \"id\"\nname = \"name\"\nn = \"n\"\nat = {{ generated = \"load-time\" }}\n",
            if mode == "upsert" { "key = [\"id\"]\n" } else { "" }
        );
        let path = std::path::Path::new("p.toml");
        crate::config::validate(path, crate::config::parse_str(path, &text, |_| None).unwrap()).unwrap().sink.unwrap()
    }

    /// Rows as JSON objects, each with the input record it came from.
    fn output(rows: &[(u32, &str)], rejected: &[u32]) -> ChainOutput {
        let mut b = BatchBuilder::new();
        for (_, json) in rows {
            crate::batch::json::decode(json.as_bytes(), &mut b).unwrap();
        }
        ChainOutput {
            batch: b.finish(),
            origin: rows.iter().map(|(o, _)| *o).collect(),
            rejected: rejected
                .iter()
                .map(|&record| Rejection {
                    record,
                    step: 1,
                    plugin: "p".into(),
                    digest: "d".into(),
                    reason: "no".into(),
                })
                .collect(),
            dropped: Vec::new(),
        }
    }

    fn label(i: u32) -> String {
        format!("record {i}")
    }

    #[test]
    fn by_position_same_changed_added_dropped_and_rejected_once() {
        let mapping = Mapping::new(&sink("append"));
        let production = output(
            &[
                (0, r#"{"id":1,"name":"a","n":1}"#),
                (1, r#"{"id":2,"name":"b","n":2}"#),
                (2, r#"{"id":3,"name":"c","n":3}"#),
                (2, r#"{"id":3,"name":"c2","n":3}"#),
            ],
            &[3],
        );
        let candidate = output(
            &[
                (0, r#"{"id":1,"name":"a","n":1}"#),
                (1, r#"{"id":2,"name":"B","n":20}"#),
                (2, r#"{"id":3,"name":"c","n":3}"#),
                (3, r#"{"id":4,"name":"d","n":4}"#),
                (4, r#"{"id":5,"name":"e","n":5}"#),
            ],
            &[],
        );
        let s = compare(&mapping, &Match::Position, 5, &production, &candidate, &label, false);
        assert_eq!((s.records, s.same, s.changed, s.added, s.dropped), (5, 2, 1, 1, 1), "{s:?}");
        assert_eq!((s.rejected_by_production_only, s.rejected_by_candidate_only), (1, 0));
        assert_eq!(s.columns, BTreeMap::from([("name".into(), 1), ("n".into(), 1)]));
        assert_eq!(s.sample, vec!["record 3", "record 1", "record 2", "record 4"]);
        assert_eq!(s.differences(), 4);
    }

    #[test]
    fn by_key_whatever_the_order_and_keys_shown_only_when_allowed() {
        let mapping = Mapping::new(&sink("upsert"));
        let production = output(&[(0, r#"{"id":1,"name":"a","n":1}"#), (1, r#"{"id":2,"name":"b","n":2}"#)], &[]);
        let candidate = output(&[(1, r#"{"id":2,"name":"b","n":2}"#), (0, r#"{"id":1,"name":"x","n":1}"#)], &[]);
        let key = ["id".to_string()];
        let s = compare(&mapping, &Match::Key(&key), 2, &production, &candidate, &label, false);
        assert_eq!((s.same, s.changed, s.added, s.dropped), (1, 1, 0, 0), "{s:?}");
        assert_eq!(s.sample, vec!["record 0"]);
        let s = compare(&mapping, &Match::Key(&key), 2, &production, &candidate, &label, true);
        assert_eq!(s.sample, vec!["record 0 (key 1)"]);

        let mut all = Summary::default();
        all.absorb(&s);
        all.absorb(&s);
        assert_eq!((all.records, all.changed, all.columns["name"]), (4, 2, 2));
        assert_eq!(all.sample, vec!["record 0 (key 1)"]);
        assert!(all.text().contains("changed columns:\n  name  2 rows\n"), "{}", all.text());
    }
}
