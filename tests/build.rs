//! Builds every plugin (and the hostile test plugin) as a component for the
//! tests, so they never depend on a hand-built artifact. Their folders are
//! handed to the tests as `PLUGIN_DIR` and `TEST_PLUGIN_DIR`.

use std::path::{Path, PathBuf};

fn main() {
    let here = PathBuf::from(std::env::var("CARGO_MANIFEST_DIR").expect("set by cargo"));
    let ws = here.parent().expect("tests/ is in the workspace").to_path_buf();
    for watched in ["plugins", "tests/plugins", "wit", "Cargo.lock"] {
        println!("cargo:rerun-if-changed={}", ws.join(watched).display());
    }
    println!("cargo:rerun-if-env-changed=CARGO_TARGET_DIR");
    let target = std::env::var_os("CARGO_TARGET_DIR").map_or_else(|| ws.join("target"), PathBuf::from);
    let target = if target.is_absolute() { target } else { ws.join(target) };
    let build_dir = target.join("plugin-build");
    let shipped = build(&ws, &ws.join("plugins"), &build_dir, &target.join("plugins"));
    let hostile = build(&ws, &here.join("plugins"), &build_dir, &target.join("test-plugins"));
    println!("cargo:rustc-env=PLUGIN_DIR={}", shipped.display());
    println!("cargo:rustc-env=TEST_PLUGIN_DIR={}", hostile.display());
}

fn build(ws: &Path, crates_dir: &Path, build_dir: &Path, out: &Path) -> PathBuf {
    let crates = xtask::plugin_crates(crates_dir).expect("plugin folders are readable");
    if let Err(e) = xtask::build_plugins(ws, &crates, build_dir, out) {
        panic!("{e}");
    }
    out.to_path_buf()
}
