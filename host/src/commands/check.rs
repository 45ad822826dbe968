//! `host check`: parse, validate, find, compile and configure every step of
//! each pipeline, and run its own test cases, offline.
//!
//! Must not reach AWS or a database.

use super::exit::Exit;
use super::{EngineOptions, load, pipeline_files};
use crate::transform::short;
use std::path::PathBuf;

/// Checks each pipeline (files, or folders of them); prints one line per
/// pipeline. [`Exit::Error`] if one is not valid (or its chain fails),
/// else [`Exit::Failed`] if a test case of one fails.
pub fn run(paths: &[PathBuf], opts: &EngineOptions) -> anyhow::Result<Exit> {
    let files = pipeline_files(paths)?;
    let engine = opts.engine()?;
    let mut exit = Exit::Ok;
    for path in &files {
        let checked = load(&engine, path).map_err(|e| (Exit::Error, e)).and_then(|(pipeline, mut chain)| {
            let results = crate::cases::run_all(&pipeline, &mut chain)
                .map_err(|e| (Exit::Error, anyhow::anyhow!("{}: {e}", path.display())))?;
            match results.into_iter().find_map(|r| Some((r.name, r.failure?))) {
                Some((name, why)) => {
                    Err((Exit::Failed, anyhow::anyhow!("{}: test case `{name}` fails: {why}", path.display())))
                }
                None => Ok((pipeline, chain)),
            }
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
            Err((worse, e)) => {
                exit = exit.max(worse);
                eprintln!("error: {e:#}");
            }
        }
    }
    Ok(exit)
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
