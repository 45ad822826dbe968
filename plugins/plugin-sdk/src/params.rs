//! Shapes that plugins' params share.

use crate::OutputBuilder;
use crate::record::{Cell, Value};
use schemars::JsonSchema;
use serde::Deserialize;

/// A constant written in a pipeline file: a TOML string, integer, float or
/// boolean.
#[derive(Debug, Clone, PartialEq, Deserialize, JsonSchema)]
#[serde(untagged)]
pub enum Scalar {
    Boolean(bool),
    Integer(i64),
    Float(f64),
    Text(String),
}

impl OutputBuilder {
    /// Appends a field holding a constant.
    pub fn push_scalar(&mut self, key: u32, s: &Scalar) {
        let value = match s {
            Scalar::Boolean(b) => Value::Boolean(*b),
            Scalar::Integer(n) => Value::Integer(*n),
            Scalar::Float(f) => Value::Float(*f),
            Scalar::Text(t) => Value::Text(self.add_text(t)),
        };
        self.push(Cell { key, value });
    }
}
