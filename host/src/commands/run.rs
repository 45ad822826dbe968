//! `host run`, `host migrate` and `host dead-letters`: the commands that
//! talk to AWS and PostgreSQL.
//!
//! Must not hold run logic: that is `crate::run` and below.

use super::EngineOptions;
use crate::admin::{AdminOptions, Endpoint};
use crate::aws::Aws;
use crate::config;
use crate::run::{RunOptions, Summary};
use crate::status::Board;
use anyhow::Context;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// `DATABASE_URL`, which these commands need.
pub fn database_url() -> anyhow::Result<String> {
    std::env::var("DATABASE_URL")
        .ok()
        .filter(|u| !u.is_empty())
        .context("DATABASE_URL is not set (for example postgres://postgres@127.0.0.1:5432/postgres)")
}

/// What became of each pipeline of a `host run`, in the order given.
pub type Outcomes = Vec<(String, Result<Summary, crate::run::RunError>)>;

/// Runs pipelines until SIGINT/SIGTERM (or, with `--once`, until each
/// source has nothing left), each with its own workers: one that fails
/// stops alone. `paths` are pipeline files or folders of them. With
/// `admin`, the admin endpoint serves them all, and the metrics record.
pub async fn run(
    paths: &[PathBuf],
    once: bool,
    migrate: bool,
    admin: Option<AdminOptions>,
    opts: &EngineOptions,
) -> anyhow::Result<Outcomes> {
    let files = super::pipeline_files(paths)?;
    let pipelines = files.iter().map(|f| config::load(f)).collect::<Result<Vec<_>, _>>()?;
    let drain = drain_bound()?;
    let url = database_url()?;
    let board = Arc::new(Board::default());
    let run_opts = RunOptions { once, idle: std::time::Duration::from_secs(2), drain };
    // The signals are handled from here on, before migrations: as a
    // container's first process (PID 1) the host would otherwise not hear
    // a SIGTERM that comes before its handler is installed.
    let (stop_tx, stop) = tokio::sync::watch::channel(false);
    // When the stop began: the drain's deadline is counted from it.
    let stopped_at = Arc::new(std::sync::OnceLock::new());
    {
        let (board, stopped_at) = (board.clone(), stopped_at.clone());
        tokio::spawn(async move {
            shutdown_signal().await;
            let _ = stopped_at.set(std::time::Instant::now());
            board.drain();
            tracing::info!(
                drain_s = drain.as_secs_f64(),
                "stopping: readiness now fails and receiving stops; batches in work have {:.0} s to finish, then what they hold is released",
                run_opts.grace().as_secs_f64()
            );
            stop_tx.send_replace(true);
            // A second signal ends the process at once; so does the drain's
            // end, before the SIGKILL it was sized to precede.
            tokio::select! {
                () = shutdown_signal() => abandon(),
                () = tokio::time::sleep(drain) => overran(drain),
            }
        });
    }
    // `--once` does not wait for a database that does not answer: it
    // fails now, rather than after its units failed one by one.
    let start = async {
        crate::sink::connect::check(&url, !once).await?;
        if migrate {
            crate::migrate::run(&url).await?;
        }
        anyhow::Ok(())
    };
    let mut stopping = stop.clone();
    tokio::select! {
        started = start => started?,
        _ = stopping.wait_for(|s| *s) => {
            tracing::info!("stopped before the pipelines started");
            return Ok(Vec::new());
        }
    }
    // The recorder first: handles made before it record nothing.
    let metrics = match &admin {
        Some(_) => Some(crate::status::metrics::install().map_err(anyhow::Error::msg)?),
        None => None,
    };
    tracing::info!(
        version = env!("CARGO_PKG_VERSION"),
        pipelines = %pipelines.iter().map(|p| p.name.as_str()).collect::<Vec<_>>().join(", "),
        once,
        "host run starting"
    );
    let panels = pipelines
        .iter()
        .map(|p| board.add(&p.name, p.file.clone()).map_err(anyhow::Error::msg))
        .collect::<anyhow::Result<Vec<_>>>()?;
    let endpoint = match (admin, metrics) {
        (Some(a), Some(m)) => Some(Endpoint::bind(&a, board.clone(), m, &url).await?),
        _ => None,
    };
    let engine = opts.engine()?;
    let aws = Aws::from_env().await;
    engine.remote().share(aws.s3.clone());

    let (ended_tx, ended) = tokio::sync::oneshot::channel::<std::time::Duration>();
    let serving = endpoint.map(|e| {
        tracing::info!(addr = %e.local_addr(), "admin endpoint listening");
        tokio::spawn(e.serve(async move { ended.await.unwrap_or_default() }))
    });
    // One pipeline's error is the command's, printed once by `main`.
    let many = pipelines.len() > 1;
    let tasks: Vec<_> = pipelines
        .into_iter()
        .zip(panels)
        .map(|(pipeline, panel)| {
            let (engine, aws, url, mut stop) = (engine.clone(), aws.clone(), url.clone(), stop.clone());
            let (name, name_of, watched) = (pipeline.name.clone(), pipeline.name.clone(), panel.clone());
            let shutdown = async move {
                let _ = stop.wait_for(|s| *s).await;
            };
            let task = tokio::spawn(async move {
                let result = crate::run::run_on(panel, pipeline, engine, &url, aws, run_opts, shutdown).await;
                if let (true, Err(e)) = (many, &result) {
                    tracing::error!(pipeline = %name, error = %crate::report(e), "the pipeline stopped on an error; the others go on");
                }
                result
            });
            (name_of, watched, task)
        })
        .collect();
    let mut outcomes = Vec::new();
    for (name, panel, task) in tasks {
        let result = match task.await {
            Ok(r) => r,
            Err(e) => {
                let why = format!("the pipeline panicked: {e}");
                panel.set_state(crate::status::State::Failed(why.clone()));
                Err(crate::run::RunError::Stopped(why))
            }
        };
        outcomes.push((name, result));
    }
    // Open admin connections get what is left of the drain (a run that
    // ended without a signal, `--once`, gives them the endpoint's grace).
    let left = stopped_at.get().map_or(crate::admin::SHUTDOWN_GRACE, |at: &std::time::Instant| {
        drain.saturating_sub(at.elapsed()).max(std::time::Duration::from_millis(200))
    });
    let _ = ended_tx.send(left);
    if let Some(s) = serving {
        let _ = s.await;
    }
    Ok(outcomes)
}

/// What `run` and `backfill` need: the pipeline, the database URL (migrated
/// first if asked), the engine and the AWS configuration, whose S3 client
/// the engine shares for plugins kept in S3.
async fn set_up(
    path: &Path,
    migrate: bool,
    opts: &EngineOptions,
) -> anyhow::Result<(config::Pipeline, String, std::sync::Arc<crate::transform::Engine>, Aws)> {
    let pipeline = config::load(path)?;
    let url = database_url()?;
    crate::sink::connect::check(&url, false).await?;
    if migrate {
        crate::migrate::run(&url).await?;
    }
    crate::run::check_table(&pipeline, &url).await?;
    let engine = opts.engine()?;
    let aws = Aws::from_env().await;
    engine.remote().share(aws.s3.clone());
    Ok((pipeline, url, engine, aws))
}

/// Loads every object under `prefix` of the pipeline's bucket, showing
/// progress on stderr: a bar on a terminal, a plain line every 5 s otherwise.
pub async fn backfill(path: &Path, prefix: &str, migrate: bool, opts: &EngineOptions) -> anyhow::Result<Summary> {
    let (pipeline, url, engine, aws) = set_up(path, migrate, opts).await?;
    let bar = Bar::new("backfill");
    let work = crate::run::backfill(pipeline, engine, &url, aws, prefix, |p| bar.show(p));
    let summary = bar.during(work).await;
    bar.finish();
    Ok(summary?)
}

/// Progress on stderr of a command that loads objects (`backfill`,
/// `replay`): on a terminal, a bar that log lines print above
/// (tracing-indicatif); elsewhere, a plain line every 5 s.
pub struct Bar {
    span: tracing::Span,
    terminal: bool,
    last: std::sync::Mutex<Option<std::time::Duration>>,
    last_line: std::sync::Mutex<String>,
}

impl Bar {
    pub fn new(name: &'static str) -> Bar {
        use std::io::IsTerminal;
        use tracing_indicatif::span_ext::IndicatifSpanExt;
        let terminal = std::io::stderr().is_terminal();
        let span = match name {
            "replay" => tracing::info_span!("replay", indicatif.pb_show = tracing::field::Empty),
            _ => tracing::info_span!("backfill", indicatif.pb_show = tracing::field::Empty),
        };
        if terminal {
            span.pb_set_style(&indicatif::ProgressStyle::with_template("{msg}").expect("a valid template"));
        }
        Bar { span, terminal, last: Default::default(), last_line: Default::default() }
    }

    /// Shows `p`: the bar's text, or (not on a terminal) a line if 5 s
    /// went by since the last, or it is the last.
    pub fn show(&self, p: &crate::run::BackfillProgress) {
        use std::io::Write;
        use tracing_indicatif::span_ext::IndicatifSpanExt;
        let line = progress_line(p);
        if self.terminal {
            self.span.pb_set_message(&line);
            *self.last_line.lock().expect("not poisoned") = line;
            return;
        }
        let mut last = self.last.lock().expect("not poisoned");
        let final_line = p.objects_done == p.objects;
        if !final_line && last.is_some_and(|l| p.elapsed < l + std::time::Duration::from_secs(5)) {
            return;
        }
        *last = Some(p.elapsed);
        let _ = writeln!(std::io::stderr().lock(), "{line}");
    }

    /// A line of its own on stderr, above the bar.
    pub fn line(&self, text: &str) {
        match self.terminal {
            true => tracing_indicatif::indicatif_eprintln!("{text}"),
            false => eprintln!("{text}"),
        }
    }

    /// Runs `work` under the bar.
    pub async fn during<T>(&self, work: impl std::future::Future<Output = T>) -> T {
        use tracing::Instrument;
        if self.terminal { work.instrument(self.span.clone()).await } else { work.await }
    }

    /// The bar goes with its span; its last state stays on screen.
    pub fn finish(self) {
        use std::io::Write;
        let terminal = self.terminal;
        let line = std::mem::take(&mut *self.last_line.lock().expect("not poisoned"));
        drop(self.span);
        if terminal {
            let _ = writeln!(std::io::stderr().lock(), "{line}");
        }
    }
}

/// `[#####.....] 3/10 objects, 120000 rows, 12.3/40.0 MB, 40000 rows/s, ETA 12 s`.
pub fn progress_line(p: &crate::run::BackfillProgress) -> String {
    const WIDTH: usize = 20;
    // Every object done is a full bar, even when some were skipped
    // (loaded before: their bytes never read).
    let done = if p.objects > 0 && p.objects_done >= p.objects {
        1.0
    } else if p.total_bytes == 0 {
        if p.objects == 0 { 1.0 } else { p.objects_done as f64 / p.objects as f64 }
    } else {
        (p.bytes as f64 / p.total_bytes as f64).min(1.0)
    };
    let filled = (done * WIDTH as f64).round() as usize;
    let eta = match p.eta() {
        Some(t) if p.objects_done < p.objects => format!(", ETA {} s", t.as_secs()),
        _ => String::new(),
    };
    format!(
        "[{}{}] {}/{} objects, {} rows, {:.1}/{:.1} MB, {:.0} rows/s{eta}",
        "#".repeat(filled),
        ".".repeat(WIDTH - filled),
        p.objects_done,
        p.objects,
        p.rows,
        p.bytes as f64 / 1e6,
        p.total_bytes as f64 / 1e6,
        p.rate()
    )
}

/// How long a stop of `host run` may take (`HOST_DRAIN_S`, whole
/// seconds; default [`crate::flow::DEFAULT_DRAIN`]): set it a few seconds
/// under the time the process is given between SIGTERM and SIGKILL (a
/// Kubernetes pod's `terminationGracePeriodSeconds`).
pub fn drain_bound() -> anyhow::Result<std::time::Duration> {
    let Ok(given) = std::env::var("HOST_DRAIN_S") else {
        return Ok(crate::flow::DEFAULT_DRAIN);
    };
    match given.trim().parse::<u64>() {
        Ok(s) if (2..=3600).contains(&s) => Ok(std::time::Duration::from_secs(s)),
        _ => anyhow::bail!(
            "HOST_DRAIN_S is {given:?}: it must be whole seconds from 2 to 3600, the longest a stop may take \
             (a few seconds under the pod's terminationGracePeriodSeconds)"
        ),
    }
}

/// What every command reads of the environment before it connects:
/// `DATABASE_POOLER` (`transaction` behind PgBouncer's transaction mode,
/// see [`crate::sink::pooler`]; `none` or `session` otherwise) and
/// `HOST_LEASE_S`, how long a lease on shared work lasts unrenewed (whole
/// seconds 3 to 600, default 30): a host killed holding an object or the
/// SFTP pass leaves it to the others after this long.
pub fn database_settings() -> anyhow::Result<()> {
    if let Ok(given) = std::env::var("DATABASE_POOLER") {
        match given.trim() {
            "transaction" => crate::sink::pooler::set(true),
            "" | "none" | "session" => crate::sink::pooler::set(false),
            _ => anyhow::bail!(
                "DATABASE_POOLER is {given:?}: it must be `transaction` (DATABASE_URL goes through a pooler in \
                 transaction mode, such as PgBouncer's pool_mode = transaction), `session` or `none`"
            ),
        }
    }
    let Ok(given) = std::env::var("HOST_LEASE_S") else { return Ok(()) };
    match given.trim().parse::<u64>() {
        Ok(s) if (3..=600).contains(&s) => {
            crate::sink::lease::set_ttl(std::time::Duration::from_secs(s));
            Ok(())
        }
        _ => anyhow::bail!(
            "HOST_LEASE_S is {given:?}: it must be whole seconds from 3 to 600, how long a lease on an object or a pass \
             lasts unrenewed (renewed every third of it)"
        ),
    }
}

/// Resolves on SIGINT or SIGTERM.
pub async fn shutdown_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate()).expect("SIGTERM handler");
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
}

/// A second SIGINT/SIGTERM during a stop: the process ends now.
fn abandon() {
    exit_now(
        "a second signal: exiting at once; batches in work are abandoned uncommitted, and their messages come back after their visibility timeout",
        super::exit::ABANDONED,
    );
}

/// The drain's bound passed with work still not ended: the process ends
/// now (exit 1), before the SIGKILL the bound was set to precede.
fn overran(drain: std::time::Duration) {
    let why = format!(
        "the stop took the whole drain (HOST_DRAIN_S={} s): exiting now; messages still held come back after their visibility timeout",
        drain.as_secs()
    );
    exit_now(&why, super::exit::Exit::Failed.code());
}

/// Ends the process now, saying `why` on stderr.
#[allow(clippy::exit, reason = "a second signal, or the drain's end, asks to end without waiting for any task")]
fn exit_now(why: &str, code: u8) {
    use std::io::Write;
    // Straight to stderr: the log's writer is not flushed by an exit.
    let mut err = std::io::stderr().lock();
    let _ = writeln!(err, "error: {why}");
    let _ = err.flush();
    std::process::exit(code.into());
}

/// Applies the migrations (`migrations/`: the `etl` schema) to
/// `DATABASE_URL`, after checking the pipeline files given.
pub async fn migrate(paths: &[PathBuf]) -> anyhow::Result<Vec<String>> {
    for path in paths {
        config::load(path)?;
    }
    Ok(crate::migrate::run(&database_url()?).await?)
}

#[cfg(test)]
mod tests {
    use super::progress_line;
    use crate::run::BackfillProgress;
    use std::time::Duration;

    #[test]
    fn progress_shows_objects_rows_bytes_rate_and_eta() {
        let p = BackfillProgress {
            objects_done: 1,
            objects: 4,
            rows: 20_000,
            bytes: 10_000_000,
            total_bytes: 40_000_000,
            elapsed: Duration::from_secs(2),
        };
        assert_eq!(
            progress_line(&p),
            "[#####...............] 1/4 objects, 20000 rows, 10.0/40.0 MB, 10000 rows/s, ETA 6 s"
        );
        let done = BackfillProgress { objects_done: 4, bytes: 40_000_000, ..p };
        assert_eq!(progress_line(&done), "[####################] 4/4 objects, 20000 rows, 40.0/40.0 MB, 10000 rows/s");
        // Objects loaded before are skipped unread: done is a full bar.
        let skipped = BackfillProgress { objects_done: 4, bytes: 0, rows: 0, ..p };
        assert!(
            progress_line(&skipped).starts_with("[####################] 4/4 objects"),
            "{}",
            progress_line(&skipped)
        );
    }
}
