//! Leases on shared work (issue 28): one holder at a time, taken over
//! under a new epoch once expired, and fenced: a host whose lease was
//! taken over commits nothing more under it. The real binary's passes,
//! loads and migrations through a PgBouncer in transaction mode.

use crate::faults::Host;
use crate::pgbouncer::Bouncer;
use crate::run::{count, schema_with_user_logins};
use crate::services::{self, database_url, pg, unique};
use host::sink::lease::Lease;
use std::time::{Duration, Instant};

async fn lease_row(pipeline: &str, name: &str) -> Option<(String, i64)> {
    let row = pg()
        .await
        .query_opt("SELECT holder, epoch FROM etl.leases WHERE pipeline = $1 AND name = $2", &[&pipeline, &name])
        .await
        .unwrap();
    row.map(|r| (r.get(0), r.get(1)))
}

/// Makes the lease look abandoned: its holder stopped renewing it.
async fn expire(pipeline: &str, name: &str) {
    pg().await
        .execute(
            "UPDATE etl.leases SET expires_at = now() - interval '1 second' WHERE pipeline = $1 AND name = $2",
            &[&pipeline, &name],
        )
        .await
        .unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn a_lease_is_one_holders_until_it_expires_then_taken_over_under_a_higher_epoch_and_the_old_one_is_fenced() {
    services::migrated().await;
    let pool = host::sink::pool(&database_url(), 4).unwrap();
    let pipeline = unique("lease");
    let first = Lease::try_take(&pool, &pipeline, "sftp", "sftp").await.unwrap().expect("free");
    assert_eq!(lease_row(&pipeline, "sftp").await, Some((first.fence().holder.clone(), first.fence().epoch)));
    assert!(Lease::try_take(&pool, &pipeline, "sftp", "sftp").await.unwrap().is_none(), "held: not given twice");
    let other = Lease::try_take(&pool, &pipeline, "object b/k", "object").await.unwrap();
    assert!(other.is_some(), "another name of the pipeline is another lease");

    // A try while the holder commits under its live lease answers at
    // once: it does not wait for the commit.
    let mut client = pool.get().await.unwrap();
    let tx = first.fence().begin(&mut client).await.unwrap();
    let tried = tokio::time::timeout(Duration::from_secs(2), Lease::try_take(&pool, &pipeline, "sftp", "sftp")).await;
    assert!(tried.expect("answered at once").unwrap().is_none(), "held");
    tx.commit().await.unwrap();
    drop(client);

    // The holder stalls past its lease: another takes it over.
    expire(&pipeline, "sftp").await;
    let second = Lease::try_take(&pool, &pipeline, "sftp", "sftp").await.unwrap().expect("expired: taken over");
    assert!(second.fence().epoch > first.fence().epoch, "the epoch rises at a takeover");

    // The first holder's commit is refused; the second's goes through.
    let mut client = pool.get().await.unwrap();
    let Err(refused) = first.fence().begin(&mut client).await else { panic!("fenced") };
    let text = refused.to_string();
    assert!(
        text.contains(&format!("lease `sftp` (epoch {}) was taken over by another host", first.fence().epoch)),
        "{text}"
    );
    drop(client);
    let mut client = pool.get().await.unwrap();
    let tx = second.fence().begin(&mut client).await.expect("the holder's commit");
    tx.commit().await.unwrap();
    drop(client);

    // A takeover waits for a commit under way under the lease (an expired
    // lease not yet taken over is still its holder's).
    expire(&pipeline, "sftp").await;
    let mut client = pool.get().await.unwrap();
    let tx = second.fence().begin(&mut client).await.unwrap();
    let waiting = tokio::spawn({
        let pool = pool.clone();
        let pipeline = pipeline.clone();
        async move { Lease::try_take(&pool, &pipeline, "sftp", "sftp").await.unwrap() }
    });
    let waiters = "SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock' \
         AND query LIKE '%INSERT INTO etl.leases%' AND datname = current_database()";
    let start = Instant::now();
    while count(waiters).await == 0 {
        assert!(!waiting.is_finished(), "the takeover waits for the commit that holds the fence");
        assert!(start.elapsed() < Duration::from_secs(10), "the takeover never reached the lease's row");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(!waiting.is_finished(), "the takeover waits for the commit that holds the fence");
    tx.commit().await.unwrap();
    drop(client);
    let third = waiting.await.unwrap().expect("then it takes over");
    assert!(third.fence().epoch > second.fence().epoch);

    // The old holders' releases leave the new holder's lease alone.
    first.release().await;
    second.release().await;
    assert_eq!(lease_row(&pipeline, "sftp").await.map(|r| r.1), Some(third.fence().epoch));
    third.release().await;
    assert_eq!(lease_row(&pipeline, "sftp").await, None, "released: the row is gone");

    // Dropped without a release (its work abandoned), it is released in
    // the background: another host takes it at once, not after its time.
    drop(other);
    let start = Instant::now();
    while lease_row(&pipeline, "object b/k").await.is_some() {
        assert!(start.elapsed() < Duration::from_secs(5), "the dropped lease is still held");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// `sizes.len()` parts of login events of those many rows each, user ids
/// unique throughout.
fn parts(sizes: &[usize]) -> Vec<Vec<u8>> {
    let lines = crate::objects::logins_lines(sizes.iter().sum());
    let mut start = 0;
    sizes
        .iter()
        .map(|rows| {
            let end = (start..lines.len()).filter(|&b| lines[b] == b'\n').nth(rows - 1).unwrap() + 1;
            let part = lines[start..end].to_vec();
            start = end;
            part
        })
        .collect()
}

/// Objects `logins/part-N.jsonl` of `sizes[N]` rows each in a new bucket of
/// moto at `endpoint`.
async fn bucket_of(endpoint: &str, sizes: &[usize]) -> String {
    let s3 = services::s3_at(endpoint).await;
    let bucket = unique("leases").replace('_', "-");
    s3.create_bucket().bucket(&bucket).send().await.unwrap();
    for (i, part) in parts(sizes).into_iter().enumerate() {
        services::put(&s3, &bucket, &format!("logins/part-{i}.jsonl"), part).await;
    }
    bucket
}

/// The whole lease story with the real binary, every connection of the
/// hosts through PgBouncer in transaction mode: migrations; a reconcile
/// pass loading a large object whose lease is taken over mid-load (its
/// next commit is refused, nothing more of it commits); then two hosts'
/// passes at once, dividing the objects by their leases. Every row loads
/// exactly once.
#[tokio::test(flavor = "multi_thread")]
async fn behind_pgbouncer_a_host_whose_object_lease_was_taken_over_commits_nothing_more_and_passes_divide_objects() {
    services::migrated().await;
    let bouncer = Bouncer::start().await;
    let url = bouncer.url();
    let (name, schema) = (unique("leaseb"), unique("s"));
    schema_with_user_logins(&schema).await;
    pg().await.batch_execute(&format!("ALTER TABLE {schema}.user_logins ADD COLUMN source_file text")).await.unwrap();
    let endpoint = services::private_endpoint();
    // One large object (many commits of 500 rows) and six small ones, in
    // ranges of 2 objects.
    let sizes = [100_000, 2_000, 2_000, 2_000, 2_000, 2_000, 2_000];
    let total: usize = sizes.iter().sum();
    let bucket = bucket_of(&endpoint, &sizes).await;
    let file = crate::scaleout::bucket_pipeline(&name, &schema, &bucket);
    let text = std::fs::read_to_string(&file).unwrap();
    std::fs::write(&file, text.replace("rows_per_commit = 500", "rows_per_commit = 500\nrange_objects = 2")).unwrap();
    let envs = [("DATABASE_POOLER", "transaction"), ("HOST_LEASE_S", "5")];

    // Migrations through the pooler: their lock is a transaction's.
    let migrate = std::process::Command::new(crate::objects::host_binary())
        .arg("migrate")
        .env("DATABASE_URL", &url)
        .env("DATABASE_POOLER", "transaction")
        .output()
        .unwrap();
    assert!(migrate.status.success(), "{}", String::from_utf8_lossy(&migrate.stderr));

    let big = format!("object {bucket}/logins/part-0.jsonl");
    let progress = format!(
        "SELECT coalesce(max(rows_done), 0) FROM etl.files WHERE pipeline = '{name}' AND key = 'logins/part-0.jsonl'"
    );
    let mut one = Host::run_all(&[&file], &["--once"], &envs, &url, &endpoint);
    let start = Instant::now();
    while count(&progress).await < 1_000 {
        assert!(start.elapsed() < Duration::from_secs(120), "the large object never loaded:\n{}", one.log());
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // Another host takes the object over (as if the loader had stalled
    // past its lease): the thief's epoch is a new one.
    let (_, epoch) = lease_row(&name, &big).await.expect("the loader holds the object's lease");
    let taken = pg()
        .await
        .query_one(
            "UPDATE etl.leases SET holder = 'thief', epoch = nextval('etl.lease_epochs'), \
             expires_at = now() + interval '1 hour' WHERE pipeline = $1 AND name = $2 RETURNING epoch",
            &[&name, &big],
        )
        .await
        .unwrap()
        .get::<_, i64>(0);
    assert!(taken > epoch);
    let at_takeover = count(&progress).await;
    let (status, out) = one.wait(Duration::from_secs(120)).await.expect("the pass ends");
    let log = one.log();
    assert!(status.success(), "{status}\n{out}\n{log}");
    assert!(
        log.contains(&format!("lease `{big}` (epoch {epoch}) was taken over by another host")),
        "the refused commit is named:\n{log}"
    );
    assert_eq!(count(&progress).await, at_takeover, "nothing of the object committed after the takeover");
    assert!(at_takeover < 100_000, "taken over mid-load");
    let small = format!("SELECT count(*) FROM {schema}.user_logins WHERE source_file NOT LIKE '%part-0.jsonl'");
    assert_eq!(count(&small).await, 12_000, "the other objects loaded");

    let ranges = format!("SELECT count(*) FROM etl.reconcile_ranges WHERE pipeline = '{name}'");
    assert_eq!(count(&ranges).await, 4, "7 objects in ranges of 2");

    // The thief goes away; two hosts pass at once, dividing the ranges,
    // and whichever takes the large object's loads the rest of it.
    pg().await.execute("DELETE FROM etl.leases WHERE pipeline = $1 AND holder = 'thief'", &[&name]).await.unwrap();
    let mut a = Host::run_all(&[&file], &["--once"], &envs, &url, &endpoint);
    let mut b = Host::run_all(&[&file], &["--once"], &envs, &url, &endpoint);
    let (sa, _) = a.wait(Duration::from_secs(180)).await.expect("a ends");
    let (sb, _) = b.wait(Duration::from_secs(180)).await.expect("b ends");
    let (la, lb) = (a.log(), b.log());
    assert!(sa.success() && sb.success(), "{sa}\n{la}\n-----\n{sb}\n{lb}");
    let table = format!("{schema}.user_logins");
    assert_eq!(count(&format!("SELECT count(*) FROM {table}")).await, total as i64, "every row\n{la}\n-----\n{lb}");
    assert_eq!(count(&format!("SELECT count(DISTINCT user_id) FROM {table}")).await, total as i64, "once");
    let done = format!("SELECT count(*) FROM etl.files WHERE pipeline = '{name}' AND done");
    assert_eq!(count(&done).await, sizes.len() as i64);
    assert_eq!(count(&format!("SELECT count(*) FROM etl.leases WHERE pipeline = '{name}'")).await, 0, "all released");
    for log in [&log, &la, &lb] {
        assert!(!log.contains("prepared statement"), "no statement outlived its transaction:\n{log}");
    }
}

/// A large bucket's pass is cut into key ranges of about `range_objects`
/// objects, and hosts passing at once take different ranges: each lists
/// and loads its own, and every row still loads once.
#[tokio::test(flavor = "multi_thread")]
async fn a_large_buckets_pass_is_cut_into_key_ranges_that_hosts_list_and_load_in_parallel() {
    services::migrated().await;
    let (name, schema) = (unique("ranges"), unique("s"));
    schema_with_user_logins(&schema).await;
    pg().await.batch_execute(&format!("ALTER TABLE {schema}.user_logins ADD COLUMN source_file text")).await.unwrap();
    let endpoint = services::private_endpoint();
    let s3 = services::s3_at(&endpoint).await;
    let bucket = unique("ranges").replace('_', "-");
    s3.create_bucket().bucket(&bucket).send().await.unwrap();
    // 40 objects now, 40 more between them later; 300 rows each.
    let mut all = parts(&[300; 80]).into_iter();
    for i in 0..40 {
        services::put(&s3, &bucket, &format!("logins/part-{i:02}a.jsonl"), all.next().unwrap()).await;
    }
    let file = crate::scaleout::bucket_pipeline(&name, &schema, &bucket);
    let text = std::fs::read_to_string(&file)
        .unwrap()
        .replace("rows_per_commit = 500", "rows_per_commit = 500\nrange_objects = 5");
    std::fs::write(&file, text).unwrap();
    let database = database_url();
    let passes = |log: &str| -> usize {
        log.lines()
            .filter(|l| l.contains("reconcile pass"))
            .filter_map(|l| l.split("\"listed\":").nth(1)?.split([',', '}']).next()?.parse::<usize>().ok())
            .sum()
    };

    // One host's first pass lists the one range there is, and cuts it.
    let mut first = Host::run_all(&[&file], &["--once"], &[], &database, &endpoint);
    let (status, _) = first.wait(Duration::from_secs(180)).await.expect("the first pass ends");
    let log = first.log();
    assert!(status.success(), "{status}\n{log}");
    assert_eq!(passes(&log), 40, "{log}");
    let ranges = format!("SELECT count(*) FROM etl.reconcile_ranges WHERE pipeline = '{name}'");
    assert_eq!(count(&ranges).await, 8, "40 objects in ranges of 5");

    // 40 more, 5 in each range; two hosts pass at once.
    for i in 0..40 {
        services::put(&s3, &bucket, &format!("logins/part-{i:02}b.jsonl"), all.next().unwrap()).await;
    }
    // The table locked, each host's first load waits, holding its range:
    // both hold one at once.
    let mut locker = pg().await;
    let lock = locker.transaction().await.unwrap();
    lock.batch_execute(&format!("LOCK TABLE {schema}.user_logins IN EXCLUSIVE MODE")).await.unwrap();
    let mut a = Host::run_all(&[&file], &["--once"], &[("HOST_NAME", "a")], &database, &endpoint);
    let mut b = Host::run_all(&[&file], &["--once"], &[("HOST_NAME", "b")], &database, &endpoint);
    let holders =
        format!("SELECT count(DISTINCT holder) FROM etl.leases WHERE pipeline = '{name}' AND name LIKE 'reconcile %'");
    let start = Instant::now();
    while count(&holders).await < 2 {
        assert!(
            start.elapsed() < Duration::from_secs(40),
            "two hosts never held ranges at once\n{}\n-----\n{}",
            a.log(),
            b.log()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    lock.commit().await.unwrap();
    let (sa, _) = a.wait(Duration::from_secs(180)).await.expect("a ends");
    let (sb, _) = b.wait(Duration::from_secs(180)).await.expect("b ends");
    let (la, lb) = (a.log(), b.log());
    assert!(sa.success() && sb.success(), "{sa}\n{la}\n-----\n{sb}\n{lb}");
    let (listed_a, listed_b) = (passes(&la), passes(&lb));
    assert!(listed_a > 0 && listed_b > 0, "both hosts listed ranges: {listed_a} and {listed_b}\n{la}\n-----\n{lb}");
    assert!(listed_a + listed_b >= 80, "every range was listed: {listed_a} + {listed_b}\n{la}\n-----\n{lb}");
    let table = format!("{schema}.user_logins");
    assert_eq!(count(&format!("SELECT count(*) FROM {table}")).await, 80 * 300);
    assert_eq!(count(&format!("SELECT count(DISTINCT user_id) FROM {table}")).await, 80 * 300, "each row once");
    let done = format!("SELECT count(*) FROM etl.files WHERE pipeline = '{name}' AND done");
    assert_eq!(count(&done).await, 80);
    assert!(count(&ranges).await >= 16, "ranges of 10 were cut again");
    assert_eq!(count(&format!("SELECT count(*) FROM etl.leases WHERE pipeline = '{name}'")).await, 0);
}
