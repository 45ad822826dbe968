//! The status page: plain server-rendered HTML that refreshes itself, no
//! script. Each pipeline: its state (and each part of its source that does
//! not answer), source, file and the revision of it that runs, counts since
//! the start, rows per second over the last minutes (an inline SVG chart),
//! the age of the oldest message, the plugin versions running, the last
//! swaps and refusals, the candidate in shadow and what it would change,
//! and its dead letters by stage and reason (all time; never payloads).
//!
//! Written with `maud`: every value put in the page is escaped by
//! construction; only the style sheet is inserted as it is.

use super::DeadLetterCounts;
use crate::status::{Board, Health, Panel, SAMPLE_EVERY};
use crate::transform::short;
use maud::{DOCTYPE, Markup, PreEscaped, html};
use std::sync::Arc;
use std::time::SystemTime;

/// Seconds between the page's own refreshes.
const REFRESH_S: u64 = 5;

pub fn render(board: &Board, panels: &[Arc<Panel>], dead: &DeadLetterCounts) -> String {
    let up = SystemTime::now().duration_since(board.started).unwrap_or_default().as_secs();
    let n = panels.len();
    let s = if n == 1 { "" } else { "s" };
    html! {
        (DOCTYPE)
        html lang="en" {
            head {
                meta charset="utf-8";
                meta http-equiv="refresh" content=(REFRESH_S);
                meta name="viewport" content="width=device-width, initial-scale=1";
                title { "ETL host: " (n) " pipeline" (s) }
                style { (PreEscaped(STYLE)) }
            }
            body {
                header {
                    h1 { "ETL host" }
                    p {
                        (n) " pipeline" (s) " · up " (duration(up)) " · version " (env!("CARGO_PKG_VERSION"))
                        " · refreshes every " (REFRESH_S) " s · "
                        a href="/metrics" { "metrics" } " · " a href="/readyz" { "readiness" }
                    }
                }
                main {
                    @for panel in panels {
                        @let rows = match dead {
                            Ok(d) => Ok(d.get(&panel.name).map_or(&[][..], Vec::as_slice)),
                            Err(why) => Err(why.as_str()),
                        };
                        (pipeline(panel, rows))
                    }
                }
            }
        }
    }
    .into_string()
        + "\n"
}

fn pipeline(p: &Panel, dead: Result<&[(String, String, i64)], &str>) -> Markup {
    let (label, reason) = p.label();
    let counts = p.counts();
    let parts = p.sources();
    let plugins = p.plugins();
    let events = p.events();
    let now = SystemTime::now();
    let ago = |t: SystemTime| duration(now.duration_since(t).unwrap_or_default().as_secs());
    html! {
        section.pipeline id={ "pipeline-" (p.name) } data-pipeline=(p.name) {
            h2 { (p.name) " " span class={ "state " (label) } { (label) } }
            p.meta {
                "source " code { (p.source()) } " · file " code { (p.file.display()) }
                (revision(p))
                @if let Some(a) = p.oldest_age() {
                    " · oldest message " b.oldest { (duration(a.as_secs())) } " old"
                }
            }
            @if let Some(why) = &reason {
                p class={ "error " (label) } { (why) }
            }
            @if parts.iter().any(|s| s.health != Health::Ok) {
                table.sources {
                    tr { th { "source" } th { "state" } th { "since" } th { "errors" } th { "why" } }
                    @for s in &parts {
                        tr class=(s.health.label()) {
                            td { (s.part) }
                            td { span class={ "state " (s.health.label()) } { (s.health.label()) } }
                            td { (ago(s.since)) " ago" }
                            td { (s.errors) }
                            td.reason { (clip(s.health.reason().unwrap_or(""), 300)) }
                        }
                    }
                }
            }
            div.row {
                table.counts {
                    caption { "since this process started" }
                    @for (label, class, n) in [
                        ("rows written", "rows", counts.rows),
                        ("messages", "messages", counts.messages),
                        ("dead letters", "dead-letters", counts.dead_letters),
                        ("duplicates skipped", "duplicates", counts.duplicates),
                        ("batches", "batches", counts.batches),
                        ("failed batches", "failed", counts.failed_batches),
                        ("objects loaded", "objects", counts.objects),
                        ("objects removed", "removed", counts.objects_removed),
                        ("files copied (SFTP)", "copied", counts.files_copied),
                        ("files failed (SFTP)", "failed", counts.files_failed),
                    ] {
                        tr { th { (label) } td class=(class) { (n) } }
                    }
                }
                (chart(&p.rates()))
            }
            h3 { "Plugins running" }
            @if plugins.is_empty() {
                p.none { "none loaded yet" }
            } @else {
                table.plugins {
                    tr { th { "step" } th { "plugin" } th { "digest" } }
                    @for v in &plugins {
                        tr { td { (v.step) } td { (v.name) } td { code title=(v.digest) { (short(&v.digest)) } } }
                    }
                }
            }
            @if let Some(v) = p.shadow() {
                (shadow(&v))
            }
            h3 { "Versions swapped and refused" }
            @if events.is_empty() {
                p.none { "none since the start" }
            } @else {
                table.events {
                    tr { th { "when" } th {} th { "what" } }
                    @for e in &events {
                        tr class=(if e.swapped { "swapped" } else { "refused" }) {
                            td { (ago(e.at)) " ago" }
                            td { (if e.swapped { "swapped in" } else { "refused" }) }
                            td.reason { (e.text) }
                        }
                    }
                }
            }
            h3 {
                "Open dead letters (neither replayed nor discarded), by stage and reason, among the newest "
                (super::COUNTED) " (all time, from the database)"
            }
            @match dead {
                Err(why) => p.error { "cannot read them: " (why) },
                Ok([]) => p.none { "none" },
                Ok(rows) => table.dead-letters {
                    tr { th { "stage" } th { "reason" } th { "count" } }
                    @for (stage, reason, n) in rows {
                        tr { td { (stage) } td.reason { (clip(reason, 300)) } td { (n) } }
                    }
                },
            }
        }
    }
}

/// The candidate in shadow: what it changes, its counts (every host's,
/// as stored), the columns it changes and the records that differ.
fn shadow(v: &crate::status::ShadowView) -> Markup {
    html! {
        h3 { "Candidate in shadow " code.candidate title=(v.candidate) { (short(&v.candidate)) } " "
             span class={ "state " (v.state) } { (v.state) } }
        p.meta { (v.changes) }
        @if let Some(why) = &v.reason {
            p.error { (why) }
        }
        div.row {
            table.shadow {
                @for (label, class, n) in [
                    ("records compared", "records", v.records),
                    ("rows the same", "same", v.same),
                    ("rows changed", "changed", v.changed),
                    ("rows added", "added", v.added),
                    ("rows dropped", "dropped", v.dropped),
                    ("rejected by production only", "rejected-production", v.rejected_by_production_only),
                    ("rejected by the candidate only", "rejected-candidate", v.rejected_by_candidate_only),
                    ("batches compared", "batches", v.batches),
                    ("batches skipped", "skipped", v.skipped),
                    ("batches with failed calls", "trapped", v.trapped),
                ] {
                    tr { th { (label) } td class=(class) { (n) } }
                }
                tr { th { "CPU production / candidate" }
                     td.cpu { (format!("{:.2} s / {:.2} s", v.production_cpu_s, v.candidate_cpu_s)) } }
            }
            @if !v.columns.is_empty() {
                table.columns {
                    tr { th { "column" } th { "rows changed" } }
                    @for (column, n) in &v.columns {
                        tr { td { (column) } td { (n) } }
                    }
                }
            }
        }
        @if !v.sample.is_empty() {
            p.sample { "records that differ: " @for (i, label) in v.sample.iter().enumerate() {
                @if i > 0 { ", " } code { (label) } } }
        }
    }
}

/// The running revision of the pipeline file and whether the file on disk
/// is the same: ` · revision sha256:abc… (the file on disk: the same)`.
fn revision(p: &Panel) -> Markup {
    let Some(running) = p.revision() else { return html! {} };
    let on_disk = std::fs::read(&p.file).map(|bytes| crate::transform::digest_of(&bytes));
    html! {
        " · revision " code.revision title=(running) { (short(&running)) } " (the file on disk: "
        @match &on_disk {
            Ok(d) if *d == running => "the same",
            Ok(d) => { b.differs { "differs: " (short(d)) } " — being checked, or refused: see below" },
            Err(_) => b.differs { "cannot be read" },
        }
        ")"
    }
}

/// Rows per second over the last minutes, as an inline SVG line.
fn chart(rates: &[f64]) -> Markup {
    const W: f64 = 360.0;
    const H: f64 = 80.0;
    let max = rates.iter().copied().fold(0.0f64, f64::max);
    let now = rates.last().copied().unwrap_or(0.0);
    let minutes = (rates.len() as u64 * SAMPLE_EVERY.as_secs()).div_ceil(60).max(1);
    let points = (rates.len() >= 2).then(|| {
        let step = W / (rates.len() - 1) as f64;
        rates
            .iter()
            .enumerate()
            .map(|(i, r)| {
                let y = if max > 0.0 { H - 4.0 - (r / max) * (H - 8.0) } else { H - 4.0 };
                format!("{:.1},{:.1}", i as f64 * step, y)
            })
            .collect::<Vec<_>>()
            .join(" ")
    });
    html! {
        figure.chart {
            svg viewBox={ "0 0 " (W) " " (H) } width=(W) height=(H) role="img" aria-label="rows per second" {
                rect x="0" y="0" width=(W) height=(H) class="frame" {}
                @match &points {
                    Some(points) => polyline points=(points) class="line" {},
                    None => text x=(W / 2.0 - 36.0) y=(H / 2.0 + 4.0) class="wait" { "collecting…" },
                }
            }
            figcaption {
                "rows/s: now " b.rate { (format!("{now:.0}")) } ", peak " (format!("{max:.0}")) " (last " (minutes) " min)"
            }
        }
    }
}

fn clip(text: &str, chars: usize) -> String {
    match text.char_indices().nth(chars) {
        Some((i, _)) => format!("{}…", &text[..i]),
        None => text.to_string(),
    }
}

fn duration(secs: u64) -> String {
    match secs {
        s if s < 120 => format!("{s} s"),
        s if s < 7200 => format!("{} min", s / 60),
        s if s < 172_800 => format!("{} h", s / 3600),
        s => format!("{} days", s / 86_400),
    }
}

const STYLE: &str = "
body{font:15px/1.4 system-ui,sans-serif;margin:0;background:#f5f6f8;color:#1d2330}
header{background:#1d2330;color:#fff;padding:12px 24px}header h1{margin:0;font-size:20px}
header p{margin:4px 0 0;color:#b8c0d0}header a{color:#9cc3ff}
main{padding:16px 24px;display:grid;gap:16px}
.pipeline{background:#fff;border-radius:8px;padding:12px 20px;box-shadow:0 1px 3px #0002}
h2{margin:4px 0;font-size:18px}h3{font-size:14px;margin:14px 0 4px;color:#4a5468}
.state{font-size:12px;padding:2px 8px;border-radius:10px;vertical-align:middle;color:#fff;background:#777}
.state.running,.state.ok{background:#1f8a4c}.state.failed{background:#c0392b}.state.starting,.state.degraded{background:#b7791f}
.meta{color:#4a5468;margin:2px 0 8px}.error{color:#c0392b;overflow-wrap:anywhere}.error.degraded{color:#8a5a00}.none{color:#8a93a6;margin:2px 0}
.row{display:flex;gap:32px;flex-wrap:wrap;align-items:flex-start}
table{border-collapse:collapse}th,td{text-align:left;padding:3px 10px 3px 0;vertical-align:top}
.counts td{text-align:right;font-variant-numeric:tabular-nums;font-weight:600}
td.reason{max-width:640px;overflow-wrap:anywhere}
tr.refused td{color:#c0392b}
figure{margin:0}figcaption,caption{color:#4a5468;font-size:13px}caption{text-align:left}.differs{color:#8a5a00}
svg .frame{fill:#f0f3f8;stroke:#d5dbe6}svg .wait{fill:#8a93a6;font-size:12px}svg .line{fill:none;stroke:#2b6cb0;stroke-width:2}
code{font-size:13px}
";

#[cfg(test)]
mod tests {
    use super::*;
    use crate::status::State;

    #[test]
    fn text_is_escaped_for_elements_and_attributes() {
        let board = Board::default();
        let p = board.add(r#"<b a="x">&'"#, "p.toml".into()).unwrap();
        p.set_state(State::Failed("<script>alert(1)</script>".into()));
        let html = render(&board, &board.panels(), &Ok(Default::default()));
        assert!(!html.contains("<script>") && !html.contains(r#"<b a="x">"#), "{html}");
        assert!(html.contains("&lt;script&gt;alert(1)&lt;/script&gt;"), "{html}");
        assert!(html.contains(r#"data-pipeline="&lt;b a=&quot;x&quot;&gt;&amp;'""#), "{html}");
    }

    #[test]
    fn a_page_shows_each_pipeline_its_counts_plugins_and_dead_letters() {
        let board = Board::default();
        let p = board.add("logins", "pipelines/logins.toml".into()).unwrap();
        p.set_source("sqs:login-queue");
        p.set_state(State::Running);
        p.tally(|s| s.rows = 99);
        p.sample();
        p.set_plugins(vec![crate::status::PluginVersion {
            step: 1,
            name: "mask".into(),
            digest: "sha256:0123456789abcdef".into(),
        }]);
        p.event(false, "step 1 <mask> refused its params");
        let reasons = vec![("input".to_string(), "not JSON: expected value at line 1".to_string(), 1)];
        let dead = Ok([("logins".to_string(), reasons)].into_iter().collect());
        let html = render(&board, &board.panels(), &dead);
        for part in [
            r#"data-pipeline="logins""#,
            "sqs:login-queue",
            r#"<td class="rows">99</td>"#,
            "mask",
            "not JSON: expected value at line 1",
            "step 1 &lt;mask&gt; refused its params",
            "<svg",
        ] {
            assert!(html.contains(part), "{part} not in the page");
        }
    }
}
