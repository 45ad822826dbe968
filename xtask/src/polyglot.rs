//! The Python and JavaScript SDKs' tools and shipped examples: the pinned
//! build tools (Python's in `target/polyglot/venv`, JavaScript's in
//! `sdk/js/node_modules`), and each example built into `target/plugins/`
//! (`sdk/python/examples/mask` -> `py-mask.wasm`, `sdk/js/examples/mask`
//! -> `js-mask.wasm`).
//!
//! A build takes 15-25 s per Python component, so each is rebuilt only
//! when its inputs change: a key of the example's files, the SDK, the WIT
//! and the pinned tools sits beside the `.wasm`.

use std::hash::{Hash, Hasher};
use std::path::{Path, PathBuf};
use std::process::Command;

/// The Python tools (componentize-py, pytest) in a venv of their own, made
/// or remade when `sdk/python/requirements-dev.txt` changes.
pub fn python_tools(ws: &Path, target: &Path) -> Result<PathBuf, String> {
    let venv = target.join("polyglot/venv");
    let requirements = ws.join("sdk/python/requirements-dev.txt");
    let wanted = std::fs::read_to_string(&requirements).map_err(|e| format!("{}: {e}", requirements.display()))?;
    let stamp = venv.join(".requirements");
    if std::fs::read_to_string(&stamp).is_ok_and(|s| s == wanted) && venv.join("bin/componentize-py").is_file() {
        return Ok(venv);
    }
    println!("xtask: installing the Python plugin tools into {}", venv.display());
    let _ = std::fs::remove_dir_all(&venv);
    crate::run(Command::new("python3").args(["-m", "venv"]).arg(&venv))?;
    crate::run(Command::new(venv.join("bin/pip")).args(["install", "--quiet", "-r"]).arg(&requirements))?;
    std::fs::write(&stamp, wanted).map_err(|e| e.to_string())?;
    Ok(venv)
}

/// The JavaScript tools (componentize-js, jco, esbuild; pinned by
/// `sdk/js/package-lock.json`) in `sdk/js/node_modules`, installed by
/// `npm ci` when the lock file changed since the last install.
pub fn js_tools(ws: &Path, target: &Path) -> Result<(), String> {
    let sdk = ws.join("sdk/js");
    let stamp = target.join("polyglot/js-tools.key");
    let key = key_of(&[sdk.join("package-lock.json")])?;
    let installed = sdk.join("node_modules/@bytecodealliance/componentize-js/package.json").is_file();
    if installed && std::fs::read_to_string(&stamp).is_ok_and(|k| k == key) {
        return Ok(());
    }
    println!("xtask: installing the JavaScript plugin tools into {}", sdk.join("node_modules").display());
    crate::run(Command::new("npm").current_dir(&sdk).args(["ci", "--no-audit", "--no-fund", "--loglevel=error"]))?;
    std::fs::create_dir_all(stamp.parent().expect("a folder")).map_err(|e| e.to_string())?;
    std::fs::write(&stamp, key).map_err(|e| e.to_string())
}

/// Builds every JavaScript example whose inputs changed
/// (`sdk/js/examples/mask` -> `js-mask.wasm`).
pub fn build_js_examples(ws: &Path, out: &Path) -> Result<(), String> {
    let sdk = ws.join("sdk/js");
    let mut common: Vec<PathBuf> =
        ["index.js", "codec.js", "params.js", "build.js", "package-lock.json"].iter().map(|f| sdk.join(f)).collect();
    common.push(ws.join("wit/transform.wit"));
    let all: Vec<PathBuf> =
        examples(&sdk.join("examples"))?.into_iter().filter(|e| e.join("plugin.js").is_file()).collect();
    build_changed(&all, "js", &common, out, |example, wasm| {
        crate::run(
            Command::new("node")
                .current_dir(example)
                .arg(sdk.join("build.js"))
                .arg("plugin.js")
                .arg("-o")
                .arg(wasm)
                .arg("--wit")
                .arg(ws.join("wit")),
        )
    })
}

/// Builds every Python example (and the tests' Python plugins, in
/// `tests/plugins-py/`) whose inputs changed.
pub fn build_python_examples(ws: &Path, venv: &Path, out: &Path) -> Result<(), String> {
    let sdk = ws.join("sdk/python");
    let mut common = files_under(&sdk.join("etl_plugin"))?;
    common.push(ws.join("wit/transform.wit"));
    common.push(sdk.join("requirements-dev.txt"));
    let mut all = examples(&sdk.join("examples"))?;
    all.extend(examples(&ws.join("tests/plugins-py"))?);
    all.retain(|e| e.join("plugin.py").is_file());
    build_changed(&all, "py", &common, out, |example, wasm| {
        crate::run(
            Command::new(venv.join("bin/componentize-py"))
                .arg("-d")
                .arg(ws.join("wit"))
                .args(["-w", "projecting-plugin", "componentize", "plugin", "-o"])
                .arg(wasm)
                .arg("-p")
                .arg(example)
                .arg("-p")
                .arg(&sdk)
                .stdout(std::process::Stdio::null()),
        )
    })
}

/// `build(example, partial)` for each example whose files (or `common`)
/// changed since its `out/PREFIX-NAME.wasm` was made; the key of its
/// inputs sits beside it, and the component is renamed into place.
fn build_changed(
    all: &[PathBuf],
    prefix: &str,
    common: &[PathBuf],
    out: &Path,
    build: impl Fn(&Path, &Path) -> Result<(), String>,
) -> Result<(), String> {
    std::fs::create_dir_all(out).map_err(|e| e.to_string())?;
    for example in all {
        let name = format!("{prefix}-{}", example.file_name().unwrap_or_default().to_string_lossy());
        let wasm = out.join(format!("{name}.wasm"));
        let mut inputs = files_under(example)?;
        inputs.extend(common.iter().cloned());
        let key = key_of(&inputs)?;
        let stamp = out.join(format!(".{name}.key"));
        if wasm.is_file() && std::fs::read_to_string(&stamp).is_ok_and(|k| k == key) {
            continue;
        }
        let partial = out.join(format!(".{name}.partial.wasm"));
        let start = std::time::Instant::now();
        build(example, &partial)?;
        std::fs::rename(&partial, &wasm).map_err(|e| e.to_string())?;
        println!("built {} in {:.0} s", wasm.display(), start.elapsed().as_secs_f64());
        std::fs::write(&stamp, key).map_err(|e| e.to_string())?;
    }
    Ok(())
}

/// The folders under `dir` that hold an example (in name order).
fn examples(dir: &Path) -> Result<Vec<PathBuf>, String> {
    let mut found: Vec<PathBuf> = std::fs::read_dir(dir)
        .map_err(|e| format!("{}: {e}", dir.display()))?
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.join("plugin.py").is_file() || p.join("plugin.js").is_file())
        .collect();
    found.sort();
    Ok(found)
}

/// Source files under `dir`, caches and build products left out.
fn files_under(dir: &Path) -> Result<Vec<PathBuf>, String> {
    let mut files = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for entry in std::fs::read_dir(&d).map_err(|e| format!("{}: {e}", d.display()))?.flatten() {
            let path = entry.path();
            let name = entry.file_name().to_string_lossy().into_owned();
            if ["__pycache__", ".pytest_cache", "node_modules", "dist", ".venv"].contains(&name.as_str())
                || name.ends_with(".wasm")
            {
                continue;
            }
            if path.is_dir() {
                stack.push(path);
            } else {
                files.push(path);
            }
        }
    }
    files.sort();
    Ok(files)
}

/// A key of the files' names and contents. std's hasher: its values may
/// change with the toolchain, which costs one rebuild, never a stale one.
pub(crate) fn key_of(files: &[PathBuf]) -> Result<String, String> {
    let mut h = std::hash::DefaultHasher::new();
    for f in files {
        f.hash(&mut h);
        std::fs::read(f).map_err(|e| format!("{}: {e}", f.display()))?.hash(&mut h);
    }
    Ok(format!("{:016x}", h.finish()))
}
