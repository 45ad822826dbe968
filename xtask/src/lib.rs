//! Building plugin components, shared by `cargo xtask` and the test build
//! (`tests/build.rs`). Standard library only, so it builds in a second.

use std::path::{Path, PathBuf};
use std::process::Command;

/// The wasm target plugins are built for.
pub const TARGET: &str = "wasm32-wasip2";

/// Plugin crates in `dir`: each subfolder whose `Cargo.toml` builds a
/// `cdylib` (the SDK, a plain library, is skipped).
pub fn plugin_crates(dir: &Path) -> std::io::Result<Vec<String>> {
    let mut names = Vec::new();
    for entry in std::fs::read_dir(dir)? {
        let path = entry?.path();
        let manifest = path.join("Cargo.toml");
        let Ok(text) = std::fs::read_to_string(&manifest) else {
            continue;
        };
        if text.contains("\"cdylib\"") {
            names.push(path.file_name().expect("a folder name").to_string_lossy().into_owned());
        }
    }
    names.sort();
    Ok(names)
}

/// Makes sure the active toolchain has the [`TARGET`] standard library
/// (`rust-toolchain.toml` names it, but rustup adds a toolchain file's
/// targets only when it installs that toolchain): adds it with rustup if
/// missing, or says what to do.
pub fn ensure_target() -> Result<(), String> {
    let rustc = std::env::var("RUSTC").unwrap_or_else(|_| "rustc".into());
    let out = Command::new(&rustc)
        .args(["--print", "target-libdir", "--target", TARGET])
        .output()
        .map_err(|e| format!("cannot run {rustc}: {e}"))?;
    let libdir = String::from_utf8_lossy(&out.stdout).trim().to_string();
    if out.status.success() && Path::new(&libdir).is_dir() {
        return Ok(());
    }
    eprintln!("xtask: the {TARGET} target is not installed; adding it (rustup target add {TARGET})");
    let added = Command::new("rustup").args(["target", "add", TARGET]).status();
    match added {
        Ok(s) if s.success() => Ok(()),
        Ok(s) => Err(format!("`rustup target add {TARGET}` failed ({s}): plugins cannot be built without it")),
        Err(e) => Err(format!(
            "the {TARGET} target is missing and rustup cannot be run ({e}): install the target for your Rust toolchain"
        )),
    }
}

/// Builds `crates` for wasm32-wasip2 (release) in `target_dir` and copies
/// each component to `out_dir/NAME.wasm`. Returns the files.
pub fn build_plugins(
    workspace: &Path,
    crates: &[String],
    target_dir: &Path,
    out_dir: &Path,
) -> Result<Vec<PathBuf>, String> {
    ensure_target()?;
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let mut cmd = Command::new(cargo);
    cmd.current_dir(workspace).args(["build", "--release", "--target", TARGET]).arg("--target-dir").arg(target_dir);
    // Plugins are small: whole-program optimisation is cheap for them and
    // inlines the SDK's accessors into each plugin's loop. Not incremental
    // (the workspace's release profile is, for the host): incremental
    // builds of the plugins ran the logins chain 4-10% slower
    // (`BENCH_SECTION=chains cargo bench -p tests --bench transform`, side
    // by side, BENCHMARKS.md).
    cmd.args([
        "--config",
        "profile.release.lto=true",
        "--config",
        "profile.release.codegen-units=1",
        "--config",
        "profile.release.incremental=false",
    ]);
    for c in crates {
        cmd.args(["-p", c]);
    }
    // When run from a build script, do not inherit the outer build's
    // settings (flags for the host target, jobserver, profile overrides).
    for (k, _) in std::env::vars() {
        let inherited = k.starts_with("CARGO_PROFILE_")
            || k.starts_with("CARGO_CFG_")
            || k.starts_with("CARGO_FEATURE_")
            || matches!(
                k.as_str(),
                "CARGO_ENCODED_RUSTFLAGS"
                    | "RUSTFLAGS"
                    | "CARGO_BUILD_TARGET"
                    | "CARGO_MAKEFLAGS"
                    | "MAKEFLAGS"
                    | "MFLAGS"
                    | "CARGO_TARGET_DIR"
                    | "CARGO_PRIMARY_PACKAGE"
                    | "RUSTC_WORKSPACE_WRAPPER"
                    | "TARGET"
                    | "HOST"
                    | "OUT_DIR"
                    | "OPT_LEVEL"
                    | "PROFILE"
                    | "DEBUG"
                    | "NUM_JOBS"
            );
        if inherited {
            cmd.env_remove(k);
        }
    }
    let status = cmd.status().map_err(|e| format!("cannot run cargo: {e}"))?;
    if !status.success() {
        return Err(format!(
            "building plugins {crates:?} for {TARGET} failed ({status}); is the target installed? `rustup target add {TARGET}`"
        ));
    }
    std::fs::create_dir_all(out_dir).map_err(|e| format!("cannot create {}: {e}", out_dir.display()))?;
    let mut files = Vec::new();
    for c in crates {
        let built = target_dir.join(TARGET).join("release").join(format!("{}.wasm", c.replace('-', "_")));
        let dest = out_dir.join(format!("{c}.wasm"));
        std::fs::copy(&built, &dest).map_err(|e| format!("cannot copy {}: {e}", built.display()))?;
        files.push(dest);
    }
    Ok(files)
}
