//! The `host` command line. Only argument parsing and wiring: the work is in
//! `host::commands`.

use clap::{Parser, Subcommand};
use host::commands::{self, EngineOptions};
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(Parser)]
#[command(
    name = "host",
    version,
    about = "Moves records from SQS and S3 through sandboxed WebAssembly transforms into PostgreSQL"
)]
struct Cli {
    /// Folder for compiled plugins, kept across runs [default: $HOST_CACHE_DIR, else ~/.cache/etl-host]
    #[arg(long, global = true, value_name = "DIR")]
    cache_dir: Option<PathBuf>,
    /// Folder to look for plugins in before the others (repeatable).
    #[arg(long, global = true, value_name = "DIR")]
    plugin_path: Vec<PathBuf>,
    /// Compile plugins afresh every time.
    #[arg(long, global = true)]
    no_cache: bool,
    /// Log lines as text or as JSON objects [default: text on a terminal, JSON otherwise].
    #[arg(long, global = true, value_enum, env = "HOST_LOG_FORMAT")]
    log_format: Option<LogFormat>,
    #[command(subcommand)]
    command: Command,
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
        #[arg(required = true)]
        pipelines: Vec<PathBuf>,
        /// Drain: exit once the queue stays empty for 2 s, printing a summary.
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
    },
    /// Apply the schema migrations (the host's tables and the pipelines'
    /// tables) to DATABASE_URL.
    Migrate {
        /// The pipeline file (checked first).
        pipeline: PathBuf,
    },
    /// The records a pipeline could not load: list, show, discard, export
    /// or replay them.
    #[command(subcommand)]
    DeadLetters(DeadLetters),
    /// Dry-run a pipeline's transforms on a local JSON-lines file (no AWS, no
    /// database), or run the test cases in the pipeline file.
    ///
    /// Rows go to stdout as JSON lines, rejected records (line number and
    /// reason, never content) to stderr or --rejects, and a summary to
    /// stderr. Exits non-zero only when the host fails or a test case fails.
    Test {
        /// The pipeline file.
        pipeline: PathBuf,
        /// JSON lines to run; without it, the pipeline's [[tests]] run.
        #[arg(long, value_name = "FILE")]
        input: Option<PathBuf>,
        /// Write rejected records here instead of stderr.
        #[arg(long, value_name = "FILE")]
        rejects: Option<PathBuf>,
    },
    /// Validate pipelines offline: parse, check, find, compile and configure
    /// every plugin, and run each pipeline's own [[tests]].
    Check {
        /// Pipeline files.
        #[arg(required = true)]
        pipelines: Vec<PathBuf>,
    },
    /// Plugin files on their own.
    #[command(subcommand)]
    Plugins(Plugins),
    /// Which plugin versions wrote which batches (etl.batches, etl.receipts).
    Lineage {
        pipeline: PathBuf,
        /// One version (`sha256:...`): its batches and their message ids.
        #[arg(long)]
        digest: Option<String>,
        #[arg(long, default_value_t = 100)]
        limit: i64,
    },
}

#[derive(Subcommand)]
enum Plugins {
    /// The world a `.wasm` implements, its name, version, parameters schema,
    /// digest and size.
    Inspect { file: PathBuf },
    /// Creates a plugin crate in DIR/NAME that builds on the first try: a
    /// minimal transform with a unit test, the wasm target in
    /// `.cargo/config.toml`, and a pipeline with test cases using it.
    New {
        /// Lowercase letters, digits and `-` (`lowercase-locale`).
        name: String,
        /// The folder the crate's folder goes in [default: .]. In this
        /// repository's `plugins/` the crate is a workspace member.
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
    /// List the open dead letters (neither replayed nor discarded), oldest
    /// first: id, time, stage, step, where from (the message id, or the
    /// object, version and line), reason, and what replays or a discard
    /// did. Never the payload.
    List {
        pipeline: PathBuf,
        #[command(flatten)]
        filters: DeadLetterFilters,
        /// At most this many.
        #[arg(long, value_name = "N", default_value_t = 100)]
        limit: i64,
        /// Include those replayed or discarded.
        #[arg(long)]
        all: bool,
    },
    /// Everything about one dead letter; its payload too with --payload.
    Show {
        pipeline: PathBuf,
        /// The dead letter's id (`list` shows it).
        #[arg(long, value_name = "ID")]
        id: i64,
        /// Also print the payload as it was kept (opened with
        /// HOST_DEAD_LETTER_KEY when sealed), after a blank line: it may
        /// hold PII, and is never logged.
        #[arg(long)]
        payload: bool,
    },
    /// Set dead letters aside for good: they stay in the table (with who
    /// discarded them, and when) but are no longer listed (without --all),
    /// replayed or counted on the status page. Prints how many.
    Discard {
        pipeline: PathBuf,
        /// Dead-letter ids (repeatable); one that is not the pipeline's is
        /// an error and nothing is discarded.
        #[arg(
            long = "id",
            value_name = "ID",
            required_unless_present = "all_matching",
            conflicts_with = "all_matching"
        )]
        ids: Vec<i64>,
        /// Every open dead letter the filters match (at least one filter).
        #[arg(long)]
        all_matching: bool,
        #[command(flatten)]
        filters: DeadLetterFilters,
    },
    /// Every dead letter the filters match as JSON lines on stdout, oldest
    /// first; open ones only unless --all.
    Export {
        pipeline: PathBuf,
        #[command(flatten)]
        filters: DeadLetterFilters,
        /// Include those replayed or discarded.
        #[arg(long)]
        all: bool,
        /// Add each payload (`payload`, or `payload_hex` when not UTF-8),
        /// opened with HOST_DEAD_LETTER_KEY when sealed.
        #[arg(long)]
        payload: bool,
    },
    /// Run dead letters through the pipeline as it is now and load them.
    /// One that fails again stays a dead letter (its attempts counted) and
    /// the exit status is 1; a row of an object version replaced since is
    /// skipped.
    Replay {
        pipeline: PathBuf,
        /// Dead-letter ids (repeatable); all open ones (neither replayed
        /// nor discarded) when none is given.
        #[arg(long = "id", value_name = "ID")]
        ids: Vec<i64>,
    },
}

/// Which dead letters `list`, `discard --all-matching` and `export` mean.
#[derive(clap::Args)]
struct DeadLetterFilters {
    /// Only those of this stage.
    #[arg(long, value_parser = commands::dead_letters::STAGES)]
    stage: Option<String>,
    /// Only those from here: a message id, a source (`sqs:QUEUE`), an
    /// object key prefix (`customers/2024/`), or the start of an object's
    /// `s3://bucket/key#version`.
    #[arg(long)]
    source: Option<String>,
    /// Only those that failed since this time (RFC 3339:
    /// 2024-05-01T10:00:00Z) or this long ago (30m, 2h, 1h30m, 7d).
    #[arg(long, value_name = "TIME|DURATION", value_parser = commands::dead_letters::Since::parse)]
    since: Option<commands::dead_letters::Since>,
    /// Only those whose reason holds this text (in any case).
    #[arg(long, value_name = "TEXT")]
    reason: Option<String>,
}

impl DeadLetterFilters {
    fn filter(self, all: bool) -> commands::dead_letters::Filter {
        let DeadLetterFilters { stage, source, since, reason } = self;
        commands::dead_letters::Filter { stage, source, since, reason, all }
    }
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

fn main() -> ExitCode {
    let cli = Cli::parse();
    let default_filter = match cli.command {
        Command::Run { .. } | Command::Backfill { .. } => host::commands::logs::RUN,
        _ => "warn",
    };
    let format = match cli.log_format {
        Some(LogFormat::Json) => host::commands::logs::Format::Json,
        Some(LogFormat::Text) => host::commands::logs::Format::Text,
        None => host::commands::logs::Format::for_stderr(),
    };
    host::commands::logs::init(format, default_filter);
    let opts = EngineOptions {
        plugin_path: cli.plugin_path.clone(),
        cache_dir: if cli.no_cache {
            None
        } else {
            cli.cache_dir.clone().or_else(host::transform::Engine::default_cache_dir)
        },
    };
    match run(cli.command, &opts) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {}", host::report(e.as_ref()));
            ExitCode::from(2)
        }
    }
}

fn run(command: Command, opts: &EngineOptions) -> anyhow::Result<ExitCode> {
    let runtime = || tokio::runtime::Builder::new_multi_thread().enable_all().build();
    match command {
        Command::Run { pipelines, once, migrate, admin } => {
            let admin =
                admin.map(|addr| host::admin::AdminOptions { addr, token: std::env::var("HOST_ADMIN_TOKEN").ok() });
            let outcomes = runtime()?.block_on(commands::run::run(&pipelines, once, migrate, admin, opts))?;
            if outcomes.len() == 1 {
                // One pipeline: its summary, or its error, as ever.
                let (_, result) = outcomes.into_iter().next().expect("one");
                let summary = result?;
                println!("{summary}");
                return Ok(if summary.failed_batches == 0 { ExitCode::SUCCESS } else { ExitCode::FAILURE });
            }
            let mut code = ExitCode::SUCCESS;
            for (name, result) in &outcomes {
                match result {
                    Ok(summary) => {
                        println!("{name}: {summary}");
                        if summary.failed_batches > 0 && code == ExitCode::SUCCESS {
                            code = ExitCode::FAILURE;
                        }
                    }
                    Err(e) => {
                        eprintln!("error: {name}: {}", host::report(e));
                        code = ExitCode::from(2);
                    }
                }
            }
            Ok(code)
        }
        Command::Backfill { pipeline, prefix, migrate } => {
            let prefix = match prefix {
                Some(p) => p,
                None => match host::config::load(&pipeline)?.source {
                    Some(host::config::Source::S3(s)) => s.prefix,
                    _ => anyhow::bail!("{}: backfill needs a [source.s3] pipeline", pipeline.display()),
                },
            };
            let summary = runtime()?.block_on(commands::run::backfill(&pipeline, &prefix, migrate, opts))?;
            println!("{summary}");
            Ok(if summary.failed_batches == 0 { ExitCode::SUCCESS } else { ExitCode::FAILURE })
        }
        Command::Migrate { pipeline } => {
            let applied = runtime()?.block_on(commands::run::migrate(&pipeline))?;
            println!(
                "migrations applied: {}",
                if applied.is_empty() { "none (up to date)".into() } else { applied.join(", ") }
            );
            Ok(ExitCode::SUCCESS)
        }
        Command::DeadLetters(DeadLetters::List { pipeline, filters, limit, all }) => {
            let url = commands::run::database_url()?;
            let rows =
                runtime()?.block_on(commands::dead_letters::list(&pipeline, &filters.filter(all), limit, &url))?;
            print!("{}", commands::dead_letters::table(&rows));
            Ok(ExitCode::SUCCESS)
        }
        Command::DeadLetters(DeadLetters::Show { pipeline, id, payload }) => {
            let url = commands::run::database_url()?;
            let text = runtime()?.block_on(commands::dead_letters::show(&pipeline, id, payload, &url))?;
            std::io::Write::write_all(&mut std::io::stdout().lock(), &text)?;
            Ok(ExitCode::SUCCESS)
        }
        Command::DeadLetters(DeadLetters::Discard { pipeline, ids, all_matching, filters }) => {
            use commands::dead_letters::Discard;
            let filter = filters.filter(false);
            anyhow::ensure!(
                all_matching || !filter.narrows(),
                "--stage, --source, --since and --reason choose with --all-matching, not with --id"
            );
            let which = if all_matching { Discard::Matching(filter) } else { Discard::Ids(ids) };
            let url = commands::run::database_url()?;
            let who = commands::dead_letters::who();
            let done = runtime()?.block_on(commands::dead_letters::discard(&pipeline, &which, who.as_deref(), &url))?;
            println!("{done}");
            Ok(ExitCode::SUCCESS)
        }
        Command::DeadLetters(DeadLetters::Export { pipeline, filters, all, payload }) => {
            let url = commands::run::database_url()?;
            let out = std::io::BufWriter::new(std::io::stdout().lock());
            let n = runtime()?.block_on(commands::dead_letters::export(
                &pipeline,
                &filters.filter(all),
                payload,
                &url,
                out,
            ))?;
            eprintln!("exported {n} dead letters");
            Ok(ExitCode::SUCCESS)
        }
        Command::DeadLetters(DeadLetters::Replay { pipeline, ids }) => {
            let replayed = runtime()?.block_on(commands::dead_letters::replay(&pipeline, &ids, opts))?;
            println!("{}", commands::dead_letters::summary(&replayed));
            if replayed.failed > 0 {
                eprintln!("{} dead letters failed again and stay (host dead-letters list)", replayed.failed);
            }
            // Skipped ones can never load: they do not fail a replay.
            Ok(if replayed.failed == 0 { ExitCode::SUCCESS } else { ExitCode::FAILURE })
        }
        Command::Test { pipeline, input: Some(input), rejects } => {
            let rows = std::io::BufWriter::new(std::io::stdout().lock());
            let summary = match rejects {
                Some(path) => {
                    let file = std::fs::File::create(&path)
                        .map_err(|e| anyhow::anyhow!("cannot create {}: {e}", path.display()))?;
                    commands::test::run_file(&pipeline, &input, rows, std::io::BufWriter::new(file), opts)?
                }
                None => commands::test::run_file(&pipeline, &input, rows, std::io::stderr(), opts)?,
            };
            eprintln!("{summary}");
            Ok(ExitCode::SUCCESS)
        }
        Command::Test { pipeline, input: None, .. } => {
            let results = commands::test::run_cases(&pipeline, opts)?;
            let failed = results.iter().filter(|r| r.failure.is_some()).count();
            for r in &results {
                match &r.failure {
                    None => println!("ok   {}", r.name),
                    Some(why) => println!("FAIL {}: {why}", r.name),
                }
            }
            println!("{} passed, {failed} failed", results.len() - failed);
            Ok(if failed == 0 { ExitCode::SUCCESS } else { ExitCode::FAILURE })
        }
        Command::Plugins(Plugins::New { name, dir, sdk }) => {
            let made = commands::scaffold::new_plugin(&name, &dir, || commands::scaffold::sdk(sdk.as_deref()))?;
            print!("{}", commands::scaffold::report(&made));
            Ok(ExitCode::SUCCESS)
        }
        Command::Plugins(Plugins::Inspect { file }) => {
            print!("{}", commands::plugins::inspect(&file, opts)?);
            Ok(ExitCode::SUCCESS)
        }
        Command::Lineage { pipeline, digest, limit } => {
            let url = commands::run::database_url()?;
            runtime()?.block_on(commands::lineage::show(&pipeline, digest.as_deref(), limit, &url))?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Check { pipelines } => {
            let failed = commands::check::run(&pipelines, opts)?;
            Ok(if failed == 0 { ExitCode::SUCCESS } else { ExitCode::FAILURE })
        }
    }
}
