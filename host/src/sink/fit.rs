//! Whether a live table fits a pipeline's sink: what the pipeline writes
//! (its `[sink]`, the values its test cases expect, its generated columns)
//! against what the catalog says of the table. Problems are certain (every
//! row, or a row the pipeline's own test case produces, would be refused)
//! and stop the pipeline; warnings are only suspicious. Each names the
//! table, the column, both types and the fix.
//!
//! Pure: `table.rs` reads the catalog and asks PostgreSQL which samples
//! each column refuses.

use super::ddl::{Kind, Written, csv_rows, generated_holds, mode_name, names, written};
use super::sql::{readable, readable_qualified};
use crate::config::{ColumnSource, Generated, MergeMode, Pipeline, Sink, Source};

/// What the catalog says of the sink's target.
#[derive(Debug, Clone)]
pub enum Found {
    NoSchema,
    NoTable,
    /// Something else by that name: a view, a sequence...
    NotATable(&'static str),
    Table(Live),
}

/// A table as the catalog describes it, and what the session's user may
/// do with it.
#[derive(Debug, Clone, Default)]
pub struct Live {
    pub columns: Vec<LiveColumn>,
    /// Upsert: whether a unique index `ON CONFLICT (key)` can use exists.
    pub key_unique: bool,
    pub user: String,
    pub database: String,
    /// Privileges the sink needs and the user lacks on the table (`INSERT`...).
    pub denied: Vec<&'static str>,
    /// Whether the user may use the table's schema.
    pub schema_usage: bool,
    /// Whether the user may create temporary tables (the staging table).
    pub temp: bool,
}

#[derive(Debug, Clone, Default)]
pub struct LiveColumn {
    pub name: String,
    /// As `format_type` writes it: `character varying(32)`.
    pub type_name: String,
    /// `pg_type.typcategory`: `N` numeric, `B` boolean, `S` string...
    pub category: char,
    pub not_null: bool,
    /// A default, or an identity.
    pub has_default: bool,
    pub identity_always: bool,
    /// `GENERATED ALWAYS AS (...) STORED`.
    pub generated: bool,
}

/// A value the pipeline writes into a column, as a sample to try.
#[derive(Debug, Clone, PartialEq)]
pub enum Example {
    /// The value test case NAME expects.
    Case(String),
    Generated(Generated),
}

impl Example {
    /// Whether the table refusing it is certain to refuse real rows: a test
    /// case's value is one the pipeline says it writes, and a generated
    /// date, time, file URI, line, batch id or revision is of the form every
    /// one has; a version id or a message id is only a typical one (S3's
    /// and SQS's differ from other stores' and queues').
    pub fn certain(&self) -> bool {
        !matches!(self, Example::Generated(Generated::SourceVersion | Generated::MessageId))
    }
}

/// A column that refused a sample.
#[derive(Debug, Clone)]
pub struct Refusal {
    pub column: String,
    pub example: Example,
    /// PostgreSQL's words, without the value (`sink::refusal`).
    pub reason: String,
}

/// The verdict.
#[derive(Debug, Default, PartialEq)]
pub struct Report {
    pub problems: Vec<String>,
    pub warnings: Vec<String>,
    /// Field columns no test case gives a value: their type is not checked.
    pub unchecked: Vec<String>,
}

/// Judges `found` against `sink` (of `pipeline`); `refusals` are what
/// PostgreSQL said of the samples (see `table.rs`).
pub fn judge(pipeline: &Pipeline, sink: &Sink, found: &Found, refusals: &[Refusal]) -> Report {
    let t = readable_qualified(&sink.schema, &sink.table);
    let start = format!("`host sink ddl {}` prints a CREATE TABLE to start from", pipeline.file.display());
    let only = |p: String| Report { problems: vec![p], ..Report::default() };
    let live = match found {
        Found::NoSchema => {
            let s = readable(&sink.schema);
            return only(format!("schema {s} does not exist, so neither does table {t}: create both ({start})"));
        }
        Found::NoTable => return only(format!("table {t} does not exist: create it ({start})")),
        Found::NotATable(kind) => {
            return only(format!("{t} is a {kind}, not a table: the host loads rows into a table; name one in [sink]"));
        }
        Found::Table(live) => live,
    };
    let mut report = Report::default();
    for w in written(pipeline, sink) {
        let column = live.columns.iter().find(|c| c.name == w.column.name);
        match column {
            None => report.problems.push(format!(
                "table {t} has no column {c}, which [sink.columns] fills ({origin}); add it: ALTER TABLE {t} ADD \
                 COLUMN {c} {ty}",
                c = readable(&w.column.name),
                origin = w.origin(),
                ty = w.pg_type(),
            )),
            Some(live_column) => column_fit(&mut report, pipeline, sink, &t, &w, live_column, refusals),
        }
    }
    for c in &live.columns {
        let filled = sink.columns.iter().any(|s| s.name == c.name);
        if !filled && c.not_null && !c.has_default && !c.generated {
            let c = readable(&c.name);
            report.problems.push(format!(
                "column {c} of {t} is NOT NULL without a default, and the pipeline does not fill it: every row would \
                 be refused; fill it in [sink.columns], or give it a default (ALTER TABLE {t} ALTER COLUMN {c} SET \
                 DEFAULT ...), or let it be null (ALTER TABLE {t} ALTER COLUMN {c} DROP NOT NULL)"
            ));
        }
    }
    if let MergeMode::Upsert { key } = &sink.mode
        && !live.key_unique
    {
        let k = names(key);
        report.problems.push(format!(
            "mode upsert needs a unique index on exactly ({k}) of {t} (valid, without a WHERE, not deferrable: the \
             one ON CONFLICT ({k}) uses), and there is none; add one: CREATE UNIQUE INDEX ON {t} ({k})"
        ));
    }
    privileges(&mut report, sink, &t, live);
    report
}

/// One column the table has: generated or identity, NOT NULL against the
/// test cases, the samples it refused, text into a number.
fn column_fit(
    report: &mut Report,
    pipeline: &Pipeline,
    sink: &Sink,
    t: &str,
    w: &Written,
    live: &LiveColumn,
    refusals: &[Refusal],
) {
    let c = readable(&live.name);
    if live.generated {
        report.problems.push(format!(
            "column {c} of {t} is generated by PostgreSQL (GENERATED ALWAYS AS ...), which takes no values for it: \
             take it out of [sink.columns]"
        ));
        return;
    }
    if live.identity_always && sink.mode != MergeMode::Append {
        report.problems.push(format!(
            "column {c} of {t} is GENERATED ALWAYS AS IDENTITY, and mode {mode} writes it with INSERT ... SELECT, \
             which PostgreSQL refuses for it; take it out of [sink.columns], or let the pipeline's values in: ALTER \
             TABLE {t} ALTER COLUMN {c} SET GENERATED BY DEFAULT",
            mode = mode_name(&sink.mode)
        ));
    }
    if live.not_null
        && let Some((case, _)) = w.examples.iter().find(|(_, v)| v.is_null())
    {
        report.problems.push(format!(
            "column {c} of {t} is NOT NULL, and test case \"{case}\" expects null in it ({origin}): such rows would \
             be refused; let it be null (ALTER TABLE {t} ALTER COLUMN {c} DROP NOT NULL), or give the field a value \
             in a step",
            origin = w.origin()
        ));
    }
    if let Some(r) = refusals.iter().find(|r| r.column == live.name) {
        let (what, fix) = (written_as(w, &r.example), w.pg_type());
        let text = format!(
            "column {c} of {t} is {ty}, which refuses what the pipeline writes there: {what} (PostgreSQL: {why}); \
             change the column (ALTER TABLE {t} ALTER COLUMN {c} TYPE {fix}) or what [sink.columns] puts in it",
            ty = live.type_name,
            why = r.reason,
        );
        if r.example.certain() {
            report.problems.push(text)
        } else {
            report.warnings.push(text)
        }
        return;
    }
    let text_case = w.examples.iter().find(|(_, v)| Kind::of(v) == Some(Kind::Text));
    if let Some((case, _)) = text_case
        && matches!(live.category, 'N' | 'B')
        && !csv_rows(pipeline)
    {
        report.warnings.push(format!(
            "column {c} of {t} is {ty}, and the pipeline writes text there (field `{f}` in test case \"{case}\"): \
             PostgreSQL parses each value, and a row whose value does not parse becomes a dead letter; make it {ty} \
             in a step (`convert`) to be sure",
            ty = live.type_name,
            f = field(w),
        ));
    }
    if matches!(w.column.source, ColumnSource::Field(_)) && w.kinds().is_empty() {
        report.unchecked.push(readable(&live.name));
    }
}

/// What was refused, for a person: "field `x`, an integer in test case
/// \"y\"", "generated `load-time`, the time of the load (UTC)".
fn written_as(w: &Written, example: &Example) -> String {
    match example {
        Example::Case(case) => {
            let kind = w.examples.iter().find(|(name, _)| name == case).and_then(|(_, v)| Kind::of(v));
            let kind = kind.map_or("a value", Kind::singular);
            format!("field `{}`, {kind} in test case \"{case}\"", field(w))
        }
        Example::Generated(g) => format!("generated `{}`, {}", g.name(), generated_holds(*g)),
    }
}

fn field<'a>(w: &'a Written) -> &'a str {
    match &w.column.source {
        ColumnSource::Field(f) => f,
        ColumnSource::Generated(g) => g.name(),
    }
}

/// What the sink needs the user to be allowed: INSERT (UPDATE for upsert,
/// DELETE for delete-insert and file columns), and temporary tables for the
/// staging table of upsert and delete-insert.
fn privileges(report: &mut Report, sink: &Sink, t: &str, live: &Live) {
    let user = readable(&live.user);
    if !live.schema_usage {
        let s = readable(&sink.schema);
        report.problems.push(format!(
            "the database user {user} lacks USAGE on schema {s}, which every statement on {t} needs; GRANT USAGE ON \
             SCHEMA {s} TO {user}"
        ));
    }
    if !live.denied.is_empty() {
        let what = live.denied.join(", ");
        report.problems.push(format!(
            "the database user {user} lacks {what} on {t}, which the pipeline needs (mode {mode}); GRANT {what} ON \
             {t} TO {user}",
            mode = mode_name(&sink.mode)
        ));
    }
    if !live.temp && sink.mode != MergeMode::Append {
        let db = readable(&live.database);
        report.problems.push(format!(
            "the database user {user} may not create temporary tables in database {db}, and mode {mode} stages its \
             rows in one; GRANT TEMPORARY ON DATABASE {db} TO {user}",
            mode = mode_name(&sink.mode)
        ));
    }
}

/// The privileges the sink needs on its table.
pub fn needed(pipeline: &Pipeline, sink: &Sink) -> Vec<&'static str> {
    let mut needed = vec!["INSERT"];
    if matches!(sink.mode, MergeMode::Upsert { .. }) {
        needed.push("UPDATE");
    }
    let replaces_files = matches!(pipeline.source, Some(Source::S3(_)))
        && sink.columns.iter().any(|c| c.source == ColumnSource::Generated(Generated::SourceFile));
    if matches!(sink.mode, MergeMode::DeleteInsert { .. }) || replaces_files {
        needed.push("DELETE");
    }
    needed
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pipeline(text: &str) -> Pipeline {
        let path = std::path::Path::new("pipelines/p.toml");
        crate::config::validate(path, crate::config::parse_str(path, text, |_| None).unwrap()).unwrap()
    }

    const LOGINS: &str = r#"
        [sink]
        table = "logins"
        [sink.columns]
        user_id = "user_id"
        app_version = "app_version"
        day = { generated = "load-date" }
        [[tests]]
        name = "one"
        input = '{}'
        expect = '{"user_id": "u1", "app_version": 2}'
    "#;

    fn col(name: &str, type_name: &str, category: char) -> LiveColumn {
        LiveColumn { name: name.into(), type_name: type_name.into(), category, ..LiveColumn::default() }
    }

    fn table(columns: Vec<LiveColumn>) -> Found {
        Found::Table(Live {
            columns,
            key_unique: true,
            temp: true,
            schema_usage: true,
            user: "etl".into(),
            ..Live::default()
        })
    }

    fn logins_table() -> Vec<LiveColumn> {
        vec![col("user_id", "text", 'S'), col("app_version", "integer", 'N'), col("day", "date", 'D')]
    }

    #[test]
    fn a_table_that_fits_has_no_problems() {
        let p = pipeline(LOGINS);
        let r = judge(&p, p.sink.as_ref().unwrap(), &table(logins_table()), &[]);
        assert_eq!(r, Report::default());
    }

    #[test]
    fn a_missing_table_or_schema_says_how_to_make_one() {
        let p = pipeline(LOGINS);
        let sink = p.sink.as_ref().unwrap();
        assert_eq!(
            judge(&p, sink, &Found::NoTable, &[]).problems,
            ["table public.logins does not exist: create it (`host sink ddl pipelines/p.toml` prints a CREATE TABLE \
              to start from)"]
        );
        assert!(judge(&p, sink, &Found::NoSchema, &[]).problems[0].starts_with("schema public does not exist"));
    }

    #[test]
    fn a_missing_column_is_added_with_the_pipelines_type() {
        let p = pipeline(LOGINS);
        let mut columns = logins_table();
        columns.remove(1);
        let r = judge(&p, p.sink.as_ref().unwrap(), &table(columns), &[]);
        assert_eq!(
            r.problems,
            ["table public.logins has no column app_version, which [sink.columns] fills (field `app_version`: \
              integers in the test cases); add it: ALTER TABLE public.logins ADD COLUMN app_version bigint"]
        );
    }

    #[test]
    fn a_refused_sample_names_both_types_and_the_fix() {
        let p = pipeline(LOGINS);
        let mut columns = logins_table();
        columns[1] = col("app_version", "uuid", 'U');
        let refused = Refusal {
            column: "app_version".into(),
            example: Example::Case("one".into()),
            reason: "invalid input syntax for type uuid: \"…\" (SQLSTATE 22P02)".into(),
        };
        let r = judge(&p, p.sink.as_ref().unwrap(), &table(columns), &[refused]);
        assert_eq!(
            r.problems,
            ["column app_version of public.logins is uuid, which refuses what the pipeline writes there: field \
              `app_version`, an integer in test case \"one\" (PostgreSQL: invalid input syntax for type uuid: \
              \"…\" (SQLSTATE 22P02)); change the column (ALTER TABLE public.logins ALTER COLUMN app_version TYPE \
              bigint) or what [sink.columns] puts in it"]
        );
    }

    #[test]
    fn a_typical_version_id_refused_is_only_a_warning() {
        let p = pipeline(
            r#"
            [sink]
            table = "t"
            columns = { v = { generated = "source-version" } }
            "#,
        );
        let refused = Refusal {
            column: "v".into(),
            example: Example::Generated(Generated::SourceVersion),
            reason: "invalid input syntax for type integer: \"…\" (SQLSTATE 22P02)".into(),
        };
        let r = judge(&p, p.sink.as_ref().unwrap(), &table(vec![col("v", "integer", 'N')]), &[refused]);
        assert!(r.problems.is_empty(), "{r:?}");
        assert_eq!(r.warnings.len(), 1, "{r:?}");
    }

    #[test]
    fn text_into_a_number_is_suspicious_unless_the_records_are_csv_rows() {
        let text = LOGINS.replace("\"app_version\": 2", "\"app_version\": \"2\"");
        let p = pipeline(&text);
        let r = judge(&p, p.sink.as_ref().unwrap(), &table(logins_table()), &[]);
        assert!(r.problems.is_empty(), "{r:?}");
        assert!(
            r.warnings[0].starts_with("column app_version of public.logins is integer, and the pipeline writes text")
        );
        let csv = format!(
            "[source.s3]\nmode = \"reconcile\"\nbucket = \"b\"\nformat = \"csv\"\n{}",
            text.replace("day = { generated = \"load-date\" }", "day = { generated = \"source-file\" }")
        );
        let p = pipeline(&csv);
        let mut columns = logins_table();
        columns[2] = col("day", "text", 'S');
        let r = judge(&p, p.sink.as_ref().unwrap(), &table(columns), &[]);
        assert_eq!(r, Report::default());
    }

    #[test]
    fn not_null_columns_the_pipeline_leaves_empty_are_problems() {
        let p = pipeline(&LOGINS.replace("\"user_id\": \"u1\"", "\"user_id\": null"));
        let mut columns = logins_table();
        columns[0].not_null = true;
        columns.push(LiveColumn { not_null: true, ..col("region", "text", 'S') });
        columns.push(LiveColumn { not_null: true, has_default: true, ..col("made", "timestamptz", 'D') });
        let r = judge(&p, p.sink.as_ref().unwrap(), &table(columns), &[]);
        assert_eq!(r.problems.len(), 2, "{r:?}");
        assert!(r.problems[0].contains("test case \"one\" expects null in it"), "{r:?}");
        assert!(r.problems[1].starts_with("column region of public.logins is NOT NULL without a default"), "{r:?}");
    }

    #[test]
    fn an_upsert_needs_its_unique_index_and_its_privileges() {
        let p = pipeline(
            r#"
            [sink]
            table = "Items"
            mode = "upsert"
            key = ["Item Id"]
            columns = { "Item Id" = "id" }
            "#,
        );
        let found = Found::Table(Live {
            columns: vec![col("Item Id", "integer", 'N')],
            key_unique: false,
            temp: false,
            user: "etl".into(),
            database: "shop".into(),
            denied: vec!["UPDATE"],
            schema_usage: true,
        });
        let r = judge(&p, p.sink.as_ref().unwrap(), &found, &[]);
        assert_eq!(
            r.problems,
            [
                "mode upsert needs a unique index on exactly (\"Item Id\") of public.\"Items\" (valid, without a \
                 WHERE, not deferrable: the one ON CONFLICT (\"Item Id\") uses), and there is none; add one: CREATE \
                 UNIQUE INDEX ON public.\"Items\" (\"Item Id\")",
                "the database user etl lacks UPDATE on public.\"Items\", which the pipeline needs (mode upsert); \
                 GRANT UPDATE ON public.\"Items\" TO etl",
                "the database user etl may not create temporary tables in database shop, and mode upsert stages its \
                 rows in one; GRANT TEMPORARY ON DATABASE shop TO etl",
            ]
        );
        assert_eq!(r.unchecked, ["\"Item Id\""]);
    }
}
