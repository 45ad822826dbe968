//! `host plugins new NAME --lang python|js`: a plugin project in Python
//! or JavaScript that tests and builds on the first try: the plugin, its
//! tests in the language's own runner, a pipeline with test cases, the
//! pinned build tools, the WIT contract, and a copy of the SDK.
//!
//! The SDK is vendored (copied from what this binary was built with) rather
//! than fetched: the project then builds offline, and its SDK always speaks
//! the contract of the host that made it.

use super::{Made, check_name, new_dir, type_name};
use anyhow::{Context, bail};
use std::path::Path;

/// The languages besides Rust.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Lang {
    Python,
    Js,
}

const WIT: &str = include_str!("../../../../wit/transform.wit");

/// The Python SDK, as `etl_plugin/` in the project.
const PYTHON_SDK: &[(&str, &str)] = &[
    ("etl_plugin/__init__.py", include_str!("../../../../sdk/python/etl_plugin/__init__.py")),
    ("etl_plugin/_codec.py", include_str!("../../../../sdk/python/etl_plugin/_codec.py")),
    ("etl_plugin/_params.py", include_str!("../../../../sdk/python/etl_plugin/_params.py")),
    ("etl_plugin/_component.py", include_str!("../../../../sdk/python/etl_plugin/_component.py")),
    ("etl_plugin/testing.py", include_str!("../../../../sdk/python/etl_plugin/testing.py")),
];

const PYTHON: &[(&str, &str)] = &[
    ("plugin.py", include_str!("../../../templates/plugin-python/plugin.py.tmpl")),
    ("test_plugin.py", include_str!("../../../templates/plugin-python/test_plugin.py.tmpl")),
    ("pipeline.toml", include_str!("../../../templates/plugin-python/pipeline.toml.tmpl")),
    ("requirements-dev.txt", include_str!("../../../templates/plugin-python/requirements-dev.txt")),
    ("README.md", include_str!("../../../templates/plugin-python/README.md.tmpl")),
    (".gitignore", include_str!("../../../templates/plugin-python/gitignore")),
];

/// The JavaScript SDK, as `etl-plugin/` in the project (a local package
/// the project's package.json depends on).
const JS_SDK: &[(&str, &str)] = &[
    ("etl-plugin/package.json", include_str!("../../../templates/plugin-js/etl-plugin-package.json")),
    ("etl-plugin/index.js", include_str!("../../../../sdk/js/index.js")),
    ("etl-plugin/codec.js", include_str!("../../../../sdk/js/codec.js")),
    ("etl-plugin/params.js", include_str!("../../../../sdk/js/params.js")),
    ("etl-plugin/testing.js", include_str!("../../../../sdk/js/testing.js")),
    ("etl-plugin/build.js", include_str!("../../../../sdk/js/build.js")),
    ("etl-plugin/index.d.ts", include_str!("../../../../sdk/js/index.d.ts")),
    ("etl-plugin/testing.d.ts", include_str!("../../../../sdk/js/testing.d.ts")),
];

const JS: &[(&str, &str)] = &[
    ("plugin.js", include_str!("../../../templates/plugin-js/plugin.js.tmpl")),
    ("plugin.test.js", include_str!("../../../templates/plugin-js/plugin.test.js.tmpl")),
    ("pipeline.toml", include_str!("../../../templates/plugin-js/pipeline.toml.tmpl")),
    ("package.json", include_str!("../../../templates/plugin-js/package.json.tmpl")),
    ("package-lock.json", include_str!("../../../templates/plugin-js/package-lock.json.tmpl")),
    ("README.md", include_str!("../../../templates/plugin-js/README.md.tmpl")),
    (".gitignore", include_str!("../../../templates/plugin-js/gitignore")),
];

/// Creates the project `name` in `parent/name`; never over anything.
pub fn new_project(name: &str, parent: &Path, lang: Lang) -> anyhow::Result<Made> {
    check_name(name)?;
    let ty = type_name(name);
    if ["Params", "Etl"].contains(&ty.as_str()) {
        bail!(
            "`{name}` would make the class `{ty}`, which the plugin's code needs for something else; choose another name"
        );
    }
    let (_, dir) = new_dir(parent, name)?;
    let fill = |template: &str| {
        template
            .replace("{{name}}", name)
            .replace("{{type}}", &ty)
            .replace("{{file}}", &name.replace('-', "_"))
            .replace("{{table}}", &name.replace('-', "_"))
            .replace("{{summary}}", "Changes one text field (write what this plugin does here)")
    };
    let (templates, sdk) = match lang {
        Lang::Python => (PYTHON, PYTHON_SDK),
        Lang::Js => (JS, JS_SDK),
    };
    let mut files: Vec<(&str, String)> = templates.iter().map(|(rel, t)| (*rel, fill(t))).collect();
    files.extend(sdk.iter().map(|(rel, t)| (*rel, t.to_string())));
    files.push(("wit/transform.wit", WIT.to_string()));
    let mut written = Vec::new();
    for (rel, text) in files {
        let path = dir.join(rel);
        std::fs::create_dir_all(path.parent().expect("a file in a folder"))
            .with_context(|| format!("cannot create {}", path.parent().unwrap_or(&dir).display()))?;
        std::fs::write(&path, text).with_context(|| format!("cannot write {}", path.display()))?;
        written.push(path);
    }
    Ok(Made { dir, member: false, lang: Some(lang), files: written })
}

/// The loop, for `report`.
pub fn next_steps(dir: &Path, name: &str, lang: Lang) -> String {
    let dir = dir.display();
    match lang {
        Lang::Python => format!(
            "next:\n  cd {dir}\n  python3 -m venv .venv && .venv/bin/pip install -r requirements-dev.txt\n  \
             .venv/bin/pytest                   # the plugin's tests, natively\n  \
             .venv/bin/componentize-py -d wit -w projecting-plugin componentize plugin -o {name}.wasm\n  \
             host test pipeline.toml            # the pipeline's cases, through the component\n"
        ),
        Lang::Js => format!(
            "next:\n  cd {dir}\n  npm install                  # the build tools (pinned in package-lock.json)\n  \
             npm test                     # the plugin's tests, natively\n  \
             npm run build                # the component: {name}.wasm\n  \
             host test pipeline.toml      # the pipeline's cases, through the component\n"
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const PLACEHOLDERS: &[&str] = &["{{name}}", "{{type}}", "{{file}}", "{{table}}", "{{summary}}"];

    #[test]
    fn a_python_project_with_the_sdk_and_the_contract() {
        let parent = std::env::temp_dir().join(format!("scaffold-py-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&parent);
        let made = new_project("my-step", &parent, Lang::Python).unwrap();
        let plugin = std::fs::read_to_string(made.dir.join("plugin.py")).unwrap();
        assert!(plugin.contains("class MyStep:") && plugin.contains("name=\"my-step\""), "{plugin}");
        let pipeline = std::fs::read_to_string(made.dir.join("pipeline.toml")).unwrap();
        assert!(pipeline.contains("uses = \"my-step.wasm\""), "{pipeline}");
        for f in ["etl_plugin/__init__.py", "etl_plugin/testing.py", "wit/transform.wit", ".gitignore"] {
            assert!(made.dir.join(f).is_file(), "{f}");
        }
        for f in &made.files {
            let text = std::fs::read_to_string(f).unwrap();
            assert!(!PLACEHOLDERS.iter().any(|p| text.contains(p)), "{} keeps a placeholder", f.display());
        }
        let again = new_project("my-step", &parent, Lang::Python).err().unwrap().to_string();
        assert!(again.contains("exists and is not empty"), "{again}");
        let clash = new_project("etl", &parent, Lang::Python).err().unwrap().to_string();
        assert!(clash.contains("the class `Etl`"), "{clash}");
        std::fs::remove_dir_all(&parent).unwrap();
    }

    #[test]
    fn a_javascript_project_with_the_sdk_as_a_local_package() {
        let parent = std::env::temp_dir().join(format!("scaffold-js-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&parent);
        let made = new_project("my-step", &parent, Lang::Js).unwrap();
        let package = std::fs::read_to_string(made.dir.join("package.json")).unwrap();
        assert!(package.contains("\"name\": \"my-step\"") && package.contains("file:./etl-plugin"), "{package}");
        let pipeline = std::fs::read_to_string(made.dir.join("pipeline.toml")).unwrap();
        assert!(pipeline.contains("uses = \"my-step.wasm\"") && pipeline.contains("CREATE TABLE my_step"));
        for f in ["etl-plugin/index.js", "etl-plugin/build.js", "etl-plugin/package.json", "wit/transform.wit"] {
            assert!(made.dir.join(f).is_file(), "{f}");
        }
        for f in &made.files {
            let text = std::fs::read_to_string(f).unwrap();
            assert!(!PLACEHOLDERS.iter().any(|p| text.contains(p)), "{} keeps a placeholder", f.display());
        }
        std::fs::remove_dir_all(&parent).unwrap();
    }
}
