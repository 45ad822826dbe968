//! A pipeline's table checked before data flows (issue 24), with the real
//! `host` binary and real PostgreSQL: `host check --db` refuses a table
//! that does not fit, in the exact words `tests/tables/<case>.err` holds;
//! `host run` fails such a pipeline at its start with the same words, and
//! alone; `host migrate` makes only the host's own tables; `host sink ddl`
//! makes a table the pipeline fits; and names that need quoting load, in
//! append and in upsert.

use crate::common;
use crate::faults::{Host, good_bodies, pipeline_file};
use crate::run::schema_with_user_logins;
use crate::services::{self, migrated, pg, queue, send, unique};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::Duration;

/// `host ARGS` in the workspace, with `DATABASE_URL` and `envs`.
fn host(args: &[&str], envs: &[(&str, &str)]) -> Output {
    Command::new(crate::objects::host_binary())
        .current_dir(common::workspace())
        .args(args)
        // Flags of the commands that run plugins only: `sink ddl` has none.
        .env("HOST_PLUGIN_PATH", common::PLUGIN_DIR)
        .env("HOST_CACHE_DIR", common::cache_dir())
        .env("DATABASE_URL", services::database_url())
        .envs(envs.iter().copied())
        .output()
        .unwrap()
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// A new schema holding what `tests/tables/<case>.sql` makes, if there is
/// such a file.
async fn schema_for(case: &Path) -> String {
    migrated().await;
    let schema = unique("tbl");
    let sql = std::fs::read_to_string(case.with_extension("sql")).unwrap_or_default();
    pg().await.batch_execute(&format!("CREATE SCHEMA {schema}; SET search_path TO {schema}; {sql}")).await.unwrap();
    schema
}

/// The cases of `tests/tables/`, as paths from the workspace.
fn cases() -> Vec<PathBuf> {
    let mut cases: Vec<PathBuf> = std::fs::read_dir(common::workspace().join("tests/tables"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "toml"))
        .map(|p| p.strip_prefix(common::workspace()).unwrap().to_path_buf())
        .collect();
    cases.sort();
    cases
}

#[tokio::test(flavor = "multi_thread")]
async fn check_db_refuses_each_table_that_does_not_fit_in_its_exact_words() {
    let cases = cases();
    assert!(cases.len() >= 6, "cases are missing: {cases:?}");
    let mut failures = Vec::new();
    for case in cases {
        let schema = schema_for(&common::workspace().join(&case)).await;
        let out = host(&["check", "--db", case.to_str().unwrap()], &[("CHECK_SCHEMA", &schema)]);
        let got = text(&out.stderr).replace(&schema, "$SCHEMA");
        let err_file = common::workspace().join(&case).with_extension("err");
        if std::env::var_os("BLESS").is_some() {
            std::fs::write(&err_file, &got).unwrap();
        }
        let want = std::fs::read_to_string(&err_file).unwrap_or_default();
        if got != want || out.status.code() != Some(1) {
            failures.push(format!("{}: exit {:?}\n  want: {want}\n  got:  {got}", case.display(), out.status.code()));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[tokio::test(flavor = "multi_thread")]
async fn run_fails_a_pipeline_whose_table_does_not_fit_at_its_start_alone_with_the_same_words() {
    let case = Path::new("tests/tables/wrong-type.toml");
    let schema = schema_for(&common::workspace().join(case)).await;
    let want = std::fs::read_to_string(common::workspace().join(case).with_extension("err")).unwrap();
    let want = want.replace("$SCHEMA", &schema);
    let sqs = services::sqs().await;
    let bad_queue = queue(&sqs, &unique("badtbl")).await;
    send(&sqs, &bad_queue, &good_bodies(2)).await;
    let envs = [("CHECK_SCHEMA", schema.as_str()), ("CHECK_QUEUE", bad_queue.as_str())];

    // Alone: the error, exit status 2 (README: an error), nothing taken.
    let aws = [
        ("AWS_ENDPOINT_URL", services::endpoint()),
        ("AWS_REGION", "us-east-1"),
        ("AWS_ACCESS_KEY_ID", "test"),
        ("AWS_SECRET_ACCESS_KEY", "test"),
    ];
    let out = host(&["run", "--once", case.to_str().unwrap()], &[&envs[..], &aws[..]].concat());
    let log = text(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{log}");
    assert!(log.contains(&want), "want:\n{want}\ngot:\n{log}");
    assert_eq!(services::queue_depth(&sqs, &bad_queue).await, 2, "no message was taken");

    // Beside a pipeline whose table fits: that one loads, this one fails.
    let (good, good_schema) = (unique("goodtbl"), unique("s"));
    schema_with_user_logins(&good_schema).await;
    let good_queue = queue(&sqs, &good).await;
    send(&sqs, &good_queue, &good_bodies(3)).await;
    let good_file = pipeline_file(&good, &good_schema, "wait_time_s = 1");
    let file = common::workspace().join(case);
    let mut run =
        Host::run_all(&[&good_file, &file], &["--once"], &envs, &services::database_url(), services::endpoint());
    let (status, out) = run.wait(Duration::from_secs(120)).await.expect("--once ends");
    let log = run.log();
    assert_eq!(status.code(), Some(2), "{out}\n{log}");
    assert!(out.contains(&format!("{good}: messages 3, rows 3")), "{out}\n{log}");
    let one_line = want.trim_end().strip_prefix("error: ").unwrap();
    assert!(log.contains(&format!("error: wrong-type: {}", file.display())), "{log}");
    assert!(log.contains(one_line.split_once(": ").unwrap().1), "{log}");
}

#[tokio::test(flavor = "multi_thread")]
async fn migrate_makes_only_the_hosts_tables_and_keeps_databases_that_had_the_example_tables() {
    let db_name = unique("mig");
    let admin = pg().await;
    admin.batch_execute(&format!("CREATE DATABASE {db_name}")).await.unwrap();
    let other = services::database_url_of(&db_name);
    let migrate = |args: &[&str]| {
        Command::new(crate::objects::host_binary())
            .current_dir(common::workspace())
            .arg("migrate")
            .args(args)
            .env("DATABASE_URL", &other)
            .output()
    };
    let (db, conn) = tokio_postgres::connect(&other, tokio_postgres::NoTls).await.unwrap();
    tokio::spawn(conn);
    let tables = || async {
        db.query(
            "SELECT table_schema || '.' || table_name FROM information_schema.tables \
             WHERE table_schema NOT IN ('pg_catalog', 'information_schema') ORDER BY 1",
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| r.get::<_, String>(0))
        .collect::<Vec<_>>()
    };

    let out = migrate(&[]).unwrap();
    assert!(out.status.success(), "{}", text(&out.stderr));
    let made = tables().await;
    let others: Vec<&String> =
        made.iter().filter(|t| !t.starts_with("etl.") && *t != "public.refinery_schema_history").collect();
    assert!(others.is_empty(), "host migrate makes only etl.*: {made:?}");
    assert!(made.contains(&"etl.receipts".to_string()), "{made:?}");

    // A database an older host migrated: the example tables' migrations
    // (V2, V7, V8) in its history, and their tables.
    db.batch_execute(&format!(
        "INSERT INTO refinery_schema_history (version, name, applied_on, checksum) VALUES \
         (2, 'user_logins', '2025-01-01T00:00:00Z', '1'), (7, 'transactions', '2025-01-01T00:00:00Z', '2'), \
         (8, 'customers', '2025-01-01T00:00:00Z', '3'); {}",
        services::TABLES
    ))
    .await
    .unwrap();
    let out = migrate(&["pipelines/logins.toml"]).unwrap();
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(text(&out.stdout).trim(), "migrations applied: none (up to date)");
    assert!(tables().await.contains(&"public.user_logins".to_string()), "its tables stay");
    // A version no host of this build knows is still refused.
    db.batch_execute(
        "INSERT INTO refinery_schema_history (version, name, applied_on, checksum) \
         VALUES (999, 'future', '2025-01-01T00:00:00Z', '4')",
    )
    .await
    .unwrap();
    let out = migrate(&[]).unwrap();
    assert!(!out.status.success(), "{}", text(&out.stdout));
    drop(db);
    admin.batch_execute(&format!("DROP DATABASE {db_name} WITH (FORCE)")).await.unwrap();
}

/// A contacts pipeline into `schema`."Contacts", whose columns need quoting.
fn contacts(name: &str, schema: &str, queue: &str, mode: &str) -> PathBuf {
    let key = if mode == "upsert" { "key = [\"Id\"]" } else { "" };
    let text = format!(
        r#"name = "{name}"

[source.sqs]
queue = "{queue}"
wait_time_s = 1

[sink]
schema = "{schema}"
table = "Contacts"
mode = "{mode}"
{key}

[sink.columns]
Id = "id"
Name = "name"
"Contact Phone Number" = "phone"
"Geändert" = {{ generated = "load-time" }}

[[tests]]
name = "a contact"
input = '{{"id": 1, "name": "Ada", "phone": "+44 20 7946 0000"}}'
expect = '{{"Id": 1, "Name": "Ada", "Contact Phone Number": "+44 20 7946 0000"}}'
"#
    );
    let file = std::env::temp_dir().join(format!("{name}.toml"));
    std::fs::write(&file, text).unwrap();
    file
}

/// `host run --once FILE`; its summary line.
async fn run_once(file: &Path) -> String {
    let mut run = Host::run(file, true, &services::database_url(), services::endpoint());
    let (status, out) = run.wait(Duration::from_secs(90)).await.expect("--once ends");
    assert!(status.success(), "{out}\n{}", run.log());
    out
}

#[tokio::test(flavor = "multi_thread")]
async fn sink_ddl_makes_a_table_check_passes_and_quoted_names_load_in_append_and_upsert() {
    migrated().await;
    let sqs = services::sqs().await;
    for mode in ["append", "upsert"] {
        let (name, schema) = (unique(&format!("quoted_{mode}")), unique("s"));
        pg().await.batch_execute(&format!("CREATE SCHEMA {schema}")).await.unwrap();
        let url = queue(&sqs, &name).await;
        let file = contacts(&name, &schema, &url, mode);
        let path = file.to_str().unwrap();
        let before = host(&["check", "--db", path], &[]);
        assert_eq!(before.status.code(), Some(1), "no table yet: {}", text(&before.stderr));

        let ddl = host(&["sink", "ddl", path], &[]);
        assert!(ddl.status.success(), "{}", text(&ddl.stderr));
        let ddl = text(&ddl.stdout);
        assert!(ddl.contains("\"Contact Phone Number\" text"), "{ddl}");
        let applied = Command::new("psql")
            .args([&services::database_url(), "-v", "ON_ERROR_STOP=1", "-q", "-c", &ddl])
            .output()
            .expect("psql runs");
        assert!(applied.status.success(), "{}", text(&applied.stderr));
        let after = host(&["check", "--db", path], &[]);
        assert!(after.status.success(), "{}", text(&after.stderr));
        assert!(text(&after.stdout).contains(&format!("table {schema}.\"Contacts\" fits")), "{}", text(&after.stdout));

        let body = |id: u32, phone: &str| format!(r#"{{"id": {id}, "name": "N{id}", "phone": "{phone}"}}"#);
        send(&sqs, &url, &[body(1, "+1 555 0100"), body(2, "+1 555 0200")]).await;
        run_once(&file).await;
        send(&sqs, &url, &[body(1, "+1 555 0199")]).await;
        run_once(&file).await;
        let rows: Vec<(i64, String)> = pg()
            .await
            .query(&format!("SELECT \"Id\", \"Contact Phone Number\" FROM {schema}.\"Contacts\" ORDER BY 1, 2"), &[])
            .await
            .unwrap()
            .iter()
            .map(|r| (r.get(0), r.get(1)))
            .collect();
        let want: Vec<(i64, &str)> = match mode {
            "append" => vec![(1, "+1 555 0100"), (1, "+1 555 0199"), (2, "+1 555 0200")],
            _ => vec![(1, "+1 555 0199"), (2, "+1 555 0200")],
        };
        assert_eq!(rows, want.iter().map(|(i, p)| (*i, p.to_string())).collect::<Vec<_>>(), "{mode}");
    }
}
