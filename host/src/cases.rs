//! A pipeline's own test cases (`[[tests]]`): an input record and what the
//! chain must make of it (a row, a rejection, a drop). Run by `host test`,
//! `host check`, and the reload watcher before it takes a new version.
//! Offline: no AWS, no database.
//!
//! Must not touch AWS or the database.

use crate::batch::{BatchBuilder, json};
use crate::config::{Pipeline, TestCase, TestExpect};
use crate::input::Decoder;
use crate::mapping::{LoadTime, Mapping, RowOrigin};
use crate::transform::{ChainOutput, StepError, TransformChain};

/// The result of one test case.
pub struct CaseResult {
    pub name: String,
    /// `None` when it passed.
    pub failure: Option<String>,
}

/// Runs every case of `pipeline` on `chain`; only host failures are `Err`.
pub fn run_all(pipeline: &Pipeline, chain: &mut TransformChain) -> Result<Vec<CaseResult>, StepError> {
    let decoder = Decoder::new(pipeline);
    pipeline.tests.iter().map(|case| run(pipeline, &decoder, chain, case)).collect()
}

/// The first case of `pipeline` that fails on `chain`, as "test case `name`
/// fails: why".
pub fn first_failure(pipeline: &Pipeline, chain: &mut TransformChain) -> Result<(), String> {
    let decoder = Decoder::new(pipeline);
    for case in &pipeline.tests {
        let result = run(pipeline, &decoder, chain, case).map_err(|e| e.to_string())?;
        if let Some(failure) = result.failure {
            return Err(format!("test case `{}` fails: {failure}", result.name));
        }
    }
    Ok(())
}

/// Runs one case; only host failures are `Err`.
pub fn run(
    pipeline: &Pipeline,
    decoder: &Decoder,
    chain: &mut TransformChain,
    case: &TestCase,
) -> Result<CaseResult, StepError> {
    let mut b = BatchBuilder::new();
    let got = match decoder.decode(case.input.to_string().as_bytes(), &mut b) {
        Err(reason) => Got::Rejected(format!("input: {reason}")),
        Ok(()) => {
            let out = chain.run(&b.finish())?;
            if let Some(r) = out.rejected.first() {
                Got::Rejected(r.to_string())
            } else if out.batch.records.is_empty() {
                Got::Dropped
            } else {
                let rows = rows_json(pipeline, &out, None, |_| RowOrigin::default());
                Got::Rows(rows.iter().map(|r| serde_json::from_str(r).expect("rows are JSON")).collect())
            }
        }
    };
    let failure = match (&case.expect, &got) {
        (TestExpect::Row(want), Got::Rows(rows)) if rows.len() == 1 && rows[0].as_object() == Some(want) => None,
        (TestExpect::Reject(want), Got::Rejected(reason)) if reason.contains(want.as_str()) => None,
        (TestExpect::Dropped, Got::Dropped) => None,
        (expect, got) => Some(format!("expected {}, got {}", describe_expect(expect), got.describe())),
    };
    Ok(CaseResult { name: case.name.clone(), failure })
}

/// The output rows as JSON: mapped onto the sink's columns when the pipeline
/// has a sink, the records as they are otherwise. `origin(r)`: where input
/// record `r` came from.
pub fn rows_json<'o>(
    pipeline: &Pipeline,
    out: &ChainOutput,
    load: Option<&LoadTime>,
    origin: impl Fn(u32) -> RowOrigin<'o>,
) -> Vec<String> {
    match &pipeline.sink {
        Some(sink) => {
            let mapping = Mapping::new(sink);
            let rows = mapping.rows(&out.batch);
            out.batch.iter().zip(&out.origin).map(|(cells, &r)| rows.json(cells, load, origin(r))).collect()
        }
        None => out.batch.iter().map(|cells| json::record_json(&out.batch, cells)).collect(),
    }
}

enum Got {
    Rows(Vec<serde_json::Value>),
    Rejected(String),
    Dropped,
}

impl Got {
    fn describe(&self) -> String {
        match self {
            Got::Rows(rows) => format!("rows {}", serde_json::Value::Array(rows.clone())),
            Got::Rejected(r) => format!("rejection \"{r}\""),
            Got::Dropped => "a drop".into(),
        }
    }
}

fn describe_expect(e: &TestExpect) -> String {
    match e {
        TestExpect::Row(row) => format!("row {}", serde_json::Value::Object(row.clone())),
        TestExpect::Reject(r) => format!("a rejection containing \"{r}\""),
        TestExpect::Dropped => "a drop".into(),
    }
}
