//! `fields`: keeps or drops fields, renames them, sets constants and gives
//! defaults to missing or null fields.
//!
//! In this order, on each record: `keep` (only these input fields) or
//! `drop` (all but these); `rename` (`old = "new"`; the renamed field
//! replaces a field already called `new`); `set` (a constant, replacing
//! the field or added); `default` (given when the field is missing or
//! null). Fields keep their place; added fields come last, in the order of
//! the params.

use plugin_sdk::{Cell, Input, OutputBuilder, Scalar, Transform, Value};
use schemars::JsonSchema;
use serde::Deserialize;
use std::collections::BTreeMap;

#[derive(Debug, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Params {
    /// Only these input fields go on (the rest are left out).
    pub keep: Option<Vec<String>>,
    /// These input fields are left out.
    pub drop: Option<Vec<String>>,
    /// `old = "new"`.
    #[serde(default)]
    pub rename: BTreeMap<String, String>,
    /// `field = constant`: replaces the field or adds it.
    #[serde(default)]
    pub set: BTreeMap<String, Scalar>,
    /// `field = value`: when the field is missing or null.
    #[serde(default)]
    pub default: BTreeMap<String, Scalar>,
}

pub struct Fields {
    /// `true`: `names` are kept; `false`: they are dropped.
    keep: bool,
    names: Vec<String>,
    rename: Vec<(String, String)>,
    set: Vec<(String, Scalar)>,
    default: Vec<(String, Scalar)>,
}

impl Transform for Fields {
    type Params = Params;
    const SUMMARY: &'static str = "Keeps, drops or renames fields; sets constants; defaults missing or null fields";

    fn new(p: Params) -> Result<Self, String> {
        let (keep, names) = match (p.keep, p.drop) {
            (Some(_), Some(_)) => return Err("give `keep` or `drop`, not both".into()),
            (Some(k), None) => (true, k),
            (None, Some(d)) => (false, d),
            (None, None) => (false, Vec::new()),
        };
        if !keep && names.is_empty() && p.rename.is_empty() && p.set.is_empty() && p.default.is_empty() {
            return Err("nothing to do: give `keep`, `drop`, `rename`, `set` or `default`".into());
        }
        let mut targets: Vec<&String> = p.rename.values().collect();
        targets.sort();
        if let Some(w) = targets.windows(2).find(|w| w[0] == w[1]) {
            return Err(format!("`rename` gives two fields the name `{}`", w[0]));
        }
        if let Some(f) = p.set.keys().find(|f| p.default.contains_key(*f)) {
            return Err(format!("`{f}` is in both `set` and `default`; `set` always replaces it"));
        }
        Ok(Fields {
            keep,
            names,
            rename: p.rename.into_iter().collect(),
            set: p.set.into_iter().collect(),
            default: p.default.into_iter().collect(),
        })
    }

    fn transform(&mut self, input: &Input, out: &mut OutputBuilder) {
        let names: Vec<Option<u32>> = self.names.iter().map(|n| out.find_key(n)).collect();
        let rename: Vec<(Option<u32>, u32)> =
            self.rename.iter().map(|(from, to)| (out.find_key(from), out.key(to))).collect();
        let set: Vec<u32> = self.set.iter().map(|(f, _)| out.key(f)).collect();
        let default: Vec<u32> = self.default.iter().map(|(f, _)| out.key(f)).collect();
        let mut done = vec![false; set.len() + default.len()];
        for record in input.records() {
            done.fill(false);
            let passes = |key: u32| names.contains(&Some(key)) == self.keep;
            for field in record.fields() {
                let key = field.cell.key;
                if !passes(key) {
                    continue;
                }
                let renamed = rename.iter().find(|(from, _)| *from == Some(key)).map(|(_, to)| *to);
                // A field renamed onto this name replaces this one.
                let replaced = renamed.is_none()
                    && rename
                        .iter()
                        .any(|(from, to)| *to == key && from.is_some_and(|f| passes(f) && record.get(f).is_some()));
                if replaced {
                    continue;
                }
                let to = renamed.unwrap_or(key);
                if let Some(i) = set.iter().position(|k| *k == to) {
                    if !done[i] {
                        out.push_scalar(to, &self.set[i].1);
                        done[i] = true;
                    }
                    continue;
                }
                if let Some(i) = default.iter().position(|k| *k == to) {
                    done[set.len() + i] = true;
                    if field.cell.value == Value::Null {
                        out.push_scalar(to, &self.default[i].1);
                        continue;
                    }
                }
                if to == key {
                    out.copy_field(&field);
                } else {
                    out.push(Cell { key: to, value: field.cell.value });
                    out.copy(field.members);
                }
            }
            for (i, key) in set.iter().enumerate() {
                if !done[i] {
                    out.push_scalar(*key, &self.set[i].1);
                }
            }
            for (i, key) in default.iter().enumerate() {
                if !done[set.len() + i] {
                    out.push_scalar(*key, &self.default[i].1);
                }
            }
            out.emit();
        }
    }
}

#[cfg(feature = "export")]
plugin_sdk::plugin!(Fields);

#[cfg(test)]
mod tests;
