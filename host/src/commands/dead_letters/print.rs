//! How the dead-letters commands show what they read: `list`'s table,
//! `show`'s fields and `export`'s JSON lines.
//!
//! Must not write anywhere: each function returns the text, and only a
//! payload given to it (`show --payload`, `export --payload`) is in it.

use super::read::{Listed, Origin};
use std::fmt::Write;

/// `list`'s lines: a header, then one line per dead letter (id, time,
/// stage, step, where from, reason and what replays or a discard did),
/// columns as wide as their widest cell.
pub fn table(rows: &[Listed]) -> String {
    let mut cells = vec![["id".to_string(), "failed at".into(), "stage".into(), "step".into(), "from".into()]];
    for r in rows {
        cells.push([r.id.to_string(), seconds(&r.failed_at), r.stage.clone(), step(r, false), from(r)]);
    }
    let mut widths = [0; 5];
    for row in &cells {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let mut out = String::new();
    let reasons = std::iter::once("reason".to_string()).chain(rows.iter().map(|r| format!("{}{}", r.reason, notes(r))));
    for (row, reason) in cells.iter().zip(reasons) {
        let [id, at, stage, step, from] = row;
        let [wi, wa, ws, wp, wf] = widths;
        let _ = writeln!(out, "{id:>wi$}  {at:<wa$}  {stage:<ws$}  {step:<wp$}  {from:<wf$}  {reason}");
    }
    out
}

/// `2024-05-01T10:00:00Z` of `2024-05-01T10:00:00.123456Z`.
fn seconds(at: &str) -> String {
    match at.split_once('.') {
        Some((whole, _)) => format!("{whole}Z"),
        None => at.to_string(),
    }
}

/// The step and its plugin (`1 (mask)`), its digest too when `digest`;
/// `-` for a dead letter of no step.
fn step(r: &Listed, digest: bool) -> String {
    match (r.step, &r.plugin, &r.plugin_digest) {
        (Some(s), Some(p), Some(d)) if digest => format!("{s} ({p}, {d})"),
        (Some(s), Some(p), _) => format!("{s} ({p})"),
        (Some(s), None, _) => s.to_string(),
        (None, _, _) => "-".into(),
    }
}

/// A message's id, or an object's URI with its version and line.
fn from(r: &Listed) -> String {
    match r.origin() {
        Origin::Message(id) => id.to_string(),
        Origin::Object { bucket, key, version, at, .. } => {
            let version = if version.is_empty() { String::new() } else { format!(" version {version}") };
            format!("s3://{bucket}/{key}{version} {at}")
        }
    }
}

/// What replays and a discard did, after the reason.
fn notes(r: &Listed) -> String {
    let mut notes = replay_note(r.replay_result.as_deref(), r.replay_attempts, r.last_replay_reason.as_deref());
    if let (Some(at), by) = (&r.discarded_at, &r.discarded_by) {
        let _ = write!(notes, " [discarded by {} at {}]", by.as_deref().unwrap_or("?"), seconds(at));
    }
    notes
}

/// What replays did to a dead letter: loaded (`result`), or tried
/// `attempts` times, the last failing for `reason`.
pub fn replay_note(result: Option<&str>, attempts: i32, reason: Option<&str>) -> String {
    let reason = reason.unwrap_or_default();
    match (result, attempts) {
        (Some(result), _) => format!(" [replayed: {result}]"),
        (None, 0) => String::new(),
        (None, 1) => format!(" [replay failed: {reason}]"),
        (None, n) => format!(" [replay failed {n} times, last: {reason}]"),
    }
}

/// `show`'s text: every field of the dead letter, one a line; then, when
/// given, a blank line and the payload's bytes as they were kept.
pub fn fields(r: &Listed, payload: Option<&[u8]>) -> Vec<u8> {
    let mut out = String::new();
    let mut line = |name: &str, value: &str| {
        let _ = writeln!(out, "{:<14}{value}", format!("{name}:"));
    };
    line("id", &r.id.to_string());
    line("state", r.state());
    line("failed at", &r.failed_at);
    line("stage", &r.stage);
    line("step", &step(r, true));
    line("reason", &r.reason);
    line("source", &r.source);
    match r.origin() {
        Origin::Message(id) => line("message", id),
        Origin::Object { bucket, key, version, line: n, at } => {
            line("object", &format!("s3://{bucket}/{key}"));
            line("version", if version.is_empty() { "-" } else { version });
            line("line", &n.map_or_else(|| at.to_string(), |n| n.to_string()));
        }
    }
    line("received", &times(r.received_count));
    line("replays", &replays(r));
    if let Some(at) = &r.discarded_at {
        line("discarded", &format!("at {at} by {}", r.discarded_by.as_deref().unwrap_or("?")));
    }
    let kept = match (&r.payload_bytes, &r.sealed_with) {
        (None, _) => "none kept".to_string(),
        (Some(n), None) => format!("{n} bytes, {}, stored in clear", form(&r.form)),
        (Some(n), Some(key)) => format!("{n} bytes, {}, sealed with key {key}", form(&r.form)),
    };
    line("payload", &kept);
    let mut out = out.into_bytes();
    if let Some(payload) = payload {
        out.push(b'\n');
        out.extend_from_slice(payload);
        if !payload.ends_with(b"\n") {
            out.push(b'\n');
        }
    }
    out
}

/// `once`, `N times`.
fn times(n: i32) -> String {
    if n == 1 { "once".into() } else { format!("{n} times") }
}

fn form(form: &str) -> &str {
    match form {
        "record" => "a record",
        "row" => "a row as the file held it",
        "cut-row" => "the start of a row too long to keep whole",
        other => other,
    }
}

/// What replays did, in words.
fn replays(r: &Listed) -> String {
    let last = |at: &Option<String>| at.as_deref().map(|t| format!(", the last at {t}")).unwrap_or_default();
    match (&r.replayed_at, r.replay_attempts) {
        (Some(at), _) => format!("replayed at {at}: {}", r.replay_result.as_deref().unwrap_or_default()),
        (None, 0) => "none".into(),
        (None, n) => {
            format!("{n} failed{}: {}", last(&r.last_replay_at), r.last_replay_reason.as_deref().unwrap_or_default())
        }
    }
}

/// `export`'s line for a dead letter: a JSON object with every field, and
/// the payload when given (`payload` if it is UTF-8, else `payload_hex`).
pub fn json(r: &Listed, payload: Option<&[u8]>) -> String {
    let (object, version, line) = match r.origin() {
        Origin::Message(_) => (None, None, None),
        Origin::Object { bucket, key, version, line, .. } => {
            (Some(format!("s3://{bucket}/{key}")), Some(version.to_string()).filter(|v| !v.is_empty()), line)
        }
    };
    let mut value = serde_json::json!({
        "id": r.id,
        "state": r.state(),
        "failed_at": r.failed_at,
        "stage": r.stage,
        "step": r.step,
        "plugin": r.plugin,
        "plugin_digest": r.plugin_digest,
        "reason": r.reason,
        "source": r.source,
        "message_id": r.message_id,
        "object": object,
        "version": version,
        "line": line,
        "received_count": r.received_count,
        "replayed_at": r.replayed_at,
        "replay_result": r.replay_result,
        "replay_attempts": r.replay_attempts,
        "last_replay_at": r.last_replay_at,
        "last_replay_reason": r.last_replay_reason,
        "discarded_at": r.discarded_at,
        "discarded_by": r.discarded_by,
        "payload_form": r.form,
        "payload_bytes": r.payload_bytes,
        "sealed_with": r.sealed_with,
    });
    if let Some(bytes) = payload {
        let (name, text) = match std::str::from_utf8(bytes) {
            Ok(text) => ("payload", text.to_string()),
            Err(_) => ("payload_hex", hex::encode(bytes)),
        };
        value[name] = serde_json::Value::String(text);
    }
    value.to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn listed(id: i64, source: &str, message_id: &str) -> Listed {
        Listed {
            id,
            message_id: message_id.into(),
            source: source.into(),
            form: "record".into(),
            failed_at: "2024-05-01T10:00:00.123456Z".into(),
            stage: "input".into(),
            step: None,
            plugin: None,
            plugin_digest: None,
            reason: "invalid JSON".into(),
            received_count: 1,
            replayed_at: None,
            replay_result: None,
            replay_attempts: 0,
            last_replay_at: None,
            last_replay_reason: None,
            discarded_at: None,
            discarded_by: None,
            payload_bytes: Some(8),
            sealed_with: None,
        }
    }

    #[test]
    fn the_table_has_a_column_each_as_wide_as_its_widest_cell() {
        let mut transform = listed(12, "s3://b/k.csv#v1", "line 7");
        transform.stage = "transform".into();
        (transform.step, transform.plugin) = (Some(1), Some("mask".into()));
        let mut gone = listed(3, "sqs:q", "m-1");
        (gone.discarded_at, gone.discarded_by) = (Some("2024-05-02T00:00:00.5Z".into()), Some("ana".into()));
        let lines = [
            "id  failed at             stage      step      from                            reason",
            " 3  2024-05-01T10:00:00Z  input      -         m-1                             \
             invalid JSON [discarded by ana at 2024-05-02T00:00:00Z]",
            "12  2024-05-01T10:00:00Z  transform  1 (mask)  s3://b/k.csv version v1 line 7  invalid JSON",
        ];
        assert_eq!(table(&[gone, transform]), format!("{}\n", lines.join("\n")));
    }

    #[test]
    fn a_listed_dead_letter_says_what_replays_did() {
        assert_eq!(replay_note(None, 0, None), "");
        assert_eq!(replay_note(Some("loaded 1 rows"), 2, Some("x")), " [replayed: loaded 1 rows]");
        assert_eq!(replay_note(None, 1, Some("invalid JSON")), " [replay failed: invalid JSON]");
        assert_eq!(replay_note(None, 3, Some("invalid JSON")), " [replay failed 3 times, last: invalid JSON]");
    }

    #[test]
    fn show_gives_the_payload_only_when_given_it() {
        let mut r = listed(5, "s3://b/k.csv#v1", "line 2");
        r.sealed_with = Some("1a2b3c4d5e6f".into());
        let text = String::from_utf8(fields(&r, None)).unwrap();
        assert_eq!(
            text,
            "id:           5\n\
             state:        open\n\
             failed at:    2024-05-01T10:00:00.123456Z\n\
             stage:        input\n\
             step:         -\n\
             reason:       invalid JSON\n\
             source:       s3://b/k.csv#v1\n\
             object:       s3://b/k.csv\n\
             version:      v1\n\
             line:         2\n\
             received:     once\n\
             replays:      none\n\
             payload:      8 bytes, a record, sealed with key 1a2b3c4d5e6f\n"
        );
        let with = fields(&r, Some(b"{\"a\": 1"));
        assert_eq!(with, format!("{text}\n{{\"a\": 1\n").into_bytes());
    }

    #[test]
    fn an_exported_line_is_one_json_object() {
        let r = listed(5, "s3://b/k.csv#v1", "line 2");
        let v: serde_json::Value = serde_json::from_str(&json(&r, None)).unwrap();
        assert_eq!(
            (v["object"].as_str(), v["version"].as_str(), v["line"].as_u64()),
            (Some("s3://b/k.csv"), Some("v1"), Some(2))
        );
        assert!(v.get("payload").is_none());
        let v: serde_json::Value = serde_json::from_str(&json(&r, Some(b"a\nb"))).unwrap();
        assert_eq!(v["payload"], "a\nb");
        let v: serde_json::Value = serde_json::from_str(&json(&r, Some(&[0xff, 0x00]))).unwrap();
        assert_eq!((v["payload_hex"].as_str(), v.get("payload")), (Some("ff00"), None));
        let m: serde_json::Value = serde_json::from_str(&json(&listed(6, "sqs:q", "m-1"), None)).unwrap();
        assert_eq!((m["message_id"].as_str(), m["object"].is_null()), (Some("m-1"), true));
    }
}
