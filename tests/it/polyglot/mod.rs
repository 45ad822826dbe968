//! Plugins in Python (and the tools they are built with): each SDK's own
//! tests in its language's runner, a new project from `host plugins new
//! --lang` that tests, builds and loads rows, the shipped examples against
//! the Rust plugins they port, and the sandbox against a hostile one.
//!
//! The tools are pinned and installed by `cargo xtask polyglot` (which
//! `cargo xtask test` runs) into `target/polyglot/`.

mod python;

use crate::common;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// `target/polyglot/NAME`, which `cargo xtask polyglot` makes.
fn tools(name: &str) -> PathBuf {
    let dir = Path::new(common::PLUGIN_DIR).parent().unwrap().join("polyglot").join(name);
    assert!(dir.is_dir(), "{} is missing: run `cargo xtask polyglot` (or `cargo xtask test`)", dir.display());
    dir
}

fn host(dir: &Path, args: &[&str]) -> Output {
    Command::new(crate::objects::host_binary())
        .current_dir(dir)
        .args(args)
        .env("HOST_PLUGIN_PATH", common::PLUGIN_DIR)
        .env("HOST_CACHE_DIR", common::cache_dir())
        .output()
        .unwrap()
}

fn ok(what: &str, out: &Output) -> String {
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(out.status.success(), "{what}: {stdout}{}", String::from_utf8_lossy(&out.stderr));
    stdout
}

/// Replaces `from` (which must be there) by `to` in `file`.
fn edit(file: &Path, from: &str, to: &str) {
    let text = std::fs::read_to_string(file).unwrap();
    assert!(text.contains(from), "{} lacks {from}", file.display());
    std::fs::write(file, text.replace(from, to)).unwrap();
}

/// What `host test PIPELINE --input` makes of the 100 Fetch messages.
fn fetch_results(pipeline: &Path) -> String {
    let input = common::workspace().join("tests/data/fetch_login_queue_bodies.jsonl");
    let out =
        host(pipeline.parent().unwrap(), &["test", pipeline.to_str().unwrap(), "--input", input.to_str().unwrap()]);
    ok("host test --input", &out)
}
