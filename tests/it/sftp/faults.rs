//! The SFTP pass under faults of one file or of the bucket (issue 23): a
//! file the SFTP user cannot read, a link whose target cannot be looked
//! at, a name that is not ASCII, uploads of other writers, a new prefix,
//! a bucket whose versioning is suspended, a pass lock dropped unreleased.

use super::{World, line, owned};
use crate::services::{self, pg, s3_at};
use aws_sdk_s3::types::BucketVersioningStatus;
use std::time::Duration;

async fn s3() -> aws_sdk_s3::Client {
    s3_at(services::endpoint()).await
}

/// The keys of the multipart uploads left in the bucket.
async fn uploads(w: &World) -> Vec<String> {
    let out = s3().await.list_multipart_uploads().bucket(&w.bucket).send().await.unwrap();
    let mut keys: Vec<String> = out.uploads().iter().filter_map(|u| u.key().map(str::to_string)).collect();
    keys.sort();
    keys
}

/// The object's user metadata `name`, if it exists.
async fn meta(w: &World, key: &str, name: &str) -> Option<String> {
    let out = s3().await.head_object().bucket(&w.bucket).key(key).send().await.ok()?;
    out.metadata().and_then(|m| m.get(name)).cloned()
}

/// A file the SFTP user can list but not read (mode 000, the session not
/// root) fails alone: the files after it are copied, a deleted one is
/// still mirrored, its earlier copy and rows stay, and once readable it
/// is copied.
#[tokio::test(flavor = "multi_thread")]
async fn an_unreadable_file_holds_up_no_other_file_and_deletes_still_mirror() {
    let w = World::new().await;
    for (i, name) in ["a", "b", "c"].iter().enumerate() {
        w.sshd.write(&format!("{name}.csv"), &line(i as u32 + 1, "Chicago"));
    }
    let s = w.once().await;
    assert_eq!((s.files_copied, s.rows), (3, 3), "{s}");
    // b changes and cannot be read; d is new (after b); c is deleted.
    w.sshd.write("b.csv", &(line(2, "Evanston") + &line(7, "Skokie")));
    w.sshd.chmod("b.csv", 0o000);
    w.sshd.write("d.csv", &line(4, "Chicago"));
    std::fs::remove_file(w.sshd.files.join("c.csv")).unwrap();
    for pass in 0..2 {
        let s = w.once().await;
        let want = if pass == 0 { (1, 1, 1) } else { (0, 0, 1) };
        assert_eq!((s.files_copied, s.files_deleted, s.files_failed), want, "pass {pass}: {s}");
    }
    assert_eq!(
        w.rows().await,
        owned(&[("1", "Chicago", "a.csv"), ("2", "Chicago", "b.csv"), ("4", "Chicago", "d.csv")]),
        "b keeps its earlier copy's rows (it is listed), c's are gone"
    );
    w.sshd.chmod("b.csv", 0o644);
    let s = w.once().await;
    assert_eq!((s.files_copied, s.files_failed), (1, 0), "readable again, b is copied: {s}");
    assert_eq!(w.rows().await.iter().filter(|(_, _, f)| f == "b.csv").count(), 2);
}

/// A link the listing shows whose target cannot be looked at this pass
/// (its folder unreadable) is unknown, not gone: its copy and rows stay.
#[tokio::test(flavor = "multi_thread")]
async fn a_link_whose_target_cannot_be_looked_at_keeps_its_copy_and_rows() {
    let w = World::new().await;
    let hidden = w.sshd.dir.join("hidden");
    std::fs::create_dir(&hidden).unwrap();
    std::fs::set_permissions(&hidden, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    std::fs::write(hidden.join("real.csv"), line(1, "Chicago")).unwrap();
    std::os::unix::fs::symlink(hidden.join("real.csv"), w.sshd.files.join("link.csv")).unwrap();
    let s = w.once().await;
    assert_eq!((s.files_copied, s.rows), (1, 1), "a link to a file is the file: {s}");
    w.sshd.chmod(hidden.to_str().unwrap(), 0o000);
    let s = w.once().await;
    w.sshd.chmod(hidden.to_str().unwrap(), 0o755);
    assert_eq!((s.files_deleted, s.objects_removed), (0, 0), "{s}");
    assert_eq!(w.versions().await, vec![("link.csv".into(), 1, false)]);
    assert_eq!(w.rows().await, owned(&[("1", "Chicago", "link.csv")]));
    let s = w.once().await;
    assert_eq!((s.files_copied, s.files_deleted), (0, 0), "unchanged: {s}");
}

/// `données-é.csv` is copied with ASCII metadata (its path
/// percent-encoded), and a copy never recorded is adopted by that path.
#[tokio::test(flavor = "multi_thread")]
async fn a_non_ascii_file_name_is_ascii_metadata_and_its_copy_is_adopted() {
    let w = World::new().await;
    w.sshd.write("données-é.csv", &line(1, "Chicago"));
    let s = w.once().await;
    assert_eq!((s.files_copied, s.rows), (1, 1), "{s}");
    let path = meta(&w, "customers-sftp/données-é.csv", "sftp-path").await.expect("the copy has its path");
    assert!(path.is_ascii(), "{path}");
    assert!(path.ends_with("/outgoing/donn%C3%A9es-%C3%A9.csv"), "{path}");
    // The host killed between the copy and its record: the copy is adopted.
    let db = pg().await;
    db.execute("DELETE FROM etl.sftp_files WHERE pipeline = $1", &[&w.name]).await.unwrap();
    let s = w.once().await;
    assert_eq!(s.files_copied, 0, "{s}");
    assert_eq!(w.versions().await, vec![("données-é.csv".into(), 1, false)], "adopted, not copied again");
    let n: i64 =
        db.query_one("SELECT count(*) FROM etl.sftp_files WHERE pipeline = $1", &[&w.name]).await.unwrap().get(0);
    assert_eq!(n, 1, "the adopted copy is recorded");
}

/// The pass aborts the unfinished uploads of its own keys only: another
/// writer's upload under the same prefix is left alone.
#[tokio::test(flavor = "multi_thread")]
async fn only_unfinished_uploads_of_this_pipelines_keys_are_aborted() {
    let w = World::new().await;
    w.sshd.write("a.csv", &line(1, "Chicago"));
    let s3 = s3().await;
    for key in ["customers-sftp/a.csv", "customers-sftp/other-writer.bin", "elsewhere/x.bin"] {
        s3.create_multipart_upload().bucket(&w.bucket).key(key).send().await.unwrap();
    }
    let s = w.once().await;
    assert_eq!(s.files_copied, 1, "{s}");
    assert_eq!(uploads(&w).await, vec!["customers-sftp/other-writer.bin", "elsewhere/x.bin"]);
}

/// With `compare = "mtime"`, a new `prefix` copies every file to its new
/// key, unchanged ones included.
#[tokio::test(flavor = "multi_thread")]
async fn a_new_prefix_copies_unchanged_files_to_their_new_keys() {
    let w = World::new().await;
    w.sshd.write("a.csv", &line(1, "Chicago"));
    w.sshd.write("b.csv", &line(2, "Chicago"));
    assert_eq!(w.once().await.files_copied, 2);
    let moved = [("prefix = \"customers-sftp/\"", "prefix = \"customers-sftp-2/\"")];
    let s = w.run(&moved).await.unwrap();
    assert_eq!(s.files_copied, 2, "{s}");
    let out = s3().await.list_objects_v2().bucket(&w.bucket).prefix("customers-sftp-2/").send().await.unwrap();
    let keys: Vec<&str> = out.contents().iter().filter_map(|o| o.key()).collect();
    assert_eq!(keys, ["customers-sftp-2/a.csv", "customers-sftp-2/b.csv"]);
    let s = w.run(&moved).await.unwrap();
    assert_eq!(s.files_copied, 0, "copied once to the new keys: {s}");
}

/// Versioning suspended: a copy gets the version id `null`, the current
/// object. A file that changes while it is copied leaves that copy in
/// place (deleting version `null` would delete the current object) and
/// is copied again by the next pass.
#[tokio::test(flavor = "multi_thread")]
async fn with_versioning_suspended_a_copy_that_changed_while_copied_is_not_deleted() {
    let w = World::with_versioning(BucketVersioningStatus::Suspended).await;
    let city = "C".repeat(2_000);
    let mut text = String::new();
    let mut id = 0;
    while text.len() < 40 << 20 {
        id += 1;
        text.push_str(&line(id, &city));
    }
    let path = w.sshd.files.join("big.csv");
    std::fs::write(&path, &text).unwrap();
    drop(text);
    // Appends a line once the copy (a multipart upload) is under way.
    let bucket = w.bucket.clone();
    let appender = tokio::spawn(async move {
        let s3 = s3().await;
        let start = std::time::Instant::now();
        while s3.list_multipart_uploads().bucket(&bucket).send().await.unwrap().uploads().is_empty() {
            assert!(start.elapsed() < Duration::from_secs(120), "the copy never started");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        use std::io::Write;
        let mut f = std::fs::OpenOptions::new().append(true).open(&path).unwrap();
        f.write_all(line(id + 1, "Chicago").as_bytes()).unwrap();
    });
    let s = w.once().await;
    appender.await.unwrap();
    assert_eq!(s.files_copied, 0, "it changed during its copy: {s}");
    assert!(meta(&w, "customers-sftp/big.csv", "sftp-size").await.is_some(), "the current object is still there");
    let s = w.once().await;
    assert_eq!(s.files_copied, 1, "copied again, whole: {s}");
    let size = std::fs::metadata(w.sshd.files.join("big.csv")).unwrap().len();
    assert_eq!(meta(&w, "customers-sftp/big.csv", "sftp-size").await, Some(size.to_string()));
}
