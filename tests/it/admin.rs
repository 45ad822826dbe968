//! The admin endpoint of the real `host` binary (issue 13): metrics that
//! move and end equal to the run's summary, readiness that follows the
//! database through a proxy, runs on demand and their token, several
//! pipelines in one process, and the status page in a real browser.

use crate::common;
use crate::faults::{Host, authority, good_bodies, pipeline_file, rows_reach};
use crate::proxy::{Mode, Proxy};
use crate::run::{count, schema_with_user_logins};
use crate::services::{self, put, queue, s3_at, send, unique};
use std::collections::HashMap;
use std::path::PathBuf;
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// A port free now on loopback.
pub(crate) fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// An HTTP answer: status, headers (lower-case names), body.
pub(crate) struct Answer {
    pub status: u16,
    pub headers: HashMap<String, String>,
    pub body: String,
}

/// One HTTP/1.1 request on a connection of its own (`Connection: close`).
pub(crate) async fn http(port: u16, method: &str, path: &str, token: Option<&str>) -> std::io::Result<Answer> {
    let mut stream = tokio::net::TcpStream::connect(("127.0.0.1", port)).await?;
    let auth = token.map_or_else(String::new, |t| format!("Authorization: Bearer {t}\r\n"));
    let request = format!(
        "{method} {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n{auth}Content-Length: 0\r\nConnection: close\r\n\r\n"
    );
    stream.write_all(request.as_bytes()).await?;
    let mut raw = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), stream.read_to_end(&mut raw))
        .await
        .map_err(|_| std::io::Error::other("no answer within 10 s"))??;
    let text = String::from_utf8_lossy(&raw).into_owned();
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let mut lines = head.lines();
    let status = lines.next().and_then(|l| l.split(' ').nth(1)).and_then(|s| s.parse().ok()).unwrap_or(0);
    let headers: HashMap<String, String> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_string()))
        .collect();
    let body =
        if headers.get("transfer-encoding").is_some_and(|t| t == "chunked") { unchunk(body) } else { body.into() };
    Ok(Answer { status, headers, body })
}

fn unchunk(mut rest: &str) -> String {
    let mut out = String::new();
    while let Some((size, after)) = rest.split_once("\r\n") {
        let n = usize::from_str_radix(size.trim(), 16).unwrap_or(0);
        if n == 0 || after.len() < n {
            break;
        }
        out.push_str(&after[..n]);
        rest = after[n..].trim_start_matches("\r\n");
    }
    out
}

/// Polls `GET path` until `ok` holds of the answer or `limit` passes.
pub(crate) async fn until(port: u16, path: &str, limit: Duration, ok: impl Fn(&Answer) -> bool) -> Answer {
    let start = Instant::now();
    loop {
        if let Ok(a) = http(port, "GET", path, None).await
            && (ok(&a) || start.elapsed() > limit)
        {
            return a;
        }
        assert!(start.elapsed() < limit + Duration::from_secs(10), "GET {path}: no answer");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// The value of the metric `name` with labels containing `labels`, summed
/// over the rest of its labels (0 when absent).
pub(crate) fn metric(text: &str, name: &str, labels: &str) -> f64 {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| {
            let (key, value) = l.rsplit_once(' ')?;
            let (metric, rest) = key.split_once('{').unwrap_or((key, ""));
            (metric == name && rest.contains(labels)).then(|| value.parse::<f64>().ok())?
        })
        .sum()
}

/// A number out of the summary line: `rows 12` in "... rows 12, ...".
fn summary_count(summary: &str, what: &str) -> f64 {
    summary
        .split(", ")
        .find_map(|part| part.trim().strip_prefix(what)?.trim().parse::<f64>().ok())
        .unwrap_or_else(|| panic!("`{what}` not in the summary: {summary}"))
}

async fn dead_letters(pipeline: &str) -> i64 {
    count(&format!("SELECT count(*) FROM etl.dead_letters WHERE pipeline = '{pipeline}'")).await
}

/// A logins pipeline of its own: name, schema, queue URL, file.
async fn logins(prefix: &str) -> (String, String, String, PathBuf) {
    let (name, schema) = (unique(prefix), unique("s"));
    schema_with_user_logins(&schema).await;
    let url = queue(&services::sqs().await, &name).await;
    let file = pipeline_file(&name, &schema, "wait_time_s = 1");
    (name, schema, url, file)
}

/// `/metrics` moves while messages load, and once the queue is drained its
/// totals equal the summary the process prints when it stops. `/healthz`
/// and `/readyz` answer; a run asked for without a token is refused.
#[tokio::test(flavor = "multi_thread")]
async fn metrics_move_during_a_run_and_end_equal_to_the_summary() {
    let (name, schema, url, file) = logins("adm_metrics").await;
    let sqs = services::sqs().await;
    let port = free_port();
    let admin = format!("127.0.0.1:{port}");
    let mut host = Host::run_all(&[&file], &["--admin", &admin], &[], &services::database_url(), services::endpoint());
    let ready = until(port, "/readyz", Duration::from_secs(60), |a| a.status == 200).await;
    assert_eq!(ready.status, 200, "{}\n{}", ready.body, host.log());
    assert!(ready.body.contains(&format!("{name}: ok")), "{}", ready.body);
    assert_eq!(http(port, "GET", "/healthz", None).await.unwrap().body, "ok\n");

    send(&sqs, &url, &good_bodies(10)).await;
    assert_eq!(rows_reach(&schema, 10, Duration::from_secs(60)).await, 10, "{}", host.log());
    let labels = format!("pipeline=\"{name}\"");
    let first = until(port, "/metrics", Duration::from_secs(10), |a| {
        metric(&a.body, "etl_rows_written_total", &labels) >= 10.0
    })
    .await;
    assert_eq!(metric(&first.body, "etl_rows_written_total", &labels), 10.0, "{}", first.body);

    let mut more = good_bodies(10);
    more.push("not JSON at all".to_string());
    send(&sqs, &url, &more).await;
    assert_eq!(rows_reach(&schema, 20, Duration::from_secs(60)).await, 20, "{}", host.log());
    let start = Instant::now();
    while dead_letters(&name).await < 1 {
        assert!(start.elapsed() < Duration::from_secs(30), "no dead letter: {}", host.log());
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let last = until(port, "/metrics", Duration::from_secs(10), |a| {
        // Counted last for a batch: after its deletes and its rows.
        metric(&a.body, "etl_messages_loaded_total", &labels) >= 21.0
    })
    .await;
    assert!(
        metric(&last.body, "etl_rows_written_total", &labels) > metric(&first.body, "etl_rows_written_total", &labels),
        "the counters moved"
    );
    for help in ["# HELP etl_rows_written_total", "# TYPE etl_batch_latency_seconds histogram"] {
        assert!(last.body.contains(help), "{help} not in {}", last.body);
    }
    assert!(metric(&last.body, "etl_plugin_call_seconds_count", &labels) > 0.0, "{}", last.body);
    assert_eq!(metric(&last.body, "etl_pipeline_up", &labels), 1.0);

    // Without HOST_ADMIN_TOKEN, runs on demand are off.
    let refused = http(port, "POST", &format!("/pipelines/{name}/run"), None).await.unwrap();
    assert_eq!(refused.status, 403, "{}", refused.body);
    assert!(refused.body.contains("HOST_ADMIN_TOKEN"), "{}", refused.body);

    host.term();
    let (status, summary) = host.wait(Duration::from_secs(60)).await.expect("stops");
    assert!(status.success(), "{summary}\n{}", host.log());
    for (metric_name, what) in [
        ("etl_messages_loaded_total", "messages"),
        ("etl_rows_written_total", "rows"),
        ("etl_dead_letters_total", "dead letters"),
        ("etl_duplicates_skipped_total", "duplicates skipped"),
        ("etl_batches_committed_total", "batches"),
        ("etl_batches_failed_total", "failed batches"),
    ] {
        assert_eq!(metric(&last.body, metric_name, &labels), summary_count(&summary, what), "{metric_name}: {summary}");
    }
    assert_eq!(metric(&last.body, "etl_dead_letters_total", "stage=\"input\""), 1.0, "{}", last.body);
}

/// `/readyz` fails within 5 s of the database going away (a proxy refuses
/// and cuts its connections), naming it, and answers 200 again once it is
/// back; `/healthz` stays 200 throughout.
#[tokio::test(flavor = "multi_thread")]
async fn readiness_follows_the_database() {
    let (name, _schema, _url, file) = logins("adm_ready").await;
    let db = services::database_url();
    let proxy = Proxy::start(&authority(&db)).await;
    let through = proxy.url(&db, &authority(&db));
    let port = free_port();
    let admin = format!("127.0.0.1:{port}");
    let host = Host::run_all(&[&file], &["--admin", &admin], &[], &through, services::endpoint());
    let ready = until(port, "/readyz", Duration::from_secs(60), |a| a.status == 200).await;
    assert_eq!(ready.status, 200, "{}\n{}", ready.body, host.log());

    proxy.set(Mode::Refuse);
    let gone = Instant::now();
    let down = until(port, "/readyz", Duration::from_secs(5), |a| a.status == 503).await;
    assert_eq!(down.status, 503, "still ready {:?} after the database went away: {}", gone.elapsed(), down.body);
    assert!(gone.elapsed() < Duration::from_secs(5), "{:?}", gone.elapsed());
    assert!(down.body.contains(&format!("{name}: not ready: database:")), "{}", down.body);
    assert_eq!(http(port, "GET", "/healthz", None).await.unwrap().status, 200);

    proxy.set(Mode::Pass);
    let back = until(port, "/readyz", Duration::from_secs(30), |a| a.status == 200).await;
    assert_eq!(back.status, 200, "{}\n{}", back.body, host.log());
}

/// The customers (reconcile) pipeline, named `name`, into `schema`, with
/// passes an hour apart: only a run on demand loads what comes later.
fn customers_file(name: &str, schema: &str) -> PathBuf {
    let text = std::fs::read_to_string(common::workspace().join("pipelines/customers.toml"))
        .unwrap()
        .replace("name = \"customers\"", &format!("name = \"{name}\""))
        .replace("table = \"customers\"", &format!("table = \"customers\"\nschema = \"{schema}\""))
        .replace("interval_s = 60", "interval_s = 3600");
    let file = std::env::temp_dir().join(format!("{name}.toml"));
    std::fs::write(&file, text).unwrap();
    file
}

/// `POST /pipelines/NAME/run` on a reconcile pipeline starts a pass now: a
/// file uploaded after the host started loads, and the run's state ends
/// `done` with its counts. Without the token, or with a wrong one, the
/// request is refused and nothing runs.
#[tokio::test(flavor = "multi_thread")]
async fn a_run_on_demand_loads_a_file_uploaded_after_the_start() {
    let (name, schema, bucket) = (unique("adm_cust"), unique("s"), crate::files::bucket_name("adm-bucket"));
    crate::files::schema_with_customers(&schema).await;
    let s3 = s3_at(services::endpoint()).await;
    s3.create_bucket().bucket(&bucket).send().await.unwrap();
    let file = customers_file(&name, &schema);
    let port = free_port();
    let admin = format!("127.0.0.1:{port}");
    let token = "s3cret-token";
    let envs = [("CUSTOMER_BUCKET", bucket.as_str()), ("HOST_ADMIN_TOKEN", token)];
    let host = Host::run_all(&[&file], &["--admin", &admin], &envs, &services::database_url(), services::endpoint());
    let ready = until(port, "/readyz", Duration::from_secs(60), |a| a.status == 200).await;
    assert_eq!(ready.status, 200, "{}\n{}", ready.body, host.log());
    // The first pass (at the start, on an empty bucket) has ended once a
    // run asked for now is done.
    let first = http(port, "POST", &format!("/pipelines/{name}/run"), Some(token)).await.unwrap();
    let first: serde_json::Value = serde_json::from_str(&first.body).unwrap();
    let first_path = format!("/pipelines/{name}/runs/{}", first["id"]);
    let first_done = until(port, &first_path, Duration::from_secs(30), |a| a.body.contains("\"state\":\"done\"")).await;
    assert!(first_done.body.contains("\"objects\":0"), "{}", first_done.body);
    put(&s3, &bucket, "customers/late.csv", "7,10001,New York,NY,2023-01-01 00:00:00,2023-01-01 00:00:00\n").await;

    let run_path = format!("/pipelines/{name}/run");
    for wrong in [None, Some("not-the-token")] {
        let refused = http(port, "POST", &run_path, wrong).await.unwrap();
        assert_eq!(refused.status, 401, "{}", refused.body);
    }
    let customers = format!("SELECT count(*) FROM {schema}.customers");
    assert_eq!(count(&customers).await, 0, "a refused request runs nothing");

    let asked = http(port, "POST", &run_path, Some(token)).await.unwrap();
    assert_eq!(asked.status, 202, "{}", asked.body);
    let answer: serde_json::Value = serde_json::from_str(&asked.body).unwrap();
    let id = answer["id"].as_u64().unwrap();
    let state_path = format!("/pipelines/{name}/runs/{id}");
    assert_eq!(asked.headers.get("location"), Some(&state_path));
    let done = until(port, &state_path, Duration::from_secs(30), |a| a.body.contains("\"state\":\"done\"")).await;
    let run: serde_json::Value = serde_json::from_str(&done.body).unwrap();
    assert_eq!(run["state"], "done", "{}\n{}", done.body, host.log());
    assert_eq!((run["counts"]["objects"].as_u64(), run["counts"]["rows"].as_u64()), (Some(1), Some(1)), "{run}");
    assert_eq!(count(&customers).await, 1);
    assert_eq!(http(port, "GET", &format!("/pipelines/{name}/runs/999"), None).await.unwrap().status, 404);
    assert_eq!(http(port, "POST", "/pipelines/nope/run", Some(token)).await.unwrap().status, 404);
}

/// `POST /pipelines/NAME/run` on a queue pipeline drains what waits: the
/// run is `done` only once every message sent before it is loaded.
#[tokio::test(flavor = "multi_thread")]
async fn a_run_on_demand_on_a_queue_ends_once_what_waited_is_loaded() {
    let (name, schema, url, file) = logins("adm_drain").await;
    let port = free_port();
    let admin = format!("127.0.0.1:{port}");
    let token = "drain-token";
    let envs = [("HOST_ADMIN_TOKEN", token)];
    let host = Host::run_all(&[&file], &["--admin", &admin], &envs, &services::database_url(), services::endpoint());
    let ready = until(port, "/readyz", Duration::from_secs(60), |a| a.status == 200).await;
    assert_eq!(ready.status, 200, "{}\n{}", ready.body, host.log());
    send(&services::sqs().await, &url, &good_bodies(30)).await;
    let asked = http(port, "POST", &format!("/pipelines/{name}/run"), Some(token)).await.unwrap();
    assert_eq!(asked.status, 202, "{}", asked.body);
    let id = serde_json::from_str::<serde_json::Value>(&asked.body).unwrap()["id"].as_u64().unwrap();
    let state_path = format!("/pipelines/{name}/runs/{id}");
    let done = until(port, &state_path, Duration::from_secs(60), |a| a.body.contains("\"state\":\"done\"")).await;
    assert!(done.body.contains("\"state\":\"done\""), "{}\n{}", done.body, host.log());
    assert_eq!(count(&format!("SELECT count(*) FROM {schema}.user_logins")).await, 30, "{}", done.body);
}

/// Two pipelines in one process both load; when one fails (its table is
/// dropped under it) it stops alone, `/readyz` names it, and the other
/// goes on loading. SIGTERM then drains the one left; the exit code says
/// one failed.
#[tokio::test(flavor = "multi_thread")]
async fn two_pipelines_in_one_process_and_one_failing_leaves_the_other_running() {
    let (a, a_schema, a_url, a_file) = logins("adm_two_a").await;
    let (b, b_schema, b_url, b_file) = logins("adm_two_b").await;
    let sqs = services::sqs().await;
    let port = free_port();
    let admin = format!("127.0.0.1:{port}");
    let mut host =
        Host::run_all(&[&a_file, &b_file], &["--admin", &admin], &[], &services::database_url(), services::endpoint());
    let ready = until(port, "/readyz", Duration::from_secs(60), |r| r.status == 200).await;
    assert_eq!(ready.status, 200, "{}\n{}", ready.body, host.log());
    send(&sqs, &a_url, &good_bodies(5)).await;
    send(&sqs, &b_url, &good_bodies(5)).await;
    assert_eq!(rows_reach(&a_schema, 5, Duration::from_secs(60)).await, 5, "{}", host.log());
    assert_eq!(rows_reach(&b_schema, 5, Duration::from_secs(60)).await, 5, "{}", host.log());

    crate::services::pg().await.batch_execute(&format!("DROP TABLE {b_schema}.user_logins")).await.unwrap();
    send(&sqs, &b_url, &good_bodies(1)).await;
    let failed = until(port, "/readyz", Duration::from_secs(30), |r| r.body.contains(&format!("{b}: failed"))).await;
    assert_eq!(failed.status, 503, "{}\n{}", failed.body, host.log());
    assert!(failed.body.contains(&format!("{a}: ok")), "{}", failed.body);

    send(&sqs, &a_url, &good_bodies(5)).await;
    assert_eq!(rows_reach(&a_schema, 10, Duration::from_secs(60)).await, 10, "{}", host.log());
    let listed = http(port, "GET", "/pipelines", None).await.unwrap();
    let list: serde_json::Value = serde_json::from_str(&listed.body).unwrap();
    let states: Vec<(String, String)> = list
        .as_array()
        .unwrap()
        .iter()
        .map(|p| (p["name"].as_str().unwrap().to_string(), p["state"].as_str().unwrap().to_string()))
        .collect();
    assert_eq!(states, vec![(a.clone(), "running".into()), (b.clone(), "failed".into())]);

    host.term();
    let (status, out) = host.wait(Duration::from_secs(60)).await.expect("stops");
    assert_eq!(status.code(), Some(2), "{out}\n{}", host.log());
    assert!(out.contains(&format!("{a}: messages 10, rows 10")), "{out}");
    assert!(host.log().contains(&format!("error: {b}: ")), "{}", host.log());
}

/// The status page in headless Chromium, during a run: it shows the
/// pipeline, a non-zero row count and a dead letter's reason. Its
/// screenshot is kept in `target/test-artifacts/status-page.png`.
#[tokio::test(flavor = "multi_thread")]
async fn the_status_page_in_a_real_browser_shows_rows_and_a_dead_letter() {
    let chromium = which_chromium().expect("chromium is not installed (.ci/run installs Debian's `chromium`)");
    let (name, schema, url, file) = logins("adm_page").await;
    let sqs = services::sqs().await;
    let port = free_port();
    let admin = format!("127.0.0.1:{port}");
    let host = Host::run_all(&[&file], &["--admin", &admin], &[], &services::database_url(), services::endpoint());
    let ready = until(port, "/readyz", Duration::from_secs(60), |a| a.status == 200).await;
    assert_eq!(ready.status, 200, "{}\n{}", ready.body, host.log());
    let mut bodies = good_bodies(12);
    bodies.push("{\"user_id\": ".to_string());
    send(&sqs, &url, &bodies).await;
    assert_eq!(rows_reach(&schema, 12, Duration::from_secs(60)).await, 12, "{}", host.log());
    let start = Instant::now();
    while dead_letters(&name).await < 1 {
        assert!(start.elapsed() < Duration::from_secs(30), "no dead letter: {}", host.log());
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let reason: String = crate::services::pg()
        .await
        .query_one("SELECT reason FROM etl.dead_letters WHERE pipeline = $1", &[&name])
        .await
        .unwrap()
        .get(0);

    let page = format!("http://127.0.0.1:{port}/");
    let profile = std::env::temp_dir().join(format!("chromium-{}", unique("profile")));
    let browser = |extra: &[&str]| {
        let mut cmd = std::process::Command::new(&chromium);
        cmd.args(["--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--hide-scrollbars"])
            .arg(format!("--user-data-dir={}", profile.display()))
            .args(extra)
            .arg(&page);
        cmd.output().expect("chromium runs")
    };
    let dom = browser(&["--dump-dom", "--virtual-time-budget=2000"]);
    let dom_text = String::from_utf8_lossy(&dom.stdout);
    assert!(dom.status.success(), "{}", String::from_utf8_lossy(&dom.stderr));
    let section = dom_text
        .split(&format!("data-pipeline=\"{name}\""))
        .nth(1)
        .unwrap_or_else(|| panic!("pipeline {name} not on the page: {dom_text}"));
    let rows: u64 = section
        .split("<td class=\"rows\">")
        .nth(1)
        .and_then(|r| r.split('<').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no row count on the page: {section}"));
    assert!(rows >= 12, "rows on the page: {rows}");
    let shown = reason.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;").replace('"', "&quot;");
    assert!(section.contains(&shown), "the dead letter's reason `{reason}` is not on the page: {section}");
    assert!(section.contains("<svg"), "no rate chart");

    let artifacts = common::workspace().join("target/test-artifacts");
    std::fs::create_dir_all(&artifacts).unwrap();
    let shot = artifacts.join("status-page.png");
    let _ = std::fs::remove_file(&shot);
    let out = browser(&["--window-size=1280,1000", &format!("--screenshot={}", shot.display())]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let png = std::fs::read(&shot).expect("a screenshot");
    assert!(png.starts_with(b"\x89PNG") && png.len() > 10_000, "{} bytes", png.len());
    let _ = std::fs::remove_dir_all(&profile);
}

pub(crate) fn which_chromium() -> Option<PathBuf> {
    ["chromium", "chromium-browser", "google-chrome"].iter().find_map(|name| {
        std::env::var_os("PATH")?.to_str()?.split(':').map(|d| PathBuf::from(d).join(name)).find(|p| p.is_file())
    })
}

/// Bound to a non-loopback address, the endpoint does not start without a
/// token: the host exits at once, saying why; an empty token is refused too.
#[tokio::test(flavor = "multi_thread")]
async fn a_non_loopback_endpoint_needs_a_token() {
    let (_name, _schema, _url, file) = logins("adm_open").await;
    let admin = format!("0.0.0.0:{}", free_port());
    for (token, says) in
        [(None, "is not a loopback address: set HOST_ADMIN_TOKEN"), (Some(""), "HOST_ADMIN_TOKEN is empty")]
    {
        let mut cmd = std::process::Command::new(crate::objects::host_binary());
        cmd.arg("run").arg(&file).args(["--admin", &admin]).env("DATABASE_URL", services::database_url());
        cmd.env_remove("HOST_ADMIN_TOKEN");
        if let Some(t) = token {
            cmd.env("HOST_ADMIN_TOKEN", t);
        }
        let out = cmd.output().unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{stderr}");
        assert!(stderr.contains(says), "{stderr}");
    }
}
