//! `host test`: runs a pipeline's transform chain on a local file, or on
//! the test cases the pipeline carries ([`crate::cases`]). No AWS, no
//! database.
//!
//! The file is read as the pipeline's source reads: an S3 (or SFTP)
//! pipeline's objects through `readers::file` with the pipeline's format
//! and compression, a queue's messages as JSON lines, one body a line
//! (gzip'd when the name ends in `.gz`).
//!
//! Must not reach AWS or a database.

use super::{EngineOptions, load};
use crate::batch::{self, BatchBuilder};
pub use crate::cases::CaseResult;
use crate::cases::{self, rows_json};
use crate::config::{Pipeline, S3SourceConfig, Source};
use crate::input::Decoder;
use crate::mapping::RowOrigin;
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

/// Runs `input` through the pipeline, read as its source reads: rows
/// (JSON lines) to `rows`, rejected records (line number and reason) to
/// `rejects`.
pub fn run_file(
    pipeline: &Path,
    input: &Path,
    mut rows: impl Write,
    mut rejects: impl Write,
    opts: &EngineOptions,
) -> anyhow::Result<Summary> {
    let engine = opts.engine()?;
    let (pipeline, mut chain) = load(&engine, pipeline)?;
    let mut run = FileRun { pipeline: &pipeline, decoder: Decoder::new(&pipeline), summary: Summary::default() };
    match &pipeline.source {
        Some(Source::S3(s3)) => run.object(&mut chain, s3, input, &mut rows, &mut rejects)?,
        Some(Source::Sqs(_)) | None => run.messages(&mut chain, input, &mut rows, &mut rejects)?,
    }
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
    /// `input` as message bodies, one a line (blank lines skipped); a
    /// `.gz` file is gunzipped first.
    fn messages(
        &mut self,
        chain: &mut TransformChain,
        input: &Path,
        rows: &mut impl Write,
        rejects: &mut impl Write,
    ) -> anyhow::Result<()> {
        let file = std::fs::File::open(input).with_context(|| format!("cannot open {}", input.display()))?;
        let mut reader: Box<dyn BufRead> = if input.extension().is_some_and(|e| e == "gz") {
            Box::new(std::io::BufReader::new(flate2::read::MultiGzDecoder::new(file)))
        } else {
            Box::new(std::io::BufReader::new(file))
        };
        let mut builder = BatchBuilder::new();
        let mut lines: Vec<u64> = Vec::new();
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
            self.summary.read += 1;
            match self.decoder.decode(body, &mut builder) {
                Ok(()) => lines.push(line_no),
                Err(reason) => {
                    self.summary.rejected += 1;
                    writeln!(rejects, "{}", reject_line(line_no, 0, "input", &reason))?;
                }
            }
            if builder.len() >= self.pipeline.max_records {
                self.batch(chain, std::mem::take(&mut builder).finish(), &std::mem::take(&mut lines), rows, rejects)?;
            }
        }
        self.batch(chain, builder.finish(), &lines, rows, rejects)
    }

    /// `input` as one object of the pipeline's S3 source: its format, and
    /// its compression (`auto`: gzip for a `.gz` name).
    fn object(
        &mut self,
        chain: &mut TransformChain,
        s3: &S3SourceConfig,
        input: &Path,
        rows: &mut impl Write,
        rejects: &mut impl Write,
    ) -> anyhow::Result<()> {
        use readers::file::{FileOptions, FileReader, Item};
        let cannot = |e: &dyn std::fmt::Display| anyhow::anyhow!("cannot read {}: {e}", input.display());
        // The reader parses on a blocking thread of its own; the chain runs
        // here, outside the runtime.
        let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build()?;
        let options = FileOptions {
            format: s3.format.clone(),
            compression: s3.compression,
            start_after_row: 0,
            max_row_bytes: self.pipeline.max_record_bytes,
        };
        let name = input.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
        let mut reader = runtime.block_on(async {
            let file =
                tokio::fs::File::open(input).await.with_context(|| format!("cannot open {}", input.display()))?;
            FileReader::open(file, options, &name, None).await.map_err(|e| cannot(&e))
        })?;
        let columns = reader.columns().to_vec();
        while let Some(chunk) =
            runtime.block_on(reader.next_chunk(self.pipeline.max_records, 8 << 20)).map_err(|e| cannot(&e))?
        {
            let (mut builder, mut lines) = (BatchBuilder::new(), Vec::new());
            for row in chunk.rows {
                self.summary.read += 1;
                let decoded = match row.item {
                    Ok(Item::Json(bytes)) => self.decoder.decode(&bytes, &mut builder),
                    Ok(Item::Fields(fields)) => self.decoder.decode_fields(&columns, &fields, &mut builder),
                    Err(bad) => Err(bad.error.to_string()),
                };
                match decoded {
                    Ok(()) => lines.push(row.line),
                    Err(reason) => {
                        self.summary.rejected += 1;
                        writeln!(rejects, "{}", reject_line(row.line, 0, "input", &reason))?;
                    }
                }
            }
            self.batch(chain, builder.finish(), &lines, rows, rejects)?;
        }
        Ok(())
    }

    fn batch(
        &mut self,
        chain: &mut TransformChain,
        batch: batch::Batch,
        lines: &[u64],
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
        // Generated columns as a run fills them, from the file: its lines
        // for `source-line`; no batch, no message id.
        let load = crate::flow::load_time(chain);
        let origin = |r: u32| RowOrigin { message_id: None, line: Some(lines[r as usize]) };
        for row in rows_json(self.pipeline, &out, Some(&load), origin) {
            writeln!(rows, "{row}")?;
        }
        Ok(())
    }
}

fn reject_line(line: u64, step: usize, plugin: &str, reason: &str) -> String {
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
