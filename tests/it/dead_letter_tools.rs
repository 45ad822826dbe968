//! The dead-letter tools (issue 24): `list`'s filters, `show` with and
//! without the payload (never in the logs), `discard` by id and by
//! filters (then neither listed nor replayed), `export`'s JSON lines, the
//! status page's bounded counts, and what every command says when the
//! `etl` schema is missing.

use crate::run::{items, items_table};
use crate::services::{self, pg, unique};
use host::commands::dead_letters::{self as tools, Filter, Since};
use host::sink::dead_letter::DeadLetter;
use std::path::PathBuf;
use std::process::Output;

const KEY: &str = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

/// A pipeline file named `name` loading `items` of `schema` from queue
/// `name`.
fn pipeline_file(name: &str, schema: &str) -> PathBuf {
    let text = format!(
        "name = \"{name}\"\n[source.sqs]\nqueue = \"{name}\"\n\
         [sink]\ntable = \"items\"\nschema = \"{schema}\"\n[sink.columns]\nid = \"id\"\nname = \"name\"\n"
    );
    let file = std::env::temp_dir().join(format!("{name}.toml"));
    std::fs::write(&file, text).unwrap();
    file
}

/// `host dead-letters ARGS` against `url`, with the dead-letter key, the
/// user `tester` and every log line on.
fn host(args: &[&str], url: &str) -> Output {
    std::process::Command::new(crate::objects::host_binary())
        .arg("dead-letters")
        .args(args)
        .env("DATABASE_URL", url)
        .env("AWS_ENDPOINT_URL", services::endpoint())
        .env("AWS_REGION", "us-east-1")
        .env("AWS_ACCESS_KEY_ID", "test")
        .env("AWS_SECRET_ACCESS_KEY", "test")
        .env("HOST_DEAD_LETTER_KEY", KEY)
        .env("USER", "tester")
        .env("RUST_LOG", "trace")
        .output()
        .unwrap()
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// Checks the exit code, showing both streams if it differs.
fn exits(out: &Output, code: i32) -> (String, String) {
    let (stdout, stderr) = (text(&out.stdout), text(&out.stderr));
    assert_eq!(out.status.code(), Some(code), "stdout: {stdout}\nstderr: {stderr}");
    (stdout, stderr)
}

/// A dead letter of `pipeline` (its items loading into `schema`) made by
/// the sink, its payload sealed with [`KEY`]: (stage, source, message id,
/// reason, failed how long ago); its id.
async fn dead_letter(
    pipeline: &str,
    schema: &str,
    (stage, source, message, reason, ago): (&'static str, &str, &str, &str, &str),
    payload: &[u8],
) -> i64 {
    let p = items(pipeline, schema, pipeline, "append");
    let sealer = host::sink::dead_letter::Sealer::new(KEY).unwrap();
    let pool = host::sink::pool(&services::database_url(), 1).unwrap();
    let sink = host::sink::PostgresSink::new(pool, pipeline, source, p.sink.as_ref().unwrap(), Some(sealer));
    let dead = match stage {
        "transform" => DeadLetter::transform(1, "mask", "sha256:00", reason, 1),
        stage => DeadLetter { stage, ..DeadLetter::input(reason.into()) },
    };
    let unit = host::sink::Unit {
        message_id: message.into(),
        payload: payload.to_vec(),
        dead: vec![dead],
        ..Default::default()
    };
    assert_eq!(sink.commit(vec![unit], &host::sink::Lineage::default()).await.unwrap().dead_letters, 1);
    pg().await
        .query_one(
            "UPDATE etl.dead_letters SET failed_at = now() - $3::text::interval \
             WHERE pipeline = $1 AND message_id = $2 RETURNING id",
            &[&pipeline, &message, &ago],
        )
        .await
        .unwrap()
        .get(0)
}

/// Five dead letters of a fresh pipeline, the fifth replayed: their ids
/// and the pipeline file.
async fn five() -> (Vec<i64>, PathBuf, String) {
    let (name, schema) = (unique("dltools"), unique("s"));
    items_table(&schema).await;
    let file = pipeline_file(&name, &schema);
    let mut ids = Vec::new();
    for (i, letter) in [
        ("input", "sqs:q", "m-a", "invalid JSON: expected value", "3 hours"),
        ("transform", "sqs:q", "m-b", "Missing field ip", "0 s"),
        ("input", "s3://bkt/customers/2024/a.csv#v1", "line 7", "line 7: expected 6 fields, found 7", "1 hour"),
        ("sink", "s3://bkt/orders/b.csv#v2", "line 2", "database refused the row", "6 years"),
        ("input", "sqs:q", "m-e", "invalid JSON: replayed since", "0 s"),
    ]
    .into_iter()
    .enumerate()
    {
        ids.push(
            dead_letter(&name, &schema, letter, format!("{{\"id\": {}, \"name\": \"n{i}\"}}", i + 1).as_bytes()).await,
        );
    }
    pg().await.execute("UPDATE etl.dead_letters SET replayed_at = now() WHERE id = $1", &[&ids[4]]).await.unwrap();
    (ids, file, schema)
}

async fn listed(file: &std::path::Path, filter: Filter, limit: i64) -> Vec<i64> {
    let rows = tools::list(file, &filter, limit, &services::database_url()).await.unwrap();
    rows.iter().map(|r| r.id).collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn list_filters_by_stage_source_since_and_reason() {
    let (ids, file, _) = five().await;
    let (a, b, c, d, e) = (ids[0], ids[1], ids[2], ids[3], ids[4]);
    let by = |f: fn(&mut Filter)| {
        let mut filter = Filter::default();
        f(&mut filter);
        filter
    };
    assert_eq!(listed(&file, Filter::default(), 100).await, [a, b, c, d], "open ones");
    assert_eq!(listed(&file, by(|f| f.all = true), 100).await, [a, b, c, d, e]);
    assert_eq!(listed(&file, Filter::default(), 2).await, [a, b], "--limit");
    assert_eq!(listed(&file, by(|f| f.stage = Some("input".into())), 100).await, [a, c]);
    assert_eq!(listed(&file, by(|f| f.source = Some("m-b".into())), 100).await, [b], "a message id");
    assert_eq!(listed(&file, by(|f| f.source = Some("sqs:q".into())), 100).await, [a, b], "a queue");
    assert_eq!(listed(&file, by(|f| f.source = Some("customers/".into())), 100).await, [c], "a key prefix");
    assert_eq!(listed(&file, by(|f| f.source = Some("s3://bkt/orders/".into())), 100).await, [d]);
    assert_eq!(listed(&file, by(|f| f.source = Some("s3://bkt/customers/2024/a.csv#v1".into())), 100).await, [c]);
    let none: Vec<i64> = Vec::new();
    assert_eq!(listed(&file, by(|f| f.source = Some("bkt/".into())), 100).await, none, "a key, not the bucket");
    assert_eq!(listed(&file, by(|f| f.since = Some(Since::Ago(7_200.0))), 100).await, [b, c], "2h");
    assert_eq!(
        listed(&file, by(|f| f.since = Some(Since::parse("2021-01-01T00:00:00Z").unwrap())), 100).await,
        [a, b, c]
    );
    assert_eq!(listed(&file, by(|f| f.reason = Some("missing".into())), 100).await, [b], "any case");
    assert_eq!(listed(&file, by(|f| f.reason = Some("JSON".into())), 100).await, [a]);
    let both = by(|f| {
        f.stage = Some("input".into());
        f.since = Some(Since::Ago(7_200.0));
    });
    assert_eq!(listed(&file, both, 100).await, [c], "filters add up");

    let rows = tools::list(&file, &Filter::default(), 100, &services::database_url()).await.unwrap();
    assert_eq!(
        rows[2].origin(),
        tools::Origin::Object {
            bucket: "bkt",
            key: "customers/2024/a.csv",
            version: "v1",
            line: Some(7),
            at: "line 7"
        }
    );

    // The binary: a row names the object, version and line; never a payload.
    let url = services::database_url();
    let (stdout, _) = exits(&host(&["list", file.to_str().unwrap(), "--stage", "input", "--since", "2h"], &url), 0);
    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(lines.len(), 2, "{stdout}");
    assert!(lines[0].trim_start().starts_with("id  failed at") && lines[0].ends_with("reason"), "{stdout}");
    assert!(lines[1].contains(&format!("{c}  ")) && lines[1].contains("  input  "), "{stdout}");
    assert!(lines[1].contains("s3://bkt/customers/2024/a.csv version v1 line 7"), "{stdout}");
    assert!(lines[1].ends_with("line 7: expected 6 fields, found 7"), "{stdout}");
    assert!(!stdout.contains("\"name\""), "no payload: {stdout}");
    let (_, stderr) = exits(&host(&["list", file.to_str().unwrap(), "--since", "yesterday"], &url), 2);
    assert!(stderr.contains("neither a time (RFC 3339"), "{stderr}");
    let (_, stderr) = exits(&host(&["list", file.to_str().unwrap(), "--stage", "load"], &url), 2);
    assert!(stderr.contains("possible values: source, input, transform, sink"), "{stderr}");
}

#[tokio::test(flavor = "multi_thread")]
async fn show_prints_the_payload_only_when_asked_and_never_logs_it() {
    let (ids, file, _) = five().await;
    let (url, file) = (services::database_url(), file.to_str().unwrap().to_string());
    let c = ids[2].to_string();
    let (stdout, stderr) = exits(&host(&["show", &file, "--id", &c], &url), 0);
    assert!(stdout.starts_with(&format!("id:           {c}\nstate:        open\n")), "{stdout}");
    for field in [
        "stage:        input\n",
        "reason:       line 7: expected 6 fields, found 7\n",
        "object:       s3://bkt/customers/2024/a.csv\n",
        "version:      v1\n",
        "line:         7\n",
        "replays:      none\n",
    ] {
        assert!(stdout.contains(field), "{field}: {stdout}");
    }
    assert!(stdout.contains("sealed with key"), "{stdout}");
    let payload = "{\"id\": 3, \"name\": \"n2\"}";
    assert!(!stdout.contains(payload) && !stderr.contains(payload), "{stdout}{stderr}");

    let (with, stderr) = exits(&host(&["show", &file, "--id", &c, "--payload"], &url), 0);
    assert_eq!(with, format!("{stdout}\n{payload}\n"), "the fields, a blank line, the payload opened");
    assert!(!stderr.contains("n2"), "never logged: {stderr}");

    // Without the key a sealed payload does not open: the fields alone do.
    let out = std::process::Command::new(crate::objects::host_binary())
        .args(["dead-letters", "show", &file, "--id", &c, "--payload"])
        .env("DATABASE_URL", &url)
        .env_remove("HOST_DEAD_LETTER_KEY")
        .output()
        .unwrap();
    let (_, stderr) = exits(&out, 2);
    assert!(stderr.contains(&format!("dead letter {c} is sealed with key")), "{stderr}");

    // Unknown ids: exit 2 (an error), saying so.
    let (_, stderr) = exits(&host(&["show", &file, "--id", "999999999999"], &url), 2);
    assert!(stderr.contains("has no dead letter 999999999999"), "{stderr}");
    let other = pipeline_file(&unique("dlother"), "s");
    let (_, stderr) = exits(&host(&["show", other.to_str().unwrap(), "--id", &c], &url), 2);
    assert!(stderr.contains(&format!("has no dead letter {c}")), "another pipeline's: {stderr}");
}

#[tokio::test(flavor = "multi_thread")]
async fn discarded_dead_letters_are_kept_but_neither_listed_nor_replayed() {
    let (ids, file, schema) = five().await;
    let (a, b, c, d, e) = (ids[0], ids[1], ids[2], ids[3], ids[4]);
    let (url, path) = (services::database_url(), file.to_str().unwrap().to_string());
    let (stdout, _) = exits(&host(&["discard", &path, "--id", &a.to_string()], &url), 0);
    assert_eq!(stdout, "discarded 1 dead letters\n");
    let (stdout, _) = exits(&host(&["discard", &path, "--id", &a.to_string(), "--id", &e.to_string()], &url), 0);
    assert_eq!(
        stdout,
        format!(
            "discarded 0 dead letters\ndead letter {a}: discarded already; left as it was\n\
             dead letter {e}: replayed already; left as it was\n"
        )
    );
    // One id not the pipeline's: nothing is discarded.
    let (_, stderr) = exits(&host(&["discard", &path, "--id", &b.to_string(), "--id", "999999999999"], &url), 2);
    assert!(stderr.contains("has no dead letter 999999999999: nothing was discarded"), "{stderr}");
    // Filters without one: refused, saying why.
    let (_, stderr) = exits(&host(&["discard", &path, "--all-matching"], &url), 2);
    assert!(stderr.contains("--all-matching needs at least one of --stage, --source, --since, --reason"), "{stderr}");
    let (_, stderr) = exits(&host(&["discard", &path, "--id", &b.to_string(), "--stage", "input"], &url), 2);
    assert!(stderr.contains("with --all-matching, not with --id"), "{stderr}");
    let (_, stderr) = exits(&host(&["discard", &path], &url), 2);
    assert!(stderr.contains("required arguments were not provided"), "{stderr}");
    let (stdout, _) = exits(&host(&["discard", &path, "--all-matching", "--source", "orders/"], &url), 0);
    assert_eq!(stdout, "discarded 1 dead letters\n");

    assert_eq!(listed(&file, Filter::default(), 100).await, [b, c]);
    let all = tools::list(&file, &Filter { all: true, ..Filter::default() }, 100, &url).await.unwrap();
    let gone = all.iter().find(|r| r.id == d).unwrap();
    assert_eq!((gone.state(), gone.discarded_by.as_deref()), ("discarded", Some("tester")));
    let (stdout, _) = exits(&host(&["list", &path, "--all"], &url), 0);
    assert!(stdout.contains("[discarded by tester at "), "{stdout}");
    let (stdout, _) = exits(&host(&["list", &path], &url), 0);
    assert!(!stdout.contains("discarded"), "{stdout}");

    // Replay leaves them out, and says so of one asked for by id.
    let (stdout, _) = exits(&host(&["replay", &path, "--id", &a.to_string()], &url), 0);
    assert_eq!(
        stdout,
        format!("dead letter {a}: discarded already; not replayed\nreplayed: 0 loaded, 0 failed again, 0 skipped\n")
    );
    let (_, stderr) = exits(&host(&["replay", &path, "--id", "999999999999"], &url), 2);
    assert!(stderr.contains("has no dead letter 999999999999: nothing was replayed"), "{stderr}");
    // b's payload {"id": 2, ...} loads (c's object version is not loaded
    // any more: skipped); a and d stay as they are.
    let (stdout, _) = exits(&host(&["replay", &path], &url), 0);
    assert!(stdout.ends_with("replayed: 1 loaded, 0 failed again, 1 skipped\n"), "{stdout}");
    let loaded: Vec<i32> = pg()
        .await
        .query(&format!("SELECT id FROM {schema}.items ORDER BY id"), &[])
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert_eq!(loaded, [2]);
    let kept: i64 = pg()
        .await
        .query_one(
            "SELECT count(*) FROM etl.dead_letters d JOIN etl.dead_letter_payloads p ON p.dead_letter_id = d.id \
             WHERE d.id = ANY($1) AND d.discarded_at IS NOT NULL AND d.replayed_at IS NULL",
            &[&vec![a, d]],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(kept, 2, "kept, payloads and all, and not replayed");
}

#[tokio::test(flavor = "multi_thread")]
async fn export_writes_a_json_line_for_each_dead_letter() {
    let (ids, file, schema) = five().await;
    let letter = ("input", "sqs:q", "m-f", "invalid UTF-8", "0 s");
    let odd = dead_letter(&name_of(&file), &schema, letter, &[0xff, b'a']).await;
    let (url, path) = (services::database_url(), file.to_str().unwrap().to_string());
    let lines = |stdout: &str| -> Vec<serde_json::Value> {
        stdout.lines().map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}"))).collect()
    };
    let (stdout, stderr) = exits(&host(&["export", &path], &url), 0);
    let all = lines(&stdout);
    let exported: Vec<i64> = all.iter().map(|v| v["id"].as_i64().unwrap()).collect();
    assert_eq!(exported, [ids[0], ids[1], ids[2], ids[3], odd], "open ones, oldest first");
    assert!(stderr.contains("exported 5 dead letters"), "{stderr}");
    assert!(all.iter().all(|v| v.get("payload").is_none() && v.get("payload_hex").is_none()), "{stdout}");
    let c = &all[2];
    assert_eq!(
        (c["stage"].as_str(), c["object"].as_str(), c["version"].as_str(), c["line"].as_u64(), c["state"].as_str()),
        (Some("input"), Some("s3://bkt/customers/2024/a.csv"), Some("v1"), Some(7), Some("open"))
    );
    assert_eq!((all[1]["step"].as_i64(), all[1]["plugin"].as_str()), (Some(1), Some("mask")));
    assert!(all[0]["failed_at"].as_str().unwrap().ends_with('Z'));

    let (stdout, stderr) = exits(&host(&["export", &path, "--payload", "--stage", "input", "--all"], &url), 0);
    let input = lines(&stdout);
    let exported: Vec<i64> = input.iter().map(|v| v["id"].as_i64().unwrap()).collect();
    assert_eq!(exported, [ids[0], ids[2], ids[4], odd], "--all: the replayed one too");
    assert_eq!(input[1]["payload"], "{\"id\": 3, \"name\": \"n2\"}");
    assert_eq!(input[2]["state"], "replayed");
    assert_eq!((input[3]["payload_hex"].as_str(), input[3].get("payload")), (Some("ff61"), None));
    assert!(!stderr.contains("n2"), "never logged: {stderr}");
}

/// The pipeline name in a file written by [`pipeline_file`].
fn name_of(file: &std::path::Path) -> String {
    file.file_stem().unwrap().to_str().unwrap().to_string()
}

/// The status page's counts of `pipeline`: (stage, reason, count) among
/// its newest `limit` open dead letters.
async fn counts(pipeline: &str, limit: i64) -> Vec<(String, String, i64)> {
    let rows = pg().await.query(host::admin::COUNT_SQL, &[&vec![pipeline.to_string()], &limit]).await.unwrap();
    rows.iter().map(|r| (r.get(1), r.get(2), r.get(3))).collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn the_status_page_counts_the_newest_open_dead_letters_only() {
    let (ids, file, schema) = five().await;
    let name = name_of(&file);
    for _ in 0..3 {
        let letter = ("input", "sqs:q", unique("m"), "invalid JSON: expected value", "0 s");
        dead_letter(&name, &schema, (letter.0, letter.1, &letter.2, letter.3, letter.4), b"x").await;
    }
    let discard = tools::Discard::Ids(vec![ids[1]]);
    tools::discard(&file, &discard, None, &services::database_url()).await.unwrap();
    let json = || ("input".to_string(), "invalid JSON: expected value".to_string());
    let all = counts(&name, host::admin::COUNTED).await;
    assert_eq!(all[0], (json().0, json().1, 4), "{all:?}");
    assert_eq!(all.len(), 3, "not the replayed one, nor the discarded one: {all:?}");
    assert!(all.iter().all(|(stage, _, _)| stage != "transform"), "{all:?}");
    assert_eq!(counts(&name, 2).await, [(json().0, json().1, 2)], "the newest two only");
    // The database may answer from the index alone for each pipeline.
    let plan: Vec<String> = {
        let client = pg().await;
        client.batch_execute("SET enable_seqscan = off").await.unwrap();
        let rows = client
            .query(&format!("EXPLAIN {}", host::admin::COUNT_SQL), &[&vec![name.clone()], &host::admin::COUNTED])
            .await
            .unwrap();
        rows.iter().map(|r| r.get(0)).collect()
    };
    assert!(plan.iter().any(|l| l.contains("dead_letters_open")), "{plan:#?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn every_command_says_when_the_etl_schema_is_missing() {
    let db = unique("dlnomig");
    pg().await.batch_execute(&format!("CREATE DATABASE {db}")).await.unwrap();
    let base = services::database_url();
    let (head, query) = base.split_once('?').map_or((base.as_str(), ""), |(h, q)| (h, q));
    let url = format!(
        "{}/{db}{}",
        head.rsplit_once('/').unwrap().0,
        if query.is_empty() { String::new() } else { format!("?{query}") }
    );
    let file = pipeline_file(&unique("dlnomig"), "s");
    let path = file.to_str().unwrap();
    let missing = format!("the etl schema is missing in database \"{db}\" at ");
    let run = format!("run `host migrate {path}` to create it");
    for args in [
        vec!["list", path],
        vec!["list", path, "--all", "--reason", "x"],
        vec!["show", path, "--id", "1"],
        vec!["discard", path, "--id", "1"],
        vec!["discard", path, "--all-matching", "--stage", "input"],
        vec!["export", path, "--payload"],
        vec!["replay", path],
        vec!["replay", path, "--id", "1"],
    ] {
        let (_, stderr) = exits(&host(&args, &url), 2);
        let error = stderr.lines().find(|l| l.starts_with("error: ")).unwrap_or_else(|| panic!("{stderr}"));
        assert!(error.contains(&missing) && error.ends_with(&run), "{args:?}: {error}");
        assert!(!error.contains("relation \"etl"), "{args:?}: {error}");
    }
    // Migrated before discards existed: older than this host.
    host::migrate::run_to(&url, Some(15)).await.unwrap();
    let (_, stderr) = exits(&host(&["list", path], &url), 2);
    assert!(stderr.contains(&format!("the etl schema in database \"{db}\" at ")), "{stderr}");
    assert!(stderr.contains("is older than this host") && stderr.contains("to bring it up to date"), "{stderr}");
    host::migrate::run(&url).await.unwrap();
    let (stdout, _) = exits(&host(&["list", path], &url), 0);
    assert_eq!(stdout.lines().count(), 1, "only the header: {stdout}");
    pg().await.batch_execute(&format!("DROP DATABASE {db} WITH (FORCE)")).await.unwrap();
}
