//! The `host` command line. Only argument parsing and wiring: the work is in
//! `host::commands`.

use clap::{Args, Parser, Subcommand};
use host::commands::{self, EngineOptions, exit::Exit};
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(Parser)]
#[command(
    name = "host",
    version,
    about = "Moves records from SQS queues, S3 objects and SFTP servers through sandboxed WebAssembly transforms \
             into PostgreSQL",
    after_help = "Exit status: 0 all went well; 1 part of the work failed (a batch or object, a test case, a \
                  replayed dead letter); 2 an error (bad usage, an invalid pipeline or plugin, a missing setting, a \
                  service that refused); 130 a second SIGINT or SIGTERM ended a stop at once."
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

/// Where the commands that run plugins find them and keep them compiled.
/// Not global: the commands that run no plugin do not take them. Flattened
/// last, so that its heading takes no other flag.
#[derive(Args)]
#[command(next_help_heading = "Plugin options")]
struct PluginArgs {
    /// Folder to look for plugins in before the others (repeatable).
    #[arg(long, value_name = "DIR")]
    plugin_path: Vec<PathBuf>,
    /// Folder for compiled plugins, kept across runs [default: $HOST_CACHE_DIR, else ~/.cache/etl-host]
    #[arg(long, value_name = "DIR")]
    cache_dir: Option<PathBuf>,
    /// Compile plugins afresh every time.
    #[arg(long)]
    no_cache: bool,
}

impl PluginArgs {
    fn options(&self) -> EngineOptions {
        EngineOptions {
            plugin_path: self.plugin_path.clone(),
            cache_dir: if self.no_cache {
                None
            } else {
                self.cache_dir.clone().or_else(host::transform::Engine::default_cache_dir)
            },
        }
    }
}

/// The log's format, for the commands that log (all but `plugins new`).
#[derive(Args)]
struct LogArgs {
    /// Log lines as text or as JSON objects [default: text on a terminal, JSON otherwise].
    #[arg(long, value_enum, env = "HOST_LOG_FORMAT")]
    log_format: Option<LogFormat>,
}

#[derive(Subcommand)]
enum Command {
    /// Run a pipeline: consume its source, transform, load into PostgreSQL
    /// (DATABASE_URL), acknowledge after commit. Stops cleanly on SIGINT or
    /// SIGTERM.
    ///
    /// Several pipeline files (or folders of them) run side by side, each
    /// with its own workers; one that fails stops alone.
    Run {
        /// Pipeline files, or folders whose `*.toml` files are pipelines.
        #[arg(required = true, value_name = "PIPELINE")]
        pipelines: Vec<PathBuf>,
        /// Do what there is to do now, then exit, printing a summary: a
        /// queue (SQS messages, or S3 notifications and their objects) is
        /// drained until it stays empty for 2 s; a reconcile pipeline runs
        /// one pass; an SFTP pipeline runs one SFTP pass (copying new and
        /// changed files to the bucket; if it fails, so does the run), then
        /// one reconcile pass.
        #[arg(long)]
        once: bool,
        /// Apply the migrations first.
        #[arg(long)]
        migrate: bool,
        /// Serve the admin endpoint (health, readiness, metrics, runs on
        /// demand, status page) on ADDR (`HOST:PORT`, or a port on
        /// 127.0.0.1) [default when given without a value: 127.0.0.1:9090].
        #[arg(long, value_name = "ADDR", env = "HOST_ADMIN_ADDR", num_args = 0..=1, default_missing_value = "127.0.0.1:9090", value_parser = admin_addr)]
        admin: Option<std::net::SocketAddr>,
        #[command(flatten)]
        log: LogArgs,
        #[command(flatten)]
        plugins: PluginArgs,
    },
    /// Load the objects already under a prefix of an S3 pipeline's bucket
    /// (objects loaded before are skipped), with progress on stderr.
    Backfill {
        /// The pipeline file (an `[source.s3]` pipeline with `bucket`).
        pipeline: PathBuf,
        /// Only keys starting with this [default: the pipeline's prefix].
        #[arg(long)]
        prefix: Option<String>,
        /// Apply the migrations first.
        #[arg(long)]
        migrate: bool,
        #[command(flatten)]
        log: LogArgs,
        #[command(flatten)]
        plugins: PluginArgs,
    },
    /// Apply the schema migrations (the host's tables and the pipelines'
    /// tables) to DATABASE_URL.
    Migrate {
        /// The pipeline file (checked first).
        pipeline: PathBuf,
        #[command(flatten)]
        log: LogArgs,
    },
    /// List or replay the records a pipeline could not load.
    #[command(subcommand)]
    DeadLetters(DeadLetters),
    /// Dry-run a pipeline's transforms on a local file (no AWS, no
    /// database), or run the test cases in the pipeline file.
    ///
    /// The file is read as the pipeline's source reads: an S3 or SFTP
    /// pipeline's format (CSV, JSON lines, a JSON array; gzip by its `.gz`
    /// name or `compression`), a queue's messages one JSON body a line.
    /// Rows go to stdout as JSON lines, rejected records (line number and
    /// reason, never content) to stderr or --rejects, and a summary to
    /// stderr. Exits 1 when a test case fails, 2 when the host fails;
    /// rejected records do not change the exit status.
    Test {
        /// The pipeline file.
        pipeline: PathBuf,
        /// The file to run; without it, the pipeline's [[tests]] run.
        #[arg(long, value_name = "FILE")]
        input: Option<PathBuf>,
        /// Write rejected records here instead of stderr.
        #[arg(long, value_name = "FILE")]
        rejects: Option<PathBuf>,
        #[command(flatten)]
        log: LogArgs,
        #[command(flatten)]
        plugins: PluginArgs,
    },
    /// Validate pipelines offline: parse, check, find, compile and configure
    /// every plugin, and run each pipeline's own [[tests]].
    ///
    /// Exits 2 if a pipeline is not valid, else 1 if a test case fails.
    Check {
        /// Pipeline files, or folders whose `*.toml` files are pipelines.
        #[arg(required = true, value_name = "PIPELINE")]
        pipelines: Vec<PathBuf>,
        #[command(flatten)]
        log: LogArgs,
        #[command(flatten)]
        plugins: PluginArgs,
    },
    /// Plugin files on their own.
    #[command(subcommand)]
    Plugins(Plugins),
    /// Which plugin versions wrote which batches (etl.batches, etl.receipts).
    Lineage {
        /// The pipeline file.
        pipeline: PathBuf,
        /// One version (`sha256:...`): its batches and their message ids.
        #[arg(long)]
        digest: Option<String>,
        /// With --digest: its newest batches, at most this many.
        #[arg(long, default_value_t = 100)]
        limit: i64,
        #[command(flatten)]
        log: LogArgs,
    },
}

#[derive(Subcommand)]
enum Plugins {
    /// The world a `.wasm` implements, its name, version, parameters schema,
    /// digest and size.
    Inspect {
        /// The `.wasm` file.
        file: PathBuf,
        #[command(flatten)]
        log: LogArgs,
        #[command(flatten)]
        plugins: PluginArgs,
    },
    /// Creates a plugin crate in DIR/NAME that builds on the first try: a
    /// minimal transform with a unit test, the wasm target in
    /// `.cargo/config.toml`, and a pipeline with test cases using it.
    New {
        /// Lowercase letters, digits and `-` (`lowercase-locale`).
        name: String,
        /// The folder the crate's folder goes in. In this repository's
        /// `plugins/` the crate is a workspace member.
        #[arg(long, value_name = "DIR", default_value = ".")]
        dir: PathBuf,
        /// Where `plugin-sdk` comes from outside this workspace: its folder
        /// (`plugins/plugin-sdk` of a checkout) or a git URL of the
        /// repository [default: $HOST_PLUGIN_SDK, else the checkout this
        /// binary was built from].
        #[arg(long, value_name = "PATH|URL")]
        sdk: Option<String>,
    },
}

#[derive(Subcommand)]
enum DeadLetters {
    /// List dead letters (id, time, message, stage, step, reason; never the
    /// payload).
    List {
        pipeline: PathBuf,
        #[arg(long, default_value_t = 100)]
        limit: i64,
        /// Include those already replayed.
        #[arg(long)]
        all: bool,
        #[command(flatten)]
        log: LogArgs,
    },
    /// Run dead letters through the pipeline as it is now and load them.
    /// One that fails again stays a dead letter (its attempts counted) and
    /// the exit status is 1; a row of an object version replaced since is
    /// skipped.
    Replay {
        pipeline: PathBuf,
        /// Dead-letter ids; all not yet replayed when none is given.
        #[arg(long = "id")]
        ids: Vec<i64>,
        #[command(flatten)]
        log: LogArgs,
        #[command(flatten)]
        plugins: PluginArgs,
    },
}

#[derive(Clone, Copy, PartialEq, clap::ValueEnum)]
enum LogFormat {
    Text,
    Json,
}

/// `HOST:PORT`, or a bare port on loopback.
fn admin_addr(text: &str) -> Result<std::net::SocketAddr, String> {
    if let Ok(port) = text.parse::<u16>() {
        return Ok(std::net::SocketAddr::from(([127, 0, 0, 1], port)));
    }
    text.parse().map_err(|_| format!("`{text}` is not HOST:PORT (for example 127.0.0.1:9090) or a port"))
}

impl Command {
    /// The `--log-format` of a command that logs.
    fn log(&self) -> Option<&LogArgs> {
        match self {
            Command::Run { log, .. }
            | Command::Backfill { log, .. }
            | Command::Migrate { log, .. }
            | Command::DeadLetters(DeadLetters::List { log, .. } | DeadLetters::Replay { log, .. })
            | Command::Test { log, .. }
            | Command::Check { log, .. }
            | Command::Plugins(Plugins::Inspect { log, .. })
            | Command::Lineage { log, .. } => Some(log),
            Command::Plugins(Plugins::New { .. }) => None,
        }
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let default_filter = match cli.command {
        Command::Run { .. } | Command::Backfill { .. } => host::commands::logs::RUN,
        _ => "warn",
    };
    let format = match cli.command.log().and_then(|l| l.log_format) {
        Some(LogFormat::Json) => host::commands::logs::Format::Json,
        Some(LogFormat::Text) => host::commands::logs::Format::Text,
        None => host::commands::logs::Format::for_stderr(),
    };
    host::commands::logs::init(format, default_filter);
    match run(cli.command) {
        Ok(exit) => exit.into(),
        Err(e) => {
            eprintln!("error: {e:#}");
            Exit::Error.into()
        }
    }
}

fn run(command: Command) -> anyhow::Result<Exit> {
    let runtime = || tokio::runtime::Builder::new_multi_thread().enable_all().build();
    match command {
        Command::Run { pipelines, once, migrate, admin, plugins, .. } => {
            let admin =
                admin.map(|addr| host::admin::AdminOptions { addr, token: std::env::var("HOST_ADMIN_TOKEN").ok() });
            let opts = plugins.options();
            let outcomes = runtime()?.block_on(commands::run::run(&pipelines, once, migrate, admin, &opts))?;
            if outcomes.len() == 1 {
                // One pipeline: its summary, or its error, as ever.
                let (_, result) = outcomes.into_iter().next().expect("one");
                let summary = result?;
                println!("{summary}");
                return Ok(Exit::failed_if(summary.failed_batches > 0));
            }
            let mut exit = Exit::Ok;
            for (name, result) in &outcomes {
                match result {
                    Ok(summary) => {
                        println!("{name}: {summary}");
                        exit = exit.max(Exit::failed_if(summary.failed_batches > 0));
                    }
                    Err(e) => {
                        eprintln!("error: {name}: {e}");
                        exit = Exit::Error;
                    }
                }
            }
            Ok(exit)
        }
        Command::Backfill { pipeline, prefix, migrate, plugins, .. } => {
            let prefix = match prefix {
                Some(p) => p,
                None => match host::config::load(&pipeline)?.source {
                    Some(host::config::Source::S3(s)) => s.prefix,
                    _ => anyhow::bail!("{}: backfill needs a [source.s3] pipeline", pipeline.display()),
                },
            };
            let opts = plugins.options();
            let summary = runtime()?.block_on(commands::run::backfill(&pipeline, &prefix, migrate, &opts))?;
            println!("{summary}");
            Ok(Exit::failed_if(summary.failed_batches > 0))
        }
        Command::Migrate { pipeline, .. } => {
            let applied = runtime()?.block_on(commands::run::migrate(&pipeline))?;
            println!(
                "migrations applied: {}",
                if applied.is_empty() { "none (up to date)".into() } else { applied.join(", ") }
            );
            Ok(Exit::Ok)
        }
        Command::DeadLetters(DeadLetters::List { pipeline, limit, all, .. }) => {
            runtime()?.block_on(commands::dead_letters::list(&pipeline, limit, all))?;
            Ok(Exit::Ok)
        }
        Command::DeadLetters(DeadLetters::Replay { pipeline, ids, plugins, .. }) => {
            let replayed = runtime()?.block_on(commands::dead_letters::replay(&pipeline, &ids, &plugins.options()))?;
            println!("{}", commands::dead_letters::summary(&replayed));
            if replayed.failed > 0 {
                eprintln!("{} dead letters failed again and stay (host dead-letters list)", replayed.failed);
            }
            // Skipped ones can never load: they do not fail a replay.
            Ok(Exit::failed_if(replayed.failed > 0))
        }
        Command::Test { pipeline, input: Some(input), rejects, plugins, .. } => {
            let opts = plugins.options();
            let rows = std::io::BufWriter::new(std::io::stdout().lock());
            let summary = match rejects {
                Some(path) => {
                    let file = std::fs::File::create(&path)
                        .map_err(|e| anyhow::anyhow!("cannot create {}: {e}", path.display()))?;
                    commands::test::run_file(&pipeline, &input, rows, std::io::BufWriter::new(file), &opts)?
                }
                None => commands::test::run_file(&pipeline, &input, rows, std::io::stderr(), &opts)?,
            };
            eprintln!("{summary}");
            Ok(Exit::Ok)
        }
        Command::Test { pipeline, input: None, plugins, .. } => {
            let results = commands::test::run_cases(&pipeline, &plugins.options())?;
            let failed = results.iter().filter(|r| r.failure.is_some()).count();
            for r in &results {
                match &r.failure {
                    None => println!("ok   {}", r.name),
                    Some(why) => println!("FAIL {}: {why}", r.name),
                }
            }
            println!("{} passed, {failed} failed", results.len() - failed);
            Ok(Exit::failed_if(failed > 0))
        }
        Command::Plugins(Plugins::New { name, dir, sdk }) => {
            let made = commands::scaffold::new_plugin(&name, &dir, || commands::scaffold::sdk(sdk.as_deref()))?;
            print!("{}", commands::scaffold::report(&made));
            Ok(Exit::Ok)
        }
        Command::Plugins(Plugins::Inspect { file, plugins, .. }) => {
            print!("{}", commands::plugins::inspect(&file, &plugins.options())?);
            Ok(Exit::Ok)
        }
        Command::Lineage { pipeline, digest, limit, .. } => {
            let url = commands::run::database_url()?;
            runtime()?.block_on(commands::lineage::show(&pipeline, digest.as_deref(), limit, &url))?;
            Ok(Exit::Ok)
        }
        Command::Check { pipelines, plugins, .. } => commands::check::run(&pipelines, &plugins.options()),
    }
}
