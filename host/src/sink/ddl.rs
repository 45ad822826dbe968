//! What a pipeline writes into each column of its table, as far as the
//! pipeline file says (its `[sink.columns]` and the rows its `[[tests]]`
//! expect), and the `CREATE TABLE` that `host sink ddl` prints from it.
//!
//! A type is chosen per column: a generated column's by what it holds
//! (`load-date` date, `load-time` timestamptz, `source-file`,
//! `source-version`, `message-id` and `pipeline-revision` text, `batch-id`
//! and `source-line` bigint); a field's by the values the test cases expect in
//! it (integers bigint, other numbers numeric, true/false boolean, objects
//! and arrays jsonb; text, a mix, or no value at all text). It is a start
//! that takes every value the tests show, not a design: narrow it by hand.
//!
//! Pure: builds text, runs nothing.

use super::sql::{readable, readable_qualified};
use crate::config::{Column, ColumnSource, Generated, MergeMode, Pipeline, Sink, Source, TestExpect};
use serde_json::Value;

/// What the pipeline writes into one column.
pub struct Written<'a> {
    pub column: &'a Column,
    /// The value each test case expects in the column (null included), by
    /// the test case's name. Empty for a generated column.
    pub examples: Vec<(&'a str, &'a Value)>,
}

/// What a JSON value becomes in a column.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Kind {
    Integer,
    Fraction,
    Boolean,
    Text,
    Json,
}

impl Kind {
    pub fn of(value: &Value) -> Option<Kind> {
        Some(match value {
            Value::Null => return None,
            Value::Bool(_) => Kind::Boolean,
            Value::Number(n) if n.is_i64() => Kind::Integer,
            Value::Number(_) => Kind::Fraction,
            Value::String(_) => Kind::Text,
            Value::Array(_) | Value::Object(_) => Kind::Json,
        })
    }

    /// As a person says it, in the plural: "integers".
    pub fn plural(self) -> &'static str {
        match self {
            Kind::Integer => "integers",
            Kind::Fraction => "numbers with a fraction",
            Kind::Boolean => "true/false",
            Kind::Text => "text",
            Kind::Json => "JSON objects or arrays",
        }
    }

    /// As a person says it, one value: "an integer".
    pub fn singular(self) -> &'static str {
        match self {
            Kind::Integer => "an integer",
            Kind::Fraction => "a number with a fraction",
            Kind::Boolean => "true/false",
            Kind::Text => "text",
            Kind::Json => "a JSON object or array",
        }
    }
}

impl Written<'_> {
    /// The kinds of the values the test cases expect, each once, in order.
    pub fn kinds(&self) -> Vec<Kind> {
        let mut kinds: Vec<Kind> = self.examples.iter().filter_map(|(_, v)| Kind::of(v)).collect();
        kinds.sort();
        kinds.dedup();
        kinds
    }

    /// The type `host sink ddl` gives the column (see the module docs).
    pub fn pg_type(&self) -> &'static str {
        match &self.column.source {
            ColumnSource::Generated(Generated::LoadDate) => "date",
            ColumnSource::Generated(Generated::LoadTime) => "timestamptz",
            ColumnSource::Generated(
                Generated::SourceFile | Generated::SourceVersion | Generated::MessageId | Generated::PipelineRevision,
            ) => "text",
            ColumnSource::Generated(Generated::SourceLine | Generated::BatchId) => "bigint",
            ColumnSource::Field(_) => match self.kinds().as_slice() {
                [Kind::Integer] => "bigint",
                [Kind::Fraction] | [Kind::Integer, Kind::Fraction] => "numeric",
                [Kind::Boolean] => "boolean",
                [Kind::Json] => "jsonb",
                _ => "text",
            },
        }
    }

    /// Where the column's values come from, and what the test cases show
    /// of them: "field `app_version`: integers in the test cases".
    pub fn origin(&self) -> String {
        match &self.column.source {
            ColumnSource::Generated(g) => format!("generated `{}`: {}", g.name(), generated_holds(*g)),
            ColumnSource::Field(f) => {
                let kinds: Vec<&str> = self.kinds().into_iter().map(Kind::plural).collect();
                match kinds.as_slice() {
                    [] => format!("field `{f}`: no test case gives a value"),
                    [one] => format!("field `{f}`: {one} in the test cases"),
                    [rest @ .., last] => format!("field `{f}`: {} and {last} in the test cases", rest.join(", ")),
                }
            }
        }
    }
}

pub fn generated_holds(g: Generated) -> &'static str {
    match g {
        Generated::LoadDate => "the date of the load (UTC)",
        Generated::LoadTime => "the time of the load (UTC)",
        Generated::SourceFile => "the s3:// URI of the row's file",
        Generated::SourceVersion => "the version id (else the ETag) of the row's file",
        Generated::SourceLine => "the line (record) of the row's file it came from, 1-based",
        Generated::MessageId => "the SQS message id the row came from",
        Generated::BatchId => "the etl.batches id of the batch that wrote the row",
        Generated::PipelineRevision => "the revision (sha256:...) of the pipeline file the running version came from",
    }
}

/// What the pipeline writes into each of its sink's columns, in order.
pub fn written<'a>(pipeline: &'a Pipeline, sink: &'a Sink) -> Vec<Written<'a>> {
    sink.columns
        .iter()
        .map(|column| Written {
            column,
            examples: pipeline
                .tests
                .iter()
                .filter_map(|t| match &t.expect {
                    TestExpect::Row(row) => row.get(&column.name).map(|v| (t.name.as_str(), v)),
                    _ => None,
                })
                .collect(),
        })
        .collect()
}

/// `host sink ddl`: the schema (unless `public`), the table, and the
/// indexes the sink's mode and columns want, with a comment per column
/// saying where its type comes from.
pub fn create_table(pipeline: &Pipeline, sink: &Sink) -> String {
    let table = readable_qualified(&sink.schema, &sink.table);
    let mut out = format!(
        "-- The table of pipeline `{name}` ({file}), mode {mode}.\n\
         -- Each type is a start: a generated column's from what it holds, a field's from\n\
         -- the values the test cases expect in it (integers bigint, other numbers numeric,\n\
         -- true/false boolean, objects and arrays jsonb, anything else text). Narrow them\n\
         -- (varchar(n), date, uuid, NOT NULL) before you apply it.\n",
        name = pipeline.name,
        file = pipeline.file.display(),
        mode = mode_name(&sink.mode),
    );
    if csv_rows(pipeline) {
        out.push_str("-- CSV fields are text: PostgreSQL converts each to the type you choose.\n");
    }
    if sink.schema != "public" {
        out.push_str(&format!("CREATE SCHEMA IF NOT EXISTS {};\n", readable(&sink.schema)));
    }
    let mut items: Vec<(String, String)> = written(pipeline, sink)
        .iter()
        .map(|w| (format!("{} {}", readable(&w.column.name), w.pg_type()), w.origin()))
        .collect();
    if let MergeMode::Upsert { key } = &sink.mode {
        items.push((format!("PRIMARY KEY ({})", names(key)), "upsert: ON CONFLICT on the key".into()));
    }
    let width = items.iter().map(|(def, _)| def.chars().count() + 1).max().unwrap_or(0);
    out.push_str(&format!("CREATE TABLE IF NOT EXISTS {table} (\n"));
    let last = items.len() - 1;
    for (i, (def, why)) in items.iter().enumerate() {
        let def = if i < last { format!("{def},") } else { def.clone() };
        out.push_str(&format!("    {def:<width$}  -- {why}\n"));
    }
    out.push_str(");\n");
    let mut indexes: Vec<(Vec<String>, &str)> = Vec::new();
    if let MergeMode::DeleteInsert { key } = &sink.mode {
        indexes.push((key.clone(), "delete-insert deletes the rows of each batch's keys"));
    }
    if let Some(file) = sink.columns.iter().find(|c| c.source == ColumnSource::Generated(Generated::SourceFile)) {
        indexes.push((vec![file.name.clone()], "a file's rows are found by it when the file is replaced or gone"));
    }
    for (columns, why) in indexes {
        let name = readable(&index_name(&sink.table, &columns));
        out.push_str(&format!("CREATE INDEX IF NOT EXISTS {name} ON {table} ({});  -- {why}\n", names(&columns)));
    }
    out
}

/// Whether the records are rows of CSV files: every field is text there,
/// and PostgreSQL parsing it into the column's type is the way in.
pub fn csv_rows(pipeline: &Pipeline) -> bool {
    matches!(&pipeline.source, Some(Source::S3(s)) if matches!(s.format, readers::file::Format::Csv(_)))
}

pub fn mode_name(mode: &MergeMode) -> &'static str {
    match mode {
        MergeMode::Append => "append",
        MergeMode::Upsert { .. } => "upsert",
        MergeMode::DeleteInsert { .. } => "delete-insert",
    }
}

/// Column names, [`readable`], comma-separated.
pub fn names(columns: &[String]) -> String {
    columns.iter().map(|c| readable(c)).collect::<Vec<_>>().join(", ")
}

/// `table_col_idx`, as PostgreSQL names an index, kept within 63 bytes
/// (cut on a character's boundary before `_idx`).
fn index_name(table: &str, columns: &[String]) -> String {
    let mut base = format!("{table}_{}", columns.join("_"));
    let mut end = base.len().min(59);
    while !base.is_char_boundary(end) {
        end -= 1;
    }
    base.truncate(end);
    format!("{base}_idx")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pipeline(text: &str) -> Pipeline {
        let path = std::path::Path::new("pipelines/p.toml");
        crate::config::validate(path, crate::config::parse_str(path, text, |_| None).unwrap()).unwrap()
    }

    #[test]
    fn types_come_from_generators_and_the_test_cases() {
        let p = pipeline(
            r#"
            [sink]
            table = "t"
            [sink.columns]
            n = "n"
            f = "f"
            b = "b"
            j = "j"
            s = "s"
            mixed = "mixed"
            none = "none"
            day = { generated = "load-date" }
            at = { generated = "load-time" }
            [[tests]]
            name = "one"
            input = '{}'
            expect = '{"n": 1, "f": 2, "b": true, "j": {"a": 1}, "s": "x", "mixed": 1, "none": null}'
            [[tests]]
            name = "two"
            input = '{}'
            expect = '{"n": -3, "f": 2.5, "b": null, "j": [1], "s": "y", "mixed": "1", "none": null}'
            "#,
        );
        let sink = p.sink.as_ref().unwrap();
        let types: Vec<&str> = written(&p, sink).iter().map(Written::pg_type).collect();
        assert_eq!(types, ["bigint", "numeric", "boolean", "jsonb", "text", "text", "text", "date", "timestamptz"]);
        let origins: Vec<String> = written(&p, sink).iter().map(Written::origin).collect();
        assert_eq!(origins[1], "field `f`: integers and numbers with a fraction in the test cases");
        assert_eq!(origins[6], "field `none`: no test case gives a value");
        assert_eq!(origins[7], "generated `load-date`: the date of the load (UTC)");
    }

    #[test]
    fn provenance_columns_are_bigint_or_text() {
        let types = |source: &str, columns: &str| {
            let p = pipeline(&format!("{source}\n[sink]\ntable = \"t\"\n[sink.columns]\n{columns}"));
            let sink = p.sink.as_ref().unwrap();
            written(&p, sink).iter().map(|w| (w.pg_type(), w.origin())).collect::<Vec<_>>()
        };
        let queue = types(
            "[source.sqs]\nqueue = \"q\"",
            "b = { generated = \"batch-id\" }\nm = { generated = \"message-id\" }\nr = { generated = \"pipeline-revision\" }",
        );
        assert_eq!(queue.iter().map(|t| t.0).collect::<Vec<_>>(), ["bigint", "text", "text"]);
        assert_eq!(queue[1].1, "generated `message-id`: the SQS message id the row came from");
        let objects = types(
            "[source.s3]\nbucket = \"b\"\nqueue = \"q\"\nformat = \"csv\"",
            "l = { generated = \"source-line\" }",
        );
        assert_eq!(objects[0].0, "bigint");
    }

    #[test]
    fn the_ddl_of_an_upsert_into_quoted_names() {
        let p = pipeline(
            r#"
            [sink]
            schema = "Sales"
            table = "contacts"
            mode = "upsert"
            key = ["id"]
            [sink.columns]
            id = "id"
            "Contact Phone Number" = "phone"
            [[tests]]
            name = "one"
            input = '{}'
            expect = '{"id": 7, "Contact Phone Number": "+1 555"}'
            "#,
        );
        assert_eq!(
            create_table(&p, p.sink.as_ref().unwrap()),
            "-- The table of pipeline `p` (pipelines/p.toml), mode upsert.\n\
             -- Each type is a start: a generated column's from what it holds, a field's from\n\
             -- the values the test cases expect in it (integers bigint, other numbers numeric,\n\
             -- true/false boolean, objects and arrays jsonb, anything else text). Narrow them\n\
             -- (varchar(n), date, uuid, NOT NULL) before you apply it.\n\
             CREATE SCHEMA IF NOT EXISTS \"Sales\";\n\
             CREATE TABLE IF NOT EXISTS \"Sales\".contacts (\n    \
                 id bigint,                    -- field `id`: integers in the test cases\n    \
                 \"Contact Phone Number\" text,  -- field `phone`: text in the test cases\n    \
                 PRIMARY KEY (id)              -- upsert: ON CONFLICT on the key\n\
             );\n"
        );
    }

    #[test]
    fn delete_insert_and_file_columns_get_indexes() {
        let p = pipeline(
            r#"
            [sink]
            table = "orders"
            mode = "delete-insert"
            key = ["id"]
            [sink.columns]
            id = "id"
            file = { generated = "source-file" }
            "#,
        );
        let ddl = create_table(&p, p.sink.as_ref().unwrap());
        assert!(ddl.ends_with(
            "CREATE INDEX IF NOT EXISTS orders_id_idx ON public.orders (id);  -- delete-insert deletes the rows of each batch's keys\n\
             CREATE INDEX IF NOT EXISTS orders_file_idx ON public.orders (file);  -- a file's rows are found by it when the file is replaced or gone\n"
        ), "{ddl}");
        assert!(!ddl.contains("CREATE SCHEMA"), "{ddl}");
    }

    #[test]
    fn index_names_stay_within_63_bytes() {
        let long = "ü".repeat(40);
        let name = index_name(&long, &["id".into()]);
        assert!(name.len() <= 63 && name.ends_with("_idx"), "{name}");
    }
}
