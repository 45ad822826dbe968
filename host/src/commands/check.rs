//! `host check`: parse, validate, find, compile and configure every step of
//! each pipeline, and run its own test cases, offline; with `--db`, then
//! compare each pipeline's sink with its table in `DATABASE_URL`
//! (`sink::table`).
//!
//! Must not reach AWS, nor a database unless asked (`--db`).

use super::exit::Exit;
use super::{EngineOptions, load, pipeline_files};
use crate::transform::short;
use std::path::PathBuf;

/// The candidate in shadow, if the pipeline names one: built as
/// production is; a test case it fails is a warning (a promotion would
/// be refused until the case is changed).
fn candidate(
    engine: &std::sync::Arc<crate::transform::Engine>,
    pipeline: &crate::config::Pipeline,
) -> anyhow::Result<()> {
    let Some(candidate) = pipeline.candidate() else { return Ok(()) };
    let mut chain = crate::transform::TransformChain::build(engine, &candidate)
        .map_err(|e| anyhow::anyhow!("the candidate in shadow: {e}"))?;
    if let Err(why) = crate::cases::first_failure(&candidate, &mut chain) {
        eprintln!(
            "warning: {}: the candidate in shadow fails a test case, so promoting it would be refused: {why}",
            pipeline.file.display()
        );
    }
    Ok(())
}

/// Checks each pipeline (files, or folders of them); prints one line per
/// pipeline, and with `db` one more for its table. [`Exit::Error`] if one is
/// not valid (or its chain fails), else [`Exit::Failed`] if a test case of
/// one fails or its table does not fit its sink.
pub fn run(paths: &[PathBuf], db: bool, opts: &EngineOptions) -> anyhow::Result<Exit> {
    let files = pipeline_files(paths)?;
    let engine = opts.engine()?;
    let mut exit = Exit::Ok;
    let mut fine = Vec::new();
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
        let checked = checked.and_then(|(pipeline, chain)| {
            candidate(&engine, &pipeline).map_err(|e| (Exit::Error, e))?;
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
                fine.push(pipeline);
            }
            Err((worse, e)) => {
                exit = exit.max(worse);
                eprintln!("error: {}", crate::report(e.as_ref()));
            }
        }
    }
    if db && !fine.is_empty() {
        let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
        if runtime.block_on(tables(&fine))? > 0 {
            exit = exit.max(Exit::Failed);
        }
    }
    Ok(exit)
}

/// `--db`: each pipeline's table against its sink, on one connection.
/// Returns how many do not fit.
async fn tables(pipelines: &[crate::config::Pipeline]) -> anyhow::Result<usize> {
    let url = super::run::database_url()?;
    let mut client = crate::sink::connect::connect(&url).await?;
    let mut failed = 0;
    for pipeline in pipelines {
        let file = pipeline.file.display();
        let Some(sink) = &pipeline.sink else {
            println!("ok: {file}: no [sink], no table to compare");
            continue;
        };
        match crate::sink::table::check_on(&mut client, pipeline, sink).await {
            Ok(fitted) => {
                for warning in &fitted.warnings {
                    eprintln!("warning: {file}: {warning}");
                }
                let unchecked = match fitted.unchecked.as_slice() {
                    [] => String::new(),
                    some => format!("; no test case gives a value to {}, whose types are unchecked", some.join(", ")),
                };
                println!("ok: {file}: table {} fits the sink's {} columns{unchecked}", fitted.table, fitted.columns);
            }
            Err(e @ crate::sink::table::TableError::Unfit { .. }) => {
                failed += 1;
                eprintln!("error: {e}");
            }
            Err(e) => return Err(e.into()),
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

/// `host sink ddl`: the CREATE TABLE of the pipeline's sink.
pub fn ddl(path: &std::path::Path) -> anyhow::Result<String> {
    let pipeline = crate::config::load(path)?;
    let Some(sink) = &pipeline.sink else { anyhow::bail!("{}: has no [sink]", path.display()) };
    Ok(crate::sink::ddl::create_table(&pipeline, sink))
}
