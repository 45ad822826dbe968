//! `flatten`: nested objects become flat keys joined by `separator`
//! (`{"a": {"b": 1}}` -> `{"a.b": 1}` with the default `.`).
//!
//! Rules:
//! - `max_depth` bounds how many levels are joined; deeper objects are kept
//!   whole under the joined key (unbounded by default).
//! - Arrays are kept as values by default (`arrays = "keep"`); with
//!   `arrays = "index"` their elements become `key.0`, `key.1`, ...
//! - An empty object yields no field.
//! - Two fields flattening to the same key reject the record (no silent loss).

use plugin_sdk::record::kind;
use plugin_sdk::{Cell, Cells, Input, NO_KEY, OutputBuilder, Transform, Value};
use schemars::JsonSchema;
use serde::Deserialize;
use std::collections::HashMap;

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Params {
    #[serde(default = "default_separator")]
    pub separator: String,
    pub max_depth: Option<u32>,
    #[serde(default)]
    pub arrays: Arrays,
}

fn default_separator() -> String {
    ".".to_string()
}

#[derive(Debug, Default, Deserialize, JsonSchema, Clone, Copy, PartialEq)]
#[serde(rename_all = "kebab-case")]
pub enum Arrays {
    #[default]
    Keep,
    Index,
}

pub struct Flatten {
    separator: String,
    max_depth: u32,
    arrays: Arrays,
    /// (parent output key, child key or element index) -> joined output key,
    /// for the current batch.
    joined: HashMap<(u32, Child), u32>,
    /// Output keys of the record being written, to find collisions.
    written: Vec<u32>,
}

#[derive(Hash, PartialEq, Eq, Clone, Copy)]
enum Child {
    Key(u32),
    Index(u32),
}

impl Transform for Flatten {
    type Params = Params;
    const SUMMARY: &'static str = "Flattens nested objects (and optionally arrays) into separator-joined keys";

    fn new(p: Params) -> Result<Self, String> {
        if p.separator.is_empty() {
            return Err("`separator` must not be empty".into());
        }
        if p.max_depth == Some(0) {
            return Err("`max_depth` must be at least 1".into());
        }
        Ok(Flatten {
            separator: p.separator,
            max_depth: p.max_depth.unwrap_or(u32::MAX),
            arrays: p.arrays,
            joined: HashMap::new(),
            written: Vec::new(),
        })
    }

    fn unchanged(&self, kinds: &[u8]) -> bool {
        let opened = |k: &u8| *k == kind::OBJECT || (*k == kind::ARRAY && self.arrays == Arrays::Index);
        !kinds.iter().any(opened)
    }

    fn transform(&mut self, input: &Input, out: &mut OutputBuilder) {
        self.joined.clear();
        for record in input.records() {
            if self.unchanged(record.kinds()) {
                out.copy(record);
                out.emit();
                continue;
            }
            self.written.clear();
            match self.write(record, None, 0, out) {
                Ok(()) => out.emit(),
                Err(key) => out.reject(format!("two fields flatten to the same key `{}`", out.key_name(key))),
            }
        }
    }
}

impl Flatten {
    /// Whether `cell` is a container this transform opens.
    fn opens(&self, cell: &Cell) -> bool {
        match cell.value {
            Value::Object(_) => true,
            Value::Array(_) => self.arrays == Arrays::Index,
            _ => false,
        }
    }

    /// Writes `cells` (siblings) under `parent`; `Err` holds a colliding key.
    fn write(&mut self, cells: Cells<'_>, parent: Option<u32>, depth: u32, out: &mut OutputBuilder) -> Result<(), u32> {
        for (index, field) in cells.fields().enumerate() {
            let cell = field.cell;
            let child = if cell.key == NO_KEY { Child::Index(index as u32) } else { Child::Key(cell.key) };
            let key = self.join(parent, child, out);
            if self.opens(&cell) && depth < self.max_depth {
                self.write(field.members, Some(key), depth + 1, out)?;
            } else {
                if self.written.contains(&key) {
                    return Err(key);
                }
                self.written.push(key);
                out.push(Cell { key, value: cell.value });
                out.copy(field.members);
            }
        }
        Ok(())
    }

    fn join(&mut self, parent: Option<u32>, child: Child, out: &mut OutputBuilder) -> u32 {
        let Some(parent) = parent else {
            return match child {
                Child::Key(k) => k,
                Child::Index(_) => NO_KEY,
            };
        };
        if let Some(&k) = self.joined.get(&(parent, child)) {
            return k;
        }
        let name = match child {
            Child::Key(k) => format!("{}{}{}", out.key_name(parent), self.separator, out.key_name(k)),
            Child::Index(i) => format!("{}{}{}", out.key_name(parent), self.separator, i),
        };
        let k = out.key(&name);
        self.joined.insert((parent, child), k);
        k
    }
}

plugin_sdk::plugin!(Flatten);

#[cfg(test)]
mod tests;
