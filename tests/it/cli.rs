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

/// A queue pipeline's `--input` gzip'd (`.gz`): the same messages, the
/// same rows and rejection.
#[test]
fn host_test_of_a_queue_pipeline_reads_gzipd_message_bodies() {
    let ws = common::workspace();
    let dir = std::env::temp_dir().join(crate::services::unique("gzbodies"));
    std::fs::create_dir_all(&dir).unwrap();
    let plain = ws.join("tests/data/fetch_login_queue_bodies.jsonl");
    let gzipped = std::process::Command::new("gzip").arg("-kc").arg(&plain).output().unwrap();
    assert!(gzipped.status.success(), "gzip: {}", String::from_utf8_lossy(&gzipped.stderr));
    let gz = dir.join("bodies.jsonl.gz");
    std::fs::write(&gz, &gzipped.stdout).unwrap();
    let pipeline = ws.join("pipelines/logins.toml");
    let mut outputs = Vec::new();
    for input in [&plain, &gz] {
        let (mut rows, mut rejects) = (Vec::new(), Vec::new());
        let summary = run_file(&pipeline, input, &mut rows, &mut rejects, &options()).unwrap();
        assert_eq!(summary.to_string(), "read 100, written 99, rejected 1, dropped 0", "{}", input.display());
        outputs.push((json_lines(rows), json_lines(rejects)));
    }
    assert_eq!(outputs[0], outputs[1]);
    let _ = std::fs::remove_dir_all(&dir);
}

/// `RUST_LOG=debug` lets no statement parameter into the log
/// (tokio-postgres logs them at debug): only naming `tokio_postgres`
/// itself does.
#[tokio::test(flavor = "multi_thread")]
async fn debug_logs_hold_no_statement_parameters_unless_tokio_postgres_is_named() {
    crate::services::migrated().await;
    let value = crate::services::unique("secretvalue");
    let stderr = |filter: &str| {
        let out = std::process::Command::new(host_binary())
            .current_dir(common::workspace())
            .args(["lineage", "pipelines/logins.toml", "--digest", &value, "--log-format", "json"])
            .env("DATABASE_URL", crate::services::database_url())
            .env("RUST_LOG", filter)
            .output()
            .unwrap();
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8_lossy(&out.stderr).into_owned()
    };
    let debug = stderr("debug");
    assert!(!debug.contains(&value), "a parameter in the log: {debug}");
    assert!(stderr("debug,tokio_postgres=debug").contains(&value), "asked for by name, they are there");
}

/// JSON lines as values.
fn json_lines(bytes: Vec<u8>) -> Vec<serde_json::Value> {
    String::from_utf8(bytes).unwrap().lines().map(|l| serde_json::from_str(l).unwrap()).collect()
}

/// `host test --input` of an S3 pipeline reads the file as the pipeline's
/// objects are read: CSV with its header and quoting, gzip by the name.
#[test]
fn host_test_reads_a_csv_file_and_its_gzip_as_the_pipelines_objects() {
    let ws = common::workspace();
    let dir = std::env::temp_dir().join(crate::services::unique("csvinput"));
    std::fs::create_dir_all(&dir).unwrap();
    let csv = std::fs::read_to_string(ws.join("tests/data/s3/transactions.csv")).unwrap();
    let file = dir.join("transactions.csv");
    std::fs::write(&file, format!("{csv}4,a row cut short\n")).unwrap();
    let gzipped = std::process::Command::new("gzip").arg("-kc").arg(&file).output().unwrap();
    assert!(gzipped.status.success(), "gzip: {}", String::from_utf8_lossy(&gzipped.stderr));
    std::fs::write(dir.join("transactions.csv.gz"), &gzipped.stdout).unwrap();
    let pipeline = ws.join("pipelines/transactions.toml");
    let mut outputs = Vec::new();
    for name in ["transactions.csv", "transactions.csv.gz"] {
        let (mut rows, mut rejects) = (Vec::new(), Vec::new());
        let summary = run_file(&pipeline, &dir.join(name), &mut rows, &mut rejects, &options()).unwrap();
        assert_eq!(summary.to_string(), "read 4, written 3, rejected 1, dropped 0", "{name}");
        assert_eq!(
            json_lines(rejects),
            [serde_json::json!({"line": 5, "step": 0, "plugin": "input", "reason": "expected 12 fields, found 2"})],
            "{name}"
        );
        outputs.push(json_lines(rows));
    }
    let rows = &outputs[0];
    assert_eq!(outputs[1], *rows, "the gzip file gives the same rows");
    assert_eq!(rows[0]["property_address"], "12 Main St, Springfield, IL", "quoted commas");
    assert_eq!(rows[1]["property_address"], "7 \"Old\" Mill Rd, Apt 3", "quoted quotes");
    assert_eq!(rows[1]["loan_amount"], serde_json::Value::Null, "an empty field is null");
    assert_eq!(rows[2]["lender"], "Credit Union, North");
    let _ = std::fs::remove_dir_all(&dir);
}

/// A gzip JSON array (the Fetch sample file as it was published) through
/// the logins chain, read as an S3 pipeline of `format = "json-array"`
/// would read it: each element a record, its index the line.
#[test]
fn host_test_reads_a_gzip_json_array_for_a_json_array_pipeline() {
    let ws = common::workspace();
    let dir = std::env::temp_dir().join(crate::services::unique("arrayinput"));
    std::fs::create_dir_all(&dir).unwrap();
    let logins = std::fs::read_to_string(ws.join("pipelines/logins.toml")).unwrap();
    let sqs = "[source.sqs]\nqueue = \"${LOGIN_QUEUE:-login-queue}\"\n";
    assert!(logins.contains(sqs));
    let pipeline = dir.join("logins-files.toml");
    std::fs::write(&pipeline, logins.replace(sqs, "[source.s3]\nqueue = \"q\"\nformat = \"json-array\"\n")).unwrap();
    let out = std::process::Command::new(host_binary())
        .current_dir(&ws)
        .args(["test", "--plugin-path", common::PLUGIN_DIR, "--cache-dir"])
        .arg(common::cache_dir())
        .arg(&pipeline)
        .args(["--input", "tests/data/fetch_sample_data_2022-12.json.gz"])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{stderr}");
    let mut lines = stderr.lines();
    let reject: serde_json::Value = serde_json::from_str(lines.next().unwrap()).unwrap();
    assert_eq!(
        reject["reason"], "missing required fields: user_id, app_version, device_type, ip, locale, device_id",
        "{stderr}"
    );
    assert_eq!(lines.next(), Some("read 100, written 99, rejected 1, dropped 0"), "{stderr}");
    let rows = json_lines(out.stdout);
    assert_eq!(rows.len(), 99);
    assert_eq!(rows[0]["app_version"], 2, "\"2.3.0\" gives 2");
    assert_eq!(rows.iter().filter(|r| r["locale"].is_null()).count(), 29);
    let _ = std::fs::remove_dir_all(&dir);
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
            .args(args)
            .args(["--plugin-path", common::PLUGIN_DIR, "--cache-dir"])
            .arg(common::cache_dir())
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
    assert_eq!(out.status.code(), Some(2), "a pipeline that is not valid");
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

/// What `host ... -h` shows of one command: its arguments (`PIPELINE...`)
/// and its flags (`--once`), `--help` and `--version` left out.
type Shown = (Vec<String>, std::collections::BTreeSet<String>);

/// The lines of `help`'s section `title` (up to a blank line).
fn help_section<'a>(help: &'a str, title: &str) -> Vec<&'a str> {
    help.lines().skip_while(|l| *l != title).skip(1).take_while(|l| !l.trim().is_empty()).collect()
}

/// Every command below `path` (`host`, `host dead-letters`, ...) with what
/// its help shows.
fn commands_in_help(path: &[String], into: &mut std::collections::BTreeMap<String, Shown>) {
    let out = std::process::Command::new(host_binary()).args(path).arg("-h").output().unwrap();
    assert!(out.status.success(), "host {path:?} -h");
    let help = String::from_utf8(out.stdout).unwrap();
    let subcommands: Vec<&str> = help_section(&help, "Commands:")
        .iter()
        .filter(|l| l.starts_with("  ") && !l.starts_with("   "))
        .filter_map(|l| l.split_whitespace().next())
        .filter(|c| *c != "help")
        .collect();
    let flags = help
        .lines()
        .filter(|l| l.starts_with("  ") && l.trim_start().starts_with('-') && l.len() - l.trim_start().len() <= 6)
        .filter_map(|l| l.split_whitespace().find(|w| w.starts_with("--")))
        .map(|f| f.trim_end_matches(',').to_string())
        .filter(|f| f != "--help" && f != "--version")
        .collect();
    if subcommands.is_empty() {
        let arguments = help_section(&help, "Arguments:")
            .iter()
            .filter(|l| l.starts_with("  ") && !l.starts_with("   "))
            .filter_map(|l| l.split_whitespace().next())
            .map(|a| a.replace(['<', '>'], ""))
            .collect();
        into.insert(path.join(" "), (arguments, flags));
        return;
    }
    assert!(flags.is_empty(), "`host {}` has flags of its own: {flags:?}", path.join(" "));
    for sub in subcommands {
        let mut deeper = path.to_vec();
        deeper.push(sub.to_string());
        commands_in_help(&deeper, into);
    }
}

/// README's "Commands" table, row by row: `| `host run` | `PIPELINE...` |
/// `--once` `--admin [ADDR]` ... |`.
fn commands_in_readme() -> std::collections::BTreeMap<String, Shown> {
    let readme = std::fs::read_to_string(common::workspace().join("README.md")).unwrap();
    let start = readme.find("\n### Commands\n").expect("README has a `### Commands` section") + 1;
    let section = &readme[start..];
    let section = &section[..section[1..].find("\n#").map_or(section.len(), |end| end + 1)];
    let mut commands = std::collections::BTreeMap::new();
    for row in section.lines().filter(|l| l.starts_with("| `host ")) {
        let cells: Vec<&str> = row.trim_matches('|').split(" | ").map(str::trim).collect();
        assert_eq!(cells.len(), 3, "README's row `{row}` has three cells");
        let command = cells[0].trim_matches('`').strip_prefix("host ").unwrap().to_string();
        let arguments =
            cells[1].split_whitespace().map(|a| a.trim_matches('`').to_string()).filter(|a| a != "-").collect();
        let flags = cells[2]
            .split('`')
            .skip(1)
            .step_by(2)
            .filter_map(|code| code.split_whitespace().next())
            .filter(|f| f.starts_with("--"))
            .map(str::to_string)
            .collect();
        assert!(commands.insert(command.clone(), (arguments, flags)).is_none(), "`host {command}` twice in README");
    }
    commands
}

/// README lists every command, with its arguments and flags, exactly as
/// `--help` shows them, and no more.
#[test]
fn readme_lists_the_commands_and_flags_that_help_shows() {
    let mut shown = std::collections::BTreeMap::new();
    commands_in_help(&[], &mut shown);
    let listed = commands_in_readme();
    let names = |m: &std::collections::BTreeMap<String, Shown>| m.keys().cloned().collect::<Vec<_>>();
    assert_eq!(names(&listed), names(&shown), "the commands README lists, and those `host --help` shows");
    for (command, help) in &shown {
        assert_eq!(&listed[command], help, "`host {command}`: README's arguments and flags, then `--help`'s");
    }
    // What each says it is about.
    let about = |args: &[&str]| {
        String::from_utf8(std::process::Command::new(host_binary()).args(args).output().unwrap().stdout).unwrap()
    };
    assert!(about(&["--help"]).contains("SFTP"), "{}", about(&["--help"]));
    let once = about(&["run", "--help"]);
    for says in ["queue", "reconcile", "SFTP pass"] {
        assert!(once.contains(says), "run --once: {says}: {once}");
    }
    let new = about(&["plugins", "new", "--help"]);
    assert_eq!(new.matches("[default: .]").count(), 1, "{new}");
}

#[test]
fn plugins_inspect_names_world_version_digest_and_size() {
    let mask = std::path::Path::new(common::PLUGIN_DIR).join("mask.wasm");
    let bytes = std::fs::read(&mask).unwrap();
    let out = std::process::Command::new(host_binary())
        .args(["plugins", "inspect", "--no-cache"])
        .arg(&mask)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(stdout.contains("world: etl:transform/projecting-plugin@0.1.0\nname: mask\nversion: 0.1.0\n"), "{stdout}");
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
            .args(["plugins", "inspect", "--no-cache"])
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
            .args(["check", "--no-cache"])
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
    assert_eq!(out.status.code(), Some(2), "{stderr}");
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
        .args(["check", "--plugin-path", common::PLUGIN_DIR, "--cache-dir"])
        .arg(common::cache_dir())
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
