//! Shared helpers: one engine per test binary (components compile once),
//! pipelines from TOML text, batches from JSON lines.

use host::batch::{self, Batch, BatchBuilder};
use host::config::{self, Pipeline};
use host::input::Decoder;
use host::transform::{ChainOutput, Engine, TransformChain};
use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};

pub const PLUGIN_DIR: &str = env!("PLUGIN_DIR");
pub const TEST_PLUGIN_DIR: &str = env!("TEST_PLUGIN_DIR");

/// The workspace root.
pub fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap().to_path_buf()
}

pub fn cache_dir() -> PathBuf {
    Path::new(PLUGIN_DIR).parent().unwrap().join("test-cache")
}

pub fn plugin_path() -> Vec<PathBuf> {
    vec![PathBuf::from(PLUGIN_DIR), PathBuf::from(TEST_PLUGIN_DIR)]
}

pub fn engine() -> Arc<Engine> {
    static ENGINE: OnceLock<Arc<Engine>> = OnceLock::new();
    ENGINE.get_or_init(|| Arc::new(Engine::new(Some(cache_dir()), plugin_path()).expect("engine"))).clone()
}

/// A pipeline from TOML text (named `test.toml` in errors).
pub fn pipeline(body: &str) -> Pipeline {
    let path = Path::new("test.toml");
    let parsed = config::parse_str(path, body, |_| None).expect("pipeline parses");
    config::validate(path, parsed).expect("pipeline is valid")
}

pub fn chain(body: &str) -> TransformChain {
    TransformChain::build(&engine(), &pipeline(body)).expect("chain builds")
}

/// A batch of JSON lines (each must decode).
pub fn batch(lines: &[String]) -> Batch {
    let mut b = BatchBuilder::new();
    for l in lines {
        batch::json::decode(l.as_bytes(), &mut b).expect("test input decodes");
    }
    b.finish()
}

/// One line per input record, in input order: `{"emit": [records]}`,
/// `{"reject": "step N (`plugin`): reason"}`, or `{"drop": true}`.
pub fn results(n: usize, out: &ChainOutput) -> Vec<serde_json::Value> {
    let mut results = vec![serde_json::json!({"emit": []}); n];
    for (cells, &from) in out.batch.iter().zip(&out.origin) {
        let row: serde_json::Value = serde_json::from_str(&batch::json::record_json(&out.batch, cells)).unwrap();
        results[from as usize]["emit"].as_array_mut().unwrap().push(row);
    }
    for r in &out.rejected {
        results[r.record as usize] = serde_json::json!({"reject": r.to_string()});
    }
    for &d in &out.dropped {
        results[d as usize] = serde_json::json!({"drop": true});
    }
    results
}

/// Decodes lines the way a pipeline does; returns the batch and, for lines
/// refused at the input, their reasons by line index.
pub fn decode(p: &Pipeline, lines: &[String]) -> (Batch, Vec<usize>, Vec<(usize, String)>) {
    let d = Decoder::new(p);
    let mut b = BatchBuilder::new();
    let (mut kept, mut refused) = (Vec::new(), Vec::new());
    for (i, l) in lines.iter().enumerate() {
        match d.decode(l.as_bytes(), &mut b) {
            Ok(()) => kept.push(i),
            Err(e) => refused.push((i, e)),
        }
    }
    (b.finish(), kept, refused)
}

/// A command's stdout, after asserting that it succeeded (else its output
/// is the panic message).
pub fn ok(what: &str, out: &std::process::Output) -> String {
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(out.status.success(), "{what}: {stdout}{}", String::from_utf8_lossy(&out.stderr));
    stdout
}

/// Replaces `from` (which must be there) by `to` in `file`.
pub fn edit(file: &Path, from: &str, to: &str) {
    let text = std::fs::read_to_string(file).unwrap();
    assert!(text.contains(from), "{} lacks {from}", file.display());
    std::fs::write(file, text.replace(from, to)).unwrap();
}
