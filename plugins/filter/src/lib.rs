//! `filter`: keeps (or drops) the records that meet conditions on their
//! fields.
//!
//! A condition names a top-level field (run `flatten` first for nested
//! ones) and one test: `equals`, `not_equals`, `in`, `not_in` (scalars,
//! compared with their type: the text `"5"` is not the number 5, but 5 and
//! 5.0 are equal), `matches` (a regular expression on text), `is_null`
//! (true: missing or null; false: present and not null), or `gt`, `gte`,
//! `lt`, `lte` (numbers). `equals`, `in`, `matches` and the comparisons
//! are false on a missing field, null or a value of another type (a text
//! never matches `gt`); `not_equals` and `not_in` are their negations, so
//! true there. `all` needs every condition, `any` one of them; `keep =
//! false` drops the records that meet them instead. A record left out is
//! dropped (counted as filtered, never a dead letter).

use plugin_sdk::{Cells, Input, OutputBuilder, Projection, Scalar, Transform, Value};
use schemars::JsonSchema;
use serde::Deserialize;

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Params {
    /// Every condition must hold.
    pub all: Option<Vec<Condition>>,
    /// At least one condition must hold.
    pub any: Option<Vec<Condition>>,
    /// Keep the records that meet the conditions (default), or drop them
    /// (`false`).
    #[serde(default = "yes")]
    pub keep: bool,
}

fn yes() -> bool {
    true
}

/// One test on one field; exactly one of the tests is set.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Condition {
    /// A top-level field name.
    pub field: String,
    pub equals: Option<Scalar>,
    pub not_equals: Option<Scalar>,
    #[serde(rename = "in")]
    pub in_set: Option<Vec<Scalar>>,
    pub not_in: Option<Vec<Scalar>>,
    /// A regular expression (Rust `regex` syntax) the text must match
    /// somewhere; anchor it with `^...$` for the whole text.
    pub matches: Option<String>,
    pub is_null: Option<bool>,
    pub gt: Option<f64>,
    pub gte: Option<f64>,
    pub lt: Option<f64>,
    pub lte: Option<f64>,
}

enum Test {
    Equals(Scalar),
    NotEquals(Scalar),
    In(Vec<Scalar>),
    NotIn(Vec<Scalar>),
    Matches(regex::Regex),
    IsNull(bool),
    Compare(std::cmp::Ordering, bool, f64),
}

struct Rule {
    field: String,
    test: Test,
}

pub struct Filter {
    rules: Vec<Rule>,
    all: bool,
    keep: bool,
}

impl Transform for Filter {
    type Params = Params;
    const SUMMARY: &'static str = "Keeps or drops records by conditions on their fields (all or any)";

    fn new(p: Params) -> Result<Self, String> {
        let (conditions, all) = match (p.all, p.any) {
            (Some(c), None) => (c, true),
            (None, Some(c)) => (c, false),
            (Some(_), Some(_)) => return Err("give `all` or `any`, not both".into()),
            (None, None) => return Err("give the conditions as `all = [...]` or `any = [...]`".into()),
        };
        if conditions.is_empty() {
            return Err(format!("`{}` must hold at least one condition", if all { "all" } else { "any" }));
        }
        let rules = conditions.into_iter().enumerate().map(|(i, c)| rule(i + 1, c)).collect::<Result<_, _>>()?;
        Ok(Filter { rules, all, keep: p.keep })
    }

    /// Reads the fields of its conditions and writes none: a kept record's
    /// other fields stay in the host.
    fn fields(&self) -> Option<Projection> {
        Some(Projection { reads: self.rules.iter().map(|r| r.field.clone()).collect(), writes: Vec::new() })
    }

    fn transform(&mut self, input: &Input, out: &mut OutputBuilder) {
        let keys: Vec<Option<u32>> = self.rules.iter().map(|r| out.find_key(&r.field)).collect();
        for record in input.records() {
            let mut holds = self.rules.iter().zip(&keys).map(|(rule, key)| rule.holds(&record, *key, out));
            let met = if self.all { holds.all(|h| h) } else { holds.any(|h| h) };
            if met == self.keep {
                out.copy(record);
                out.emit();
            } else {
                out.drop_record();
            }
        }
    }
}

/// The test of condition `n` (1-based, for errors).
fn rule(n: usize, c: Condition) -> Result<Rule, String> {
    use std::cmp::Ordering::*;
    let mut tests = Vec::new();
    if let Some(v) = c.equals {
        tests.push(Test::Equals(v));
    }
    if let Some(v) = c.not_equals {
        tests.push(Test::NotEquals(v));
    }
    if let Some(v) = c.in_set {
        tests.push(Test::In(v));
    }
    if let Some(v) = c.not_in {
        tests.push(Test::NotIn(v));
    }
    if let Some(re) = c.matches {
        let re = regex::Regex::new(&re).map_err(|e| format!("condition {n} (`{}`): `matches`: {e}", c.field))?;
        tests.push(Test::Matches(re));
    }
    if let Some(v) = c.is_null {
        tests.push(Test::IsNull(v));
    }
    for (bound, ord, or_equal) in
        [(c.gt, Greater, false), (c.gte, Greater, true), (c.lt, Less, false), (c.lte, Less, true)]
    {
        if let Some(b) = bound {
            tests.push(Test::Compare(ord, or_equal, b));
        }
    }
    if tests.len() != 1 {
        return Err(format!(
            "condition {n} (`{}`) needs exactly one test (equals, not_equals, in, not_in, matches, is_null, gt, gte, lt, lte); it has {}",
            c.field,
            tests.len()
        ));
    }
    Ok(Rule { field: c.field, test: tests.pop().expect("one test") })
}

impl Rule {
    fn holds(&self, record: &Cells<'_>, key: Option<u32>, out: &OutputBuilder) -> bool {
        let value = key.and_then(|k| record.get(k)).map(|c| c.value);
        match &self.test {
            Test::IsNull(want) => matches!(value, None | Some(Value::Null)) == *want,
            Test::Equals(s) => value.is_some_and(|v| equal(v, s, out)),
            Test::NotEquals(s) => !value.is_some_and(|v| equal(v, s, out)),
            Test::In(set) => value.is_some_and(|v| set.iter().any(|s| equal(v, s, out))),
            Test::NotIn(set) => !value.is_some_and(|v| set.iter().any(|s| equal(v, s, out))),
            Test::Matches(re) => match value {
                Some(Value::Text(span)) => re.is_match(out.text(span)),
                _ => false,
            },
            Test::Compare(ord, or_equal, bound) => {
                let n = match value {
                    Some(Value::Integer(i)) => i as f64,
                    Some(Value::Float(f)) => f,
                    _ => return false,
                };
                n.partial_cmp(bound).is_some_and(|o| o == *ord || (*or_equal && o.is_eq()))
            }
        }
    }
}

/// Whether a record's value equals a scalar of the params; numbers compare
/// by value across integer and float, other types only with their own.
fn equal(v: Value, s: &Scalar, out: &OutputBuilder) -> bool {
    match (v, s) {
        (Value::Boolean(a), Scalar::Boolean(b)) => a == *b,
        (Value::Integer(a), Scalar::Integer(b)) => a == *b,
        (Value::Integer(a), Scalar::Float(b)) => a as f64 == *b,
        (Value::Float(a), Scalar::Integer(b)) => a == *b as f64,
        (Value::Float(a), Scalar::Float(b)) => a == *b,
        (Value::Text(span), Scalar::Text(b)) => out.text(span) == b,
        _ => false,
    }
}

#[cfg(feature = "export")]
plugin_sdk::plugin!(Filter);

#[cfg(test)]
mod tests;
