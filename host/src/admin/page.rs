//! The status page: plain server-rendered HTML that refreshes itself, no
//! script. Each pipeline: its state, source, counts, rows per second over
//! the last minutes (an inline SVG chart), the age of the oldest message,
//! the plugin versions running, the last swaps and refusals, and its dead
//! letters by stage and reason (never payloads).

use super::DeadLetterCounts;
use crate::status::{Board, Panel, SAMPLE_EVERY, State};
use crate::transform::short;
use std::fmt::Write;
use std::sync::Arc;
use std::time::SystemTime;

/// Seconds between the page's own refreshes.
const REFRESH_S: u64 = 5;

pub fn render(board: &Board, panels: &[Arc<Panel>], dead: &DeadLetterCounts) -> String {
    let mut html = String::with_capacity(16 * 1024);
    let up = SystemTime::now().duration_since(board.started).unwrap_or_default().as_secs();
    let _ = write!(
        html,
        r#"<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<meta http-equiv="refresh" content="{REFRESH_S}">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>ETL host: {n} pipeline{s}</title>
<style>{STYLE}</style></head><body>
<header><h1>ETL host</h1><p>{n} pipeline{s} &middot; up {up} &middot; version {version} &middot; refreshes every {REFRESH_S} s &middot; <a href="/metrics">metrics</a> &middot; <a href="/readyz">readiness</a></p></header>
<main>
"#,
        n = panels.len(),
        s = if panels.len() == 1 { "" } else { "s" },
        up = duration(up),
        version = env!("CARGO_PKG_VERSION"),
    );
    for panel in panels {
        let rows = match dead {
            Ok(d) => Ok(d.get(&panel.name).map_or(&[][..], Vec::as_slice)),
            Err(why) => Err(why.as_str()),
        };
        pipeline(&mut html, panel, rows);
    }
    html.push_str("</main></body></html>\n");
    html
}

fn pipeline(html: &mut String, p: &Panel, dead: Result<&[(String, String, i64)], &str>) {
    let state = p.state();
    let counts = p.counts();
    let _ = write!(
        html,
        r#"<section class="pipeline" id="pipeline-{id}" data-pipeline="{name}">
<h2>{name} <span class="state {label}">{label}</span></h2>
<p class="meta">source <code>{source}</code> &middot; file <code>{file}</code>{oldest}</p>
"#,
        id = escape(&p.name),
        name = escape(&p.name),
        label = state.label(),
        source = escape(&p.source()),
        file = escape(&p.file.display().to_string()),
        oldest = match p.oldest_age() {
            Some(a) => format!(" &middot; oldest message <b class=\"oldest\">{}</b> old", duration(a.as_secs())),
            None => String::new(),
        },
    );
    if let State::Failed(why) = &state {
        let _ = writeln!(html, r#"<p class="error">{}</p>"#, escape(why));
    }
    html.push_str(r#"<div class="row"><table class="counts">"#);
    for (label, class, n) in [
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
        let _ = write!(html, r#"<tr><th>{label}</th><td class="{class}">{n}</td></tr>"#);
    }
    html.push_str("</table>");
    chart(html, &p.rates());
    html.push_str("</div>");

    html.push_str("<h3>Plugins running</h3>");
    let plugins = p.plugins();
    if plugins.is_empty() {
        html.push_str(r#"<p class="none">none loaded yet</p>"#);
    } else {
        html.push_str(r#"<table class="plugins"><tr><th>step</th><th>plugin</th><th>digest</th></tr>"#);
        for v in plugins {
            let _ = write!(
                html,
                r#"<tr><td>{}</td><td>{}</td><td><code title="{}">{}</code></td></tr>"#,
                v.step,
                escape(&v.name),
                escape(&v.digest),
                escape(short(&v.digest))
            );
        }
        html.push_str("</table>");
    }

    html.push_str("<h3>Versions swapped and refused</h3>");
    let events = p.events();
    if events.is_empty() {
        html.push_str(r#"<p class="none">none since the start</p>"#);
    } else {
        html.push_str(r#"<table class="events"><tr><th>when</th><th></th><th>what</th></tr>"#);
        for e in events {
            let ago = SystemTime::now().duration_since(e.at).unwrap_or_default().as_secs();
            let (class, what) = if e.swapped { ("swapped", "swapped in") } else { ("refused", "refused") };
            let _ = write!(
                html,
                r#"<tr class="{class}"><td>{} ago</td><td>{what}</td><td>{}</td></tr>"#,
                duration(ago),
                escape(&e.text)
            );
        }
        html.push_str("</table>");
    }

    let _ = write!(
        html,
        "<h3>Open dead letters (neither replayed nor discarded), by stage and reason, among the newest {}</h3>",
        super::COUNTED
    );
    match dead {
        Err(why) => {
            let _ = write!(html, r#"<p class="error">cannot read them: {}</p>"#, escape(why));
        }
        Ok(rows) if rows.is_empty() => html.push_str(r#"<p class="none">none</p>"#),
        Ok(rows) => {
            html.push_str(r#"<table class="dead-letters"><tr><th>stage</th><th>reason</th><th>count</th></tr>"#);
            for (stage, reason, n) in rows {
                let _ = write!(
                    html,
                    r#"<tr><td>{}</td><td class="reason">{}</td><td>{n}</td></tr>"#,
                    escape(stage),
                    escape(&clip(reason, 300))
                );
            }
            html.push_str("</table>");
        }
    }
    html.push_str("</section>\n");
}

/// Rows per second over the last minutes, as an inline SVG line.
fn chart(html: &mut String, rates: &[f64]) {
    const W: f64 = 360.0;
    const H: f64 = 80.0;
    let max = rates.iter().copied().fold(0.0f64, f64::max);
    let now = rates.last().copied().unwrap_or(0.0);
    let minutes = (rates.len() as u64 * SAMPLE_EVERY.as_secs()).div_ceil(60).max(1);
    let _ = write!(
        html,
        r#"<figure class="chart"><svg viewBox="0 0 {W} {H}" width="{W}" height="{H}" role="img" aria-label="rows per second">"#
    );
    let _ = write!(html, r#"<rect x="0" y="0" width="{W}" height="{H}" class="frame"/>"#);
    if rates.len() >= 2 {
        let step = W / (rates.len() - 1) as f64;
        let points: Vec<String> = rates
            .iter()
            .enumerate()
            .map(|(i, r)| {
                let y = if max > 0.0 { H - 4.0 - (r / max) * (H - 8.0) } else { H - 4.0 };
                format!("{:.1},{:.1}", i as f64 * step, y)
            })
            .collect();
        let _ = write!(html, r#"<polyline points="{}" class="line"/>"#, points.join(" "));
    } else {
        let _ = write!(html, r#"<text x="{}" y="{}" class="wait">collecting…</text>"#, W / 2.0 - 36.0, H / 2.0 + 4.0);
    }
    html.push_str("</svg>");
    let _ = write!(
        html,
        r#"<figcaption>rows/s: now <b class="rate">{now:.0}</b>, peak {max:.0} (last {minutes} min)</figcaption></figure>"#
    );
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

/// Text made safe inside HTML elements and quoted attributes.
pub fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

const STYLE: &str = "
body{font:15px/1.4 system-ui,sans-serif;margin:0;background:#f5f6f8;color:#1d2330}
header{background:#1d2330;color:#fff;padding:12px 24px}header h1{margin:0;font-size:20px}
header p{margin:4px 0 0;color:#b8c0d0}header a{color:#9cc3ff}
main{padding:16px 24px;display:grid;gap:16px}
.pipeline{background:#fff;border-radius:8px;padding:12px 20px;box-shadow:0 1px 3px #0002}
h2{margin:4px 0;font-size:18px}h3{font-size:14px;margin:14px 0 4px;color:#4a5468}
.state{font-size:12px;padding:2px 8px;border-radius:10px;vertical-align:middle;color:#fff;background:#777}
.state.running{background:#1f8a4c}.state.failed{background:#c0392b}.state.starting{background:#b7791f}
.meta{color:#4a5468;margin:2px 0 8px}.error{color:#c0392b}.none{color:#8a93a6;margin:2px 0}
.row{display:flex;gap:32px;flex-wrap:wrap;align-items:flex-start}
table{border-collapse:collapse}th,td{text-align:left;padding:3px 10px 3px 0;vertical-align:top}
.counts td{text-align:right;font-variant-numeric:tabular-nums;font-weight:600}
.dead-letters td.reason{max-width:640px}
tr.refused td{color:#c0392b}
figure{margin:0}figcaption{color:#4a5468;font-size:13px}
svg .frame{fill:#f0f3f8;stroke:#d5dbe6}svg .wait{fill:#8a93a6;font-size:12px}svg .line{fill:none;stroke:#2b6cb0;stroke-width:2}
code{font-size:13px}
";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_is_escaped_for_elements_and_attributes() {
        assert_eq!(escape(r#"<b a="x">&'"#), "&lt;b a=&quot;x&quot;&gt;&amp;&#39;");
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
