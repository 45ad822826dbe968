//! `host check`: parse, validate, find, compile and configure every step of
//! each pipeline, and run its own test cases, offline.
//!
//! Must not reach AWS or a database.

use super::{EngineOptions, load};
use crate::transform::short;
use std::path::PathBuf;

/// Checks each pipeline; prints one line per pipeline. Returns how many
/// failed.
pub fn run(paths: &[PathBuf], opts: &EngineOptions) -> anyhow::Result<usize> {
    let engine = opts.engine()?;
    let mut failed = 0;
    for path in paths {
        let checked = load(&engine, path).and_then(|(pipeline, mut chain)| {
            crate::cases::first_failure(&pipeline, &mut chain)
                .map_err(|why| anyhow::anyhow!("{}: {why}", path.display()))?;
            Ok((pipeline, chain))
        });
        match checked {
            Ok((pipeline, chain)) => {
                for warning in warnings(&pipeline) {
                    eprintln!("warning: {}: {warning}", path.display());
                }
                let steps: Vec<String> = chain.plugins().map(|p| format!("{} {}", p.name, short(&p.digest))).collect();
                let cases = match pipeline.tests.len() {
                    0 => String::new(),
                    1 => "; 1 test case passes".to_string(),
                    n => format!("; {n} test cases pass"),
                };
                if steps.is_empty() {
                    println!("ok: {} (no transform steps{cases})", path.display());
                } else {
                    println!("ok: {} ({} steps: {}{cases})", path.display(), steps.len(), steps.join(", "));
                }
            }
            Err(e) => {
                failed += 1;
                eprintln!("error: {}", crate::report(e.as_ref()));
            }
        }
    }
    Ok(failed)
}

/// What is allowed but unsafe in a pipeline.
fn warnings(pipeline: &crate::config::Pipeline) -> Vec<String> {
    let mut warnings = Vec::new();
    if let Some(crate::config::Source::S3(s3)) = &pipeline.source
        && let Some(sftp) = &s3.sftp
        && sftp.host_key == crate::config::HostKeyCheck::Off
    {
        warnings.push(format!(
            "[source.sftp] check_host_key = false: any server answering at {}:{} is trusted with the login and \
             the files; set known_hosts or host_key_fingerprint",
            sftp.host, sftp.port
        ));
    }
    warnings
}
