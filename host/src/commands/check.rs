//! `host check`: parse, validate, find, compile and configure every step of
//! each pipeline, offline.

use super::{EngineOptions, load};
use std::path::PathBuf;

/// Checks each pipeline; prints one line per pipeline. Returns how many
/// failed.
pub fn run(paths: &[PathBuf], opts: &EngineOptions) -> anyhow::Result<usize> {
    let engine = opts.engine()?;
    let mut failed = 0;
    for path in paths {
        match load(&engine, path) {
            Ok((_, chain)) => {
                let steps: Vec<String> = chain.plugins().map(|p| format!("{} {}", p.name, short(&p.digest))).collect();
                if steps.is_empty() {
                    println!("ok: {} (no transform steps)", path.display());
                } else {
                    println!("ok: {} ({} steps: {})", path.display(), steps.len(), steps.join(", "));
                }
            }
            Err(e) => {
                failed += 1;
                eprintln!("error: {e:#}");
            }
        }
    }
    Ok(failed)
}

/// `sha256:` and the first 12 hex digits.
pub fn short(digest: &str) -> &str {
    &digest[..digest.len().min(19)]
}
