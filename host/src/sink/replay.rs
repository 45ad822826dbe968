//! The database side of `host replay`: a candidate chain's rows of one
//! object set beside the rows production holds for it (`--diff`), or
//! written into a side table (`--into`). The candidate's rows are COPYed
//! into a temporary table of the target's column types (as
//! [`super::table`]'s probe is), so PostgreSQL compares typed values
//! (`1.0` and `1.00` in a numeric column are the same) with `IS DISTINCT
//! FROM`, column by column, rows matched by the sink's key, else by the
//! object's file and line (a `source-line` column), else by their order.
//!
//! Must not read objects or run plugins (the S3 source's replay does),
//! and holds no values: counts, column names and line labels only.

use super::sql::{self, ident};
use crate::diff::{SAMPLE, Summary};
use futures_util::SinkExt;

/// The temporary table of the candidate's rows: `_line` (the row's line in
/// its file), `_n` (its place among the rows that line gave), then the
/// sink's columns.
pub const CANDIDATE: &str = "etl_replay";
/// The candidate's rejected lines (their unit ids, `line N`).
pub const CANDIDATE_DEAD: &str = "etl_replay_dead";

/// How the candidate's rows meet production's.
#[derive(Debug, Clone, Copy)]
pub enum By<'a> {
    /// By the sink's key; production's rows of the object found by its
    /// file column where there is one, else by the candidate's keys (then
    /// rows production has and the candidate lacks cannot be seen).
    Key { key: &'a [String], file: Option<&'a str> },
    /// By the object's file column and each row's line (its `line` column,
    /// else the order the table holds the rows in).
    Position { file: &'a str, line: Option<&'a str> },
}

/// Both temporary tables, dropped at the transaction's end; `columns` are
/// (name, type as `format_type` wrote it).
pub fn create_candidate(columns: &[(String, String)]) -> String {
    let defs: String = columns.iter().map(|(name, ty)| format!(", {} {ty}", ident(name))).collect();
    format!(
        "CREATE TEMP TABLE {} (\"_line\" bigint, \"_n\" integer{defs}) ON COMMIT DROP; \
         CREATE TEMP TABLE {} (\"_id\" text) ON COMMIT DROP",
        ident(CANDIDATE),
        ident(CANDIDATE_DEAD)
    )
}

/// COPY into the candidate table (`_line`, `_n`, then `columns`).
pub fn copy_candidate(columns: &[String]) -> String {
    let mut all = vec!["_line".to_string(), "_n".to_string()];
    all.extend_from_slice(columns);
    sql::copy_in(&ident(CANDIDATE), &all, false)
}

/// The comparison of the candidate's rows with `target`'s, field columns
/// `fields`. Parameters: `$1` the pipeline, `$2` the object's lineage
/// source (`s3://bucket/key#version`, as its dead letters name it), and
/// `$3` its `s3://bucket/key` where `by` has a file column. One row:
/// same, changed, added, dropped, rejected by production only, by the
/// candidate only, per field the rows changed there, and the first
/// [`SAMPLE`] lines that differ.
pub fn compare(target: &str, fields: &[String], by: By<'_>) -> String {
    let f = |prefix: &str| fields.iter().map(|c| format!(", {prefix}{}", ident(c))).collect::<String>();
    let (p, c, on) = match by {
        By::Key { key, file } => {
            let keys = key.iter().map(|k| ident(k)).collect::<Vec<_>>().join(", ");
            let owned = match file {
                Some(file) => format!("{} = $3", ident(file)),
                None => format!("({keys}) IN (SELECT {keys} FROM {})", ident(CANDIDATE)),
            };
            let p = format!("SELECT true AS _p{} FROM {target} WHERE {owned}", f(""));
            let c = format!(
                "SELECT DISTINCT ON ({keys}) true AS _c, \"_line\"{} FROM {} ORDER BY {keys}, \"_line\" DESC, \"_n\" DESC",
                f(""),
                ident(CANDIDATE)
            );
            let on = key.iter().map(|k| format!("p.{0} = c.{0}", ident(k))).collect::<Vec<_>>().join(" AND ");
            (p, c, on)
        }
        By::Position { file, line } => {
            let (p, on) = match line {
                Some(line) => (
                    format!(
                        "SELECT true AS _p, {0} AS _line, row_number() OVER (PARTITION BY {0} ORDER BY ctid) AS _rn{1} \
                         FROM {target} WHERE {2} = $3",
                        ident(line),
                        f(""),
                        ident(file)
                    ),
                    "p._line = c._line AND p._rn = c._rn".to_string(),
                ),
                None => (
                    format!(
                        "SELECT true AS _p, row_number() OVER (ORDER BY ctid) AS _rn{} FROM {target} WHERE {} = $3",
                        f(""),
                        ident(file)
                    ),
                    "p._rn = c._rn".to_string(),
                ),
            };
            let partition = if line.is_some() { "PARTITION BY \"_line\" " } else { "" };
            let c = format!(
                "SELECT true AS _c, \"_line\", row_number() OVER ({partition}ORDER BY \"_line\", \"_n\") AS _rn{} FROM {}",
                f(""),
                ident(CANDIDATE)
            );
            (p, c, on)
        }
    };
    let differs: Vec<String> =
        fields.iter().enumerate().map(|(i, c)| format!("p.{0} IS DISTINCT FROM c.{0} AS _d{i}", ident(c))).collect();
    let any = if fields.is_empty() {
        "false".to_string()
    } else {
        (0..fields.len()).map(|i| format!("_d{i}")).collect::<Vec<_>>().join(" OR ")
    };
    let per_column: String =
        (0..fields.len()).map(|i| format!(", count(*) FILTER (WHERE _p AND _c AND _d{i})")).collect();
    let differs = if differs.is_empty() { String::new() } else { format!(", {}", differs.join(", ")) };
    format!(
        "WITH pd AS (SELECT DISTINCT message_id AS _id FROM etl.dead_letters \
         WHERE pipeline = $1 AND source = $2 AND replayed_at IS NULL), \
         cd AS (SELECT DISTINCT \"_id\" FROM {dead}), \
         p AS ({p}), c AS ({c}), \
         j AS (SELECT p._p, c._c, c._line{differs} FROM p FULL JOIN c ON {on}) \
         SELECT count(*) FILTER (WHERE _p AND _c AND NOT ({any})), \
         count(*) FILTER (WHERE _p AND _c AND ({any})), \
         count(*) FILTER (WHERE _p IS NULL AND 'line ' || _line NOT IN (SELECT _id FROM pd)), \
         count(*) FILTER (WHERE _c IS NULL), \
         (SELECT count(*) FROM pd WHERE _id NOT IN (SELECT _id FROM cd)), \
         (SELECT count(*) FROM cd WHERE _id NOT IN (SELECT _id FROM pd)){per_column}, \
         (array_agg(DISTINCT _line) FILTER (WHERE _c AND (_p IS NULL OR {any})))[1:{SAMPLE}] \
         FROM j",
        dead = ident(CANDIDATE_DEAD),
    )
}

/// Runs [`compare`] in `tx`, whose candidate tables hold one object's
/// rows; `label` names a line in the sample.
pub async fn run_compare(
    tx: &tokio_postgres::Transaction<'_>,
    statement: &str,
    params: &[&(dyn tokio_postgres::types::ToSql + Sync)],
    fields: &[String],
    records: u64,
    label: impl Fn(i64) -> String,
) -> Result<Summary, tokio_postgres::Error> {
    let row = tx.query_one(statement, params).await?;
    let n = |i: usize| row.get::<_, i64>(i) as u64;
    let mut summary = Summary {
        records,
        same: n(0),
        changed: n(1),
        added: n(2),
        dropped: n(3),
        rejected_by_production_only: n(4),
        rejected_by_candidate_only: n(5),
        ..Summary::default()
    };
    for (i, column) in fields.iter().enumerate() {
        if n(6 + i) > 0 {
            summary.columns.insert(column.clone(), n(6 + i));
        }
    }
    let lines: Option<Vec<Option<i64>>> = row.get(6 + fields.len());
    summary.sample = lines.unwrap_or_default().into_iter().flatten().map(label).collect();
    Ok(summary)
}

/// Sends COPY `text` with `statement`.
pub async fn copy_text(
    tx: &tokio_postgres::Transaction<'_>,
    statement: &str,
    text: Vec<u8>,
) -> Result<(), tokio_postgres::Error> {
    let sink = tx.copy_in(statement).await?;
    futures_util::pin_mut!(sink);
    sink.send(bytes::Bytes::from(text)).await?;
    sink.finish().await.map(|_| ())
}

/// A side table's columns that do not fit the target's, as (column, what
/// is wrong) from both tables' (name, type) lists: every sink column must
/// be there with the target's type.
pub fn misfits(wanted: &[(String, String)], side: &[(String, String)]) -> Vec<String> {
    let mut problems = Vec::new();
    for (name, ty) in wanted {
        match side.iter().find(|(n, _)| n == name) {
            None => problems.push(format!("no column {}", sql::readable(name))),
            Some((_, t)) if t != ty => {
                problems.push(format!("column {} is {t}, the sink's table has {ty}", sql::readable(name)))
            }
            Some(_) => {}
        }
    }
    problems
}

/// `CREATE TABLE side (LIKE target)`: the target's columns, types, NOT
/// NULLs and nothing else (no keys, indexes or defaults).
pub fn create_side(side: &str, target: &str) -> String {
    format!("CREATE TABLE {side} (LIKE {target})")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_candidate_table_has_the_targets_types_and_dies_with_its_transaction() {
        let columns = vec![("id".to_string(), "integer".to_string()), ("Name".to_string(), "text".to_string())];
        assert_eq!(
            create_candidate(&columns),
            "CREATE TEMP TABLE \"etl_replay\" (\"_line\" bigint, \"_n\" integer, \"id\" integer, \"Name\" text) \
             ON COMMIT DROP; CREATE TEMP TABLE \"etl_replay_dead\" (\"_id\" text) ON COMMIT DROP"
        );
        assert_eq!(
            copy_candidate(&["id".into()]),
            sql::copy_in("\"etl_replay\"", &["_line".into(), "_n".into(), "id".into()], false)
        );
    }

    #[test]
    fn compares_by_key_by_line_or_by_order() {
        let fields = vec!["name".to_string()];
        let key = vec!["id".to_string()];
        let by_key = compare("t", &fields, By::Key { key: &key, file: Some("file") });
        assert!(by_key.contains("SELECT true AS _p, \"name\" FROM t WHERE \"file\" = $3"), "{by_key}");
        assert!(by_key.contains("FULL JOIN c ON p.\"id\" = c.\"id\""), "{by_key}");
        assert!(by_key.contains("p.\"name\" IS DISTINCT FROM c.\"name\" AS _d0"), "{by_key}");
        let no_file = compare("t", &fields, By::Key { key: &key, file: None });
        assert!(no_file.contains("WHERE (\"id\") IN (SELECT \"id\" FROM \"etl_replay\")"), "{no_file}");
        assert!(!no_file.contains("$3"), "{no_file}");
        let by_order = compare("t", &fields, By::Position { file: "file", line: None });
        assert!(by_order.contains("row_number() OVER (ORDER BY ctid) AS _rn, \"name\" FROM t"), "{by_order}");
        assert!(by_order.contains("FULL JOIN c ON p._rn = c._rn"), "{by_order}");
        let by_line = compare("t", &fields, By::Position { file: "file", line: Some("line") });
        assert!(by_line.contains("PARTITION BY \"line\" ORDER BY ctid"), "{by_line}");
        assert!(by_line.contains("ON p._line = c._line AND p._rn = c._rn"), "{by_line}");
        assert!(by_line.contains("(WHERE _p AND _c AND _d0)"), "{by_line}");
        assert!(by_line.ends_with(&format!("[1:{SAMPLE}] FROM j")), "{by_line}");
    }

    #[test]
    fn a_side_table_must_have_the_sinks_columns_and_types() {
        let wanted = vec![("id".to_string(), "integer".to_string()), ("name".to_string(), "text".to_string())];
        assert!(misfits(&wanted, &wanted).is_empty());
        let side = vec![("id".to_string(), "bigint".to_string()), ("other".to_string(), "text".to_string())];
        assert_eq!(
            misfits(&wanted, &side),
            vec!["column id is bigint, the sink's table has integer".to_string(), "no column name".to_string()]
        );
    }
}
