//! Shadow runs through the real binary against moto and PostgreSQL: the
//! logins pipeline on SHA-256 masks with an HMAC-SHA-256 candidate in
//! shadow, its report, its promotion without a restart; a candidate that
//! traps on every batch costs production nothing, and is discarded through
//! the admin endpoint.

use crate::admin::{free_port, http, until};
use crate::common;
use crate::faults::{Host, good_bodies, pipeline_file, rows_reach};
use crate::run::{count, schema_with_user_logins};
use crate::services::{self, pg, queue, send, unique};
use hmac::Mac;
use std::path::Path;
use std::time::{Duration, Instant};

const KEY: &str = "the shadow test's key";
const TOKEN: &str = "shadow-token";

/// The logins pipeline of `name`, its mask step given `shadow`, without
/// the test cases that pin SHA-256 digests (a candidate must pass the
/// pipeline's cases to be promoted).
fn pipeline(name: &str, schema: &str, shadow: &str) -> std::path::PathBuf {
    let file = pipeline_file(name, schema, "wait_time_s = 1");
    let text = std::fs::read_to_string(&file).unwrap();
    let mask = "algorithm = \"sha256\" }\n";
    assert!(text.contains(mask));
    let text = text.replacen(mask, &format!("{mask}shadow = {shadow}\n"), 1);
    let cut = text.find("\n[[tests]]\nname = \"a message of the wrong type").expect("the reject cases");
    let first = text.find("\n[[tests]]").unwrap();
    std::fs::write(&file, format!("{}{}", &text[..first], &text[cut..])).unwrap();
    file
}

/// The candidate row of the pipeline: (records, changed, same, columns as
/// JSON, trapped, batches, rejected by the candidate only).
async fn shadow_row(name: &str) -> Option<(i64, i64, i64, serde_json::Value, i64, i64, i64)> {
    let row = pg()
        .await
        .query_opt(
            "SELECT (summary->>'records')::bigint, (summary->>'changed')::bigint, (summary->>'same')::bigint, \
             (summary->'columns')::text, trapped, batches, (summary->>'rejected_by_candidate_only')::bigint \
             FROM etl.shadows WHERE pipeline = $1",
            &[&name],
        )
        .await
        .unwrap()?;
    let columns: String = row.get(3);
    Some((
        row.get(0),
        row.get(1),
        row.get(2),
        serde_json::from_str(&columns).unwrap(),
        row.get(4),
        row.get(5),
        row.get(6),
    ))
}

/// Waits until the candidate compared `want` records (or `limit` passes).
async fn compared(name: &str, want: i64, limit: Duration) -> i64 {
    let start = Instant::now();
    loop {
        let n = shadow_row(name).await.map_or(0, |r| r.0);
        if n >= want || start.elapsed() > limit {
            return n;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

fn host_command(file: &Path, args: &[&str]) -> std::process::Output {
    std::process::Command::new(crate::objects::host_binary())
        .args(args)
        .arg(file)
        .env("DATABASE_URL", services::database_url())
        .env("USER", "shadow-tester")
        .output()
        .unwrap()
}

fn hmac_hex(value: &str) -> String {
    let mut mac = hmac::Hmac::<sha2::Sha256>::new_from_slice(KEY.as_bytes()).unwrap();
    mac.update(value.as_bytes());
    mac.finalize().into_bytes().iter().map(|b| format!("{b:02x}")).collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn an_hmac_candidate_changes_the_masks_only_and_takes_over_when_promoted() {
    let (name, schema) = (unique("shadow_hmac"), unique("s"));
    schema_with_user_logins(&schema).await;
    let sqs = services::sqs().await;
    let url = queue(&sqs, &name).await;
    let shadow = "{ params = { fields = { ip = \"masked_ip\", device_id = \"masked_device_id\" }, \
                  algorithm = \"hmac-sha256\", secret = \"mask_key\" }, grants = { secrets = { mask_key = \"SHADOW_MASK_KEY\" } } }";
    let file = pipeline(&name, &schema, shadow);
    let envs = [("SHADOW_MASK_KEY", KEY)];
    let host = Host::run_all(&[&file], &[], &envs, &services::database_url(), services::endpoint());

    let bodies = good_bodies(1000);
    send(&sqs, &url, &bodies).await;
    assert_eq!(rows_reach(&schema, 1000, Duration::from_secs(600)).await, 1000, "{}", host.log());
    assert!(host.log().contains("a candidate runs in shadow"), "{}", host.log());
    // A message the queue delivered twice (a slow endpoint) is compared
    // twice: its second delivery is left out at the commit, after the
    // shadow ran. Every record compared differs, in both columns.
    assert!(compared(&name, 1000, Duration::from_secs(60)).await >= 1000, "{}", host.log());
    let (records, changed, same, columns, trapped, _, rejected) = shadow_row(&name).await.unwrap();
    assert!(records >= 1000, "{records}");
    assert_eq!((changed, same, trapped, rejected), (records, 0, 0, 0));
    assert_eq!(columns, serde_json::json!({"masked_device_id": records, "masked_ip": records}));

    let out = host_command(&file, &["shadow", "report"]);
    let report = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let shown: i64 = report
        .split("records compared: ")
        .nth(1)
        .and_then(|r| r.split('\n').next())
        .and_then(|n| n.trim().parse().ok())
        .unwrap_or_else(|| panic!("{report}"));
    assert!(shown >= 1000, "{report}");
    assert!(
        report.contains(&format!(
            "changed columns:\n    masked_device_id  {shown} rows\n    masked_ip         {shown} rows\n  records"
        )),
        "{report}"
    );
    assert!(report.contains("step 3 mask params changed"), "{report}");
    assert!(!report.contains("199.172"), "no values in the report: {report}");

    let out = host_command(&file, &["shadow", "promote"]);
    let said = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{said}{}\n{}", String::from_utf8_lossy(&out.stderr), host.log());
    assert!(said.contains("promote done"), "{said}");
    assert!(said.contains("still names the old step"), "{said}");

    // The same process goes on, on the candidate: the next rows are HMACs.
    let hmacs: Vec<String> = bodies[..5]
        .iter()
        .map(|b| hmac_hex(serde_json::from_str::<serde_json::Value>(b).unwrap()["ip"].as_str().unwrap()))
        .map(|h| format!("'{h}'"))
        .collect();
    send(&sqs, &url, &bodies[..10]).await;
    assert_eq!(rows_reach(&schema, 1010, Duration::from_secs(120)).await, 1010, "{}", host.log());
    let hmac_rows =
        count(&format!("SELECT count(*) FROM {schema}.user_logins WHERE masked_ip IN ({})", hmacs.join(", "))).await;
    assert_eq!(hmac_rows, 10, "the rows after the promotion are HMACs\n{}", host.log());
    assert!(host.log().contains("promoted"), "{}", host.log());

    // A restart on the unchanged file keeps the promotion: the decision
    // stands, and is carried out before the first batch.
    drop(host);
    let host = Host::run_all(&[&file], &[], &envs, &services::database_url(), services::endpoint());
    send(&sqs, &url, &bodies[..10]).await;
    assert_eq!(rows_reach(&schema, 1020, Duration::from_secs(120)).await, 1020, "{}", host.log());
    let hmac_rows =
        count(&format!("SELECT count(*) FROM {schema}.user_logins WHERE masked_ip IN ({})", hmacs.join(", "))).await;
    assert_eq!(hmac_rows, 20, "the rows after the restart are HMACs too\n{}", host.log());

    let decided = pg()
        .await
        .query_one("SELECT action, decided_by, outcome FROM etl.shadow_decisions WHERE pipeline = $1", &[&name])
        .await
        .unwrap();
    let (action, by, outcome): (String, String, Option<String>) = (decided.get(0), decided.get(1), decided.get(2));
    assert_eq!((action.as_str(), by.as_str(), outcome.as_deref()), ("promote", "cli: shadow-tester", Some("done")));
    let report = String::from_utf8_lossy(&host_command(&file, &["shadow", "report"]).stdout).into_owned();
    assert!(report.contains("(promoted)") && report.contains("promote by cli: shadow-tester"), "{report}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_candidate_that_traps_costs_production_nothing_and_is_discarded_through_the_endpoint() {
    let (name, schema) = (unique("shadow_trap"), unique("s"));
    schema_with_user_logins(&schema).await;
    let sqs = services::sqs().await;
    let url = queue(&sqs, &name).await;
    let file = pipeline(&name, &schema, "{ uses = \"hostile\", params = { mode = \"panic\" } }");
    let port = free_port();
    let admin = format!("127.0.0.1:{port}");
    let args = ["--plugin-path", common::TEST_PLUGIN_DIR, "--admin", &admin];
    let host =
        Host::run_all(&[&file], &args, &[("HOST_ADMIN_TOKEN", TOKEN)], &services::database_url(), services::endpoint());

    send(&sqs, &url, &good_bodies(200)).await;
    assert_eq!(rows_reach(&schema, 200, Duration::from_secs(300)).await, 200, "{}", host.log());
    assert_eq!(compared(&name, 200, Duration::from_secs(60)).await, 200, "{}", host.log());
    let (records, _, _, _, trapped, batches, rejected) = shadow_row(&name).await.unwrap();
    assert_eq!((records, rejected), (200, 200));
    assert!(trapped > 0 && trapped == batches, "every batch trapped: {trapped} of {batches}");
    assert_eq!(count(&format!("SELECT count(*) FROM etl.dead_letters WHERE pipeline = '{name}'")).await, 0);

    let listed = until(port, "/pipelines", Duration::from_secs(10), |a| a.body.contains("\"shadow\":{")).await;
    assert!(listed.body.contains("\"rejected_by_candidate_only\":200"), "{}", listed.body);
    let page = http(port, "GET", "/", None).await.unwrap();
    assert!(page.body.contains("Candidate in shadow"), "{}", page.body);
    let metrics = http(port, "GET", "/metrics", None).await.unwrap().body;
    assert!(metrics.contains("etl_shadow_batches_total{"), "{metrics}");

    assert_eq!(http(port, "POST", &format!("/pipelines/{name}/discard"), None).await.unwrap().status, 401);
    let answer = http(port, "POST", &format!("/pipelines/{name}/discard"), Some(TOKEN)).await.unwrap();
    assert_eq!(answer.status, 200, "{}", answer.body);
    assert!(answer.body.contains("\"outcome\":\"done\""), "{}", answer.body);
    let state: String =
        pg().await.query_one("SELECT state FROM etl.shadows WHERE pipeline = $1", &[&name]).await.unwrap().get(0);
    assert_eq!(state, "discarded");
    let again = http(port, "POST", &format!("/pipelines/{name}/promote"), Some(TOKEN)).await.unwrap();
    assert_eq!(again.status, 409, "nothing runs in shadow any more: {}", again.body);
}
