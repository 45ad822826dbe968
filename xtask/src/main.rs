//! `cargo xtask build | polyglot | test | history | bench [peers] | demo | postgres`.

mod deploy;
mod packages;
mod polyglot;
mod postgres;

use packages::Need;
use postgres::{Choice, Postgres};
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode};

const USAGE: &str = "usage: cargo xtask <build|polyglot|test|history|bench|demo|postgres>
  build   the host (release) and every plugin; components land in target/plugins/
  polyglot  the Python and JavaScript plugin tools (pinned, in target/polyglot/)
          and the SDKs' examples, built into target/plugins/ (py-mask.wasm...)
  test [ARGS]  build, then run every test (the README's test command); with
          ARGS, `cargo test --release ARGS` instead (-p tests --test it -- tls)
  history [--seeds N] [--from S] [--ops M] [--seed S]
          build, then the history checker's soak: N random object histories
          (default 200) of M operations (default 40) from seed S
  bench [peers]  build, then run the benchmarks and print their tables;
          `bench peers`: the same 1M-row object through this host, dlt,
          Sling and faucet-stream side by side (bench/peers/run.py)
  demo    build, then load the 100 Fetch messages from SQS (moto) into PostgreSQL
  postgres  run the private PostgreSQL (the one test and demo start when no
          server answers) until Ctrl-C, with the data the last run left

test, history and demo install the Debian packages they need when run as
root (else they say the command), and use DATABASE_URL, else the server at
127.0.0.1:5432, else a private PostgreSQL (always with XTASK_POSTGRES=private).";

/// What each command needs from the machine (a private PostgreSQL adds
/// its own needs).
const DEMO: &[Need] = &[packages::PYTHON_VENV, packages::PSQL];
const HISTORY: &[Need] = &[packages::PYTHON_VENV, packages::SSHD, packages::SSH_KEYGEN];
const TEST: &[Need] = &[
    packages::PYTHON_VENV,
    packages::PSQL,
    packages::CHROMIUM,
    packages::CURL,
    packages::SSHD,
    packages::SSH_KEYGEN,
    packages::NODE,
    packages::NPM,
    packages::PGBOUNCER,
];
const POLYGLOT: &[Need] = &[packages::PYTHON_VENV, packages::NODE, packages::NPM];

fn main() -> ExitCode {
    let arg = std::env::args().nth(1).unwrap_or_default();
    let result = match arg.as_str() {
        "build" => build(),
        "polyglot" => packages::ensure(POLYGLOT).and_then(|()| polyglot()),
        "test" => with_services(TEST, |pg| {
            build()
                .and_then(|()| polyglot())
                .and_then(|()| deploy::tools(&workspace(), &target_dir()))
                .and_then(|()| ensure_moto())
                .and_then(|()| test(&pg.env()))
        }),
        "bench" if std::env::args().nth(2).as_deref() == Some("peers") => {
            packages::ensure(&[packages::PYTHON_VENV, packages::PSQL]).and_then(|()| build()).and_then(|()| peers())
        }
        "bench" => packages::ensure(POLYGLOT)
            .and_then(|()| build())
            .and_then(|()| polyglot())
            .and_then(|()| cargo(&["bench", "-p", "tests"], &[])),
        "history" => {
            with_services(HISTORY, |pg| build().and_then(|()| ensure_moto()).and_then(|()| history(&pg.env())))
        }
        "demo" => with_services(DEMO, |pg| build().and_then(|()| ensure_moto()).and_then(|()| demo(pg))),
        "postgres" => private_postgres(),
        _ => {
            eprintln!("{USAGE}");
            return ExitCode::from(2);
        }
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("xtask: {e}");
            ExitCode::FAILURE
        }
    }
}

/// Installs what the command needs, picks or starts its PostgreSQL (all
/// before the long build, so that what is missing is said at once), runs
/// it, then stops a private PostgreSQL.
fn with_services(needs: &[Need], run: impl FnOnce(&Postgres) -> Result<(), String>) -> Result<(), String> {
    let choice = postgres::choose()?;
    let mut needs = needs.to_vec();
    if matches!(choice, Choice::Private) {
        needs.extend([packages::POSTGRESQL, packages::OPENSSL]);
    }
    packages::ensure(&needs)?;
    let pg = Postgres::start(choice, &target_dir())?;
    run(&pg)
}

/// `cargo xtask postgres`: the private server in the foreground.
fn private_postgres() -> Result<(), String> {
    packages::ensure(&[packages::POSTGRESQL, packages::OPENSSL])?;
    let mut pg = Postgres::start(Choice::Private, &target_dir())?;
    for (name, value) in pg.env() {
        println!("{name}={value}");
    }
    println!("running until Ctrl-C");
    pg.wait();
    Ok(())
}

fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().expect("xtask is in the workspace").to_path_buf()
}

fn target_dir() -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR").map_or_else(|| workspace().join("target"), PathBuf::from)
}

fn build() -> Result<(), String> {
    // Before the host's long build: a missing target should not wait for it.
    xtask::ensure_target()?;
    cargo(&["build", "--release", "-p", "host"], &[])?;
    let ws = workspace();
    let crates = xtask::plugin_crates(&ws.join("plugins")).map_err(|e| e.to_string())?;
    let out = target_dir().join("plugins");
    let files = xtask::build_plugins(&ws, &crates, &target_dir().join("plugin-build"), &out)?;
    for f in files {
        println!("built {}", f.display());
    }
    Ok(())
}

/// `bench/peers/run.py`: its own venv and tools, the host just built.
fn peers() -> Result<(), String> {
    let target = target_dir();
    let status = Command::new("python3")
        .arg(workspace().join("bench/peers/run.py"))
        .env("PEERS_HOST_BIN", target.join("release/host"))
        .env("PEERS_PLUGIN_DIR", target.join("plugins"))
        .status()
        .map_err(|e| format!("python3 bench/peers/run.py: {e}"))?;
    if status.success() { Ok(()) } else { Err(format!("bench/peers/run.py failed ({status})")) }
}

/// The Python and JavaScript tools, and the SDKs' examples built.
fn polyglot() -> Result<(), String> {
    let (ws, target) = (workspace(), target_dir());
    let venv = polyglot::python_tools(&ws, &target)?;
    polyglot::build_python_examples(&ws, &venv, &target.join("plugins"))?;
    polyglot::js_tools(&ws, &target)?;
    polyglot::build_js_examples(&ws, &target.join("plugins"))
}

/// Runs every test (or `cargo test --release` with the command's own
/// arguments), passing cargo's output through, and ends with one line
/// adding up all the test binaries' results.
fn test(env: &[(String, String)]) -> Result<(), String> {
    let given: Vec<String> = std::env::args().skip(2).collect();
    // Every test binary runs, whichever fails first.
    let all = ["--workspace", "--no-fail-fast"].map(String::from);
    use std::io::{BufRead, BufReader};
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let mut child = Command::new(cargo)
        .current_dir(workspace())
        .args(["test", "--release"])
        .args(if given.is_empty() { &all[..] } else { &given })
        .envs(env.iter().cloned())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .map_err(|e| e.to_string())?;
    let (mut passed, mut failed) = (0u64, 0u64);
    for line in BufReader::new(child.stdout.take().expect("piped")).lines() {
        let line = line.map_err(|e| e.to_string())?;
        println!("{line}");
        if let Some(rest) = line.strip_prefix("test result: ") {
            let count = |word: &str| {
                rest.split(';')
                    .find_map(|part| part.trim().strip_suffix(word)?.trim().rsplit(' ').next()?.parse::<u64>().ok())
            };
            passed += count("passed").unwrap_or(0);
            failed += count("failed").unwrap_or(0);
        }
    }
    let status = child.wait().map_err(|e| e.to_string())?;
    println!("{passed} passed, {failed} failed");
    if status.success() { Ok(()) } else { Err(format!("cargo test failed ({status})")) }
}

/// The history checker's soak: its arguments passed on (200 seeds unless
/// some are named).
fn history(env: &[(String, String)]) -> Result<(), String> {
    let mut args: Vec<String> = std::env::args().skip(2).collect();
    if !args.iter().any(|a| a == "--seeds" || a == "--seed") {
        args.extend(["--seeds".to_string(), "200".to_string()]);
    }
    let mut all = vec!["test", "--release", "-p", "tests", "--test", "history", "--"];
    all.extend(args.iter().map(String::as_str));
    cargo(&all, env)
}

/// Makes `.venv` with moto (an AWS endpoint for SQS and S3 on loopback) if
/// it is not there.
fn ensure_moto() -> Result<(), String> {
    let ws = workspace();
    let python = ws.join(".venv/bin/python");
    let has =
        |p: &Path| Command::new(p).args(["-c", "import moto.server, boto3"]).output().is_ok_and(|o| o.status.success());
    if python.is_file() && has(&python) {
        return Ok(());
    }
    println!("xtask: installing moto into .venv");
    let venv = Command::new("python3").current_dir(&ws).args(["-m", "venv", ".venv"]).output();
    match venv {
        Err(e) => {
            return Err(format!("cannot run python3 ({e}): install Python 3 (with venv) for moto, the AWS endpoint"));
        }
        Ok(o) if !o.status.success() => {
            let _ = std::fs::remove_dir_all(ws.join(".venv"));
            return Err(format!(
                "python3 cannot make a virtual environment: install python3-venv (Debian/Ubuntu: apt-get install python3-venv)\n{}",
                String::from_utf8_lossy(&o.stderr).trim()
            ));
        }
        Ok(_) => {}
    }
    run(Command::new(ws.join(".venv/bin/pip")).args(["install", "--quiet", "moto[server]>=5,<6"]))?;
    if has(&python) { Ok(()) } else { Err("moto did not install into .venv".into()) }
}

fn run(cmd: &mut Command) -> Result<(), String> {
    let status = cmd.status().map_err(|e| format!("{cmd:?}: {e}"))?;
    if status.success() { Ok(()) } else { Err(format!("{cmd:?} failed ({status})")) }
}

/// A moto server on a free loopback port; stopped when dropped.
struct Moto(std::process::Child, String);

impl Moto {
    fn start() -> Result<Moto, String> {
        let port = std::net::TcpListener::bind("127.0.0.1:0").map_err(|e| e.to_string())?.local_addr().unwrap().port();
        let child = Command::new(workspace().join(".venv/bin/moto_server"))
            .args(["-H", "127.0.0.1", "-p", &port.to_string()])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .map_err(|e| format!("moto_server: {e}"))?;
        let start = std::time::Instant::now();
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            if start.elapsed() > std::time::Duration::from_secs(30) {
                return Err("moto did not start".into());
            }
            std::thread::sleep(std::time::Duration::from_millis(100));
        }
        Ok(Moto(child, format!("http://127.0.0.1:{port}")))
    }
}

impl Drop for Moto {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// The main job on local services: the 100 Fetch messages into a queue
/// named `login-queue`, then `host run --once` loads them into
/// `user_logins`. Uses `AWS_ENDPOINT_URL` when set (as in
/// docker-compose.yml), else starts moto; and the PostgreSQL `pg`.
fn demo(pg: &Postgres) -> Result<(), String> {
    let ws = workspace();
    let _moto;
    let endpoint = match std::env::var("AWS_ENDPOINT_URL") {
        Ok(e) if !e.is_empty() => e,
        _ => {
            _moto = Moto::start()?;
            _moto.1.clone()
        }
    };
    let database = &pg.url;
    let host = target_dir().join("release/host");
    let env = |cmd: &mut Command| {
        cmd.current_dir(&ws)
            .env("AWS_ENDPOINT_URL", &endpoint)
            .env("AWS_REGION", std::env::var("AWS_REGION").unwrap_or_else(|_| "us-east-1".into()))
            .env("AWS_ACCESS_KEY_ID", std::env::var("AWS_ACCESS_KEY_ID").unwrap_or_else(|_| "test".into()))
            .env("AWS_SECRET_ACCESS_KEY", std::env::var("AWS_SECRET_ACCESS_KEY").unwrap_or_else(|_| "test".into()))
            .env("DATABASE_URL", database)
            // Read by a person: text log lines, whatever stderr is.
            .env("HOST_LOG_FORMAT", std::env::var("HOST_LOG_FORMAT").unwrap_or_else(|_| "text".into()));
    };
    let step = |title: &str, args: &[&str]| -> Result<(), String> {
        println!("\n== {title}\n$ host {}", args.join(" "));
        let mut cmd = Command::new(&host);
        cmd.args(args);
        env(&mut cmd);
        run(&mut cmd)
    };
    step("check the pipeline offline", &["check", "pipelines/logins.toml"])?;
    step("its own test cases", &["test", "pipelines/logins.toml"])?;
    println!("\n== the 100 Fetch messages into SQS queue `login-queue` at {endpoint}");
    let mut send = Command::new(ws.join(".venv/bin/python"));
    send.args(["-c", SEND]);
    env(&mut send);
    run(&mut send)?;
    step("the host's own tables (schema etl)", &["migrate"])?;
    println!("\n== the pipeline's table, user_logins\n$ psql \"$DATABASE_URL\" -f pipelines/tables.sql");
    psql(&database, "pipelines/tables.sql")?;
    step("the pipeline against its table", &["check", "--db", "pipelines/logins.toml"])?;
    step("load them (drain the queue, then stop)", &["run", "pipelines/logins.toml", "--once"])?;
    step("the dead letter", &["dead-letters", "list", "pipelines/logins.toml"])?;
    println!("\nrows are in user_logins at {database}");
    if pg.is_private() {
        println!("(a private PostgreSQL, stopped now: `cargo xtask postgres` starts it again with these rows)");
    }
    Ok(())
}

/// Runs the SQL file `file` (from the workspace) with psql (`$PSQL`, else
/// `psql` on the PATH): the example pipelines' tables are their owners',
/// not the host's.
fn psql(database: &str, file: &str) -> Result<(), String> {
    let psql = std::env::var("PSQL").unwrap_or_else(|_| "psql".into());
    let mut cmd = Command::new(&psql);
    // Quiet about tables already there (`CREATE TABLE IF NOT EXISTS`).
    cmd.current_dir(workspace()).args([database, "-v", "ON_ERROR_STOP=1", "-q", "-f", file]);
    cmd.env("PGOPTIONS", "-c client_min_messages=warning");
    match cmd.status() {
        Ok(s) if s.success() => Ok(()),
        Ok(s) => Err(format!("{psql} -f {file} failed ({s})")),
        Err(e) => Err(format!(
            "cannot run {psql} ({e}): the demo creates its table with PostgreSQL's client; install it (Debian: \
             apt-get install postgresql-client) or set PSQL to its path"
        )),
    }
}

/// Creates `login-queue` (emptied) and sends the Fetch bodies, 10 a call.
const SEND: &str = r#"
import boto3, os
sqs = boto3.client("sqs", endpoint_url=os.environ["AWS_ENDPOINT_URL"], region_name=os.environ["AWS_REGION"])
url = sqs.create_queue(QueueName="login-queue")["QueueUrl"]
sqs.purge_queue(QueueUrl=url)
lines = open("tests/data/fetch_login_queue_bodies.jsonl").read().splitlines()
for i in range(0, len(lines), 10):
    sqs.send_message_batch(QueueUrl=url, Entries=[{"Id": str(j), "MessageBody": b} for j, b in enumerate(lines[i:i + 10])])
print(f"sent {len(lines)} messages")
"#;

fn cargo(args: &[&str], env: &[(String, String)]) -> Result<(), String> {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let mut cmd = Command::new(cargo);
    cmd.current_dir(workspace()).args(args).envs(env.iter().cloned());
    let status = cmd.status().map_err(|e| e.to_string())?;
    if status.success() { Ok(()) } else { Err(format!("cargo {} failed ({status})", args.join(" "))) }
}
