//! Every row can say what made it (issue 25), through the real `host`
//! binary against moto and PostgreSQL: `host lineage` tells versions apart
//! by params and by the pipeline file's revision, and the generated columns
//! `pipeline-revision`, `batch-id`, `message-id` and `source-line` hold
//! what made each row.

use crate::common;
use crate::services::{self, pg, put, queue, s3_at, send, unique};
use sha2::Digest;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// `host ARGS` with the test's database, moto and plugins.
fn host(args: &[&str]) -> Output {
    Command::new(crate::objects::host_binary())
        .current_dir(common::workspace())
        .args(args)
        .env("HOST_PLUGIN_PATH", common::PLUGIN_DIR)
        .env("HOST_CACHE_DIR", common::cache_dir())
        .env("DATABASE_URL", services::database_url())
        .env("AWS_ENDPOINT_URL", services::endpoint())
        .env("AWS_REGION", "us-east-1")
        .env("AWS_ACCESS_KEY_ID", "test")
        .env("AWS_SECRET_ACCESS_KEY", "test")
        .env_remove("HOST_ADMIN_ADDR")
        .output()
        .unwrap()
}

/// `host ARGS`, which must succeed; its stdout.
fn host_ok(args: &[&str]) -> String {
    let out = host(args);
    let (stdout, stderr) = (String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "host {args:?}: {:?}\n{stdout}\n{stderr}", out.status.code());
    stdout.into_owned()
}

/// The revision of a file as the host defines it: SHA-256 of its bytes.
fn revision_of(file: &Path) -> String {
    format!("sha256:{:x}", sha2::Sha256::digest(std::fs::read(file).unwrap()))
}

/// The shipped logins pipeline without its test cases (they pin SHA-256
/// digests), on `queue`, into `schema`, with the generated columns of
/// provenance, `mask` using `algorithm`.
fn logins_file(dir: &Path, name: &str, queue: &str, schema: &str, algorithm: &str) -> PathBuf {
    let text = std::fs::read_to_string(common::workspace().join("pipelines/logins.toml")).unwrap();
    let text = text.split("\n[[tests]]").next().unwrap();
    let text = text
        .replace("name = \"logins\"", &format!("name = \"{name}\""))
        .replace("queue = \"${LOGIN_QUEUE:-login-queue}\"", &format!("queue = \"{queue}\"\nwait_time_s = 1"))
        .replace("algorithm = \"sha256\"", &format!("algorithm = \"{algorithm}\""))
        .replace("table = \"user_logins\"", &format!("table = \"user_logins\"\nschema = \"{schema}\""))
        .replace(
            "create_date = { generated = \"load-date\" }",
            "create_date = { generated = \"load-date\" }\nbatch_id = { generated = \"batch-id\" }\n\
             message_id = { generated = \"message-id\" }\nrevision = { generated = \"pipeline-revision\" }",
        );
    let file = dir.join("logins.toml");
    std::fs::write(&file, text).unwrap();
    file
}

#[tokio::test(flavor = "multi_thread")]
async fn a_params_only_change_is_a_version_of_its_own_and_rows_name_their_message_batch_and_revision() {
    let (name, schema) = (unique("lineage"), unique("s"));
    services::migrated().await;
    let db = pg().await;
    db.batch_execute(&format!(
        "CREATE SCHEMA {schema}; CREATE TABLE {schema}.user_logins (LIKE public.user_logins); \
         ALTER TABLE {schema}.user_logins ADD COLUMN batch_id bigint, ADD COLUMN message_id text, \
         ADD COLUMN revision text"
    ))
    .await
    .unwrap();
    let sqs = services::sqs().await;
    let url = queue(&sqs, &name).await;
    let dir = std::env::temp_dir().join(&name);
    std::fs::create_dir_all(&dir).unwrap();
    let bodies = crate::run::fetch_bodies();

    // Version 1 (SHA-256), then the same file with only mask's params
    // changed (SHA-512): the same plugins, other rows.
    let mut revisions = Vec::new();
    for (algorithm, sent) in [("sha256", &bodies[..40]), ("sha512", &bodies[40..])] {
        let file = logins_file(&dir, &name, &name, &schema, algorithm);
        revisions.push(revision_of(&file));
        send(&sqs, &url, sent).await;
        host_ok(&["run", "--once", file.to_str().unwrap()]);
    }
    let file = dir.join("logins.toml");

    // The rows: every one names its SQS message (the ledger holds that id
    // for the row's batch), its batch (whose lineage counts its rows) and
    // the file's revision its version came from.
    let count = |sql: String| {
        let db = &db;
        async move { db.query_one(&sql, &[]).await.unwrap().get::<_, i64>(0) }
    };
    let t = format!("{schema}.user_logins");
    assert_eq!(count(format!("SELECT count(*) FROM {t}")).await, 99);
    let in_its_batch = format!(
        "SELECT count(*) FROM {t} u WHERE EXISTS (SELECT 1 FROM etl.receipts r WHERE r.pipeline = '{name}' \
         AND r.batch_id = u.batch_id AND u.message_id = ANY(r.message_ids || r.message_uuids::text[]))"
    );
    assert_eq!(count(in_its_batch).await, 99, "message-id is the SQS id, batch-id its batch");
    assert_eq!(count(format!("SELECT count(DISTINCT message_id) FROM {t}")).await, 99);
    let batches_agree = format!(
        "SELECT count(*) FROM (SELECT batch_id, count(*) AS n FROM {t} GROUP BY batch_id) u \
         JOIN etl.batches b ON b.id = u.batch_id AND b.pipeline = '{name}' AND b.rows_written = u.n"
    );
    let batches = count(format!("SELECT count(DISTINCT batch_id) FROM {t}")).await;
    assert_eq!(count(batches_agree).await, batches, "each batch's lineage counts the rows naming it");
    for (revision, hash_length) in revisions.iter().zip([64, 128]) {
        let sql =
            format!("SELECT count(*) FROM {t} WHERE revision = '{revision}' AND length(masked_ip) = {hash_length}");
        assert!(count(sql).await > 0, "rows of revision {revision}");
    }
    let mixed = format!(
        "SELECT count(*) FROM {t} u JOIN etl.batches b ON b.id = u.batch_id WHERE b.revision IS DISTINCT FROM u.revision"
    );
    assert_eq!(count(mixed).await, 0, "a row's revision is its batch's");

    // `host lineage`: two versions, told apart by mask's params and the
    // revision, the plugins the same.
    let out = host_ok(&["lineage", file.to_str().unwrap()]);
    let versions: Vec<&str> = out.lines().filter(|l| l.starts_with("version ")).collect();
    assert_eq!(versions.len(), 2, "{out}");
    for (v, revision) in versions.iter().zip(&revisions) {
        assert!(v.contains(&format!("revision {}", &revision[..19])), "{out}");
    }
    let masks: Vec<&str> = out.lines().filter(|l| l.trim_start().starts_with("step 3")).collect();
    assert_eq!(masks.len(), 2, "{out}");
    assert!(masks[0].contains("\"algorithm\":\"sha256\"") && masks[1].contains("\"algorithm\":\"sha512\""), "{out}");
    let digest_of = |line: &str| line.split_whitespace().skip_while(|w| *w != "mask").nth(1).unwrap().to_string();
    assert_eq!(digest_of(masks[0]), digest_of(masks[1]), "the same plugin: {out}");
    let params_of = |line: &str| line.split("params ").nth(1).unwrap().split_whitespace().next().unwrap().to_string();
    assert_ne!(params_of(masks[0]), params_of(masks[1]), "other params: {out}");

    // `--digest` with the new params' digest (as printed, short) gives the
    // batches of the second run only; with the revision, the same.
    let new_batches = count(format!("SELECT count(DISTINCT batch_id) FROM {t} WHERE length(masked_ip) = 128")).await;
    for digest in [params_of(masks[1]), revisions[1].clone()] {
        let out = host_ok(&["lineage", file.to_str().unwrap(), "--digest", &digest]);
        assert_eq!(out.lines().count() as i64 - 1, new_batches, "{digest}: {out}");
    }
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test(flavor = "multi_thread")]
async fn rows_of_an_object_name_their_line_batch_and_revision() {
    let (name, schema) = (unique("linefile"), unique("s"));
    crate::files::schema_with_customers(&schema).await;
    let db = pg().await;
    db.batch_execute(&format!(
        "ALTER TABLE {schema}.customers ADD COLUMN line bigint, ADD COLUMN batch_id bigint, ADD COLUMN revision text"
    ))
    .await
    .unwrap();
    let bucket = crate::files::bucket_name("linefile");
    let s3 = s3_at(services::endpoint()).await;
    s3.create_bucket().bucket(&bucket).send().await.unwrap();
    // A quoted field over two lines: the next row starts on line 4.
    let csv = "1,33301,Fort Lauderdale,FL,2023-01-01,2023-01-02\n\
               2,10001,\"New\nYork\",NY,2023-01-01,2023-01-02\n\
               3,94105,San Francisco,CA,2023-01-01,2023-01-02\n";
    put(&s3, &bucket, "customers/a.csv", csv).await;

    let text = std::fs::read_to_string(common::workspace().join("pipelines/customers.toml")).unwrap();
    let text = text
        .replace("name = \"customers\"", &format!("name = \"{name}\""))
        .replace("${CUSTOMER_BUCKET:-landing-zone}", &bucket)
        .replace("table = \"customers\"", &format!("table = \"customers\"\nschema = \"{schema}\""))
        .replace(
            "source_file = { generated = \"source-file\" }",
            "source_file = { generated = \"source-file\" }\nline = { generated = \"source-line\" }\n\
             batch_id = { generated = \"batch-id\" }\nrevision = { generated = \"pipeline-revision\" }",
        );
    let dir = std::env::temp_dir().join(&name);
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("customers.toml");
    std::fs::write(&file, text).unwrap();
    host_ok(&["run", "--once", file.to_str().unwrap()]);

    let rows = db
        .query(
            &format!(
                "SELECT c.customer_id::text, c.line, c.source_file, c.revision, b.source \
                 FROM {schema}.customers c JOIN etl.batches b ON b.id = c.batch_id AND b.pipeline = $1 ORDER BY 1"
            ),
            &[&name],
        )
        .await
        .unwrap();
    let got: Vec<(String, i64, String, String)> =
        rows.iter().map(|r| (r.get(0), r.get(1), r.get(2), r.get(3))).collect();
    let (uri, revision) = (format!("s3://{bucket}/customers/a.csv"), revision_of(&file));
    let want: Vec<(String, i64, String, String)> =
        [("1", 1), ("2", 2), ("3", 4)].map(|(id, line)| (id.into(), line, uri.clone(), revision.clone())).to_vec();
    assert_eq!(got, want);
    assert!(rows.iter().all(|r| r.get::<_, String>(4).starts_with(&uri)), "the batch is the object's");

    // `host test --input` fills them as a run would, from the file: its
    // lines, the revision; no batch.
    let input = dir.join("a.csv");
    std::fs::write(&input, csv).unwrap();
    let out = host_ok(&["test", file.to_str().unwrap(), "--input", input.to_str().unwrap()]);
    let rows: Vec<serde_json::Value> =
        out.lines().filter(|l| l.starts_with('{')).map(|l| serde_json::from_str(l).unwrap()).collect();
    let lines: Vec<i64> = rows.iter().map(|r| r["line"].as_i64().unwrap()).collect();
    assert_eq!(lines, [1, 2, 4], "{out}");
    assert!(rows.iter().all(|r| r["batch_id"].is_null() && r["revision"] == revision.as_str()), "{out}");
    let _ = std::fs::remove_dir_all(&dir);
}
