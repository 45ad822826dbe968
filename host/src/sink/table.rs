//! A pipeline's table checked against the live database before data flows
//! (`host check --db`, and `host run` as each pipeline starts): what the
//! catalog says of the target (schema, table, columns, the key's unique
//! index, the user's privileges), and which values each column refuses of
//! those the pipeline says it writes (its test cases' expected values, a
//! sample of each generated column), COPYed into a temporary table of the
//! same column types so that PostgreSQL judges each as it would a row's.
//! The verdict and its words are `fit.rs`'s.
//!
//! Must not change the database: the samples go in a transaction that is
//! rolled back.

use super::fit::{self, Example, Found, Live, LiveColumn, Refusal};
use super::sql;
use crate::config::{ColumnSource, Generated, Pipeline, Sink};
use std::path::PathBuf;
use std::time::Duration;

/// How long the whole check may take.
pub const CHECK_WITHIN: Duration = Duration::from_secs(30);

/// A table that fits, and what is worth saying anyway.
#[derive(Debug)]
pub struct Fitted {
    /// `schema.table`, readable.
    pub table: String,
    pub columns: usize,
    pub warnings: Vec<String>,
    /// Columns whose type no test case checks (see [`fit::Report`]).
    pub unchecked: Vec<String>,
}

#[derive(Debug, thiserror::Error)]
pub enum TableError {
    #[error(transparent)]
    Connect(#[from] super::connect::ConnectError),
    #[error("{file}: cannot check table {table}: {}", super::refusal(.source))]
    Database { file: PathBuf, table: String, source: tokio_postgres::Error },
    #[error("{file}: cannot check table {table}: the database did not answer within {} s", CHECK_WITHIN.as_secs())]
    Timeout { file: PathBuf, table: String },
    /// The table does not fit: each problem names the table, the column,
    /// both types and the fix.
    #[error("{}", unfit(.file, .table, .problems))]
    Unfit { file: PathBuf, table: String, problems: Vec<String> },
}

fn unfit(file: &std::path::Path, table: &str, problems: &[String]) -> String {
    match problems {
        [one] => format!("{}: {one}", file.display()),
        _ => {
            let each: Vec<String> = problems.iter().map(|p| format!("\n  {p}")).collect();
            format!("{}: {} problems with table {table}:{}", file.display(), problems.len(), each.concat())
        }
    }
}

/// Checks `sink` (of `pipeline`) against the database at `database_url`.
pub async fn check(database_url: &str, pipeline: &Pipeline, sink: &Sink) -> Result<Fitted, TableError> {
    let mut client = super::connect::connect(database_url).await?;
    check_on(&mut client, pipeline, sink).await
}

/// [`check`] on a connection of the caller's, within [`CHECK_WITHIN`].
pub async fn check_on(
    client: &mut tokio_postgres::Client,
    pipeline: &Pipeline,
    sink: &Sink,
) -> Result<Fitted, TableError> {
    let table = sql::readable_qualified(&sink.schema, &sink.table);
    let (file, name) = (pipeline.file.clone(), table.clone());
    let work = async {
        // In a transaction: its statements reach one server connection
        // through a pooler in transaction mode too.
        let tx = client.transaction().await?;
        let found = describe(&tx, pipeline, sink).await?;
        tx.commit().await?;
        let refusals = match &found {
            Found::Table(live) => try_samples(client, pipeline, sink, live).await?,
            _ => Vec::new(),
        };
        Ok::<_, tokio_postgres::Error>(fit::judge(pipeline, sink, &found, &refusals))
    };
    let report = match tokio::time::timeout(CHECK_WITHIN, work).await {
        Err(_) => return Err(TableError::Timeout { file, table: name }),
        Ok(Err(source)) => return Err(TableError::Database { file, table: name, source }),
        Ok(Ok(report)) => report,
    };
    if !report.problems.is_empty() {
        return Err(TableError::Unfit { file, table: name, problems: report.problems });
    }
    Ok(Fitted { table, columns: sink.columns.len(), warnings: report.warnings, unchecked: report.unchecked })
}

/// The target, its columns and privileges, as the catalog says.
async fn describe(
    client: &tokio_postgres::Transaction<'_>,
    pipeline: &Pipeline,
    sink: &Sink,
) -> Result<Found, tokio_postgres::Error> {
    let Some(target) = client.query_opt(sql::TABLE_OF, &[&sink.schema, &sink.table]).await? else {
        return Ok(Found::NoSchema);
    };
    let (oid, kind, usage): (Option<u32>, Option<String>, bool) = (target.get(0), target.get(1), target.get(2));
    let Some(oid) = oid else { return Ok(Found::NoTable) };
    match kind.as_deref() {
        Some("r" | "p" | "f") => {}
        Some("v") => return Ok(Found::NotATable("view")),
        Some("m") => return Ok(Found::NotATable("materialized view")),
        Some("S") => return Ok(Found::NotATable("sequence")),
        _ => return Ok(Found::NotATable("relation of another kind")),
    }
    let needed = fit::needed(pipeline, sink);
    let key: Vec<String> = match &sink.mode {
        crate::config::MergeMode::Upsert { key } if usage => key.clone(),
        _ => Vec::new(),
    };
    let target_name = sql::qualified(&sink.schema, &sink.table);
    let params: [&(dyn tokio_postgres::types::ToSql + Sync); 1] = [&oid];
    let (columns, rights, unique) =
        tokio::try_join!(client.query(sql::COLUMNS_OF, &params), client.query_one(sql::RIGHTS_ON, &params), async {
            if key.is_empty() {
                return Ok(true);
            }
            Ok(client.query_one(sql::KEY_IS_UNIQUE, &[&target_name, &key]).await?.get::<_, bool>(0))
        },)?;
    let granted = |privilege: &str| match privilege {
        "INSERT" => rights.get::<_, bool>(2),
        "UPDATE" => rights.get(3),
        _ => rights.get(4),
    };
    Ok(Found::Table(Live {
        columns: columns
            .iter()
            .map(|r| LiveColumn {
                name: r.get(0),
                type_name: r.get(1),
                category: r.get::<_, String>(2).chars().next().unwrap_or('X'),
                not_null: r.get(3),
                has_default: r.get(4),
                identity_always: r.get(5),
                generated: r.get(6),
            })
            .collect(),
        key_unique: unique,
        user: rights.get(0),
        database: rights.get(1),
        denied: needed.into_iter().filter(|p| !granted(p)).collect(),
        schema_usage: usage,
        temp: rights.get(5),
    }))
}

/// Tries every sample in a temporary table of the target's column types,
/// rolled back: one COPY of them all, and after a refusal (which names
/// its line, so its column) one more without that column's samples.
async fn try_samples(
    client: &mut tokio_postgres::Client,
    pipeline: &Pipeline,
    sink: &Sink,
    live: &Live,
) -> Result<Vec<Refusal>, tokio_postgres::Error> {
    // Columns PostgreSQL takes values for; a missing or generated one is a
    // problem of its own.
    let columns: Vec<&LiveColumn> =
        sink.columns.iter().filter_map(|c| live.columns.iter().find(|l| l.name == c.name && !l.generated)).collect();
    let mut samples = samples(pipeline, sink, &columns);
    if samples.is_empty() || !live.temp {
        return Ok(Vec::new());
    }
    let tx = client.transaction().await?;
    let types: Vec<(String, String)> = columns.iter().map(|c| (c.name.clone(), c.type_name.clone())).collect();
    tx.batch_execute(&sql::create_probe(&types)).await?;
    let names: Vec<String> = columns.iter().map(|c| c.name.clone()).collect();
    let copy = sql::copy_in(&sql::ident(sql::PROBE), &names, false);
    let mut refusals = Vec::new();
    while !samples.is_empty() {
        tx.batch_execute("SAVEPOINT etl_probe").await?;
        let mut text = Vec::new();
        for s in &samples {
            for i in 0..columns.len() {
                text.extend_from_slice(if i == s.index { &s.text } else { b"\\N" });
                text.push(if i + 1 == columns.len() { b'\n' } else { b'\t' });
            }
        }
        let Err(e) = super::replay::copy_text(&tx, &copy, text).await else { break };
        let refused = refused_line(&e).and_then(|line| samples.get(line - 1)).map(|s| s.index);
        let Some(index) = refused else { return Err(e) };
        let example = samples.iter().find(|s| s.index == index).expect("the refused one").example.clone();
        // The problem names the column already.
        let reason = super::refusal(&e);
        let reason = reason.strip_prefix(&format!("column \"{}\": ", names[index])).unwrap_or(&reason).to_string();
        refusals.push(Refusal { column: names[index].clone(), example, reason });
        samples.retain(|s| s.index != index);
        tx.batch_execute("ROLLBACK TO SAVEPOINT etl_probe").await?;
    }
    tx.rollback().await?;
    Ok(refusals)
}

/// One value to try in column `index` (of the columns tried).
struct Sample {
    index: usize,
    text: Vec<u8>,
    example: Example,
}

/// The non-null values the test cases expect, and a sample of each
/// generated column: the load date and time as the mapping writes them, the
/// shortest `s3://` URI there can be (a bucket name has 3 characters at
/// least), a version id of S3's form, a line and a batch id (`1`), a
/// message id of SQS's form (a UUID) and the pipeline file's revision.
fn samples(pipeline: &Pipeline, sink: &Sink, columns: &[&LiveColumn]) -> Vec<Sample> {
    let load = crate::mapping::LoadTime::now();
    let mut samples = Vec::new();
    for w in super::ddl::written(pipeline, sink) {
        let Some(index) = columns.iter().position(|c| c.name == w.column.name) else { continue };
        match &w.column.source {
            ColumnSource::Field(_) => {
                for (case, value) in w.examples.iter().filter(|(_, v)| !v.is_null()) {
                    let mut text = Vec::new();
                    crate::mapping::copy::write_json(&mut text, value);
                    samples.push(Sample { index, text, example: Example::Case(case.to_string()) });
                }
            }
            ColumnSource::Generated(g) => {
                let text = match g {
                    Generated::LoadDate => load.date.clone(),
                    Generated::LoadTime => load.time.clone(),
                    Generated::SourceFile => "s3://abc/k".to_string(),
                    Generated::SourceVersion => {
                        "3HL4kqtJlcpXroDTDmJ+rmSpXd3dIbrHY+MTRCxf3vjVBH40Nr8X8gdRQBpUMLUo".into()
                    }
                    Generated::SourceLine | Generated::BatchId => "1".into(),
                    Generated::MessageId => "5fea7756-0ea4-451a-a703-a558b933e274".into(),
                    Generated::PipelineRevision => pipeline.revision.clone(),
                };
                samples.push(Sample { index, text: text.into_bytes(), example: Example::Generated(*g) });
            }
        }
    }
    samples
}

/// The line of the COPY a refusal names (`COPY etl_probe, line 3, column x: ...`).
fn refused_line(e: &tokio_postgres::Error) -> Option<usize> {
    let context = e.as_db_error()?.where_()?;
    let rest = &context[context.find(", line ")? + ", line ".len()..];
    let digits: String = rest.chars().take_while(char::is_ascii_digit).collect();
    digits.parse().ok().filter(|&n| n > 0)
}
