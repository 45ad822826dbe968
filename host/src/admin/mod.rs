//! The admin endpoint (`host run --admin ADDR`): health, readiness,
//! Prometheus metrics, runs on demand and a status page, over the
//! process's [`Board`].
//!
//! axum, on the hyper and tokio the AWS SDK brings already: routing, path
//! parameters and graceful shutdown for a few lines, where hyper alone
//! would have us write them.
//!
//! Access: a bearer token (`HOST_ADMIN_TOKEN`) is required for anything
//! that changes state, and for every route when the endpoint is bound to a
//! non-loopback address (then it does not start without one).
//!
//! Must not show a record's values: counts, names, digests and reasons.

mod page;

use crate::status::{Board, Panel, RunRecord, State};
use axum::Router;
use axum::extract::{Path, Request, State as With};
use axum::http::{HeaderMap, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use metrics_exporter_prometheus::PrometheusHandle;
use sha2::{Digest, Sha256};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

/// How long open connections may take to finish once the endpoint stops.
pub const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);

/// How the endpoint is reached.
#[derive(Debug, Clone)]
pub struct AdminOptions {
    pub addr: SocketAddr,
    /// `HOST_ADMIN_TOKEN`.
    pub token: Option<String>,
}

#[derive(Debug, thiserror::Error)]
pub enum AdminError {
    #[error(
        "the admin endpoint on {0} is not a loopback address: set HOST_ADMIN_TOKEN (every route then needs `Authorization: Bearer TOKEN`)"
    )]
    NoToken(SocketAddr),
    #[error("HOST_ADMIN_TOKEN is empty: a token must not be")]
    EmptyToken,
    #[error("cannot listen on {addr} for the admin endpoint: {error}")]
    Bind { addr: SocketAddr, error: std::io::Error },
}

/// What the handlers share.
pub struct Admin {
    board: Arc<Board>,
    metrics: PrometheusHandle,
    /// SHA-256 of the token: compared in constant time, whatever its length.
    token: Option<[u8; 32]>,
    /// Every route needs the token (a non-loopback address).
    closed: bool,
    /// The page's connection (dead letters by reason), made when needed;
    /// its statements end after `COUNT_TIMEOUT`.
    db: crate::sink::connect::Kept,
}

/// A bound endpoint, not yet serving.
pub struct Endpoint {
    listener: tokio::net::TcpListener,
    admin: Arc<Admin>,
}

impl Endpoint {
    /// Binds `opts.addr`; refuses a non-loopback address without a token.
    pub async fn bind(
        opts: &AdminOptions,
        board: Arc<Board>,
        metrics: PrometheusHandle,
        database_url: &str,
    ) -> Result<Endpoint, AdminError> {
        let closed = !opts.addr.ip().is_loopback();
        let token = match opts.token.as_deref() {
            Some("") => return Err(AdminError::EmptyToken),
            Some(t) => Some(Sha256::digest(t.as_bytes()).into()),
            None if closed => return Err(AdminError::NoToken(opts.addr)),
            None => None,
        };
        let listener = tokio::net::TcpListener::bind(opts.addr)
            .await
            .map_err(|error| AdminError::Bind { addr: opts.addr, error })?;
        let db = crate::sink::connect::Kept::with_statement_timeout(database_url, COUNT_TIMEOUT);
        let admin = Arc::new(Admin { board, metrics, token, closed, db });
        Ok(Endpoint { listener, admin })
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.listener.local_addr().expect("a bound listener has an address")
    }

    /// Serves until `shutdown` resolves, then gives open connections the
    /// time it resolves with (at most [`SHUTDOWN_GRACE`]); also keeps the
    /// metrics' histograms drained and the panels' rate samples taken.
    pub async fn serve(self, shutdown: impl std::future::Future<Output = Duration> + Send + 'static) {
        let upkeep = {
            let handle = self.admin.metrics.clone();
            tokio::spawn(async move {
                let mut tick = tokio::time::interval(Duration::from_secs(5));
                loop {
                    tick.tick().await;
                    handle.run_upkeep();
                }
            })
        };
        let sampling = tokio::spawn(self.admin.board.clone().sample());
        let app = router(self.admin);
        // Connections get what time is left to finish once `shutdown`
        // resolves; one still open then (a client that sent half a
        // request, say) is dropped with the server.
        let (begun, grace_begins) = tokio::sync::oneshot::channel::<Duration>();
        let signal = async move {
            let _ = begun.send(shutdown.await.min(SHUTDOWN_GRACE));
        };
        let server = axum::serve(self.listener, app).with_graceful_shutdown(signal).into_future();
        let grace = async {
            let grace = grace_begins.await.unwrap_or(Duration::ZERO);
            tokio::time::sleep(grace).await;
            grace
        };
        tokio::select! {
            result = server => if let Err(e) = result {
                tracing::error!(error = %e, "the admin endpoint stopped");
            },
            grace = grace => tracing::warn!(grace_s = grace.as_secs_f64(), "admin connections still open at the stop were closed"),
        }
        upkeep.abort();
        sampling.abort();
    }
}

fn router(admin: Arc<Admin>) -> Router {
    Router::new()
        .route("/", get(status_page))
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .route("/pipelines", get(pipelines))
        .route("/pipelines/{name}/run", post(trigger))
        .route("/pipelines/{name}/runs/{id}", get(run_state))
        .route("/pipelines/{name}/promote", post(promote))
        .route("/pipelines/{name}/discard", post(discard))
        .layer(axum::middleware::from_fn_with_state(admin.clone(), authorize))
        .with_state(admin)
}

/// The token's rule: state-changing methods always, every route on a
/// non-loopback address.
async fn authorize(With(admin): With<Arc<Admin>>, request: Request, next: Next) -> Response {
    let changes = request.method() != axum::http::Method::GET && request.method() != axum::http::Method::HEAD;
    if !changes && !admin.closed {
        return next.run(request).await;
    }
    let Some(expected) = admin.token else {
        return (
            StatusCode::FORBIDDEN,
            "runs on demand are off: start the host with HOST_ADMIN_TOKEN set, and send `Authorization: Bearer TOKEN`\n",
        )
            .into_response();
    };
    let given = bearer(request.headers()).map(|t| <[u8; 32]>::from(Sha256::digest(t.as_bytes())));
    if given.is_some_and(|g| constant_time_eq(&g, &expected)) {
        return next.run(request).await;
    }
    (
        StatusCode::UNAUTHORIZED,
        [(header::WWW_AUTHENTICATE, "Bearer")],
        "a valid `Authorization: Bearer TOKEN` (HOST_ADMIN_TOKEN) is required\n",
    )
        .into_response()
}

fn bearer(headers: &HeaderMap) -> Option<&str> {
    headers.get(header::AUTHORIZATION)?.to_str().ok()?.strip_prefix("Bearer ").map(str::trim)
}

fn constant_time_eq(a: &[u8; 32], b: &[u8; 32]) -> bool {
    bool::from(subtle::ConstantTimeEq::ct_eq(&a[..], &b[..]))
}

async fn healthz() -> &'static str {
    "ok\n"
}

/// 200 when every pipeline runs with its plugins loaded and its database
/// and source answer; 503 naming each part that does not, and from the
/// signal that stops the process (`draining`, first).
async fn readyz(With(admin): With<Arc<Admin>>) -> Response {
    let panels = admin.board.panels();
    let checks = panels.iter().map(|p| readiness(p));
    let lines = futures_util::future::join_all(checks).await;
    let draining = admin.board.draining();
    let ready = !draining && lines.iter().all(|(ok, _)| *ok);
    let mut body = String::new();
    if draining {
        // First: load balancers and operators read the first line.
        body.push_str("draining: the process is stopping; it receives nothing new\n");
    }
    body.extend(lines.into_iter().map(|(_, line)| line + "\n"));
    if panels.is_empty() {
        body.push_str("no pipeline\n");
    }
    let status = if ready && !panels.is_empty() { StatusCode::OK } else { StatusCode::SERVICE_UNAVAILABLE };
    (status, [(header::CONTENT_TYPE, "text/plain; charset=utf-8")], body).into_response()
}

/// One pipeline's readiness line: `NAME: ok`, or what fails.
async fn readiness(panel: &Panel) -> (bool, String) {
    match panel.state() {
        State::Starting => (false, format!("{}: not ready: its plugins are loading", panel.name)),
        State::Failed(why) => (false, format!("{}: failed: {}", panel.name, clip(&why))),
        State::Stopped => (false, format!("{}: stopped", panel.name)),
        State::Running => {
            let mut failing: Vec<String> = panel
                .probe()
                .await
                .into_iter()
                .filter_map(|(part, r)| r.err().map(|why| format!("{part}: {}", clip(&why))))
                .collect();
            if let Some(why) = panel.sftp_error() {
                failing.push(format!("SFTP: the last pass failed: {}", clip(&why)));
            }
            for s in panel.sources().iter().filter(|s| s.part != "sftp") {
                if let Some(why) = s.health.reason() {
                    failing.push(format!("{}: {}: {}", s.part, s.health.label(), clip(&why)));
                }
            }
            if failing.is_empty() {
                (true, format!("{}: ok", panel.name))
            } else {
                (false, format!("{}: not ready: {}", panel.name, failing.join("; ")))
            }
        }
    }
}

/// The most characters of one reason on `/readyz`: a probe reads a line,
/// and the logs and `/pipelines` have the rest.
const REASON_CHARS: usize = 160;

/// `why` on one line of at most [`REASON_CHARS`] characters.
fn clip(why: &str) -> String {
    let line = why.split_whitespace().collect::<Vec<_>>().join(" ");
    match line.char_indices().nth(REASON_CHARS) {
        Some((at, _)) => format!("{}…", &line[..at]),
        None => line,
    }
}

async fn metrics(With(admin): With<Arc<Admin>>) -> Response {
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4; charset=utf-8")], admin.metrics.render()).into_response()
}

/// Every pipeline's state and counts, as JSON.
async fn pipelines(With(admin): With<Arc<Admin>>) -> Response {
    let list: Vec<serde_json::Value> = admin
        .board
        .panels()
        .iter()
        .map(|p| {
            let (state, error) = p.label();
            serde_json::json!({
                "name": p.name,
                "file": p.file.display().to_string(),
                "revision": p.revision(),
                "source": p.source(),
                "state": state,
                "error": error,
                "sources": p.sources().iter().map(|s| serde_json::json!({
                    "part": s.part,
                    "state": s.health.label(),
                    "reason": s.health.reason(),
                    "since": rfc3339(s.since),
                    "errors": s.errors,
                })).collect::<Vec<_>>(),
                "counts": counts_json(&p.counts()),
                "plugins": p.plugins().iter().map(|v| serde_json::json!({"step": v.step, "name": v.name, "digest": v.digest})).collect::<Vec<_>>(),
                "oldest_message_age_s": p.oldest_age().map(|a| a.as_secs_f64()),
                "shadow": p.shadow().map(|v| shadow_json(&v)),
            })
        })
        .collect();
    axum::Json(list).into_response()
}

fn shadow_json(v: &crate::status::ShadowView) -> serde_json::Value {
    serde_json::json!({
        "candidate": v.candidate,
        "changes": v.changes,
        "state": v.state,
        "reason": v.reason,
        "records": v.records,
        "same": v.same,
        "changed": v.changed,
        "added": v.added,
        "dropped": v.dropped,
        "rejected_by_production_only": v.rejected_by_production_only,
        "rejected_by_candidate_only": v.rejected_by_candidate_only,
        "columns": v.columns,
        "sample": v.sample,
        "batches": v.batches,
        "skipped": v.skipped,
        "trapped": v.trapped,
        "production_cpu_s": v.production_cpu_s,
        "candidate_cpu_s": v.candidate_cpu_s,
        "updated": v.updated.map(rfc3339),
    })
}

/// A time as RFC 3339, in UTC.
fn rfc3339(t: SystemTime) -> String {
    time::OffsetDateTime::from(t).format(&time::format_description::well_known::Rfc3339).unwrap_or_default()
}

fn counts_json(s: &crate::status::Summary) -> serde_json::Value {
    serde_json::json!({
        "messages": s.messages,
        "rows": s.rows,
        "dead_letters": s.dead_letters,
        "duplicates": s.duplicates,
        "batches": s.batches,
        "failed_batches": s.failed_batches,
        "swaps": s.swaps,
        "refused_versions": s.refused_versions,
        "objects": s.objects,
        "objects_removed": s.objects_removed,
        "files_copied": s.files_copied,
        "files_deleted": s.files_deleted,
        "files_failed": s.files_failed,
    })
}

/// `POST /pipelines/NAME/run`: a reconcile pass now, or a queue drained
/// now; answers with the run's id at once (202).
async fn trigger(With(admin): With<Arc<Admin>>, Path(name): Path<String>) -> Response {
    let Some(panel) = admin.board.get(&name) else {
        return (StatusCode::NOT_FOUND, format!("no pipeline `{name}` in this process\n")).into_response();
    };
    match panel.state() {
        State::Running => {}
        state => {
            let msg = format!("pipeline `{name}` is {}: it takes no runs now\n", state.label());
            return (StatusCode::CONFLICT, msg).into_response();
        }
    }
    let id = panel.runs.request();
    tracing::info!(pipeline = %name, run = id, "run asked for through the admin endpoint");
    let location = format!("/pipelines/{name}/runs/{id}");
    let body = serde_json::json!({"pipeline": name, "id": id, "state": "queued", "status": location});
    (StatusCode::ACCEPTED, [(header::LOCATION, location)], axum::Json(body)).into_response()
}

async fn run_state(With(admin): With<Arc<Admin>>, Path((name, id)): Path<(String, u64)>) -> Response {
    let Some(panel) = admin.board.get(&name) else {
        return (StatusCode::NOT_FOUND, format!("no pipeline `{name}` in this process\n")).into_response();
    };
    match panel.runs.get(id, &panel.counts()) {
        Some(r) => axum::Json(run_json(&name, &r)).into_response(),
        None => (StatusCode::NOT_FOUND, format!("pipeline `{name}` has no run {id}\n")).into_response(),
    }
}

/// How long a promotion or discard through the endpoint waits for the
/// pipeline's shadow to carry it out before answering 202.
pub const DECISION_WAIT: Duration = Duration::from_secs(10);

/// `POST /pipelines/NAME/promote`: see [`decide`].
async fn promote(With(admin): With<Arc<Admin>>, Path(name): Path<String>) -> Response {
    decide(&admin, &name, "promote").await
}

/// `POST /pipelines/NAME/discard`: see [`decide`].
async fn discard(With(admin): With<Arc<Admin>>, Path(name): Path<String>) -> Response {
    decide(&admin, &name, "discard").await
}

/// Records a decision on the pipeline's running candidate (by `admin
/// token`) in `etl.shadow_decisions`, where the pipeline's shadow (and any
/// other host's) takes it up within a second; answers 200 with its outcome
/// (`done`, or `refused` and why), 202 if not carried out within
/// [`DECISION_WAIT`], 409 if no candidate runs.
async fn decide(admin: &Admin, name: &str, action: &str) -> Response {
    let Some(panel) = admin.board.get(name) else {
        return (StatusCode::NOT_FOUND, format!("no pipeline `{name}` in this process\n")).into_response();
    };
    let Some(view) = panel.shadow().filter(|v| v.state == "running") else {
        return (StatusCode::CONFLICT, format!("pipeline `{name}` has no candidate running in shadow\n"))
            .into_response();
    };
    let (sql, limit) = (crate::shadow::store::DECIDE_SQL, COUNT_TIMEOUT);
    let id: i64 = match admin.db.query(sql, &[&name, &view.candidate, &action, &"admin token"], limit).await {
        Ok(rows) => rows[0].get(0),
        Err(why) => {
            let msg = format!("the decision could not be recorded: {why}\n");
            return (StatusCode::SERVICE_UNAVAILABLE, msg).into_response();
        }
    };
    tracing::info!(pipeline = %name, decision = id, action, "shadow decision asked for through the admin endpoint");
    let until = tokio::time::Instant::now() + DECISION_WAIT;
    let mut body = serde_json::json!({"pipeline": name, "candidate": view.candidate, "decision": id, "action": action});
    while tokio::time::Instant::now() < until {
        tokio::time::sleep(Duration::from_millis(200)).await;
        let Ok(rows) = admin.db.query(crate::shadow::store::OUTCOME_SQL, &[&id], limit).await else { continue };
        let Some(row) = rows.first() else { continue };
        let (outcome, reason): (Option<String>, Option<String>) = (row.get(0), row.get(1));
        if let Some(outcome) = outcome {
            body["outcome"] = outcome.into();
            body["reason"] = reason.into();
            return (StatusCode::OK, axum::Json(body)).into_response();
        }
    }
    body["outcome"] = serde_json::Value::Null;
    (StatusCode::ACCEPTED, axum::Json(body)).into_response()
}

fn run_json(name: &str, r: &RunRecord) -> serde_json::Value {
    let secs = |t: SystemTime| t.duration_since(SystemTime::UNIX_EPOCH).map_or(0.0, |d| d.as_secs_f64());
    serde_json::json!({
        "pipeline": name,
        "id": r.id,
        "state": r.state.label(),
        "reason": match &r.state { crate::status::RunState::Interrupted(why) => Some(why.clone()), _ => None },
        "requested_at": secs(r.requested),
        "finished_at": r.finished.map(secs),
        "counts": counts_json(&r.counts),
    })
}

async fn status_page(With(admin): With<Arc<Admin>>) -> Response {
    let panels = admin.board.panels();
    let names: Vec<String> = panels.iter().map(|p| p.name.clone()).collect();
    let dead = admin.dead_letters(&names).await;
    let html = page::render(&admin.board, &panels, &dead);
    ([(header::CONTENT_TYPE, "text/html; charset=utf-8")], html).into_response()
}

/// Open dead letters (neither replayed nor discarded), by pipeline:
/// (stage, reason, count) among its newest [`COUNTED`], the most frequent
/// first (never payloads); or why they could not be read.
pub type DeadLetterCounts = Result<std::collections::HashMap<String, Vec<(String, String, i64)>>, String>;

/// The newest open dead letters of each pipeline the status page counts:
/// a refresh reads at most this many rows a pipeline, however many there
/// are (by the `dead_letters_open` index, newest first).
pub const COUNTED: i64 = 10_000;

/// How long the page's query may take, in the database as well as here.
pub const COUNT_TIMEOUT: Duration = Duration::from_secs(2);

/// The page's statement: for each pipeline of `$1`, its newest `$2` open
/// dead letters grouped by (stage, reason), at most 12 groups each.
pub const COUNT_SQL: &str = "SELECT pipeline, stage, reason, n FROM ( \
       SELECT d.pipeline, d.stage, d.reason, count(*) AS n, \
              row_number() OVER (PARTITION BY d.pipeline ORDER BY count(*) DESC, d.stage, d.reason) AS r \
       FROM unnest($1::text[]) AS p(name) CROSS JOIN LATERAL ( \
         SELECT pipeline, stage, reason FROM etl.dead_letters \
         WHERE pipeline = p.name AND replayed_at IS NULL AND discarded_at IS NULL \
         ORDER BY id DESC LIMIT $2) d \
       GROUP BY d.pipeline, d.stage, d.reason) t \
     WHERE r <= 12 ORDER BY pipeline, r";

impl Admin {
    /// Every pipeline's dead letters in one query, at most 12 (stage,
    /// reason) pairs each.
    async fn dead_letters(&self, pipelines: &[String]) -> DeadLetterCounts {
        let rows = self.db.query(COUNT_SQL, &[&pipelines, &COUNTED], COUNT_TIMEOUT).await?;
        let mut by_pipeline: std::collections::HashMap<String, Vec<(String, String, i64)>> = Default::default();
        for r in rows {
            by_pipeline.entry(r.get(0)).or_default().push((r.get(1), r.get(2), r.get(3)));
        }
        Ok(by_pipeline)
    }
}
