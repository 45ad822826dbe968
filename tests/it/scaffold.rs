//! The plugin author's path end to end: `host plugins new` makes a crate
//! outside the workspace, a two-line transform goes in, it builds for
//! wasm32-wasip2, its unit test passes natively, and the pipeline it came
//! with passes `host test` and loads rows through `host run --once`.

use crate::common::{self, edit, ok};
use crate::services::unique;
use std::path::Path;
use std::process::{Command, Output};

/// `cargo ARGS` in `dir`, free of the settings of the `cargo test` running
/// this test, building into the folder the tests' plugins are built in (so
/// the SDK's dependencies are compiled already).
fn cargo(dir: &Path, args: &[&str]) -> Output {
    let mut c = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()));
    for (k, _) in std::env::vars() {
        if (k.starts_with("CARGO_") && k != "CARGO_HOME") || k.starts_with("RUSTC") || k == "RUSTFLAGS" {
            c.env_remove(k);
        }
    }
    let build_dir = Path::new(common::PLUGIN_DIR).parent().unwrap().join("plugin-build");
    c.current_dir(dir).args(args).env("CARGO_TARGET_DIR", &build_dir).output().unwrap()
}

fn host(dir: &Path, args: &[&str]) -> Output {
    Command::new(crate::objects::host_binary()).current_dir(dir).args(args).output().unwrap()
}

#[tokio::test(flavor = "multi_thread")]
async fn a_new_plugin_builds_tests_and_loads_rows() {
    let parent = std::env::temp_dir().join(unique("author"));
    let out = host(Path::new("/"), &["plugins", "new", "lowercase-locale", "--dir", parent.to_str().unwrap()]);
    let said = ok("plugins new", &out);
    assert!(said.contains("cargo test-native") && said.contains("host test pipeline.toml"), "{said}");
    let dir = parent.join("lowercase-locale");

    // The author's two lines, and the expectations that follow from them.
    let lib = dir.join("src/lib.rs");
    edit(
        &lib,
        "let text = out.text(span).to_string();\n                        out.push_text(f.cell.key, &text);",
        "let lower = out.text(span).to_lowercase();\n                        out.push_text(f.cell.key, &lower);",
    );
    edit(
        &lib,
        r#"vec![Emit(vec![json!({"locale": "en-US", "n": 1})])]"#,
        r#"vec![Emit(vec![json!({"locale": "en-us", "n": 1})])]"#,
    );
    let pipeline = dir.join("pipeline.toml");
    edit(&pipeline, r#"expect = '{"locale": "en-US", "n": 1}'"#, r#"expect = '{"locale": "en-us", "n": 1}'"#);

    // The workspace's lock: the versions the SDK is built and tested with.
    std::fs::copy(common::workspace().join("Cargo.lock"), dir.join("Cargo.lock")).unwrap();
    let tested = ok("cargo test-native", &cargo(&dir, &["test-native", "--release"]));
    assert!(tested.contains("records_come_out_with_the_field_changed ... ok"), "{tested}");
    ok("cargo build", &cargo(&dir, &["build", "--release"]));
    // Built into the shared folder; the pipeline looks in the crate's own.
    let built = Path::new(common::PLUGIN_DIR).parent().unwrap().join("plugin-build/wasm32-wasip2/release");
    let release = dir.join("target/wasm32-wasip2/release");
    std::fs::create_dir_all(&release).unwrap();
    std::fs::copy(built.join("lowercase_locale.wasm"), release.join("lowercase_locale.wasm")).unwrap();

    let cases = ok("host test", &host(&dir, &["test", "--no-cache", "pipeline.toml"]));
    assert!(cases.contains("1 passed, 0 failed"), "{cases}");
    let checked = ok("host check", &host(&dir, &["check", "--no-cache", "pipeline.toml"]));
    assert!(checked.starts_with("ok: pipeline.toml"), "{checked}");
    let inspected = ok(
        "inspect",
        &host(&dir, &["plugins", "inspect", "--no-cache", release.join("lowercase_locale.wasm").to_str().unwrap()]),
    );
    assert!(inspected.contains("\"field\""), "its params schema: {inspected}");

    // Rows through `host run --once`: the queue, a table of the pipeline's shape.
    crate::polyglot::loads_rows(&dir, "lowercase_locale", &["en-US", "RU", "pt-BR"], &["en-us", "ru", "pt-br"]).await;
    let _ = std::fs::remove_dir_all(&parent);
}
