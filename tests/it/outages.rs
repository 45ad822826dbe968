//! Faults of the code review of issue 23, on the library: a wake-up queue
//! that goes away under a reconcile run, a visibility change the queue
//! refuses in part, and a readiness probe whose connection stalls.

use crate::common;
use crate::faults::authority;
use crate::files::{bucket_name, schema_with_customers};
use crate::proxy::{Mode, Proxy};
use crate::run::{items, items_table};
use crate::services::{self, queue, s3_at, send, unique};
use host::run::RunOptions;
use std::path::Path;
use std::time::{Duration, Instant};

/// The shipped customers pipeline on `bucket`, woken early by `queue`, a
/// pass an hour otherwise.
fn reconcile_woken_by(queue: &str, bucket: &str, schema: &str, name: &str) -> host::config::Pipeline {
    let text = std::fs::read_to_string(common::workspace().join("pipelines/customers.toml"))
        .unwrap()
        .replace("name = \"customers\"", &format!("name = \"{name}\""))
        .replace("table = \"customers\"", &format!("table = \"customers\"\nschema = \"{schema}\""))
        .replace("interval_s = 60", &format!("interval_s = 3600\nqueue = \"{queue}\"\nwait_time_s = 2"));
    let path = Path::new("pipelines/customers.toml");
    let parsed =
        host::config::parse_str(path, &text, |v| (v == "CUSTOMER_BUCKET").then(|| bucket.to_string())).unwrap();
    host::config::validate(path, parsed).unwrap()
}

#[tokio::test(flavor = "multi_thread")]
async fn a_reconcile_run_whose_wake_up_queue_is_deleted_does_not_spin() {
    let (name, schema, q, bucket) = (unique("wake"), unique("s"), unique("wakeq"), bucket_name("wake"));
    schema_with_customers(&schema).await;
    let endpoint = services::endpoint();
    let (sqs, s3) = (services::sqs().await, s3_at(endpoint).await);
    let url = queue(&sqs, &q).await;
    s3.create_bucket().bucket(&bucket).send().await.unwrap();
    // The host's AWS calls go through the proxy, which counts them.
    let proxy = Proxy::start(&authority(endpoint)).await;
    let aws = services::aws_at(&proxy.url(endpoint, &authority(endpoint))).await;
    let pipeline = reconcile_woken_by(&q, &bucket, &schema, &name);
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let run = tokio::spawn(async move {
        let opts = RunOptions { once: false, idle: Duration::from_secs(1), ..Default::default() };
        host::run::run(pipeline, common::engine(), &services::database_url(), &aws, opts, async {
            let _ = stop_rx.await;
        })
        .await
    });
    // The first pass, then waiting on the queue.
    tokio::time::sleep(Duration::from_secs(4)).await;
    sqs.delete_queue().queue_url(&url).send().await.unwrap();
    tokio::time::sleep(Duration::from_secs(1)).await;
    let before = proxy.chunks_up();
    tokio::time::sleep(Duration::from_secs(5)).await;
    let calls = proxy.chunks_up() - before;
    stop_tx.send(()).unwrap();
    let ended = tokio::time::timeout(Duration::from_secs(30), run).await.expect("the run stops");
    ended.unwrap().expect("stops cleanly");
    assert!(calls <= 10, "{calls} requests in 5 s to a queue that is gone: the wait spins");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_visibility_change_the_queue_refuses_in_part_is_an_error_naming_the_message() {
    let name = unique("vis");
    let sqs = services::sqs().await;
    let url = queue(&sqs, &name).await;
    send(&sqs, &url, &["{}".to_string()]).await;
    let aws = services::aws_at(services::endpoint()).await;
    let source = host::queue::SqsSource::with_config(&aws, &name).await.unwrap();
    let good = source.receive_up_to(10, Duration::from_secs(2), Duration::from_secs(30)).await.unwrap().pop().unwrap();
    let bad = host::queue::Message { id: "message-refused".into(), receipt: "not-a-receipt".into(), ..good.clone() };
    let e = source.set_visibility(&[&good, &bad], Duration::ZERO).await.expect_err("one entry failed");
    let text = e.to_string();
    assert!(text.contains("message-refused") && text.contains("ReceiptHandleIsInvalid"), "{text}");
    assert!(!text.contains(&good.id), "only the refused message is named: {text}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_probe_that_stalled_does_not_leave_its_connection_in_the_pool() {
    let (name, schema) = (unique("stall"), unique("s"));
    items_table(&schema).await;
    let database = services::database_url();
    let proxy = Proxy::start(&authority(&database)).await;
    let through = proxy.url(&database, &authority(&database));
    let pipeline = items("unused", &schema, &name, "append");
    // One connection: a stalled one kept in the pool would be the next.
    let pool = host::sink::pool(&through, 1).unwrap();
    let sink = host::sink::PostgresSink::new(pool, &name, "test", pipeline.sink.as_ref().unwrap(), None);
    assert!(sink.answers().await, "the database answers through the proxy");
    // Answers held back for ten minutes: the network stalls.
    proxy.set(Mode::Delay(Duration::from_secs(600)));
    assert!(!sink.answers().await, "a stalled database does not answer");
    proxy.set(Mode::Pass);
    let start = Instant::now();
    let back = sink.answers().await;
    let took = start.elapsed();
    assert!(back && took < Duration::from_secs(3), "answers: {back} after {took:?} once the network passes again");
}
