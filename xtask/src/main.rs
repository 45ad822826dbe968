//! `cargo xtask build | test | bench`.

use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode};

const USAGE: &str = "usage: cargo xtask <build|test|bench|demo>
  build   the host (release) and every plugin; components land in target/plugins/
  test    build, then run every test (the README's test command)
  bench   build, then run the benchmarks and print their tables
  demo    build, then run the Fetch logins pipeline on the real queue data";

fn main() -> ExitCode {
    let arg = std::env::args().nth(1).unwrap_or_default();
    let result = match arg.as_str() {
        "build" => build(),
        "test" => build().and_then(|()| test()),
        "bench" => build().and_then(|()| cargo(&["bench", "-p", "tests"])),
        "demo" => build().and_then(|()| demo()),
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

fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().expect("xtask is in the workspace").to_path_buf()
}

fn target_dir() -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR").map_or_else(|| workspace().join("target"), PathBuf::from)
}

fn build() -> Result<(), String> {
    cargo(&["build", "--release", "-p", "host"])?;
    let ws = workspace();
    let crates = xtask::plugin_crates(&ws.join("plugins")).map_err(|e| e.to_string())?;
    let out = target_dir().join("plugins");
    let files = xtask::build_plugins(&ws, &crates, &target_dir().join("plugin-build"), &out)?;
    for f in files {
        println!("built {}", f.display());
    }
    Ok(())
}

/// Runs every test, passing cargo's output through, and ends with one line
/// adding up all the test binaries' results.
fn test() -> Result<(), String> {
    use std::io::{BufRead, BufReader};
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let mut child = Command::new(cargo)
        .current_dir(workspace())
        .args(["test", "--release", "--workspace"])
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

/// The Fetch logins pipeline on the real queue bodies, offline.
fn demo() -> Result<(), String> {
    let ws = workspace();
    let host = target_dir().join("release/host");
    let run = |args: &[&str]| -> Result<(), String> {
        println!("\n$ host {}", args.join(" "));
        let status = Command::new(&host).current_dir(&ws).args(args).status().map_err(|e| e.to_string())?;
        if status.success() { Ok(()) } else { Err(format!("host {} failed ({status})", args.join(" "))) }
    };
    run(&["check", "pipelines/logins.toml"])?;
    run(&["test", "pipelines/logins.toml"])?;
    run(&[
        "test",
        "pipelines/logins.toml",
        "--input",
        "tests/data/fetch_login_queue_bodies.jsonl",
        "--rejects",
        "target/demo-rejects.jsonl",
    ])?;
    println!("\nrejected records: target/demo-rejects.jsonl");
    Ok(())
}

fn cargo(args: &[&str]) -> Result<(), String> {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let status = Command::new(cargo).current_dir(workspace()).args(args).status().map_err(|e| e.to_string())?;
    if status.success() { Ok(()) } else { Err(format!("cargo {} failed ({status})", args.join(" "))) }
}
