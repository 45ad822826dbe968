//! The sink and the host's own cost, side by side with baselines measured in
//! the same run:
//!
//! 1. 1,000,000 `user_logins` rows through the sink (COPY, merge, lineage,
//!    ledger; one-row messages in batches of 1,000 and 10,000, and 100-row
//!    messages; two batches in flight, as `host run` has) against one plain
//!    `COPY` of the same rows into an empty table; `append`, `upsert` of new
//!    keys, and `upsert` over a table holding every key already ("update").
//!    Batches of 1,000 go once with group commit (`max_batches_per_commit`
//!    = 8: each stream keeps 4 batches waiting, as a worker of `host run`
//!    does) and once without (1: each stream waits for its commit).
//! 2. CPU seconds of `host run --once` per 10,000 messages against a bare
//!    receive-and-delete loop over the same endpoint (moto).
//!
//! `cargo bench -p tests --bench sink` (PostgreSQL at DATABASE_URL or the
//! local server; moto from `.venv`, started by the bench). `SINK_ROWS` and
//! `CPU_MESSAGES` scale it down; `SINK_ROUNDS` sets the rounds of each
//! case (default 3, medians printed); `SINK_ONLY=append_1000` runs the sink
//! cases whose name holds that text; `SINK_IN_FLIGHT` sets the batches in
//! flight (default 2).

use std::time::Instant;

#[path = "../it/common.rs"]
#[allow(dead_code)]
mod common;
#[path = "../it/services.rs"]
#[allow(dead_code)]
mod services;

#[tokio::main]
async fn main() {
    let rows = services::env_usize("SINK_ROWS", 1_000_000);
    services::migrated().await;
    // Dead ledger rows left by tests and earlier runs slow every look-up.
    services::pg().await.batch_execute("VACUUM etl.receipts").await.unwrap();
    sink_against_copy(rows).await;
    let messages = services::env_usize("CPU_MESSAGES", 10_000);
    if messages > 0 {
        cpu_per_messages(messages).await;
    }
}

/// COPY text of `n` rows shaped like the Fetch logins (unique user ids).
fn rows_text(n: usize) -> Vec<Vec<u8>> {
    (0..n)
        .map(|i| {
            format!(
                "{i:08x}-063a-43a7-b91b-7ca1a833afae\tandroid\ta6d0e2f27f6111e10b06790db42f34123e724aa0fd24b280f4a0ef5ee986784c\t\
                 4f00c1a807b673887c7af517d0df68e6b41aecf8cbec26c71fe4c580664669ed\tRU\t2\t2026-11-22\n"
            )
            .into_bytes()
        })
        .collect()
}

async fn sink_against_copy(n: usize) {
    let schema = services::unique("bench");
    let db = services::pg().await;
    db.batch_execute(&format!("CREATE SCHEMA {schema}; CREATE TABLE {schema}.plain (LIKE public.user_logins)"))
        .await
        .unwrap();
    let lines = rows_text(n);

    let plain = n as f64 / services::timed_copy(&db, &format!("{schema}.plain"), lines.concat()).await.as_secs_f64();
    // The same COPY into a table with upsert's key: the unique index is a
    // B-tree insert per row that any upsert pays, whatever the host does.
    db.batch_execute(&format!(
        "CREATE TABLE {schema}.keyed (LIKE public.user_logins); ALTER TABLE {schema}.keyed ADD PRIMARY KEY (user_id)"
    ))
    .await
    .unwrap();
    let keyed = n as f64 / services::timed_copy(&db, &format!("{schema}.keyed"), lines.concat()).await.as_secs_f64();

    println!("sink: {n} user_logins rows");
    println!("{:>44} | {:>10} | {:>13}", "", "rows/s", "of plain COPY");
    println!("{:>44} | {plain:>10.0} | {:>13.2}", "plain COPY (one transaction)", 1.0);
    println!("{:>44} | {keyed:>10.0} | {:>13.2}", "plain COPY into a table keyed on user_id", keyed / plain);
    // (rows per batch, rows per message): SQS-like one-row messages, and
    // file-like messages of 100 rows (one ledger row per 100 data rows).
    // Messages as if sent at `rate` a second (SentTimestamp partitions the
    // ledger): 10,000/s, and 100/s, where each message has a partition of
    // its own, the ledger's most expensive case.
    // The last figure: batches a commit may hold (group commit).
    let runs = [
        (1_000usize, 1usize, 10_000u32, 1usize),
        (1_000, 1, 10_000, 8),
        (10_000, 1, 10_000, 8),
        (10_000, 100, 10_000, 8),
        (1_000, 1, 100, 1),
        (1_000, 1, 100, 8),
    ];
    let only = std::env::var("SINK_ONLY").unwrap_or_default();
    // "update": upsert over a table that already holds every key, so every
    // batch goes through staging and the merge.
    let cases: Vec<(&str, (usize, usize, u32, usize))> = runs
        .iter()
        .flat_map(|&run| ["append", "upsert", "update"].map(|case| (case, run)))
        .filter(|(case, (batch, per_message, rate, group))| {
            format!("{case}_{batch}_{per_message}_{rate}_{group}").contains(&only)
        })
        .collect();
    // Rounds, each case into a fresh table, in the opposite order every
    // other round: on this machine one case's rounds spread by ±30%
    // (checkpoints, the WAL), so the medians are compared, each beside its
    // rounds. The baseline is measured again every round too.
    let rounds = services::env_usize("SINK_ROUNDS", 3);
    let mut plains = vec![plain];
    let mut speeds: Vec<Vec<f64>> = vec![Vec::new(); cases.len()];
    for round in 0..rounds {
        if round > 0 {
            let table = format!("{schema}.plain_{round}");
            db.batch_execute(&format!("CREATE TABLE {table} (LIKE public.user_logins)")).await.unwrap();
            plains.push(n as f64 / services::timed_copy(&db, &table, lines.concat()).await.as_secs_f64());
        }
        let mut order: Vec<usize> = (0..cases.len()).collect();
        if round % 2 == 1 {
            order.reverse();
        }
        for i in order {
            let (case, (batch, per_message, rate, group)) = cases[i];
            let table = format!("{case}_{batch}_{per_message}_{rate}_{group}_{round}");
            let key = if case == "append" {
                String::new()
            } else {
                format!("; ALTER TABLE {schema}.{table} ADD PRIMARY KEY (user_id)")
            };
            db.batch_execute(&format!("CREATE TABLE {schema}.{table} (LIKE public.user_logins){key}")).await.unwrap();
            if case == "update" {
                services::timed_copy(&db, &format!("{schema}.{table}"), lines.concat()).await;
                db.batch_execute(&format!("VACUUM ANALYZE {schema}.{table}")).await.unwrap();
            }
            let mode = if case == "append" { "append" } else { "upsert" };
            speeds[i].push(through_sink(&schema, &table, mode, &lines, cases[i].1, None).await);
        }
    }
    let plain = median(&plains);
    let each = |v: &[f64]| v.iter().map(|r| format!("{:.2}", r / plain)).collect::<Vec<_>>().join(" ");
    println!("{:>44} | {plain:>10.0} | {:>13.2}   each round: {}", "plain COPY, median", 1.0, each(&plains));
    for ((case, (batch, per_message, rate, group)), v) in cases.iter().zip(&speeds) {
        let label = format!("{case}, {batch}/batch, {per_message}/msg, sent {rate}/s, {group}/commit");
        let speed = median(v);
        println!("{label:>44} | {speed:>10.0} | {:>13.2}   each round: {}", speed / plain, each(v));
    }
    if only.is_empty() || "metrics".contains(&only) {
        metrics_cost(&db, &schema, &lines, plain).await;
    }
    db.batch_execute(&format!("DROP SCHEMA {schema} CASCADE")).await.unwrap();
}

/// `append`, 1,000 rows a batch, with the sink's metrics off (no recorder,
/// as `host run` without `--admin`) and on (a Prometheus recorder),
/// interleaved in both orders, each into a fresh table.
async fn metrics_cost(db: &tokio_postgres::Client, schema: &str, lines: &[Vec<u8>], plain: f64) {
    let recorder = metrics_exporter_prometheus::PrometheusBuilder::new().build_recorder();
    let (mut off, mut on) = (Vec::new(), Vec::new());
    // Each order once per pair of rounds: the second of two runs in a row
    // meets a busier WAL and checkpointer.
    for round in 0..6 {
        let order = if round % 2 == 0 { [false, true] } else { [true, false] };
        for metrics in order {
            let table = format!("metrics_{metrics}_{round}");
            db.batch_execute(&format!("CREATE TABLE {schema}.{table} (LIKE public.user_logins)")).await.unwrap();
            let recorder = metrics.then_some(&recorder);
            let speed = through_sink(schema, &table, "append", lines, (1_000, 1, 10_000, 1), recorder).await;
            if metrics { on.push(speed) } else { off.push(speed) }
        }
    }
    let each = |v: &[f64]| v.iter().map(|r| format!("{r:.0}")).collect::<Vec<_>>().join(", ");
    println!("{:>44} | off: {}; on: {}", "each round", each(&off), each(&on));
    // Medians: on this machine rounds of the same case spread by ±15%.
    let (off, on) = (median(&off), median(&on));
    println!("{:>44} | {off:>10.0} | {:>13.2}", "append, 1000/batch, metrics off (median, 6)", off / plain);
    println!(
        "{:>44} | {on:>10.0} | {:>13.2}   on/off {:.3}",
        "append, 1000/batch, metrics on (median, 6)",
        on / plain,
        on / off
    );
}

/// The median of `v` (of an even count, the mean of the middle two).
fn median(v: &[f64]) -> f64 {
    let mut v = v.to_vec();
    v.sort_by(|a, b| a.partial_cmp(b).unwrap());
    let mid = v.len() / 2;
    if v.len() % 2 == 0 { (v[mid - 1] + v[mid]) / 2.0 } else { v[mid] }
}

/// Rows through the sink, in batches of `batch` rows, `per_message` rows a
/// message, sent at `rate` a second, up to `group` batches a commit; its
/// metrics recorded by `recorder` when given.
async fn through_sink(
    schema: &str,
    table: &str,
    mode: &str,
    lines: &[Vec<u8>],
    (batch, per_message, rate, group): (usize, usize, u32, usize),
    recorder: Option<&metrics_exporter_prometheus::PrometheusRecorder>,
) -> f64 {
    let key = if mode == "upsert" { "key = [\"user_id\"]\n" } else { "" };
    let body = format!(
        "name = \"{}\"\n[sink]\ntable = \"{table}\"\nschema = \"{schema}\"\nmode = \"{mode}\"\n{key}\
         max_batches_per_commit = {group}\n[sink.columns]\n\
         user_id = \"user_id\"\ndevice_type = \"device_type\"\nmasked_ip = \"masked_ip\"\n\
         masked_device_id = \"masked_device_id\"\nlocale = \"locale\"\napp_version = \"app_version\"\n\
         create_date = {{ generated = \"load-date\" }}\n",
        services::unique("bench")
    );
    let p = common::pipeline(&body);
    // Like the plain COPY it is compared with (tokio-postgres without TLS):
    // the host's default, `sslmode=prefer`, would encrypt the sink's rows.
    let url = services::database_url();
    let url = if url.contains("sslmode=") {
        url
    } else {
        format!("{url}{}sslmode=disable", if url.contains('?') { '&' } else { '?' })
    };
    let pool = host::sink::pool(&url, services::env_usize("SINK_IN_FLIGHT", 2)).unwrap();
    let make = || host::sink::PostgresSink::new(pool, &p.name, "bench", p.sink.as_ref().unwrap(), None);
    let sink = match recorder {
        Some(r) => metrics::with_local_recorder(r, make),
        None => make(),
    };
    // Units are built before the clock starts: the sink is measured, not
    // the making of its input (the host's own cost is measured below).
    let first_sent = 1_795_000_000_000i64;
    let batches: Vec<Vec<host::sink::Unit>> = lines
        .chunks(batch)
        .enumerate()
        .map(|(b, chunk)| {
            chunk
                .chunks(per_message)
                .enumerate()
                .map(|(m, message)| {
                    let mut rows = Vec::new();
                    for line in message {
                        rows.extend_from_slice(line);
                    }
                    let sent = (b * batch / per_message + m) as i64 * 1000 / i64::from(rate);
                    host::sink::Unit {
                        // As long as an SQS message id.
                        message_id: format!("{b:08x}-{m:04x}-4a7e-9d1c-5f3b8e2a6c0d"),
                        sent_ms: first_sent + sent,
                        rows,
                        row_count: message.len(),
                        ..Default::default()
                    }
                })
                .collect()
        })
        .collect();
    // Two streams of batches, as `host run` has with its default two
    // workers, each keeping as many batches waiting for their commit as a
    // worker does (its share of `group`; one without group commit).
    let flight = services::env_usize("SINK_IN_FLIGHT", 2);
    let depth = group.div_ceil(flight);
    let mut streams: Vec<Vec<Vec<host::sink::Unit>>> = (0..flight).map(|_| Vec::new()).collect();
    for (i, units) in batches.into_iter().enumerate() {
        streams[i % flight].push(units);
    }
    let stream = |batches: Vec<Vec<host::sink::Unit>>| {
        use futures_util::StreamExt;
        let sink = &sink;
        futures_util::stream::iter(batches)
            .map(move |units| async move { sink.commit(units, &host::sink::Lineage::default()).await.unwrap() })
            .buffer_unordered(depth)
            .for_each(|_| async {})
    };
    let start = Instant::now();
    futures_util::future::join_all(streams.into_iter().map(stream)).await;
    let rate = lines.len() as f64 / start.elapsed().as_secs_f64();
    // Leave the ledger as it was, so runs compare, and its space reusable
    // (the server here runs without autovacuum).
    let db = services::pg().await;
    db.execute("DELETE FROM etl.receipts WHERE pipeline = $1", &[&p.name]).await.unwrap();
    db.batch_execute("VACUUM etl.receipts").await.unwrap();
    rate
}

async fn cpu_per_messages(n: usize) {
    let sqs = services::sqs().await;
    let body = std::fs::read_to_string(common::workspace().join("tests/data/fetch_login_queue_bodies.jsonl"))
        .unwrap()
        .lines()
        .next()
        .unwrap()
        .to_string();
    let bodies = vec![body; n];

    // Bare loop: receive 10 at a time and delete them.
    let q = services::unique("bare");
    let url = services::queue(&sqs, &q).await;
    services::send(&sqs, &url, &bodies).await;
    let (self_before, _) = services::own_cpu_s();
    let start = Instant::now();
    let mut done = 0;
    while done < n {
        let out = sqs.receive_message().queue_url(&url).max_number_of_messages(10).send().await.unwrap();
        let entries: Vec<_> = out
            .messages()
            .iter()
            .enumerate()
            .map(|(i, m)| {
                aws_sdk_sqs::types::DeleteMessageBatchRequestEntry::builder()
                    .id(i.to_string())
                    .receipt_handle(m.receipt_handle().unwrap())
                    .build()
                    .unwrap()
            })
            .collect();
        done += entries.len();
        if !entries.is_empty() {
            sqs.delete_message_batch().queue_url(&url).set_entries(Some(entries)).send().await.unwrap();
        }
    }
    let bare_wall = start.elapsed().as_secs_f64();
    let bare_cpu = services::own_cpu_s().0 - self_before;

    // The host, as a process, on the same kind of queue.
    let q = services::unique("hostcpu");
    let url = services::queue(&sqs, &q).await;
    services::send(&sqs, &url, &bodies).await;
    let schema = services::unique("cpu");
    services::pg()
        .await
        .batch_execute(&format!("CREATE SCHEMA {schema}; CREATE TABLE {schema}.user_logins (LIKE public.user_logins)"))
        .await
        .unwrap();
    let pipeline = std::env::temp_dir().join(format!("{q}.toml"));
    let text = std::fs::read_to_string(common::workspace().join("pipelines/logins.toml"))
        .unwrap()
        .replace("table = \"user_logins\"", &format!("table = \"user_logins\"\nschema = \"{schema}\""));
    std::fs::write(&pipeline, text).unwrap();
    let host = common::workspace().join("target/release/host");
    // Start-up (compiling the plugins once into the cache) is measured
    // elsewhere (BENCHMARKS.md, cold start): warm the cache first.
    let checked = std::process::Command::new(&host)
        .args(["check", "--plugin-path", common::PLUGIN_DIR])
        .arg(&pipeline)
        .stdout(std::process::Stdio::null())
        .status()
        .expect("target/release/host runs (cargo xtask bench builds it)");
    assert!(checked.success());
    let (_, children_before) = services::own_cpu_s();
    let start = Instant::now();
    let status = std::process::Command::new(&host)
        .args(["run", "--once", "--plugin-path", common::PLUGIN_DIR])
        .arg(&pipeline)
        .env("LOGIN_QUEUE", &q)
        .env("AWS_ENDPOINT_URL", services::endpoint())
        .env("AWS_REGION", "us-east-1")
        .env("AWS_ACCESS_KEY_ID", "test")
        .env("AWS_SECRET_ACCESS_KEY", "test")
        .env("DATABASE_URL", services::database_url())
        .stdout(std::process::Stdio::null())
        .status()
        .expect("target/release/host runs (cargo xtask bench builds it)");
    assert!(status.success());
    let host_wall = start.elapsed().as_secs_f64();
    let host_cpu = services::own_cpu_s().1 - children_before;
    let per = |cpu: f64| cpu * 10_000.0 / n as f64;
    println!("\nCPU per 10,000 messages over moto ({n} messages)");
    println!("{:>24} | {:>10} | {:>8} | {:>9}", "", "CPU s/10k", "wall s", "CPU/bare");
    println!("{:>24} | {:>10.2} | {bare_wall:>8.1} | {:>9.2}", "bare receive+delete", per(bare_cpu), 1.0);
    println!("{:>24} | {:>10.2} | {host_wall:>8.1} | {:>9.2}", "host run --once", per(host_cpu), host_cpu / bare_cpu);
}
