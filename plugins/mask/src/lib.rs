//! `mask`: replaces text fields by lowercase hex digests of their UTF-8 bytes.
//!
//! `sha256` and `sha512` are unsalted, so equal inputs give equal outputs
//! (duplicates stay findable) and the seeds' hashes match. They are NOT
//! anonymisation: an IPv4 address has only 2^32 values and its SHA-256 is
//! reversed by brute force in minutes. Prefer `hmac-sha256`, keyed by a secret
//! the pipeline grants the step: the key stays in the host.
//!
//! Null stays null; a non-text value is rejected; a missing field is rejected
//! unless `missing = "null"`. Hashing runs in the host, batched, one call per
//! batch.

use plugin_sdk::{Algorithm, Cell, Input, OutputBuilder, Projection, Transform, Value, hex_digests};
use schemars::JsonSchema;
use serde::Deserialize;
use std::collections::BTreeMap;

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Params {
    /// Fields to mask: a list (masked in place) or a table `field = "output"`.
    pub fields: Fields,
    #[serde(default)]
    pub algorithm: AlgorithmName,
    /// Name of the secret granted to the step (hmac-sha256 only).
    pub secret: Option<String>,
    /// Keep the raw field next to its masked output. Off by default: the raw
    /// value is usually the PII being masked.
    #[serde(default)]
    pub keep_original: bool,
    #[serde(default)]
    pub missing: Missing,
}

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(untagged, expecting = "a list of field names or a table of field = \"output name\"")]
pub enum Fields {
    InPlace(Vec<String>),
    Renamed(BTreeMap<String, String>),
}

#[derive(Debug, Default, Deserialize, JsonSchema, Clone, Copy)]
#[serde(rename_all = "kebab-case")]
pub enum AlgorithmName {
    #[default]
    Sha256,
    Sha512,
    HmacSha256,
}

#[derive(Debug, Default, Deserialize, JsonSchema, Clone, Copy, PartialEq)]
#[serde(rename_all = "kebab-case")]
pub enum Missing {
    #[default]
    Reject,
    Null,
}

pub struct Mask {
    /// (input field, output field)
    fields: Vec<(String, String)>,
    algorithm: Algorithm,
    width: usize,
    secret: Option<String>,
    keep_original: bool,
    missing: Missing,
}

impl Transform for Mask {
    type Params = Params;
    const SUMMARY: &'static str = "Replaces text fields by hex SHA-256, SHA-512 or keyed HMAC-SHA-256 digests";

    fn new(p: Params) -> Result<Self, String> {
        let fields: Vec<(String, String)> = match p.fields {
            Fields::InPlace(names) => names.into_iter().map(|n| (n.clone(), n)).collect(),
            Fields::Renamed(map) => map.into_iter().collect(),
        };
        if fields.is_empty() {
            return Err("`fields` must name at least one field".into());
        }
        let (algorithm, width) = match p.algorithm {
            AlgorithmName::Sha256 => (Algorithm::Sha256, 64),
            AlgorithmName::Sha512 => (Algorithm::Sha512, 128),
            AlgorithmName::HmacSha256 => (Algorithm::HmacSha256, 64),
        };
        match (algorithm, &p.secret) {
            (Algorithm::HmacSha256, None) => {
                return Err("hmac-sha256 needs `secret`, the name of a secret granted to this step".into());
            }
            (Algorithm::Sha256 | Algorithm::Sha512, Some(_)) => {
                return Err("`secret` is only used by hmac-sha256".into());
            }
            _ => {}
        }
        Ok(Mask { fields, algorithm, width, secret: p.secret, keep_original: p.keep_original, missing: p.missing })
    }

    /// Reads the fields it masks and writes their outputs; the host keeps
    /// every other field.
    fn fields(&self) -> Option<Projection> {
        Some(Projection {
            reads: self.fields.iter().map(|(from, _)| from.clone()).collect(),
            writes: self.fields.iter().map(|(_, to)| to.clone()).collect(),
        })
    }

    fn transform(&mut self, input: &Input, out: &mut OutputBuilder) {
        let keys: Vec<(Option<u32>, u32)> =
            self.fields.iter().map(|(from, to)| (out.find_key(from), out.key(to))).collect();
        let k = keys.len();
        // Pass 1: gather the texts to hash; `slots[r * k + i]` is the digest
        // index of record r's field i, or NULL / MISSING.
        let mut data = Vec::new();
        let mut ends = Vec::new();
        let mut slots = Vec::with_capacity(input.len() * k);
        let mut verdicts = Vec::with_capacity(input.len());
        for record in input.records() {
            let mut verdict = Ok(());
            for (i, (key, _)) in keys.iter().enumerate() {
                let slot = match key.and_then(|k| record.get(k)).map(|c| c.value) {
                    Some(Value::Text(span)) => {
                        data.extend_from_slice(out.bytes(span));
                        ends.push(data.len() as u32);
                        (ends.len() - 1) as u32
                    }
                    Some(Value::Null) => NULL,
                    None if self.missing == Missing::Null => MISSING,
                    None => {
                        verdict = Err(format!("`{}` is missing", self.fields[i].0));
                        MISSING
                    }
                    Some(_) => {
                        verdict = Err(format!("`{}` is not text; mask takes text", self.fields[i].0));
                        NULL
                    }
                };
                slots.push(slot);
            }
            verdicts.push(verdict);
        }
        let digests = match hex_digests(self.algorithm, self.secret.as_deref(), &data, &ends) {
            Ok(d) => d,
            Err(why) => {
                for _ in input.records() {
                    out.reject(format!("hashing failed: {why}"));
                }
                return;
            }
        };
        // Pass 2: write the records, each digest in its field's place.
        for ((record, verdict), slots) in input.records().zip(verdicts).zip(slots.chunks(k.max(1))) {
            if let Err(why) = verdict {
                out.reject(why);
                continue;
            }
            for field in record.fields() {
                let key = field.cell.key;
                match keys.iter().position(|(from, _)| *from == Some(key)) {
                    Some(i) => {
                        if self.keep_original {
                            out.copy_field(&field);
                        }
                        self.push_slot(keys[i].1, slots[i], &digests, out);
                    }
                    None if !keys.iter().any(|(_, to)| *to == key) => out.copy_field(&field),
                    None => {}
                }
            }
            for (i, (_, to)) in keys.iter().enumerate() {
                if slots[i] == MISSING {
                    out.push(Cell { key: *to, value: Value::Null });
                }
            }
            out.emit();
        }
    }
}

const NULL: u32 = u32::MAX - 1;
const MISSING: u32 = u32::MAX;

impl Mask {
    fn push_slot(&self, to: u32, slot: u32, digests: &[u8], out: &mut OutputBuilder) {
        if slot >= NULL {
            out.push(Cell { key: to, value: Value::Null });
        } else {
            let at = slot as usize * self.width;
            // Hex digits are ASCII, hence UTF-8.
            out.push_utf8(to, &digests[at..at + self.width]);
        }
    }
}

#[cfg(feature = "export")]
plugin_sdk::plugin!(Mask);

#[cfg(test)]
mod tests;
