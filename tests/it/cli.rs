//! `host test` on the real Fetch data and pipeline (the acceptance run), and
//! the `host` binary itself.

use crate::common;
use host::commands::{EngineOptions, test::run_file};
use sha2::{Digest, Sha256};

fn options() -> EngineOptions {
    EngineOptions { cache_dir: Some(common::cache_dir()), plugin_path: common::plugin_path() }
}

#[test]
fn host_test_on_the_fetch_queue_writes_99_rows_and_one_rejection() {
    let ws = common::workspace();
    let input = ws.join("tests/data/fetch_login_queue_bodies.jsonl");
    let (mut rows, mut rejects) = (Vec::new(), Vec::new());
    let summary = run_file(&ws.join("pipelines/logins.toml"), &input, &mut rows, &mut rejects, &options()).unwrap();
    assert_eq!(summary.to_string(), "read 100, written 99, rejected 1, dropped 0");

    let rejects: Vec<serde_json::Value> =
        String::from_utf8(rejects).unwrap().lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert_eq!(rejects.len(), 1);
    assert_eq!(rejects[0]["line"], 13);
    assert_eq!(
        rejects[0]["reason"],
        "missing required fields: user_id, app_version, device_type, ip, locale, device_id"
    );

    let rows: Vec<serde_json::Value> =
        String::from_utf8(rows).unwrap().lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert_eq!(rows.len(), 99);
    let raw: Vec<serde_json::Value> = std::fs::read_to_string(&input)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .filter(|v: &serde_json::Value| v.get("user_id").is_some())
        .collect();
    let sha = |v: &serde_json::Value| format!("{:x}", Sha256::digest(v.as_str().unwrap().as_bytes()));
    let columns = ["user_id", "device_type", "masked_ip", "masked_device_id", "locale", "app_version", "create_date"];
    for (row, raw) in rows.iter().zip(&raw) {
        let keys: Vec<&str> = row.as_object().unwrap().keys().map(String::as_str).collect();
        let mut sorted = columns.to_vec();
        sorted.sort();
        assert_eq!(keys, sorted, "exactly the table's columns");
        assert_eq!(row["user_id"], raw["user_id"]);
        assert_eq!(row["masked_ip"].as_str().unwrap(), sha(&raw["ip"]));
        assert_eq!(row["masked_device_id"].as_str().unwrap(), sha(&raw["device_id"]));
        let major: i64 = raw["app_version"].as_str().unwrap().split('.').next().unwrap().parse().unwrap();
        assert_eq!(row["app_version"], major);
        assert_eq!(row["create_date"].as_str().unwrap().len(), 10);
    }
    assert_eq!(rows[0]["app_version"], 2, "\"2.3.0\" gives 2");
    assert_eq!(rows.iter().filter(|r| r["locale"].is_null()).count(), 29);
}

/// The built binary, next to the test executable's folder
/// (`target/release/host`); `cargo xtask test` builds it first.
fn host_binary() -> std::path::PathBuf {
    let exe = std::env::current_exe().unwrap();
    let bin = exe.parent().unwrap().parent().unwrap().join("host");
    assert!(bin.is_file(), "{} is missing: run `cargo xtask test` (it builds the host first)", bin.display());
    bin
}

#[test]
fn the_binary_runs_the_pipeline_test_cases_and_checks_pipelines() {
    let ws = common::workspace();
    let run = |args: &[&str]| {
        std::process::Command::new(host_binary())
            .current_dir(&ws)
            .args(["--plugin-path", common::PLUGIN_DIR, "--cache-dir"])
            .arg(common::cache_dir())
            .args(args)
            .output()
            .unwrap()
    };
    let out = run(&["test", "pipelines/logins.toml"]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}{}", String::from_utf8_lossy(&out.stderr));
    assert!(stdout.contains("4 passed, 0 failed"), "{stdout}");

    let out = run(&["check", "pipelines/logins.toml"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(String::from_utf8_lossy(&out.stdout).starts_with("ok: pipelines/logins.toml (3 steps: flatten sha256:"));

    let out = run(&["check", "tests/ui/plugin-bad-params.toml"]);
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(
        String::from_utf8_lossy(&out.stderr).trim(),
        "error: tests/ui/plugin-bad-params.toml:2: step 1 (`mask`) refused its params: `fields` must name at least one field"
    );

    // `host check` runs the pipeline's own cases too: a wrong expectation
    // fails it, naming the case.
    let dir = std::env::temp_dir().join(crate::services::unique("check"));
    std::fs::create_dir_all(&dir).unwrap();
    let wrong = dir.join("logins.toml");
    let text = std::fs::read_to_string(ws.join("pipelines/logins.toml")).unwrap();
    std::fs::write(&wrong, text.replace("reject = \"`app_version` is not a version\"", "reject = \"something else\""))
        .unwrap();
    let out = run(&["check", wrong.to_str().unwrap()]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains(
            "test case `a malformed version is rejected` fails: expected a rejection containing \"something else\""
        ),
        "{stderr}"
    );

    for cmd in ["run", "test", "check"] {
        let out = run(&[cmd, "--help"]);
        assert!(out.status.success() && !out.stdout.is_empty(), "{cmd} --help");
    }
}

#[test]
fn plugins_inspect_names_world_version_digest_and_size() {
    let mask = std::path::Path::new(common::PLUGIN_DIR).join("mask.wasm");
    let bytes = std::fs::read(&mask).unwrap();
    let out = std::process::Command::new(host_binary())
        .args(["--no-cache", "plugins", "inspect"])
        .arg(&mask)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(stdout.contains("world: etl:transform/plugin@0.1.0\nname: mask\nversion: 0.1.0\n"), "{stdout}");
    assert!(stdout.contains(&format!("digest: {}\nsize: {} bytes\n", host::transform::digest_of(&bytes), bytes.len())));
    // The params schema the plugin declares, its doc comments as descriptions.
    let schema = stdout.split_once("params schema:\n").expect("a schema is declared").1;
    let schema: serde_json::Value = serde_json::from_str(schema).unwrap();
    assert_eq!(schema["additionalProperties"], false, "{schema}");
    assert!(schema["properties"]["keep_original"]["description"].as_str().unwrap().contains("raw field"), "{schema}");

    // A truncated file and a component of another world: refused, saying why.
    let dir = std::env::temp_dir().join(crate::services::unique("inspect"));
    std::fs::create_dir_all(&dir).unwrap();
    let truncated = dir.join("truncated.wasm");
    std::fs::write(&truncated, &bytes[..bytes.len() / 2]).unwrap();
    let wrong = std::path::Path::new(common::TEST_PLUGIN_DIR).join("wrong-world.wasm");
    for (file, says) in [
        (&truncated, "is not a valid WebAssembly component"),
        (&wrong, "does not fit the etl:transform/plugin@0.1.0 world"),
    ] {
        let out = std::process::Command::new(host_binary())
            .args(["--no-cache", "plugins", "inspect"])
            .arg(file)
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(2));
        assert!(String::from_utf8_lossy(&out.stderr).contains(says), "{}", String::from_utf8_lossy(&out.stderr));
    }
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn a_plugin_from_s3_is_refused_at_start_when_its_digest_differs() {
    let endpoint = crate::services::endpoint();
    let bucket = crate::services::unique("plugins").replace('_', "-");
    let mask = std::path::Path::new(common::PLUGIN_DIR).join("mask.wasm");
    let put = format!(
        "import boto3, sys\n\
         s3 = boto3.client('s3', endpoint_url='{endpoint}', region_name='us-east-1', \
         aws_access_key_id='test', aws_secret_access_key='test')\n\
         s3.create_bucket(Bucket='{bucket}')\n\
         s3.upload_file(sys.argv[1], '{bucket}', 'plugins/mask.wasm')\n"
    );
    let status = std::process::Command::new(crate::services::python()).arg("-c").arg(put).arg(&mask).status().unwrap();
    assert!(status.success(), "upload to moto S3");
    let right = host::transform::digest_of(&std::fs::read(&mask).unwrap());
    let wrong = format!("sha256:{}", "0".repeat(64));
    let dir = std::env::temp_dir().join(&bucket);
    std::fs::create_dir_all(&dir).unwrap();
    let check = |digest: &str| {
        let file = dir.join("p.toml");
        let body = format!(
            "[[transforms]]\nuses = \"s3://{bucket}/plugins/mask.wasm\"\ndigest = \"{digest}\"\nparams = {{ fields = [\"ip\"] }}\n"
        );
        std::fs::write(&file, body).unwrap();
        std::process::Command::new(host_binary())
            .args(["--no-cache", "check"])
            .arg(&file)
            .env("AWS_ENDPOINT_URL", endpoint)
            .env("AWS_REGION", "us-east-1")
            .env("AWS_ACCESS_KEY_ID", "test")
            .env("AWS_SECRET_ACCESS_KEY", "test")
            .output()
            .unwrap()
    };
    let out = check(&wrong);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains(&format!("s3://{bucket}/plugins/mask.wasm has digest {right}, but the step pins {wrong}")),
        "{stderr}"
    );
    let out = check(&right);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(String::from_utf8_lossy(&out.stdout).contains(&format!("mask {}", &right[..19])));
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn an_empty_hmac_key_is_refused() {
    let file = std::env::temp_dir().join(format!("empty-key-{}.toml", std::process::id()));
    std::fs::write(
        &file,
        "[[transforms]]\nuses = \"mask\"\ngrants = { secrets = { k = \"ETL_TEST_EMPTY_KEY\" } }\n\
         params = { fields = [\"a\"], algorithm = \"hmac-sha256\", secret = \"k\" }\n",
    )
    .unwrap();
    let out = std::process::Command::new(host_binary())
        .args(["--plugin-path", common::PLUGIN_DIR, "--cache-dir"])
        .arg(common::cache_dir())
        .arg("check")
        .arg(&file)
        .env("ETL_TEST_EMPTY_KEY", "")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{stderr}");
    assert!(
        stderr.contains("secret `k`: environment variable `ETL_TEST_EMPTY_KEY` is empty: a key must not be"),
        "{stderr}"
    );
}
