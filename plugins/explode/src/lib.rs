//! `explode`: one record into one per element of an array field.
//!
//! Each output record is the input's other fields (in their places) and
//! the element under `as` (default: the array field's own name), with its
//! 0-based position under `index` when that is named. An empty, null or
//! missing array drops the record (`empty = "drop"`, the default) or keeps
//! it once with the field null (`empty = "keep"`). A field that is not an
//! array is rejected.

use plugin_sdk::{Cell, Input, OutputBuilder, Transform, Value};
use schemars::JsonSchema;
use serde::Deserialize;

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Params {
    /// The array field.
    pub field: String,
    /// Where each element goes; defaults to `field`.
    #[serde(rename = "as")]
    pub into: Option<String>,
    /// A field for the element's 0-based position, if wanted.
    pub index: Option<String>,
    #[serde(default)]
    pub empty: Empty,
}

/// What an empty, null or missing array does.
#[derive(Debug, Default, Clone, Copy, Deserialize, JsonSchema, PartialEq)]
#[serde(rename_all = "lowercase")]
pub enum Empty {
    #[default]
    Drop,
    Keep,
}

pub struct Explode {
    field: String,
    into: String,
    index: Option<String>,
    empty: Empty,
}

impl Transform for Explode {
    type Params = Params;
    const SUMMARY: &'static str = "Turns one record into one per element of an array field";

    fn new(p: Params) -> Result<Self, String> {
        let into = p.into.unwrap_or_else(|| p.field.clone());
        if p.index.as_ref().is_some_and(|i| *i == into) {
            return Err(format!("`index` and `as` both name `{into}`"));
        }
        Ok(Explode { field: p.field, into, index: p.index, empty: p.empty })
    }

    fn transform(&mut self, input: &Input, out: &mut OutputBuilder) {
        let field = out.find_key(&self.field);
        let into = out.key(&self.into);
        let index = self.index.as_deref().map(|i| out.key(i));
        for record in input.records() {
            let array = record.fields().find(|f| Some(f.cell.key) == field);
            let elements = match array.map(|a| (a.cell.value, a.members)) {
                Some((Value::Array(_), members)) => members,
                None | Some((Value::Null, _)) => Default::default(),
                Some(_) => {
                    out.reject(format!("`{}` is not an array", self.field));
                    continue;
                }
            };
            // The other fields, in order; the element takes the array's place.
            let copy_others = |out: &mut OutputBuilder, element: Option<plugin_sdk::Field<'_>>, at: Option<i64>| {
                let mut placed = false;
                let place = |out: &mut OutputBuilder| {
                    match element {
                        Some(e) => {
                            out.push(Cell { key: into, value: e.cell.value });
                            out.copy(e.members);
                        }
                        None => out.push(Cell { key: into, value: Value::Null }),
                    }
                    if let Some(k) = index {
                        out.push(Cell { key: k, value: at.map_or(Value::Null, Value::Integer) });
                    }
                };
                for f in record.fields() {
                    let key = f.cell.key;
                    if Some(key) == field {
                        place(out);
                        placed = true;
                    } else if key != into && Some(key) != index {
                        out.copy_field(&f);
                    }
                }
                if !placed {
                    place(out);
                }
            };
            let mut n = 0;
            for element in elements.fields() {
                if n > 0 {
                    out.end_record();
                }
                copy_others(out, Some(element), Some(n));
                n += 1;
            }
            match (n, self.empty) {
                (0, Empty::Drop) => out.drop_record(),
                (0, Empty::Keep) => {
                    copy_others(out, None, None);
                    out.emit();
                }
                _ => out.emit(),
            }
        }
    }
}

#[cfg(feature = "export")]
plugin_sdk::plugin!(Explode);

#[cfg(test)]
mod tests;
