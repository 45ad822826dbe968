//! A step's params in one canonical text, and its digest: what lineage
//! records so that a params-only change shows as a version of its own.
//!
//! Canonical JSON here: object keys sorted by their bytes, no whitespace,
//! strings as `serde_json` escapes them, numbers as it writes them (an
//! integer stays an integer, a float keeps its shortest round-trip form).
//! Two params that differ only in the order or layout of their keys give
//! the same text; any other difference gives another text. The order is
//! sorted here rather than left to `serde_json::Map`, whose order depends
//! on a crate feature another dependency may switch on.
//!
//! Pure: no I/O.

use serde_json::Value;

/// `value` as canonical JSON (see the module docs).
pub fn canonical_json(value: &Value) -> String {
    let mut out = String::new();
    write(&mut out, value);
    out
}

/// The SHA-256 of a step's canonical params, `sha256:` and 64 hex digits.
pub fn params_digest(canonical: &str) -> String {
    super::revision(canonical.as_bytes())
}

fn write(out: &mut String, value: &Value) {
    match value {
        Value::Object(map) => {
            let mut entries: Vec<(&String, &Value)> = map.iter().collect();
            entries.sort_by(|a, b| a.0.as_bytes().cmp(b.0.as_bytes()));
            out.push('{');
            for (i, (k, v)) in entries.into_iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                out.push_str(&Value::String(k.clone()).to_string());
                out.push(':');
                write(out, v);
            }
            out.push('}');
        }
        Value::Array(items) => {
            out.push('[');
            for (i, v) in items.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                write(out, v);
            }
            out.push(']');
        }
        scalar => out.push_str(&scalar.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn keys_are_sorted_at_every_depth_and_nothing_else_changes() {
        let v = json!({"b": 1, "a": {"z": [3, {"y": true, "x": null}], "c": "t\"\n"}, "A": 2.5});
        assert_eq!(canonical_json(&v), r#"{"A":2.5,"a":{"c":"t\"\n","z":[3,{"x":null,"y":true}]},"b":1}"#);
    }

    #[test]
    fn the_order_keys_were_written_in_does_not_count() {
        let one: Value = serde_json::from_str(r#"{ "fields": ["ip", "device_id"], "algorithm": "sha256" }"#).unwrap();
        let two: Value = serde_json::from_str(r#"{"algorithm":"sha256","fields":["ip","device_id"]}"#).unwrap();
        assert_eq!(canonical_json(&one), canonical_json(&two));
        assert_eq!(params_digest(&canonical_json(&one)), params_digest(&canonical_json(&two)));
    }

    #[test]
    fn any_other_difference_is_another_digest() {
        let digest = |v: Value| params_digest(&canonical_json(&v));
        let base = digest(json!({"fields": ["ip", "device_id"], "algorithm": "sha256"}));
        assert_ne!(base, digest(json!({"fields": ["device_id", "ip"], "algorithm": "sha256"})), "array order counts");
        assert_ne!(base, digest(json!({"fields": ["ip", "device_id"], "algorithm": "sha512"})));
        assert_ne!(digest(json!({"n": 1})), digest(json!({"n": 1.0})), "an integer is not a float");
        assert_ne!(digest(json!({"n": 1})), digest(json!({"n": "1"})));
        assert_eq!(base.len(), "sha256:".len() + 64);
        assert_eq!(digest(json!({})), "sha256:44136fa355b3678a1146ad16f7e8649e94fb4fc21fe77e8310c060f61caaff8a");
    }
}
