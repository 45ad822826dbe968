//! The SFTP source against a real OpenSSH `sshd` (started here on a free
//! loopback port, with the `internal-sftp` subsystem, a host key and a
//! user key made for the test), moto's versioned buckets and the local
//! PostgreSQL: the shipped `customers-sftp` pipeline. The SFTP user is
//! this user, or `nobody` when the tests run as root (root reads any
//! file, whatever its mode: an unreadable file would not be one).

use crate::common;
use crate::services::{self, pg, s3_at, unique};
pub(crate) use crate::sshd::Sshd;
use host::run::{RunError, RunOptions, Summary};
use std::path::Path;
use std::process::Command;
use std::time::Duration;

mod faults;

/// One test's world: a server, a versioned bucket, a schema.
pub(crate) struct World {
    pub sshd: Sshd,
    pub bucket: String,
    pub schema: String,
    pub name: String,
}

impl World {
    pub(crate) async fn new() -> World {
        World::with_versioning(aws_sdk_s3::types::BucketVersioningStatus::Enabled).await
    }

    pub(crate) async fn with_versioning(status: aws_sdk_s3::types::BucketVersioningStatus) -> World {
        let (name, schema, bucket) = (unique("sftp"), unique("s"), crate::files::bucket_name("raw"));
        crate::files::schema_with_customers(&schema).await;
        let s3 = s3_at(services::endpoint()).await;
        s3.create_bucket().bucket(&bucket).send().await.unwrap();
        let versioning = aws_sdk_s3::types::VersioningConfiguration::builder().status(status).build();
        s3.put_bucket_versioning().bucket(&bucket).versioning_configuration(versioning).send().await.unwrap();
        World { sshd: Sshd::start(), bucket, schema, name }
    }

    /// The shipped pipeline's text for this world, `edits` (from, to)
    /// applied to it.
    pub(crate) fn text(&self, edits: &[(&str, &str)]) -> String {
        let text = std::fs::read_to_string(common::workspace().join("pipelines/customers-sftp.toml")).unwrap();
        let mut text = text
            .replace("name = \"customers-sftp\"", &format!("name = \"{}\"", self.name))
            .replace("table = \"customers\"", &format!("table = \"customers\"\nschema = \"{}\"", self.schema))
            .replace("stable_s = 5", "stable_s = 1");
        for (from, to) in edits {
            assert!(text.contains(from), "{from}");
            text = text.replace(from, to);
        }
        text
    }

    pub(crate) fn pipeline(&self, edits: &[(&str, &str)]) -> host::config::Pipeline {
        let path = Path::new("pipelines/customers-sftp.toml");
        let vars = self.sshd.vars(&self.bucket);
        let lookup = |v: &str| vars.iter().find(|(k, _)| k == v).map(|(_, x)| x.clone());
        let parsed = host::config::parse_str(path, &self.text(edits), lookup).unwrap();
        host::config::validate(path, parsed).unwrap()
    }

    pub(crate) async fn run(&self, edits: &[(&str, &str)]) -> Result<Summary, RunError> {
        let opts = RunOptions { once: true, idle: Duration::from_millis(1500), ..Default::default() };
        let aws = services::aws_at(services::endpoint()).await;
        let p = self.pipeline(edits);
        host::run::run(p, common::engine(), &services::database_url(), &aws, opts, std::future::pending()).await
    }

    pub(crate) async fn once(&self) -> Summary {
        self.run(&[]).await.expect("the run completes")
    }

    /// (customer id, city, file name) of every row, in id order.
    pub(crate) async fn rows(&self) -> Vec<(String, String, String)> {
        let sql = format!(
            "SELECT customer_id::text, city, source_file FROM {}.customers ORDER BY customer_id, source_file",
            self.schema
        );
        let prefix = format!("s3://{}/customers-sftp/", self.bucket);
        let rows = pg().await.query(&sql, &[]).await.unwrap();
        rows.iter()
            .map(|r| (r.get(0), r.get(1), r.get::<_, String>(2).trim_start_matches(&prefix).to_string()))
            .collect()
    }

    /// How many versions (delete markers apart) each key has.
    pub(crate) async fn versions(&self) -> Vec<(String, usize, bool)> {
        let s3 = s3_at(services::endpoint()).await;
        let out = s3.list_object_versions().bucket(&self.bucket).send().await.unwrap();
        let mut keys: Vec<(String, usize, bool)> = Vec::new();
        for v in out.versions() {
            let key = v.key().unwrap().trim_start_matches("customers-sftp/").to_string();
            match keys.iter_mut().find(|(k, _, _)| *k == key) {
                Some(e) => e.1 += 1,
                None => keys.push((key, 1, false)),
            }
        }
        for m in out.delete_markers() {
            let key = m.key().unwrap().trim_start_matches("customers-sftp/").to_string();
            if m.is_latest() == Some(true) {
                if let Some(e) = keys.iter_mut().find(|(k, _, _)| *k == key) {
                    e.2 = true;
                }
            }
        }
        keys.sort();
        keys
    }
}

pub(crate) fn line(id: u32, city: &str) -> String {
    format!("{id},60601,{city},IL,2023-02-01 08:00:00,2023-02-01 08:00:00\n")
}

pub(crate) fn owned(rows: &[(&str, &str, &str)]) -> Vec<(String, String, String)> {
    rows.iter().map(|(a, b, c)| (a.to_string(), b.to_string(), c.to_string())).collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn five_files_copy_once_load_and_a_changed_file_replaces_its_rows_and_a_deleted_one_takes_them_away() {
    let w = World::new().await;
    for (i, name) in ["a", "b", "c", "d", "e"].iter().enumerate() {
        w.sshd.write(&format!("{name}.csv"), &line(i as u32 + 1, "Chicago"));
    }
    w.sshd.write("notes.txt", "not a csv: the glob leaves it\n");
    let s = w.once().await;
    assert_eq!((s.files_copied, s.objects, s.rows, s.dead_letters), (5, 5, 5, 0), "{s}");
    let all = ["a", "b", "c", "d", "e"].map(|n| (format!("{n}.csv"), 1, false)).to_vec();
    assert_eq!(w.versions().await, all, "one copy of each file, the text file left");
    let recorded: i64 = pg()
        .await
        .query_one("SELECT count(*) FROM etl.sftp_files WHERE pipeline = $1 AND version_id IS NOT NULL", &[&w.name])
        .await
        .unwrap()
        .get(0);
    assert_eq!(recorded, 5, "each copy is recorded with the version it wrote");
    // Reconcile loaded the latest version by its version id (a versioned
    // bucket), the one the copy wrote.
    let head = services::s3_at(services::endpoint())
        .await
        .head_object()
        .bucket(&w.bucket)
        .key("customers-sftp/b.csv")
        .send()
        .await
        .unwrap();
    let loaded: String = pg()
        .await
        .query_one("SELECT version FROM etl.files WHERE pipeline = $1 AND key = 'customers-sftp/b.csv'", &[&w.name])
        .await
        .unwrap()
        .get(0);
    assert_eq!(Some(loaded.as_str()), head.version_id(), "the version loaded is the version id");

    let s = w.once().await;
    assert_eq!((s.files_copied, s.objects, s.rows), (0, 0, 0), "nothing changed, nothing copied: {s}");
    assert_eq!(w.versions().await, all);

    // b changes (two rows now; a size of its own, so the change shows
    // whatever second it lands in).
    w.sshd.write("b.csv", &(line(2, "Evanston") + &line(6, "Skokie")));
    let s = w.once().await;
    assert_eq!((s.files_copied, s.objects, s.rows), (1, 1, 2), "{s}");
    let mut want = all.clone();
    want[1].1 = 2;
    assert_eq!(w.versions().await, want, "the change is a second version of b");
    assert_eq!(
        w.rows().await,
        owned(&[
            ("1", "Chicago", "a.csv"),
            ("2", "Evanston", "b.csv"),
            ("3", "Chicago", "c.csv"),
            ("4", "Chicago", "d.csv"),
            ("5", "Chicago", "e.csv"),
            ("6", "Skokie", "b.csv"),
        ]),
        "b's rows are its latest version's"
    );

    // c deleted on the server: mirror_deletes puts a delete marker, and
    // the reconcile pass after it removes c's rows.
    std::fs::remove_file(w.sshd.files.join("c.csv")).unwrap();
    let s = w.once().await;
    assert_eq!((s.files_copied, s.files_deleted, s.objects_removed), (0, 1, 1), "{s}");
    let v = w.versions().await;
    assert!(v.iter().any(|(k, n, deleted)| k == "c.csv" && *n == 1 && *deleted), "{v:?}");
    assert!(!w.rows().await.iter().any(|(_, _, f)| f == "c.csv"));
    assert_eq!(w.rows().await.len(), 5);
}

#[tokio::test(flavor = "multi_thread")]
async fn without_mirror_deletes_a_file_deleted_on_the_server_keeps_its_copy_and_its_rows() {
    let w = World::new().await;
    w.sshd.write("a.csv", &line(1, "Chicago"));
    w.sshd.write("b.csv", &line(2, "Chicago"));
    let keep = [("mirror_deletes = true", "mirror_deletes = false")];
    let s = w.run(&keep).await.unwrap();
    assert_eq!((s.files_copied, s.rows), (2, 2), "{s}");
    std::fs::remove_file(w.sshd.files.join("b.csv")).unwrap();
    let s = w.run(&keep).await.unwrap();
    assert_eq!((s.files_copied, s.files_deleted, s.objects_removed, s.rows), (0, 0, 0, 0), "{s}");
    assert_eq!(w.versions().await, vec![("a.csv".into(), 1, false), ("b.csv".into(), 1, false)]);
    assert_eq!(w.rows().await, owned(&[("1", "Chicago", "a.csv"), ("2", "Chicago", "b.csv")]));
}

#[tokio::test(flavor = "multi_thread")]
async fn a_file_still_being_appended_to_waits_until_it_is_stable() {
    let w = World::new().await;
    w.sshd.write("done.csv", &line(1, "Chicago"));
    let growing = w.sshd.files.join("growing.csv");
    std::fs::write(&growing, line(100, "Chicago")).unwrap();
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let appender = {
        let (stop, growing) = (stop.clone(), growing.clone());
        std::thread::spawn(move || {
            let mut id = 101;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                use std::io::Write;
                let mut f = std::fs::OpenOptions::new().append(true).open(&growing).unwrap();
                f.write_all(line(id, "Chicago").as_bytes()).unwrap();
                id += 1;
                std::thread::sleep(Duration::from_millis(150));
            }
            id - 100
        })
    };
    let s = w.once().await;
    assert_eq!((s.files_copied, s.rows), (1, 1), "only the stable file is copied: {s}");
    assert_eq!(w.versions().await, vec![("done.csv".into(), 1, false)]);
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let lines = appender.join().unwrap();
    let s = w.once().await;
    assert_eq!((s.files_copied, s.rows), (1, lines as usize), "once still, it is copied whole: {s}");
    let growing_rows = w.rows().await.iter().filter(|(_, _, f)| f == "growing.csv").count();
    assert_eq!(growing_rows, lines as usize);
}

/// A wrong password, a wrong key and an unknown host key each stop the run
/// at its start with an error naming the server and the user; nothing is
/// copied or loaded.
#[tokio::test(flavor = "multi_thread")]
async fn a_wrong_password_key_or_host_key_is_a_clear_error_naming_host_and_user() {
    let w = World::new().await;
    w.sshd.write("a.csv", &line(1, "Chicago"));
    let at = format!("sftp://{}@127.0.0.1:{}", w.sshd.user, w.sshd.port);
    let key_line = "private_key = \"${SFTP_KEY_FILE}\"";
    let other_key = format!("private_key = \"{}\"", w.sshd.other_key.display());
    let wrong_hosts = format!("known_hosts = \"{}\"", w.sshd.wrong_known_hosts.display());
    let cases: [(&str, Vec<(&str, &str)>, &str); 3] = [
        ("wrong password", vec![(key_line, "password = \"not the password\"")], "refused the password"),
        ("wrong key", vec![(key_line, other_key.as_str())], "refused the key"),
        (
            "unknown host key",
            vec![("known_hosts = \"${SFTP_KNOWN_HOSTS}\"", wrong_hosts.as_str())],
            "host key (ssh-ed25519 SHA256:",
        ),
    ];
    for (what, edits, says) in cases {
        let e = w.run(&edits).await.expect_err(what).to_string();
        assert!(e.starts_with(&at), "{what}: {e}");
        assert!(e.contains(says), "{what}: {e}");
        assert!(!e.contains("not the password"), "{what}: the password is never shown: {e}");
    }
    assert!(w.versions().await.is_empty(), "nothing copied");
    assert!(w.rows().await.is_empty(), "nothing loaded");
    // The right settings then work.
    assert_eq!(w.once().await.rows, 1);
}

/// `host run --once` killed with SIGKILL in the middle of a large file's
/// multipart copy: the next run copies it once (the unfinished upload
/// aborted) and the table ends with each of its rows once.
#[tokio::test(flavor = "multi_thread")]
async fn a_host_killed_in_the_middle_of_a_large_copy_copies_it_once_next_time() {
    let w = World::new().await;
    let n = 700_000u32;
    let mut text = String::with_capacity(n as usize * 64);
    for id in 1..=n {
        text.push_str(&line(id, "Chicago"));
    }
    w.sshd.write("big.csv", &text);
    drop(text);
    let file = std::env::temp_dir().join(format!("{}.toml", w.name));
    std::fs::write(&file, w.text(&[])).unwrap();
    let command = || {
        let mut c = Command::new(crate::objects::host_binary());
        c.arg("run").args(["--plugin-path", common::PLUGIN_DIR, "--cache-dir"]).arg(common::cache_dir());
        c.arg(&file).arg("--once");
        c.env("DATABASE_URL", services::database_url())
            .env("AWS_ENDPOINT_URL", services::endpoint())
            .env("AWS_REGION", "us-east-1")
            .env("AWS_ACCESS_KEY_ID", "test")
            .env("AWS_SECRET_ACCESS_KEY", "test")
            .env("HOST_LOG_FORMAT", "text");
        for (k, v) in w.sshd.vars(&w.bucket) {
            c.env(k, v);
        }
        c.stdout(std::process::Stdio::piped()).stderr(std::process::Stdio::piped());
        c
    };
    // The killed host's lease on the pass lasts 3 s: the next `--once`
    // waits that long for it.
    let mut child = command().env("HOST_LEASE_S", "3").spawn().unwrap();
    let s3 = s3_at(services::endpoint()).await;
    // Killed once a part of the copy is in the bucket and before it ends.
    let start = std::time::Instant::now();
    loop {
        assert!(start.elapsed() < Duration::from_secs(120), "the copy never started");
        // (moto's ListParts answer does not parse in the SDK: the upload's
        // existence is what shows the copy began.)
        let uploads = s3.list_multipart_uploads().bucket(&w.bucket).send().await.unwrap();
        if !uploads.uploads().is_empty() {
            tokio::time::sleep(Duration::from_millis(100)).await;
            break;
        }
        assert!(child.try_wait().unwrap().is_none(), "the host ended before it was killed");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    child.kill().unwrap();
    child.wait().unwrap();
    assert!(w.versions().await.is_empty(), "killed mid-copy: no object yet");

    let mut again = command();
    let out = tokio::task::spawn_blocking(move || again.output().unwrap()).await.unwrap();
    let (stdout, stderr) = (String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "{stdout}\n{stderr}");
    assert!(stdout.contains("files copied 1, deleted 0"), "{stdout}");
    assert_eq!(w.versions().await, vec![("big.csv".into(), 1, false)], "copied once");
    let uploads = s3.list_multipart_uploads().bucket(&w.bucket).send().await.unwrap();
    assert!(uploads.uploads().is_empty(), "the killed run's upload was aborted");
    let db = pg().await;
    let sql = format!("SELECT count(*), count(DISTINCT customer_id) FROM {}.customers", w.schema);
    let row = db.query_one(&sql, &[]).await.unwrap();
    assert_eq!((row.get::<_, i64>(0), row.get::<_, i64>(1)), (n as i64, n as i64), "each row once");
    let _ = std::fs::remove_file(file);
}
