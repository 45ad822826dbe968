//! `host test`: runs a pipeline's transform chain on a local JSON-lines file,
//! or on the test cases the pipeline carries ([`crate::cases`]). No AWS, no
//! database.
//!
//! Must not reach AWS or a database.

use super::{EngineOptions, load};
use crate::batch::{self, BatchBuilder};
pub use crate::cases::CaseResult;
use crate::cases::{self, rows_json};
use crate::config::Pipeline;
use crate::input::Decoder;
use crate::mapping::LoadTime;
use crate::transform::TransformChain;
use anyhow::Context;
use std::io::{BufRead, Write};
use std::path::Path;

/// Counts of one run.
#[derive(Debug, Default, PartialEq)]
pub struct Summary {
    pub read: usize,
    pub written: usize,
    pub rejected: usize,
    pub dropped: usize,
}

impl std::fmt::Display for Summary {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "read {}, written {}, rejected {}, dropped {}", self.read, self.written, self.rejected, self.dropped)
    }
}

/// Runs `input` (JSON lines) through the pipeline: rows (JSON lines) to
/// `rows`, rejected records (line number and reason) to `rejects`.
pub fn run_file(
    pipeline: &Path,
    input: &Path,
    mut rows: impl Write,
    mut rejects: impl Write,
    opts: &EngineOptions,
) -> anyhow::Result<Summary> {
    let engine = opts.engine()?;
    let (pipeline, mut chain) = load(&engine, pipeline)?;
    let file = std::fs::File::open(input).with_context(|| format!("cannot open {}", input.display()))?;
    let mut reader = std::io::BufReader::new(file);
    let mut run = FileRun { pipeline: &pipeline, decoder: Decoder::new(&pipeline), summary: Summary::default() };
    let mut builder = BatchBuilder::new();
    let mut lines: Vec<usize> = Vec::new();
    let mut buf = Vec::new();
    let mut line_no = 0;
    loop {
        buf.clear();
        let n = reader.read_until(b'\n', &mut buf).with_context(|| format!("cannot read {}", input.display()))?;
        if n == 0 {
            break;
        }
        line_no += 1;
        let body = buf.strip_suffix(b"\n").unwrap_or(&buf);
        let body = body.strip_suffix(b"\r").unwrap_or(body);
        if body.iter().all(u8::is_ascii_whitespace) {
            continue;
        }
        run.summary.read += 1;
        match run.decoder.decode(body, &mut builder) {
            Ok(()) => lines.push(line_no),
            Err(reason) => {
                run.summary.rejected += 1;
                writeln!(rejects, "{}", reject_line(line_no, 0, "input", &reason))?;
            }
        }
        if builder.len() >= pipeline.max_records {
            run.batch(
                &mut chain,
                std::mem::take(&mut builder).finish(),
                &std::mem::take(&mut lines),
                &mut rows,
                &mut rejects,
            )?;
        }
    }
    run.batch(&mut chain, builder.finish(), &lines, &mut rows, &mut rejects)?;
    rows.flush()?;
    rejects.flush()?;
    Ok(run.summary)
}

struct FileRun<'a> {
    pipeline: &'a Pipeline,
    decoder: Decoder,
    summary: Summary,
}

impl FileRun<'_> {
    fn batch(
        &mut self,
        chain: &mut TransformChain,
        batch: batch::Batch,
        lines: &[usize],
        rows: &mut impl Write,
        rejects: &mut impl Write,
    ) -> anyhow::Result<()> {
        if batch.records.is_empty() {
            return Ok(());
        }
        let out = chain.run(&batch)?;
        for r in &out.rejected {
            writeln!(rejects, "{}", reject_line(lines[r.record as usize], r.step, &r.plugin, &r.reason))?;
        }
        self.summary.rejected += out.rejected.len();
        self.summary.dropped += out.dropped.len();
        self.summary.written += out.batch.records.len();
        for row in rows_json(self.pipeline, &out, Some(&LoadTime::now())) {
            writeln!(rows, "{row}")?;
        }
        Ok(())
    }
}

fn reject_line(line: usize, step: usize, plugin: &str, reason: &str) -> String {
    serde_json::json!({"line": line, "step": step, "plugin": plugin, "reason": reason}).to_string()
}

/// Runs the pipeline's own test cases.
pub fn run_cases(pipeline: &Path, opts: &EngineOptions) -> anyhow::Result<Vec<CaseResult>> {
    let engine = opts.engine()?;
    let (pipeline, mut chain) = load(&engine, pipeline)?;
    if pipeline.tests.is_empty() {
        anyhow::bail!("{} has no [[tests]]; give --input FILE to run a file", pipeline.file.display());
    }
    Ok(cases::run_all(&pipeline, &mut chain)?)
}
