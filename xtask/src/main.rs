//! `cargo xtask build | test | bench`.

use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode};

const USAGE: &str = "usage: cargo xtask <build|test|bench>
  build   the host (release) and every plugin; components land in target/plugins/
  test    build, then run every test (the README's test command)
  bench   build, then run the benchmarks and print their tables";

fn main() -> ExitCode {
    let arg = std::env::args().nth(1).unwrap_or_default();
    let result = match arg.as_str() {
        "build" => build(),
        "test" => build().and_then(|()| cargo(&["test", "--release", "--workspace"])),
        "bench" => build().and_then(|()| cargo(&["bench", "-p", "tests"])),
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

fn cargo(args: &[&str]) -> Result<(), String> {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let status = Command::new(cargo).current_dir(workspace()).args(args).status().map_err(|e| e.to_string())?;
    if status.success() { Ok(()) } else { Err(format!("cargo {} failed ({status})", args.join(" "))) }
}
