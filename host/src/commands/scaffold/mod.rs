//! `host plugins new NAME [--dir DIR]`: a plugin crate that builds on the
//! first try: its manifest, a minimal transform with a unit test, the
//! wasm target and test runner in `.cargo/config.toml`, and a pipeline
//! with test cases that uses it.
//!
//! Inside this workspace's `plugins/` folder the crate is a member (its
//! dependencies are the workspace's); anywhere else it is a workspace of
//! its own depending on `plugin-sdk` by path or git.
//!
//! Must not overwrite anything.

mod polyglot;

pub use polyglot::{Lang, new_project};

use anyhow::{Context, bail};
use std::path::{Path, PathBuf};

/// Where the SDK comes from, when the crate is not a workspace member.
pub enum Sdk {
    Path(PathBuf),
    Git(String),
}

/// The SDK named by `--sdk`, `$HOST_PLUGIN_SDK`, or the checkout this
/// binary was built from, if it is still there.
pub fn sdk(given: Option<&str>) -> anyhow::Result<Sdk> {
    let given = given.map(str::to_string).or_else(|| std::env::var("HOST_PLUGIN_SDK").ok());
    if let Some(s) = given {
        if ["https://", "http://", "ssh://", "git://", "file://", "git@"].iter().any(|p| s.starts_with(p)) {
            return Ok(Sdk::Git(s));
        }
        let path = PathBuf::from(&s);
        if !path.join("Cargo.toml").is_file() {
            bail!("--sdk {s}: no Cargo.toml there; give the folder plugins/plugin-sdk of a checkout, or a git URL");
        }
        return Ok(Sdk::Path(path.canonicalize()?));
    }
    let built_from = Path::new(env!("CARGO_MANIFEST_DIR")).join("../plugins/plugin-sdk");
    match built_from.canonicalize() {
        Ok(p) if p.join("Cargo.toml").is_file() => Ok(Sdk::Path(p)),
        _ => bail!(
            "cannot find plugin-sdk: pass --sdk with the folder plugins/plugin-sdk of a checkout of this host, \
             or a git URL of its repository (or set HOST_PLUGIN_SDK)"
        ),
    }
}

/// What was made, for the user.
pub struct Made {
    pub dir: PathBuf,
    pub member: bool,
    /// None for Rust.
    pub lang: Option<Lang>,
    pub files: Vec<PathBuf>,
}

/// Creates the crate `name` in `parent/name`.
pub fn new_plugin(name: &str, parent: &Path, sdk: impl FnOnce() -> anyhow::Result<Sdk>) -> anyhow::Result<Made> {
    check_name(name)?;
    let (parent, dir) = new_dir(parent, name)?;
    let member = is_member(&dir);
    if member
        && let Some(root) = parent.parent()
        && let Some(taken) = workspace_packages(root).into_iter().find(|p| p == name)
    {
        bail!("this workspace has a package `{taken}` already; choose another name");
    }
    let file = name.replace('-', "_");
    let sdk_dep = if member {
        String::new()
    } else {
        match sdk()? {
            Sdk::Path(p) => format!("{{ path = {:?} }}", p.display().to_string()),
            Sdk::Git(url) => format!("{{ git = {url:?} }}"),
        }
    };
    let fill = |template: &str| {
        template
            .replace("{{name}}", name)
            .replace("{{type}}", &type_name(name))
            .replace("{{file}}", &file)
            .replace("{{table}}", &file)
            .replace("{{summary}}", "Changes one text field (write what this plugin does here)")
            .replace("{{sdk}}", &sdk_dep)
            .replace(
                "{{uses}}",
                &if member { name.to_string() } else { format!("target/wasm32-wasip2/release/{file}.wasm") },
            )
            .replace("{{host_triple}}", &host_triple())
    };
    let manifest = if member {
        include_str!("../../../templates/plugin/Cargo.member.toml.tmpl")
    } else {
        include_str!("../../../templates/plugin/Cargo.toml.tmpl")
    };
    let mut pipeline = fill(include_str!("../../../templates/plugin/pipeline.toml.tmpl"));
    if member {
        pipeline = pipeline.replace(
            "#   cargo build --release        # the component (see .cargo/config.toml)",
            &format!("#   cargo xtask build            # from the workspace root: target/plugins/{name}.wasm"),
        );
    }
    let files: Vec<(&str, String)> = vec![
        ("Cargo.toml", fill(manifest)),
        ("src/lib.rs", fill(include_str!("../../../templates/plugin/lib.rs.tmpl"))),
        (".cargo/config.toml", fill(include_str!("../../../templates/plugin/cargo-config.toml.tmpl"))),
        ("pipeline.toml", pipeline),
        (".gitignore", "/target\n".to_string()),
    ];
    std::fs::create_dir_all(&parent).with_context(|| format!("cannot create {}", parent.display()))?;
    let mut written = Vec::new();
    for (rel, text) in files {
        if member && rel == ".gitignore" {
            continue;
        }
        let path = dir.join(rel);
        std::fs::create_dir_all(path.parent().expect("a file in a folder"))?;
        std::fs::write(&path, text).with_context(|| format!("cannot write {}", path.display()))?;
        written.push(path);
    }
    Ok(Made { dir, member, lang: None, files: written })
}

/// The absolute `parent` and `parent/name`, which must be absent or empty.
fn new_dir(parent: &Path, name: &str) -> anyhow::Result<(PathBuf, PathBuf)> {
    let parent = match parent.canonicalize() {
        Ok(p) => p,
        Err(_) => std::path::absolute(parent)?,
    };
    let dir = parent.join(name);
    if dir.exists() && std::fs::read_dir(&dir).map(|mut d| d.next().is_some()).unwrap_or(true) {
        bail!("{} exists and is not empty; nothing was written", dir.display());
    }
    Ok((parent, dir))
}

/// What `new` prints: the files and the loop.
pub fn report(made: &Made) -> String {
    let dir = made.dir.display();
    let mut out = format!("created {dir}:\n");
    for f in &made.files {
        out.push_str(&format!("  {}\n", f.strip_prefix(&made.dir).unwrap_or(f).display()));
    }
    if let Some(lang) = made.lang {
        let name = made.dir.file_name().unwrap_or_default().to_string_lossy();
        out.push_str(&polyglot::next_steps(&made.dir, &name, lang));
    } else if made.member {
        out.push_str(&format!(
            "a member of this workspace; from its root:\n  cargo test -p {0}\n  cargo xtask build\n  host test {dir}/pipeline.toml\n",
            made.dir.file_name().unwrap_or_default().to_string_lossy()
        ));
    } else {
        out.push_str(&format!(
            "next:\n  cd {dir}\n  cargo test-native              # the unit test, natively\n  \
             cargo build --release          # the component\n  host test pipeline.toml        # the pipeline's cases\n"
        ));
    }
    out
}

fn check_name(name: &str) -> anyhow::Result<()> {
    let ok = name.starts_with(|c: char| c.is_ascii_lowercase())
        && !name.ends_with('-')
        && !name.contains("--")
        && name.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-');
    if !ok {
        bail!("`{name}` is not a plugin name: lowercase letters, digits and single `-`, starting with a letter");
    }
    // Names cargo refuses for a package (Rust keywords, the standard
    // library's crates, `test`), or whose type would clash with the SDK's.
    const TAKEN: &[&str] = &[
        "as",
        "async",
        "await",
        "break",
        "const",
        "continue",
        "crate",
        "dyn",
        "else",
        "enum",
        "extern",
        "false",
        "fn",
        "for",
        "if",
        "impl",
        "in",
        "let",
        "loop",
        "match",
        "mod",
        "move",
        "mut",
        "pub",
        "ref",
        "return",
        "self",
        "static",
        "struct",
        "super",
        "trait",
        "true",
        "type",
        "unsafe",
        "use",
        "where",
        "while",
        "abstract",
        "become",
        "box",
        "do",
        "final",
        "gen",
        "macro",
        "override",
        "priv",
        "try",
        "typeof",
        "unsized",
        "virtual",
        "yield",
        "alloc",
        "core",
        "std",
        "proc-macro",
        "test",
        "plugin-sdk",
        "transform",
        "params",
        "input",
        "value",
        "output-builder",
        "json",
    ];
    if TAKEN.contains(&name) {
        bail!("`{name}` cannot name a plugin crate (a Rust keyword, a standard crate, or the SDK's own)");
    }
    // The crate's type would shadow a name the template or `plugin!` uses.
    const TYPES: &[&str] = &[
        "Result",
        "String",
        "Option",
        "Vec",
        "Box",
        "Some",
        "None",
        "Ok",
        "Err",
        "Export",
        "RefCell",
        "Deserialize",
        "JsonSchema",
        "Emit",
        "Cell",
        "Description",
        "Guest",
    ];
    let ty = type_name(name);
    if TYPES.contains(&ty.as_str()) {
        bail!(
            "`{name}` would make the type `{ty}`, which the plugin's code needs for something else; choose another name"
        );
    }
    Ok(())
}

/// `lowercase-locale` -> `LowercaseLocale`.
fn type_name(name: &str) -> String {
    name.split('-')
        .map(|part| {
            let mut c = part.chars();
            c.next().map(|f| f.to_ascii_uppercase().to_string() + c.as_str()).unwrap_or_default()
        })
        .collect()
}

/// Whether `dir` would be a member of a workspace that holds plugin-sdk
/// and takes `plugins/*` (this repository).
fn is_member(dir: &Path) -> bool {
    let Some(plugins) = dir.parent() else { return false };
    let Some(root) = plugins.parent() else { return false };
    plugins.file_name().is_some_and(|n| n == "plugins")
        && root.join("plugins/plugin-sdk/Cargo.toml").is_file()
        && std::fs::read_to_string(root.join("Cargo.toml")).is_ok_and(|t| t.contains("\"plugins/*\""))
}

/// The package names of the workspace at `root` (its crates one or two
/// folders down: `host`, `plugins/mask`, `tests/plugins/hostile`).
fn workspace_packages(root: &Path) -> Vec<String> {
    let mut manifests = vec![root.join("Cargo.toml")];
    for dir in [root.to_path_buf(), root.join("plugins"), root.join("tests"), root.join("tests/plugins")] {
        if let Ok(entries) = std::fs::read_dir(dir) {
            manifests.extend(entries.flatten().map(|e| e.path().join("Cargo.toml")));
        }
    }
    manifests
        .iter()
        .filter_map(|m| std::fs::read_to_string(m).ok())
        .filter_map(|t| t.parse::<toml::Table>().ok())
        .filter_map(|t| t.get("package")?.get("name")?.as_str().map(str::to_string))
        .collect()
}

/// The machine's target triple, for the native test alias.
fn host_triple() -> String {
    let rustc = std::env::var("RUSTC").unwrap_or_else(|_| "rustc".into());
    std::process::Command::new(rustc)
        .arg("-vV")
        .output()
        .ok()
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .and_then(|s| s.lines().find_map(|l| l.strip_prefix("host: ").map(str::to_string)))
        .unwrap_or_else(|| format!("{}-unknown-linux-gnu", std::env::consts::ARCH))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_and_types() {
        assert_eq!(type_name("lowercase-locale"), "LowercaseLocale");
        assert_eq!(type_name("a2b"), "A2b");
        for bad in
            ["", "Upper", "1a", "a-", "a--b", "a_b", "a b", "fn", "test", "plugin-sdk", "result", "ref-cell", "emit"]
        {
            assert!(check_name(bad).is_err(), "{bad}");
        }
        check_name("lowercase-locale").unwrap();
    }

    #[test]
    fn in_this_repositorys_plugins_folder_a_workspace_member() {
        let root = std::env::temp_dir().join(format!("scaffold-ws-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&root);
        std::fs::create_dir_all(root.join("plugins/plugin-sdk")).unwrap();
        std::fs::write(root.join("Cargo.toml"), "[workspace]\nmembers = [\"plugins/*\"]\n").unwrap();
        std::fs::write(root.join("plugins/plugin-sdk/Cargo.toml"), "[package]\n").unwrap();
        let made = new_plugin("my-step", &root.join("plugins"), || unreachable!("no SDK source for a member")).unwrap();
        assert!(made.member);
        let manifest = std::fs::read_to_string(made.dir.join("Cargo.toml")).unwrap();
        assert!(manifest.contains("plugin-sdk.workspace = true") && !manifest.contains("[workspace]"), "{manifest}");
        let pipeline = std::fs::read_to_string(made.dir.join("pipeline.toml")).unwrap();
        assert!(pipeline.contains("uses = \"my-step\"") && pipeline.contains("cargo xtask build"), "{pipeline}");
        assert!(!made.dir.join(".gitignore").exists());
        assert!(report(&made).contains("cargo test -p my-step"));
        std::fs::create_dir_all(root.join("host")).unwrap();
        std::fs::write(root.join("host/Cargo.toml"), "[package]\nname = \"host\"\n").unwrap();
        let taken = new_plugin("host", &root.join("plugins"), || unreachable!()).err().unwrap().to_string();
        assert!(taken.contains("has a package `host` already"), "{taken}");
        std::fs::remove_dir_all(&root).unwrap();
    }

    #[test]
    fn a_standalone_crate_and_never_over_something() {
        let parent = std::env::temp_dir().join(format!("scaffold-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&parent);
        let made = new_plugin("my-step", &parent, || Ok(Sdk::Git("https://example.org/etl.git".into()))).unwrap();
        assert!(!made.member);
        let manifest = std::fs::read_to_string(made.dir.join("Cargo.toml")).unwrap();
        assert!(manifest.contains("plugin-sdk = { git = \"https://example.org/etl.git\" }"), "{manifest}");
        assert!(manifest.contains("\n[workspace]\n"));
        let lib = std::fs::read_to_string(made.dir.join("src/lib.rs")).unwrap();
        assert!(lib.contains("impl Transform for MyStep") && lib.contains("plugin_sdk::plugin!(MyStep);"));
        let pipeline = std::fs::read_to_string(made.dir.join("pipeline.toml")).unwrap();
        assert!(pipeline.contains("uses = \"target/wasm32-wasip2/release/my_step.wasm\""), "{pipeline}");
        assert!(!pipeline.contains("{{"), "{pipeline}");
        let again = new_plugin("my-step", &parent, || unreachable!()).err().unwrap().to_string();
        assert!(again.contains("exists and is not empty"), "{again}");
        std::fs::remove_dir_all(&parent).unwrap();
    }
}
