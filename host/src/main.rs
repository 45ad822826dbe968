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
    /// Read a pipeline's stored objects again through a chosen version of
    /// its chain, each as the version the pipeline loaded (else the
    /// current one), with progress on stderr.
    ///
    /// `--diff` compares the rows with those the table holds for the
    /// objects (by the sink's key, else by file and line) and prints the
    /// counts, the columns that change and a sample of lines, never
    /// values; `--into` writes the rows to a side table; `--apply` puts
    /// them in place of the objects' rows, once per chain, resuming after
    /// a crash, with lineage.
    #[command(group(clap::ArgGroup::new("action").required(true).args(["diff", "into", "apply"])))]
    Replay {
        /// The pipeline file (an `[source.s3]` pipeline).
        pipeline: PathBuf,
        /// The objects: `s3://BUCKET/PREFIX`, within the pipeline's bucket and prefix.
        #[arg(long, value_name = "S3_URI")]
        from: String,
        /// Only objects written since this time (RFC 3339, or a duration before now: 2h, 7d).
        #[arg(long, value_name = "TIME|DURATION", value_parser = commands::dead_letters::Since::parse)]
        since: Option<commands::dead_letters::Since>,
        /// Only objects written before this time (RFC 3339, or a duration before now).
        #[arg(long, value_name = "TIME|DURATION", value_parser = commands::dead_letters::Since::parse)]
        until: Option<commands::dead_letters::Since>,
        /// Step N runs this `.wasm` (a path, or `sha256:...` found among the
        /// plugin folders' files) instead of production's (repeatable).
        #[arg(long = "step", value_name = "N=PATH|DIGEST")]
        steps: Vec<host::transform::choice::StepChoice>,
        /// Compare with the rows the table holds; write nothing.
        #[arg(long)]
        diff: bool,
        /// Write the rows to this table ([SCHEMA.]TABLE; made like the sink's table if missing).
        #[arg(long, value_name = "TABLE")]
        into: Option<String>,
        /// Replace the objects' rows in the table.
        #[arg(long)]
        apply: bool,
        #[command(flatten)]
        log: LogArgs,
        #[command(flatten)]
        plugins: PluginArgs,
    },
    /// Create or update the host's own tables (schema `etl`: the message
    /// ledger, lineage, dead letters, file progress) in DATABASE_URL.
    ///
    /// It creates no pipeline's table: `host sink ddl PIPELINE` prints a
    /// CREATE TABLE to start from, and `host check --db PIPELINE` compares
    /// a pipeline with its table.
    Migrate {
        /// Pipeline files, checked offline first (parsed and validated).
        #[arg(value_name = "PIPELINE")]
        pipelines: Vec<PathBuf>,
        #[command(flatten)]
        log: LogArgs,
    },
    /// A pipeline's table.
    #[command(subcommand)]
    Sink(SinkCommand),
    /// List or replay the records a pipeline could not load.
    #[command(subcommand)]
    DeadLetters(DeadLetters),
    /// A candidate version running in shadow beside production: what it
    /// would change, and promoting or discarding it.
    #[command(subcommand)]
    Shadow(ShadowCommand),
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
    /// every plugin, and run each pipeline's own [[tests]]; with --db,
    /// then compare each pipeline's sink with its table.
    ///
    /// Exits 2 if a pipeline is not valid, else 1 if a test case fails or a
    /// table does not fit its sink.
    Check {
        /// Pipeline files, or folders whose `*.toml` files are pipelines.
        #[arg(required = true, value_name = "PIPELINE")]
        pipelines: Vec<PathBuf>,
        /// Then compare each pipeline's [sink] with its table in
        /// DATABASE_URL: the schema, the table and every column exist, each
        /// column takes what the pipeline writes there (its test cases'
        /// values, its generated values), NOT NULL columns are filled, the
        /// upsert key has its unique index, the user has the privileges.
        /// `host run` makes the same check as each pipeline starts.
        #[arg(long)]
        db: bool,
        #[command(flatten)]
        log: LogArgs,
        #[command(flatten)]
        plugins: PluginArgs,
    },
    /// Plugin files on their own.
    #[command(subcommand)]
    Plugins(Plugins),
    /// Which versions (pipeline revision, plugins, params) wrote which batches.
    Lineage {
        /// The pipeline file.
        pipeline: PathBuf,
        /// A plugin digest, params digest or pipeline revision (`sha256:...`,
        /// or its start): the batches it wrote and their message ids.
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
enum ShadowCommand {
    /// Each candidate that ran in shadow (newest first): rows same,
    /// changed (by column), added, dropped, rejected by one side only,
    /// a sample of records that differ, CPU time of both sides, and every
    /// decision with who made it and when.
    Report {
        /// The pipeline file.
        pipeline: PathBuf,
        #[command(flatten)]
        log: LogArgs,
    },
    /// Swap the running candidate in (its pipeline's [[tests]] must pass),
    /// between batches, without a restart: recorded in the database, carried
    /// out by every running host of the pipeline. Exits 1 if it was refused.
    Promote {
        /// The pipeline file.
        pipeline: PathBuf,
        #[command(flatten)]
        decision: DecisionArgs,
    },
    /// Stop running the candidate in shadow (production is untouched).
    Discard {
        /// The pipeline file.
        pipeline: PathBuf,
        #[command(flatten)]
        decision: DecisionArgs,
    },
}

#[derive(Args)]
struct DecisionArgs {
    /// The candidate (its fingerprint, or the start of it) [default: the one running].
    #[arg(long, value_name = "SHA256")]
    candidate: Option<String>,
    /// Seconds to wait for a running host to carry the decision out.
    #[arg(long, value_name = "SECONDS", default_value_t = 30)]
    wait: u64,
    #[command(flatten)]
    log: LogArgs,
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
    /// Creates a plugin project in DIR/NAME that builds and tests on the
    /// first try: a minimal transform with its tests, and a pipeline with
    /// test cases using it. Rust: a crate (the wasm target in
    /// `.cargo/config.toml`); Python: a module, pytest tests, the SDK and
    /// componentize-py pinned; js: an ES module, `node --test` tests, the
    /// SDK and componentize-js pinned.
    New {
        /// Lowercase letters, digits and `-` (`lowercase-locale`).
        name: String,
        /// The folder the project's folder goes in. In this repository's
        /// `plugins/` a Rust crate is a workspace member.
        #[arg(long, value_name = "DIR", default_value = ".")]
        dir: PathBuf,
        /// The plugin's language.
        #[arg(long, value_enum, default_value = "rust")]
        lang: NewLang,
        /// Rust only: where `plugin-sdk` comes from outside this workspace:
        /// its folder (`plugins/plugin-sdk` of a checkout) or a git URL of
        /// the repository [default: $HOST_PLUGIN_SDK, else the checkout
        /// this binary was built from].
        #[arg(long, value_name = "PATH|URL")]
        sdk: Option<String>,
    },
}

#[derive(Subcommand)]
enum SinkCommand {
    /// Print a CREATE TABLE for the pipeline's [sink] (and the indexes its
    /// mode wants), to start from: apply it with
    /// `psql "$DATABASE_URL" -f FILE`.
    ///
    /// Types: a generated column's from what it holds (load-date date,
    /// load-time timestamptz, source-file and source-version text); a
    /// field's from the values the pipeline's [[tests]] expect in it
    /// (integers bigint, other numbers numeric, true/false boolean, objects
    /// and arrays jsonb; text, a mix or no value text). An upsert's key
    /// becomes the primary key.
    Ddl { pipeline: PathBuf },
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
        #[command(flatten)]
        log: LogArgs,
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
        #[command(flatten)]
        log: LogArgs,
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
        #[command(flatten)]
        log: LogArgs,
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
        #[command(flatten)]
        log: LogArgs,
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
        /// Step N runs this `.wasm` (a path, or `sha256:...` found among the
        /// plugin folders' files) instead of the pipeline's (repeatable).
        #[arg(long = "step", value_name = "N=PATH|DIGEST")]
        steps: Vec<host::transform::choice::StepChoice>,
        #[command(flatten)]
        log: LogArgs,
        #[command(flatten)]
        plugins: PluginArgs,
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
enum NewLang {
    Rust,
    Python,
    Js,
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
            | Command::Replay { log, .. }
            | Command::Migrate { log, .. }
            | Command::DeadLetters(
                DeadLetters::List { log, .. }
                | DeadLetters::Show { log, .. }
                | DeadLetters::Discard { log, .. }
                | DeadLetters::Export { log, .. }
                | DeadLetters::Replay { log, .. },
            )
            | Command::Test { log, .. }
            | Command::Check { log, .. }
            | Command::Plugins(Plugins::Inspect { log, .. })
            | Command::Lineage { log, .. }
            | Command::Shadow(
                ShadowCommand::Report { log, .. }
                | ShadowCommand::Promote { decision: DecisionArgs { log, .. }, .. }
                | ShadowCommand::Discard { decision: DecisionArgs { log, .. }, .. },
            ) => Some(log),
            Command::Plugins(Plugins::New { .. }) | Command::Sink(SinkCommand::Ddl { .. }) => None,
        }
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let default_filter = match cli.command {
        Command::Run { .. } | Command::Backfill { .. } | Command::Replay { .. } => host::commands::logs::RUN,
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
            eprintln!("error: {}", host::report(e.as_ref()));
            Exit::Error.into()
        }
    }
}

fn run(command: Command) -> anyhow::Result<Exit> {
    let runtime = || tokio::runtime::Builder::new_multi_thread().enable_all().build();
    commands::run::database_settings()?;
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
                        eprintln!("error: {name}: {}", host::report(e));
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
        Command::Migrate { pipelines, .. } => {
            let applied = runtime()?.block_on(commands::run::migrate(&pipelines))?;
            println!(
                "migrations applied: {}",
                if applied.is_empty() { "none (up to date)".into() } else { applied.join(", ") }
            );
            Ok(Exit::Ok)
        }
        Command::DeadLetters(DeadLetters::List { pipeline, filters, limit, all, .. }) => {
            let url = commands::run::database_url()?;
            let rows =
                runtime()?.block_on(commands::dead_letters::list(&pipeline, &filters.filter(all), limit, &url))?;
            print!("{}", commands::dead_letters::table(&rows));
            Ok(Exit::Ok)
        }
        Command::DeadLetters(DeadLetters::Show { pipeline, id, payload, .. }) => {
            let url = commands::run::database_url()?;
            let text = runtime()?.block_on(commands::dead_letters::show(&pipeline, id, payload, &url))?;
            std::io::Write::write_all(&mut std::io::stdout().lock(), &text)?;
            Ok(Exit::Ok)
        }
        Command::DeadLetters(DeadLetters::Discard { pipeline, ids, all_matching, filters, .. }) => {
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
            Ok(Exit::Ok)
        }
        Command::DeadLetters(DeadLetters::Export { pipeline, filters, all, payload, .. }) => {
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
            Ok(Exit::Ok)
        }
        Command::Replay { pipeline, from, since, until, steps, diff: _, into, apply, plugins, .. } => {
            use commands::replay::{report, side_table, time_of};
            let action = match (into, apply) {
                (Some(table), _) => side_table(&table)?,
                (None, true) => host::source::s3::replay::Action::Apply,
                (None, false) => host::source::s3::replay::Action::Diff,
            };
            let request = host::source::s3::replay::Request {
                from,
                since: since.map(time_of),
                until: until.map(time_of),
                action: action.clone(),
            };
            let done =
                runtime()?.block_on(commands::replay::replay(&pipeline, &request, &steps, &plugins.options()))?;
            print!("{}", report(&done, &action));
            Ok(Exit::failed_if(done.failed > 0))
        }
        Command::DeadLetters(DeadLetters::Replay { pipeline, ids, steps, plugins, .. }) => {
            let replayed =
                runtime()?.block_on(commands::dead_letters::replay(&pipeline, &ids, &steps, &plugins.options()))?;
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
        Command::Plugins(Plugins::New { name, dir, lang, sdk }) => {
            use commands::scaffold::{self, Lang};
            let made = match lang {
                NewLang::Rust => scaffold::new_plugin(&name, &dir, || scaffold::sdk(sdk.as_deref()))?,
                NewLang::Python | NewLang::Js if sdk.is_some() => {
                    anyhow::bail!("--sdk is for Rust plugins; a Python or JavaScript project gets a copy of its SDK")
                }
                NewLang::Python => scaffold::new_project(&name, &dir, Lang::Python)?,
                NewLang::Js => scaffold::new_project(&name, &dir, Lang::Js)?,
            };
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
        Command::Shadow(ShadowCommand::Report { pipeline, .. }) => {
            let url = commands::run::database_url()?;
            runtime()?.block_on(commands::shadow::report(&pipeline, &url))?;
            Ok(Exit::Ok)
        }
        Command::Shadow(ShadowCommand::Promote { pipeline, decision: d }) => decide(&pipeline, "promote", &d),
        Command::Shadow(ShadowCommand::Discard { pipeline, decision: d }) => decide(&pipeline, "discard", &d),
        Command::Check { pipelines, db, plugins, .. } => commands::check::run(&pipelines, db, &plugins.options()),
        Command::Sink(SinkCommand::Ddl { pipeline, .. }) => {
            print!("{}", commands::check::ddl(&pipeline)?);
            Ok(Exit::Ok)
        }
    }
}

/// `host shadow promote | discard`.
fn decide(pipeline: &std::path::Path, action: &str, d: &DecisionArgs) -> anyhow::Result<Exit> {
    let url = commands::run::database_url()?;
    let wait = std::time::Duration::from_secs(d.wait);
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    runtime.block_on(commands::shadow::decide(pipeline, action, d.candidate.as_deref(), wait, &url))
}
