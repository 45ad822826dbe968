//! `convert`: changes the type of fields: text to integer, float, boolean,
//! timestamp or date, numbers to text, epoch seconds or milliseconds to
//! timestamps.
//!
//! `fields` maps a field to its target type, or to a table with `to`,
//! `format` (timestamps and dates: `iso8601`, the default, `epoch-seconds`,
//! `epoch-millis`, or a `strftime` pattern such as `%d/%m/%Y %H:%M`) and
//! `default`. A timestamp becomes RFC 3339 text in UTC
//! (`2023-02-01T08:00:00Z`; a time without an offset is taken as UTC), a
//! date `YYYY-MM-DD`. Null stays null and a missing field stays missing
//! (`fields` sets defaults for those). A value that does not convert is
//! rejected, the reason naming the field and the rule but never the value,
//! or replaced by `default` when one is given.

use chrono::{DateTime, NaiveDate, NaiveDateTime, SecondsFormat, Utc};
use plugin_sdk::{Input, OutputBuilder, Projection, Scalar, Span, Transform, Value};
use schemars::JsonSchema;
use serde::Deserialize;

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Params {
    /// Field name to its target type (`"integer"`) or to `{ to, format, default }`.
    pub fields: std::collections::BTreeMap<String, Spec>,
}

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(untagged)]
pub enum Spec {
    To(To),
    Full(Full),
}

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Full {
    pub to: To,
    /// Timestamps and dates: `iso8601` (default), `epoch-seconds`,
    /// `epoch-millis`, or a strftime pattern.
    pub format: Option<String>,
    /// The value given when the field does not convert (itself converted
    /// by the same rule when the step starts).
    pub default: Option<Scalar>,
}

#[derive(Debug, Clone, Copy, Deserialize, JsonSchema, PartialEq)]
#[serde(rename_all = "lowercase")]
pub enum To {
    Text,
    Integer,
    Float,
    Boolean,
    Timestamp,
    Date,
}

/// How times are read.
#[derive(Debug, Clone, PartialEq)]
enum Format {
    Iso8601,
    EpochSeconds,
    EpochMillis,
    Pattern(String),
}

/// A converted value; text is owned until it is pushed.
#[derive(Debug, Clone, PartialEq)]
enum Converted {
    Same,
    Integer(i64),
    Float(f64),
    Boolean(bool),
    Text(String),
}

struct Rule {
    field: String,
    to: To,
    format: Format,
    default: Option<Converted>,
}

pub struct Convert {
    rules: Vec<Rule>,
}

impl Transform for Convert {
    type Params = Params;
    const SUMMARY: &'static str =
        "Converts field types: integer, float, boolean, text, timestamp (ISO 8601, epoch, strftime), date";

    fn new(p: Params) -> Result<Self, String> {
        if p.fields.is_empty() {
            return Err("`fields` must name at least one field".into());
        }
        let rules = p.fields.into_iter().map(|(field, spec)| rule(field, spec)).collect::<Result<_, _>>()?;
        Ok(Convert { rules })
    }

    /// Reads (and converts in place) the fields it names; the host keeps
    /// every other field.
    fn fields(&self) -> Option<Projection> {
        Some(Projection { reads: self.rules.iter().map(|r| r.field.clone()).collect(), writes: Vec::new() })
    }

    fn transform(&mut self, input: &Input, out: &mut OutputBuilder) {
        let keys: Vec<Option<u32>> = self.rules.iter().map(|r| out.find_key(&r.field)).collect();
        'records: for record in input.records() {
            for field in record.fields() {
                let Some(i) = keys.iter().position(|k| *k == Some(field.cell.key)) else {
                    out.copy_field(&field);
                    continue;
                };
                let rule = &self.rules[i];
                let converted = match convert(rule, field.cell.value, out) {
                    Ok(c) => c,
                    Err(()) => match &rule.default {
                        Some(d) => d.clone(),
                        None => {
                            out.reject(rule.refusal());
                            continue 'records;
                        }
                    },
                };
                let key = field.cell.key;
                match converted {
                    Converted::Same => out.copy_field(&field),
                    Converted::Integer(n) => out.push(plugin_sdk::Cell { key, value: Value::Integer(n) }),
                    Converted::Float(f) => out.push(plugin_sdk::Cell { key, value: Value::Float(f) }),
                    Converted::Boolean(b) => out.push(plugin_sdk::Cell { key, value: Value::Boolean(b) }),
                    Converted::Text(t) => out.push_text(key, &t),
                }
            }
            out.emit();
        }
    }
}

fn rule(field: String, spec: Spec) -> Result<Rule, String> {
    let (to, format, default) = match spec {
        Spec::To(to) => (to, None, None),
        Spec::Full(f) => (f.to, f.format, f.default),
    };
    let format = match (to, format.as_deref()) {
        (_, None | Some("iso8601")) => Format::Iso8601,
        (To::Timestamp | To::Date, Some("epoch-seconds")) => Format::EpochSeconds,
        (To::Timestamp | To::Date, Some("epoch-millis")) => Format::EpochMillis,
        (To::Timestamp | To::Date, Some(p)) if p.contains('%') => Format::Pattern(p.to_string()),
        (To::Timestamp | To::Date, Some(other)) => {
            return Err(format!(
                "`{field}`: format `{other}` is not iso8601, epoch-seconds, epoch-millis or a strftime pattern"
            ));
        }
        (_, Some(_)) => return Err(format!("`{field}`: `format` is only for timestamps and dates")),
    };
    let mut rule = Rule { field, to, format, default: None };
    if let Some(d) = default {
        let converted = match &d {
            Scalar::Boolean(b) => rule.scalar(Value::Boolean(*b), ""),
            Scalar::Integer(n) => rule.scalar(Value::Integer(*n), ""),
            Scalar::Float(f) => rule.scalar(Value::Float(*f), ""),
            Scalar::Text(t) => rule.scalar(Value::Text(Span { offset: 0, len: t.len() as u32 }), t),
        };
        let converted =
            converted.map_err(|()| format!("`{}`: `default` does not convert to {}", rule.field, rule.to_name()))?;
        rule.default = Some(match (converted, d) {
            // A default that is already of the target type is written as given.
            (Converted::Same, Scalar::Boolean(b)) => Converted::Boolean(b),
            (Converted::Same, Scalar::Integer(n)) => Converted::Integer(n),
            (Converted::Same, Scalar::Float(f)) => Converted::Float(f),
            (Converted::Same, Scalar::Text(t)) => Converted::Text(t),
            (c, _) => c,
        });
    }
    Ok(rule)
}

/// Converts one value: `Err` when it does not convert.
fn convert(rule: &Rule, value: Value, out: &OutputBuilder) -> Result<Converted, ()> {
    let text = match value {
        Value::Text(span) => out.text(span),
        _ => "",
    };
    rule.scalar(value, text)
}

impl Rule {
    /// Converts `value`; `text` is its text when it is text.
    fn scalar(&self, value: Value, text: &str) -> Result<Converted, ()> {
        use Converted as C;
        match (self.to, value) {
            (_, Value::Null) => Ok(C::Same),
            (_, Value::Object(_) | Value::Array(_)) => Err(()),
            (To::Text, Value::Text(_)) => Ok(C::Same),
            (To::Text, Value::Integer(n)) => Ok(C::Text(n.to_string())),
            (To::Text, Value::Float(f)) => Ok(C::Text(f.to_string())),
            (To::Text, Value::Boolean(b)) => Ok(C::Text(b.to_string())),
            (To::Integer, Value::Integer(_)) => Ok(C::Same),
            (To::Integer, Value::Float(f)) => integral(f).map(C::Integer),
            (To::Integer, Value::Text(_)) => text.trim().parse().map(C::Integer).map_err(|_| ()),
            (To::Float, Value::Float(_)) => Ok(C::Same),
            (To::Float, Value::Integer(n)) => Ok(C::Float(n as f64)),
            (To::Float, Value::Text(_)) => {
                text.trim().parse::<f64>().ok().filter(|f| f.is_finite()).map(C::Float).ok_or(())
            }
            (To::Boolean, Value::Boolean(_)) => Ok(C::Same),
            (To::Boolean, Value::Integer(0)) => Ok(C::Boolean(false)),
            (To::Boolean, Value::Integer(1)) => Ok(C::Boolean(true)),
            (To::Boolean, Value::Text(_)) => boolean(text.trim()).map(C::Boolean),
            (To::Integer | To::Float | To::Boolean, _) => Err(()),
            (To::Timestamp | To::Date, v) => {
                let t = self.time(v, text)?;
                Ok(C::Text(if self.to == To::Date {
                    t.format("%Y-%m-%d").to_string()
                } else {
                    t.to_rfc3339_opts(SecondsFormat::AutoSi, true)
                }))
            }
        }
    }

    /// Reads a time by the rule's format.
    fn time(&self, v: Value, text: &str) -> Result<DateTime<Utc>, ()> {
        let number = match v {
            Value::Integer(n) => Some(n as f64),
            Value::Float(f) => Some(f),
            Value::Text(_) => text.trim().parse::<f64>().ok(),
            _ => None,
        };
        match (&self.format, v) {
            (Format::EpochSeconds, _) => epoch(number.ok_or(())?, 1e3),
            (Format::EpochMillis, _) => epoch(number.ok_or(())?, 1.0),
            (Format::Iso8601, Value::Text(_)) => iso8601(text.trim()),
            (Format::Pattern(p), Value::Text(_)) => pattern(text.trim(), p),
            _ => Err(()),
        }
    }

    fn to_name(&self) -> &'static str {
        match self.to {
            To::Text => "text",
            To::Integer => "integer",
            To::Float => "float",
            To::Boolean => "boolean",
            To::Timestamp => "timestamp",
            To::Date => "date",
        }
    }

    /// The reason a record is rejected: the field and the rule, no value.
    fn refusal(&self) -> String {
        let format = match (&self.format, self.to) {
            (_, To::Text | To::Integer | To::Float | To::Boolean) => String::new(),
            (Format::Iso8601, _) => " (ISO 8601)".into(),
            (Format::EpochSeconds, _) => " (epoch seconds)".into(),
            (Format::EpochMillis, _) => " (epoch milliseconds)".into(),
            (Format::Pattern(p), _) => format!(" (format `{p}`)"),
        };
        format!("`{}` does not convert to {}{format}", self.field, self.to_name())
    }
}

fn integral(f: f64) -> Result<i64, ()> {
    // Within ±2^63 and whole: exactly an i64.
    (f.fract() == 0.0 && (-9.223_372_036_854_776e18..9.223_372_036_854_776e18).contains(&f))
        .then_some(f as i64)
        .ok_or(())
}

fn boolean(t: &str) -> Result<bool, ()> {
    const TRUE: [&str; 6] = ["true", "t", "yes", "y", "on", "1"];
    const FALSE: [&str; 6] = ["false", "f", "no", "n", "off", "0"];
    if TRUE.iter().any(|w| w.eq_ignore_ascii_case(t)) {
        Ok(true)
    } else if FALSE.iter().any(|w| w.eq_ignore_ascii_case(t)) {
        Ok(false)
    } else {
        Err(())
    }
}

/// `n` units of `ms_per_unit` milliseconds since 1970-01-01 UTC.
fn epoch(n: f64, ms_per_unit: f64) -> Result<DateTime<Utc>, ()> {
    let ms = n * ms_per_unit;
    if !ms.is_finite() || ms.abs() > 8.64e15 {
        return Err(());
    }
    DateTime::from_timestamp_millis(ms.round() as i64).ok_or(())
}

/// RFC 3339 and the usual ISO 8601 shapes: `T` or a space, fractional
/// seconds, an offset or none (UTC), or a date alone (midnight UTC).
fn iso8601(t: &str) -> Result<DateTime<Utc>, ()> {
    if let Ok(d) = DateTime::parse_from_rfc3339(t) {
        return Ok(d.with_timezone(&Utc));
    }
    for p in ["%Y-%m-%dT%H:%M:%S%.f%:z", "%Y-%m-%d %H:%M:%S%.f%:z", "%Y-%m-%dT%H:%M:%S%.f%z", "%Y-%m-%d %H:%M:%S%.f%z"]
    {
        if let Ok(d) = DateTime::parse_from_str(t, p) {
            return Ok(d.with_timezone(&Utc));
        }
    }
    for p in ["%Y-%m-%dT%H:%M:%S%.f", "%Y-%m-%d %H:%M:%S%.f", "%Y-%m-%dT%H:%M"] {
        if let Ok(d) = NaiveDateTime::parse_from_str(t, p) {
            return Ok(d.and_utc());
        }
    }
    NaiveDate::parse_from_str(t, "%Y-%m-%d").map(|d| d.and_time(Default::default()).and_utc()).map_err(|_| ())
}

/// A strftime pattern: with an offset (`%z`), a date and time, or a date.
fn pattern(t: &str, p: &str) -> Result<DateTime<Utc>, ()> {
    if let Ok(d) = DateTime::parse_from_str(t, p) {
        return Ok(d.with_timezone(&Utc));
    }
    if let Ok(d) = NaiveDateTime::parse_from_str(t, p) {
        return Ok(d.and_utc());
    }
    NaiveDate::parse_from_str(t, p).map(|d| d.and_time(Default::default()).and_utc()).map_err(|_| ())
}

#[cfg(feature = "export")]
plugin_sdk::plugin!(Convert);

#[cfg(test)]
mod tests;
