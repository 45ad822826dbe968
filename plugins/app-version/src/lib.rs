//! `app-version`: parses a version text such as `"2.3.0"` into integers.
//!
//! By default the field is replaced by its major version (`"2.3.0"` -> 2).
//! Optional outputs: minor, patch, and a sortable integer
//! (`major * 1_000_000 + minor * 1_000 + patch`). A missing, null, non-text or
//! malformed version is rejected with the reason, or given `default`.

use plugin_sdk::{Cell, Field, Input, OutputBuilder, Projection, Transform, Value};
use schemars::JsonSchema;
use serde::Deserialize;

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Params {
    /// The field holding the version text.
    #[serde(default = "default_field")]
    pub field: String,
    /// Output name of the major version; defaults to `field` (replacing it).
    pub major: Option<String>,
    pub minor: Option<String>,
    pub patch: Option<String>,
    pub sortable: Option<String>,
    /// Major version to use instead of rejecting a bad or missing version;
    /// the other outputs are then null.
    pub default: Option<i64>,
}

fn default_field() -> String {
    "app_version".to_string()
}

/// A parsed version; absent parts are 0.
#[derive(Debug, PartialEq, Eq, Clone, Copy)]
pub struct Version {
    pub major: u32,
    pub minor: u32,
    pub patch: u32,
}

/// Parses dot-separated decimal components (one or more; parts after the
/// third are accepted and ignored). The error says what is wrong, never what
/// the text was.
pub fn parse(text: &str) -> Result<Version, &'static str> {
    parse_bytes(text.as_bytes())
}

/// [`parse`] on the UTF-8 bytes (digits and dots are ASCII).
pub fn parse_bytes(text: &[u8]) -> Result<Version, &'static str> {
    if text.is_empty() {
        return Err("is empty");
    }
    let mut parts = [0u32; 3];
    for (i, part) in text.split(|&b| b == b'.').enumerate() {
        if part.is_empty() {
            return Err("is not a version: empty component");
        }
        let mut n: u32 = 0;
        for &b in part {
            if !b.is_ascii_digit() {
                return Err("is not a version: components must be decimal digits");
            }
            n = n
                .checked_mul(10)
                .and_then(|n| n.checked_add(u32::from(b - b'0')))
                .ok_or("is not a version: component too large")?;
        }
        if i < 3 {
            parts[i] = n;
        }
    }
    Ok(Version { major: parts[0], minor: parts[1], patch: parts[2] })
}

pub struct AppVersion {
    params: Params,
}

/// Key indexes of one batch.
struct Keys {
    field: Option<u32>,
    major: u32,
    minor: Option<u32>,
    patch: Option<u32>,
    sortable: Option<u32>,
}

impl Transform for AppVersion {
    type Params = Params;
    const SUMMARY: &'static str =
        "Parses a version text like \"2.3.0\" into its major (and optionally minor, patch, sortable) integer";

    fn new(params: Params) -> Result<Self, String> {
        if params.field.is_empty() {
            return Err("`field` must not be empty".into());
        }
        Ok(AppVersion { params })
    }

    /// Reads the version field and writes its outputs; the host keeps every
    /// other field.
    fn fields(&self) -> Option<Projection> {
        let p = &self.params;
        let outputs = [
            Some(p.major.as_deref().unwrap_or(&p.field)),
            p.minor.as_deref(),
            p.patch.as_deref(),
            p.sortable.as_deref(),
        ];
        Some(Projection {
            reads: vec![p.field.clone()],
            writes: outputs.into_iter().flatten().map(String::from).collect(),
        })
    }

    fn transform(&mut self, input: &Input, out: &mut OutputBuilder) {
        let p = &self.params;
        let keys = Keys {
            field: out.find_key(&p.field),
            major: out.key(p.major.as_deref().unwrap_or(&p.field)),
            minor: p.minor.as_deref().map(|k| out.key(k)),
            patch: p.patch.as_deref().map(|k| out.key(k)),
            sortable: p.sortable.as_deref().map(|k| out.key(k)),
        };
        for record in input.records() {
            let found = keys.field.and_then(|k| record.get(k));
            let version = match found.map(|c| c.value) {
                Some(Value::Text(span)) => parse_bytes(out.bytes(span)),
                Some(Value::Null) => Err("is null"),
                Some(Value::Object(_) | Value::Array(_)) => Err("is not text but a container"),
                Some(_) => Err("is not text but a number or boolean"),
                None => Err("is missing"),
            };
            let version = match (version, p.default) {
                (Ok(v), _) => Ok(Some(v)),
                (Err(_), Some(_)) => Ok(None),
                (Err(why), None) => Err(why),
            };
            match version {
                Ok(v) => {
                    self.write(&keys, record.fields(), found, v, out);
                    out.emit();
                }
                Err(why) => out.reject(format!("`{}` {why}", p.field)),
            }
        }
    }
}

impl AppVersion {
    /// Writes the record with the outputs at the version field's place (or
    /// at the end when it is missing).
    fn write<'a>(
        &self,
        keys: &Keys,
        fields: impl Iterator<Item = Field<'a>>,
        found: Option<Cell>,
        v: Option<Version>,
        out: &mut OutputBuilder,
    ) {
        let outputs = [Some(keys.major), keys.minor, keys.patch, keys.sortable];
        for field in fields {
            let key = field.cell.key;
            if Some(key) == keys.field {
                if !outputs.contains(&Some(key)) {
                    out.copy_field(&field);
                }
                self.push_outputs(keys, v, out);
            } else if !outputs.contains(&Some(key)) {
                out.copy_field(&field);
            }
        }
        if found.is_none() {
            self.push_outputs(keys, v, out);
        }
    }

    fn push_outputs(&self, keys: &Keys, v: Option<Version>, out: &mut OutputBuilder) {
        let int = |x: Option<i64>| x.map_or(Value::Null, Value::Integer);
        let major = v.map(|v| i64::from(v.major)).or(self.params.default);
        out.push(Cell { key: keys.major, value: int(major) });
        let parts = [
            (keys.minor, v.map(|v| i64::from(v.minor))),
            (keys.patch, v.map(|v| i64::from(v.patch))),
            (keys.sortable, v.map(sortable)),
        ];
        for (key, value) in parts {
            if let Some(key) = key {
                out.push(Cell { key, value: int(value) });
            }
        }
    }
}

/// `major * 1e6 + minor * 1e3 + patch`; minor and patch are clamped to 999 so
/// the order stays right for ordinary versions.
fn sortable(v: Version) -> i64 {
    i64::from(v.major) * 1_000_000 + i64::from(v.minor.min(999)) * 1_000 + i64::from(v.patch.min(999))
}

plugin_sdk::plugin!(AppVersion);

#[cfg(test)]
mod tests;
