//! `host replay` (issue 25) through the real binary, against moto and
//! PostgreSQL: a reconcile pipeline's prefix of 3 CSV objects, loaded by
//! production (`mask` with SHA-256 on `buyer`), replayed with a fixed step
//! (`mask-sha512`): `--diff` names the changed column and its counts,
//! `--into` fills a side table, `--apply` replaces exactly those objects'
//! rows once, with lineage. Bad requests fail clearly with status 2. And
//! `dead-letters replay --step`.

use crate::common;
use crate::files::bucket_name;
use crate::objects::host_binary;
use crate::services::{self, migrated, pg, put, s3_at, unique};
use host::run::RunOptions;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// A reconcile pipeline of CSV objects in `bucket` into `schema.tx`,
/// masking `buyer` with step 2 (`mask` given as `uses`).
fn pipeline_file(name: &str, schema: &str, bucket: &str, mask: &str) -> PathBuf {
    pipeline_file_in(name, schema, bucket, mask, "\"append\"")
}

/// [`pipeline_file`] with the sink's `mode` line(s).
fn pipeline_file_in(name: &str, schema: &str, bucket: &str, mask: &str, mode: &str) -> PathBuf {
    let text = format!(
        "name = \"{name}\"\n\
         [source.s3]\nbucket = \"{bucket}\"\nmode = \"reconcile\"\nformat = \"csv\"\ncsv = {{ header = true }}\n\
         [[transforms]]\nuses = \"convert\"\nparams = {{ fields = {{ amount = \"float\" }} }}\n\
         [[transforms]]\nuses = \"{mask}\"\nparams = {{ fields = {{ buyer = \"masked_buyer\" }}, algorithm = \"sha256\" }}\n\
         [sink]\ntable = \"tx\"\nschema = \"{schema}\"\nmode = {mode}\n\
         [sink.columns]\nid = \"id\"\nbuyer = \"masked_buyer\"\namount = \"amount\"\n\
         file = {{ generated = \"source-file\" }}\n"
    );
    let file = std::env::temp_dir().join(format!("{name}.toml"));
    std::fs::write(&file, text).unwrap();
    file
}

/// `host ARGS` with the test's services; status, stdout, stderr.
fn host(args: &[&str]) -> (i32, String, String) {
    let out = std::process::Command::new(host_binary())
        .args(args)
        .args(["--plugin-path", common::PLUGIN_DIR, "--plugin-path", common::TEST_PLUGIN_DIR])
        .arg("--cache-dir")
        .arg(common::cache_dir())
        .env("DATABASE_URL", services::database_url())
        .env("AWS_ENDPOINT_URL", services::endpoint())
        .env("AWS_REGION", "us-east-1")
        .env("AWS_ACCESS_KEY_ID", "test")
        .env("AWS_SECRET_ACCESS_KEY", "test")
        .env("HOST_LOG_FORMAT", "text")
        .output()
        .unwrap();
    let text = |b: &[u8]| String::from_utf8_lossy(b).into_owned();
    (out.status.code().unwrap_or(-1), text(&out.stdout), text(&out.stderr))
}

async fn run_once(file: &Path) -> host::run::Summary {
    let p = host::config::load(file).unwrap();
    let opts = RunOptions { once: true, idle: Duration::from_millis(1500), ..Default::default() };
    let aws = services::aws_at(services::endpoint()).await;
    host::run::run(p, common::engine(), &services::database_url(), &aws, opts, std::future::pending())
        .await
        .expect("run completes")
}

async fn one(sql: &str) -> i64 {
    pg().await.query_one(sql, &[]).await.unwrap().get(0)
}

/// Three objects under `in/` (two rows each) and one under `out/`, loaded.
async fn loaded(prefix: &str) -> (String, String, String, PathBuf) {
    loaded_in(prefix, "\"append\"").await
}

/// [`loaded`] into a sink of `mode`.
async fn loaded_in(prefix: &str, mode: &str) -> (String, String, String, PathBuf) {
    migrated().await;
    let (name, schema, bucket) = (unique(prefix), unique("s"), bucket_name(prefix));
    pg().await
        .batch_execute(&format!(
            "CREATE SCHEMA {schema}; CREATE TABLE {schema}.tx (id integer, buyer varchar(200), amount numeric, file text)"
        ))
        .await
        .unwrap();
    let s3 = s3_at(services::endpoint()).await;
    s3.create_bucket().bucket(&bucket).send().await.unwrap();
    for (i, key) in ["in/a.csv", "in/b.csv", "in/c.csv", "out/d.csv"].iter().enumerate() {
        let body = format!("id,buyer,amount\n{},Alice {i},10.5\n{},Bob {i},20\n", 2 * i + 1, 2 * i + 2);
        put(&s3, &bucket, key, body).await;
    }
    let file = pipeline_file_in(&name, &schema, &bucket, "mask", mode);
    let summary = run_once(&file).await;
    assert_eq!((summary.objects, summary.rows), (4, 8), "{summary}");
    (name, schema, bucket, file)
}

fn sha512_wasm() -> String {
    Path::new(common::TEST_PLUGIN_DIR).join("mask-sha512.wasm").display().to_string()
}

#[tokio::test(flavor = "multi_thread")]
async fn a_prefix_replayed_with_a_fixed_step_is_diffed_written_aside_and_applied_once() {
    let (name, schema, bucket, file) = loaded("replay").await;
    let file = file.to_str().unwrap();
    let from = format!("s3://{bucket}/in/");
    let step = format!("2={}", sha512_wasm());
    let lengths = |table: &str| format!("SELECT count(*) FROM {schema}.{table} WHERE length(buyer) = 128");

    // --diff: buyer changes on the 6 rows of in/, nothing else; nothing written.
    let (code, out, err) = host(&["replay", file, "--from", &from, "--step", &step, "--diff"]);
    assert_eq!(code, 0, "{out}\n{err}");
    assert!(out.contains("objects compared: 3, candidate rows: 6"), "{out}");
    assert!(
        out.contains("records compared: 6\nrows same: 0\nrows changed: 6\nrows added: 0\nrows dropped: 0\n"),
        "{out}"
    );
    assert!(out.contains("changed columns:\n  buyer  6 rows\nrecords that differ"), "{out}");
    assert!(out.contains(&format!("s3://{bucket}/in/a.csv line 2")), "{out}");
    assert!(!out.contains("Alice") && !err.contains("Alice"), "no values: {out}\n{err}");
    assert_eq!(one(&lengths("tx")).await, 0, "--diff writes nothing");

    // --into: a side table made like the target, filled; again: the same rows.
    let digest = host::transform::digest_of(&std::fs::read(sha512_wasm()).unwrap());
    let by_digest = format!("2={digest}");
    for _ in 0..2 {
        let (code, out, err) = host(&["replay", file, "--from", &from, "--step", &by_digest, "--into", "side"]);
        assert_eq!(code, 0, "{out}\n{err}");
        assert!(out.contains("objects written: 3, candidate rows: 6"), "{out}");
    }
    assert_eq!(one(&format!("SELECT count(*) FROM {schema}.side")).await, 6);
    assert_eq!(one(&lengths("side")).await, 6);
    assert_eq!(one(&lengths("tx")).await, 0, "--into leaves production alone");

    // --apply: exactly the objects under in/, once, with lineage.
    let batches = format!("SELECT count(*) FROM etl.batches WHERE pipeline = '{name}'");
    let before = one(&batches).await;
    let (code, out, err) = host(&["replay", file, "--from", &from, "--step", &step, "--apply"]);
    assert_eq!(code, 0, "{out}\n{err}");
    assert!(out.contains("objects applied: 3, candidate rows: 6"), "{out}");
    assert_eq!(one(&format!("SELECT count(*) FROM {schema}.tx")).await, 8);
    assert_eq!(one(&lengths("tx")).await, 6);
    assert_eq!(
        one(&format!("SELECT count(*) FROM {schema}.tx WHERE file LIKE '%/out/%' AND length(buyer) = 64")).await,
        2
    );
    let applied = one(&batches).await;
    assert_eq!(applied, before + 3, "one commit per object");
    let lineage = format!(
        "SELECT count(*) FROM etl.batches WHERE pipeline = '{name}' AND plugins::text LIKE '%{digest}%' \
         AND source LIKE 's3://{bucket}/in/%'"
    );
    assert_eq!(one(&lineage).await, 3, "lineage names the new digest");

    // Again: nothing changes, and it says so.
    let (code, out, err) = host(&["replay", file, "--from", &from, "--step", &step, "--apply"]);
    assert_eq!(code, 0, "{out}\n{err}");
    assert!(out.contains("applied before: 3") && out.contains("nothing changed"), "{out}");
    assert_eq!(one(&batches).await, applied);

    // Production now holds what the candidate gives; its own pass keeps it.
    let (code, out, _) = host(&["replay", file, "--from", &from, "--step", &step, "--diff"]);
    assert_eq!(code, 0);
    assert!(out.contains("rows same: 6\nrows changed: 0"), "{out}");
    let summary = run_once(Path::new(file)).await;
    assert_eq!(summary.objects, 0, "{summary}");
    assert_eq!(one(&lengths("tx")).await, 6);
}

#[tokio::test(flavor = "multi_thread")]
async fn bad_replays_fail_clearly_and_change_nothing() {
    let (_, schema, bucket, file) = loaded("replaybad").await;
    let file = file.to_str().unwrap();
    let from = format!("s3://{bucket}/in/");
    let step = format!("2={}", sha512_wasm());
    pg().await.batch_execute(&format!("CREATE TABLE {schema}.narrow (id integer, buyer text)")).await.unwrap();
    let cases: Vec<(Vec<String>, &str)> = vec![
        (vec![format!("s3://other-{bucket}/in/"), "--diff".into()], "the pipeline reads bucket"),
        (vec![format!("s3://{bucket}/none/"), "--diff".into()], "no objects under"),
        (vec![from.clone(), "--step".into(), "5=x.wasm".into(), "--diff".into()], "--step 5: out of range"),
        (vec![from.clone(), "--step".into(), "2=/no/such.wasm".into(), "--diff".into()], "no such file"),
        (
            vec![from.clone(), "--step".into(), format!("2=sha256:{}", "0".repeat(64)), "--diff".into()],
            "no plugin with digest",
        ),
        (
            vec![from.clone(), "--step".into(), step.clone(), "--into".into(), "narrow".into()],
            "exists with other columns",
        ),
        (vec![from.clone(), "--into".into(), "a.b.c".into()], "expected TABLE or SCHEMA.TABLE"),
        (vec![from.clone()], "--diff"),
        (vec![from.clone(), "--until".into(), "2001-01-01T00:00:00Z".into(), "--diff".into()], "no objects under"),
        (vec!["http://x".into(), "--apply".into()], "is not s3://BUCKET/PREFIX"),
    ];
    for (args, says) in cases {
        let mut all = vec!["replay", file, "--from"];
        all.extend(args.iter().map(String::as_str));
        let (code, out, err) = host(&all);
        assert_eq!(code, 2, "{args:?}: {out}\n{err}");
        assert!(err.contains(says), "{args:?} should say `{says}`: {err}");
    }
    let unchanged = format!("SELECT count(*) FROM {schema}.tx WHERE length(buyer) = 64");
    assert_eq!(one(&unchanged).await, 8);
    assert_eq!(one(&format!("SELECT count(*) FROM {schema}.narrow")).await, 0);
}

/// A step whose output does not fit the table: every row a dead letter;
/// replayed through the fixed step, they load.
#[tokio::test(flavor = "multi_thread")]
async fn dead_letters_replay_through_a_chosen_step() {
    migrated().await;
    let (name, schema, bucket) = (unique("dlstep"), unique("s"), bucket_name("dlstep"));
    pg().await
        .batch_execute(&format!(
            "CREATE SCHEMA {schema}; CREATE TABLE {schema}.tx (id integer, buyer varchar(100), amount numeric, file text)"
        ))
        .await
        .unwrap();
    let s3 = s3_at(services::endpoint()).await;
    s3.create_bucket().bucket(&bucket).send().await.unwrap();
    put(&s3, &bucket, "in/a.csv", "id,buyer,amount\n1,Alice,10.5\n").await;
    let file = pipeline_file(&name, &schema, &bucket, &sha512_wasm());
    let summary = run_once(&file).await;
    assert_eq!((summary.rows, summary.dead_letters), (0, 1), "{summary}");
    let file = file.to_str().unwrap();
    let (code, out, err) = host(&["dead-letters", "replay", file, "--step", "3=x.wasm"]);
    assert_eq!(code, 2, "{out}\n{err}");
    assert!(err.contains("--step 3: out of range"), "{err}");
    let mask = Path::new(common::PLUGIN_DIR).join("mask.wasm").display().to_string();
    let (code, out, err) = host(&["dead-letters", "replay", file, "--step", &format!("2={mask}")]);
    assert_eq!(code, 0, "{out}\n{err}");
    assert!(out.contains("1 loaded, 0 failed again"), "{out}");
    assert_eq!(one(&format!("SELECT count(*) FROM {schema}.tx WHERE length(buyer) = 64")).await, 1);
}

/// A keyed sink: rows matched by key. And an `--apply` that stopped after
/// an object's first commit resumes after it: the rest of that object
/// only, no row twice.
#[tokio::test(flavor = "multi_thread")]
async fn a_keyed_diff_and_an_apply_resumed_after_a_crash() {
    let (name, schema, bucket, file) = loaded_in("replaykey", "\"delete-insert\"\nkey = [\"id\"]").await;
    let file = file.to_str().unwrap();
    let from = format!("s3://{bucket}/in/");
    let step = format!("2={}", sha512_wasm());
    let (code, out, err) = host(&["replay", file, "--from", &from, "--step", &step, "--diff", "--since", "1h"]);
    assert_eq!(code, 0, "{out}\n{err}");
    assert!(out.contains("objects compared: 3"), "written within the hour: {out}");
    assert!(out.contains("rows matched by the sink's key (id)"), "{out}");
    assert!(out.contains("rows same: 0\nrows changed: 6\nrows added: 0\nrows dropped: 0\n"), "{out}");
    assert!(out.contains("changed columns:\n  buyer  6 rows\n"), "{out}");

    let (code, out, err) = host(&["replay", file, "--from", &from, "--step", &step, "--apply"]);
    assert_eq!(code, 0, "{out}\n{err}");
    // As if the host died after the first of a.csv's two commits.
    let db = pg().await;
    db.batch_execute(&format!(
        "UPDATE etl.replays SET rows_done = 1, done = false WHERE pipeline = '{name}' AND key = 'in/a.csv'; \
         DELETE FROM {schema}.tx WHERE id = 2"
    ))
    .await
    .unwrap();
    let (code, out, err) = host(&["replay", file, "--from", &from, "--step", &step, "--apply"]);
    assert_eq!(code, 0, "{out}\n{err}");
    assert!(out.contains("objects applied: 1, candidate rows: 1") && out.contains("applied before: 2"), "{out}");
    let a = format!("SELECT count(*) FROM {schema}.tx WHERE id IN (1, 2) AND length(buyer) = 128");
    assert_eq!(one(&a).await, 2);
    assert_eq!(one(&format!("SELECT count(*) FROM {schema}.tx")).await, 8);
}
