//! Source health (issue 24): a source that stops answering shows as
//! `degraded` on `/pipelines`, `/metrics` and the status page, its receives
//! back off and the log says so once, not per attempt; a queue deleted
//! under a running host is a configuration error: its pipeline fails
//! alone, as it would have at the start.

use crate::admin::{free_port, http, metric, until, which_chromium};
use crate::faults::{Host, authority, good_bodies, pipeline_file, rows_reach};
use crate::proxy::{Mode, Proxy};
use crate::run::schema_with_user_logins;
use crate::services::{self, queue, send, unique};
use std::time::Duration;

/// The entry of `/pipelines` for `name`.
fn entry(body: &str, name: &str) -> serde_json::Value {
    let list: serde_json::Value = serde_json::from_str(body).unwrap_or_default();
    list.as_array().and_then(|l| l.iter().find(|p| p["name"] == name).cloned()).unwrap_or_default()
}

fn state(body: &str, name: &str) -> String {
    entry(body, name)["state"].as_str().unwrap_or_default().to_string()
}

#[tokio::test(flavor = "multi_thread")]
async fn a_dead_endpoint_degrades_the_source_and_a_deleted_queue_fails_its_pipeline_alone() {
    let endpoint = services::endpoint();
    let proxy = Proxy::start(&authority(endpoint)).await;
    let through = proxy.url(endpoint, &authority(endpoint));
    let sqs = services::sqs().await;
    let (a, schema_a, b, schema_b) = (unique("health_a"), unique("s"), unique("health_b"), unique("s"));
    schema_with_user_logins(&schema_a).await;
    schema_with_user_logins(&schema_b).await;
    let url_a = queue(&sqs, &a).await;
    let _url_b = queue(&sqs, &b).await;
    let file_a = pipeline_file(&a, &schema_a, "wait_time_s = 1");
    let file_b = pipeline_file(&b, &schema_b, "wait_time_s = 1");
    let port = free_port();
    let admin = format!("127.0.0.1:{port}");
    let mut host = Host::run_all(&[&file_a, &file_b], &["--admin", &admin], &[], &services::database_url(), &through);
    let ready = until(port, "/readyz", Duration::from_secs(60), |r| r.status == 200).await;
    assert_eq!(ready.status, 200, "{}\n{}", ready.body, host.log());
    send(&sqs, &url_a, &good_bodies(3)).await;
    assert_eq!(rows_reach(&schema_a, 3, Duration::from_secs(60)).await, 3, "{}", host.log());
    let ok =
        until(port, "/pipelines", Duration::from_secs(10), |r| entry(&r.body, &a)["sources"][0]["state"] == "ok").await;
    assert_eq!(entry(&ok.body, &a)["sources"][0]["part"], "queue", "{}", ok.body);

    // The endpoint stops answering: both pipelines' queues are degraded.
    proxy.set(Mode::Refuse);
    let down = until(port, "/pipelines", Duration::from_secs(30), |r| state(&r.body, &a) == "degraded").await;
    let pipeline = entry(&down.body, &a);
    assert_eq!(pipeline["state"], "degraded", "{}\n{}", down.body, host.log());
    let part = &pipeline["sources"][0];
    assert_eq!(part["state"], "degraded", "{pipeline}");
    let reason = part["reason"].as_str().unwrap_or_default();
    assert!(reason.starts_with(&format!("SQS queue `{a}`: ReceiveMessage: ")), "{reason}");
    assert!(reason.len() < 300 && !reason.contains("DispatchFailure"), "{reason}");
    assert!(pipeline["error"].as_str().unwrap_or_default().starts_with("queue: "), "{pipeline}");
    let metrics = http(port, "GET", "/metrics", None).await.unwrap().body;
    let labels = format!("pipeline=\"{a}\"");
    assert_eq!(metric(&metrics, "etl_source_up", &labels), 0.0, "{metrics}");
    assert!(metric(&metrics, "etl_source_errors_total", "kind=\"unreachable\"") >= 1.0, "{metrics}");
    assert_eq!(metric(&metrics, "etl_pipeline_up", &labels), 0.0, "{metrics}");
    let readyz = http(port, "GET", "/readyz", None).await.unwrap();
    assert_eq!(readyz.status, 503, "{}", readyz.body);

    // The page, in a real browser, shows the pipeline and its queue degraded.
    let chromium = which_chromium().expect("chromium is not installed (cargo xtask test installs Debian's `chromium`)");
    let profile = std::env::temp_dir().join(format!("chromium-{}", unique("profile")));
    let dom = std::process::Command::new(&chromium)
        .args(["--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--dump-dom"])
        .arg(format!("--user-data-dir={}", profile.display()))
        .arg(format!("http://127.0.0.1:{port}/"))
        .output()
        .expect("chromium runs");
    let _ = std::fs::remove_dir_all(&profile);
    let dom = String::from_utf8_lossy(&dom.stdout);
    let section =
        dom.split(&format!("data-pipeline=\"{a}\"")).nth(1).unwrap_or_else(|| panic!("{a} not on the page: {dom}"));
    let section = section.split("</section>").next().unwrap_or_default();
    assert!(section.contains(r#"<span class="state degraded">degraded</span>"#), "{section}");
    assert!(section.contains("ReceiveMessage"), "{section}");

    // Receives back off, and the log says nothing more while it lasts.
    let before = host.log().lines().count();
    tokio::time::sleep(Duration::from_secs(30)).await;
    let log = host.log();
    let during: Vec<&str> = log.lines().skip(before).collect();
    assert!(during.len() <= 2, "{} lines in 30 s while the endpoint was down:\n{}", during.len(), during.join("\n"));
    let metrics = http(port, "GET", "/metrics", None).await.unwrap().body;
    let errors = metric(&metrics, "etl_source_errors_total", &labels);
    assert!(errors <= 12.0, "{errors} receives failed in about 40 s: no backoff");

    // It answers again: ok, within the longest backoff.
    proxy.set(Mode::Pass);
    let both = |r: &crate::admin::Answer| state(&r.body, &a) == "running" && state(&r.body, &b) == "running";
    let back = until(port, "/pipelines", Duration::from_secs(45), both).await;
    assert!(both(&back), "{}\n{}", back.body, host.log());
    assert!(host.log().contains("the queue answers again"), "{}", host.log());

    // The queue is deleted: waiting will not bring it back. Its pipeline
    // fails alone, saying which queue; the other runs on.
    sqs.delete_queue().queue_url(&url_a).send().await.unwrap();
    let gone = until(port, "/pipelines", Duration::from_secs(60), |r| state(&r.body, &a) == "failed").await;
    let pipeline = entry(&gone.body, &a);
    assert_eq!(pipeline["state"], "failed", "{}\n{}", gone.body, host.log());
    let error = pipeline["error"].as_str().unwrap_or_default();
    assert!(error.contains(&format!("SQS queue `{a}`: ReceiveMessage: ")), "{error}");
    assert!(error.contains("NonExistentQueue") || error.contains("QueueDoesNotExist"), "{error}");
    assert_eq!(pipeline["sources"][0]["state"], "failed", "{pipeline}");
    assert_eq!(state(&gone.body, &b), "running", "{}", gone.body);
    let metrics = http(port, "GET", "/metrics", None).await.unwrap().body;
    assert!(metric(&metrics, "etl_source_errors_total", "kind=\"not_found\"") >= 1.0, "{metrics}");

    host.term();
    let (status, _) = host.wait(Duration::from_secs(60)).await.expect("stops");
    assert_eq!(status.code(), Some(2), "a pipeline failed: {}", host.log());
}
