//! JavaScript plugins: the SDK (componentize-js 0.23.0, jco 1.35.0 and
//! esbuild, pinned in `sdk/js/package-lock.json`; `node --test`).

use super::{edit, host, ok};
use crate::common;
use crate::services::unique;
use std::path::Path;
use std::process::Command;

fn npm(dir: &Path, args: &[&str]) -> String {
    let out = Command::new("npm").current_dir(dir).args(args).output().unwrap();
    ok(&format!("npm {} in {}", args.join(" "), dir.display()), &out)
}

#[test]
fn the_sdk_and_its_examples_pass_their_own_tests() {
    let sdk = common::workspace().join("sdk/js");
    let out = Command::new("node").current_dir(&sdk).args(["--test", "test/", "examples/"]).output().unwrap();
    let said = ok("node --test", &out);
    assert!(said.contains("# fail 0") && !said.contains("# pass 0"), "{said}");
}

#[test]
fn the_examples_pass_their_pipelines_cases_through_the_component() {
    let sdk = common::workspace().join("sdk/js");
    for example in ["mask", "filter"] {
        let pipeline = sdk.join("examples").join(example).join("pipeline.toml");
        let said = ok("host test", &host(&sdk, &["test", pipeline.to_str().unwrap()]));
        assert!(said.contains(" passed, 0 failed"), "{example}: {said}");
    }
}

#[test]
fn the_js_mask_gives_the_rust_masks_rows_byte_for_byte() {
    super::mask_gives_the_rust_masks_rows("js-mask", "");
}

#[test]
fn the_js_ports_pass_the_rust_plugins_fixtures() {
    super::ports_pass_the_rust_fixtures("js", "");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_new_js_plugin_tests_builds_and_loads_rows() {
    let parent = std::env::temp_dir().join(unique("js-author"));
    let said = ok(
        "plugins new",
        &host(Path::new("/"), &["plugins", "new", "upper-locale", "--lang", "js", "--dir", parent.to_str().unwrap()]),
    );
    assert!(said.contains("npm install") && said.contains("npm run build"), "{said}");
    let dir = parent.join("upper-locale");

    // The author's two lines, and the expectations that follow from them.
    edit(
        &dir.join("plugin.js"),
        "    if (typeof value === \"string\") record[field] = value.toLowerCase();",
        "    // Locales in capitals, as the country codes are.\n    if (typeof value === \"string\") record[field] = value.toUpperCase();",
    );
    edit(
        &dir.join("plugin.test.js"),
        r#"[{ emit: [{ locale: "en-us", n: 1 }] }"#,
        r#"[{ emit: [{ locale: "EN-US", n: 1 }] }"#,
    );
    edit(
        &dir.join("pipeline.toml"),
        r#"expect = '{"locale": "en-us", "n": 1}'"#,
        r#"expect = '{"locale": "EN-US", "n": 1}'"#,
    );

    npm(&dir, &["ci", "--no-audit", "--no-fund", "--loglevel=error"]);
    let tested = npm(&dir, &["test"]);
    assert!(tested.contains("# pass 2") && tested.contains("# fail 0"), "{tested}");
    npm(&dir, &["run", "build"]);

    let cases = ok("host test", &host(&dir, &["test", "pipeline.toml"]));
    assert!(cases.contains("2 passed, 0 failed"), "{cases}");
    let checked = ok("host check", &host(&dir, &["check", "pipeline.toml"]));
    assert!(checked.starts_with("ok: pipeline.toml"), "{checked}");
    let inspected = ok("inspect", &host(&dir, &["plugins", "inspect", "upper-locale.wasm"]));
    assert!(inspected.contains("upper-locale") && inspected.contains("\"field\""), "{inspected}");

    super::loads_rows(&dir, "upper_locale", &["en-US", "ru", "pt-BR"], &["EN-US", "RU", "PT-BR"]).await;
    let _ = std::fs::remove_dir_all(&parent);
}
