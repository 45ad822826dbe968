//! A step's params against the JSON Schema its plugin declares (the
//! `params-schema` of `describe`), checked before `configure`, so a
//! misspelt or mistyped parameter is named with its key by `host check`,
//! at start and on reload, whatever the plugin's own messages say.
//!
//! Must not name values from records: params come from the pipeline file.

use jsonschema::error::ValidationErrorKind as Kind;
use serde_json::Value;

/// Why a step's params were refused.
#[derive(Debug, Clone, PartialEq)]
pub enum Refusal {
    /// The plugin's schema is not JSON, or not a JSON Schema.
    Schema(String),
    /// The params do not fit the schema.
    Misfit {
        /// The path of the offending key (`rules[1].equals`); empty for the
        /// params as a whole.
        key: String,
        /// The top-level parameter it is under, whose line is reported.
        top: Option<String>,
        message: String,
    },
}

/// Checks `params` (JSON text) against `schema` (JSON text).
pub fn check(schema: &str, params: &str) -> Result<(), Refusal> {
    let schema: Value =
        serde_json::from_str(schema).map_err(|e| Refusal::Schema(format!("its params schema is not JSON: {e}")))?;
    let params: Value = serde_json::from_str(params).map_err(|e| Refusal::Schema(format!("params: {e}")))?;
    let validator = jsonschema::validator_for(&schema)
        .map_err(|e| Refusal::Schema(format!("its params schema is not a valid JSON Schema: {e}")))?;
    let Some(error) = validator.iter_errors(&params).next() else { return Ok(()) };
    let (path, message) = explain(&schema, &params, &error);
    let top = match path.first() {
        Some(Segment::Key(k)) => Some(k.clone()),
        _ => None,
    };
    Err(Refusal::Misfit { key: dotted(&path), top, message })
}

#[derive(Debug, Clone, PartialEq)]
enum Segment {
    Key(String),
    Index(usize),
}

/// Where an error is (as path segments) and what it says.
fn explain(schema: &Value, params: &Value, error: &jsonschema::ValidationError<'_>) -> (Vec<Segment>, String) {
    let mut path = pointer(error.instance_path().as_str(), params);
    let message = match error.kind() {
        Kind::AdditionalProperties { unexpected } => {
            path.push(Segment::Key(unexpected.first().cloned().unwrap_or_default()));
            let known = properties(schema, error.schema_path().as_str());
            if known.is_empty() {
                "is not a parameter".to_string()
            } else {
                format!("is not a parameter; expected one of {}", quoted(&known))
            }
        }
        Kind::Required { property } => {
            path.push(Segment::Key(property.as_str().unwrap_or_default().to_string()));
            "is required".to_string()
        }
        Kind::Type { .. } => format!("must be {}, not {}", expected(error.to_string()), kind_of(error.instance())),
        Kind::Enum { options } => match options.as_array() {
            Some(o) => format!("must be one of {}", o.iter().map(Value::to_string).collect::<Vec<_>>().join(", ")),
            None => error.to_string(),
        },
        Kind::AnyOf { context } | Kind::OneOfNotValid { context } => {
            // The form the value's shape fits says the most: first one
            // whose errors are inside the value (or a wrong or missing key
            // of a table), then one that is not of another type (a word
            // among the words allowed).
            let at = error.instance_path().as_str();
            let inside = |e: &jsonschema::ValidationError<'_>| {
                e.instance_path().as_str().len() > at.len()
                    || matches!(e.kind(), Kind::AdditionalProperties { .. } | Kind::Required { .. })
            };
            let typed = |e: &jsonschema::ValidationError<'_>| {
                !(matches!(e.kind(), Kind::Type { .. }) && e.instance_path().as_str() == at)
            };
            let fits = context.iter().find(|b| !b.is_empty() && b.iter().all(inside));
            match fits.or_else(|| context.iter().find(|b| !b.is_empty() && b.iter().all(typed))) {
                Some(branch) => return explain(schema, params, &branch[0]),
                None => format!("does not fit any of its allowed forms ({})", kind_of(error.instance())),
            }
        }
        // The value itself is never repeated (it may come from `${VAR}`).
        Kind::Minimum { limit } => format!("must be at least {limit}"),
        Kind::Maximum { limit } => format!("must be at most {limit}"),
        Kind::ExclusiveMinimum { limit } => format!("must be more than {limit}"),
        Kind::ExclusiveMaximum { limit } => format!("must be less than {limit}"),
        Kind::MinLength { limit } => format!("must be at least {limit} characters long"),
        Kind::MaxLength { limit } => format!("must be at most {limit} characters long"),
        Kind::MinItems { limit } => format!("must hold at least {limit} items"),
        Kind::MaxItems { limit } => format!("must hold at most {limit} items"),
        Kind::MinProperties { limit } => format!("must hold at least {limit} keys"),
        Kind::MaxProperties { limit } => format!("must hold at most {limit} keys"),
        Kind::Pattern { pattern } => format!("must match `{pattern}`"),
        Kind::Constant { expected_value } => format!("must be {expected_value}"),
        Kind::UniqueItems => "must not repeat an item".to_string(),
        other => format!("does not fit the plugin's schema (`{}`)", other.keyword()),
    };
    (path, message)
}

/// The segments of a JSON pointer (`/rules/0/field`) into `params`: a
/// segment is an index only where `params` holds an array (a table's key
/// may be digits).
fn pointer(p: &str, params: &Value) -> Vec<Segment> {
    let mut at = Some(params);
    p.split('/')
        .skip(1)
        .map(|s| {
            let s = s.replace("~1", "/").replace("~0", "~");
            match (at, s.parse::<usize>()) {
                (Some(Value::Array(a)), Ok(i)) => {
                    at = a.get(i);
                    Segment::Index(i)
                }
                _ => {
                    at = at.and_then(|v| v.get(&s));
                    Segment::Key(s)
                }
            }
        })
        .collect()
}

/// `rules[1].equals`, as a TOML author reads it.
fn dotted(path: &[Segment]) -> String {
    let mut out = String::new();
    for s in path {
        match s {
            Segment::Key(k) if out.is_empty() => out.push_str(k),
            Segment::Key(k) => {
                out.push('.');
                out.push_str(k);
            }
            Segment::Index(i) => out.push_str(&format!("[{i}]")),
        }
    }
    out
}

/// The properties the object schema owning the keyword at `schema_path`
/// names (`.../additionalProperties` -> the keys of `.../properties`).
fn properties(schema: &Value, schema_path: &str) -> Vec<String> {
    let owner = schema_path.rsplit_once('/').map_or("", |(head, _)| head);
    schema
        .pointer(owner)
        .and_then(|s| s.get("properties"))
        .and_then(Value::as_object)
        .map(|p| p.keys().cloned().collect())
        .unwrap_or_default()
}

fn quoted(names: &[String]) -> String {
    names.iter().map(|n| format!("`{n}`")).collect::<Vec<_>>().join(", ")
}

/// The type(s) a type error expects, from its message
/// (`... is not of type "integer"`); null is left out, as TOML has none
/// (an optional parameter is left out instead).
fn expected(message: String) -> String {
    let named =
        message.rsplit_once(" is not of type").map(|(_, t)| t.trim_start_matches('s').to_string()).unwrap_or_default();
    let names: Vec<&str> =
        named.split(',').map(|t| t.trim().trim_matches('"')).filter(|t| !t.is_empty() && *t != "null").collect();
    if names.is_empty() {
        return "of another type".into();
    }
    names.iter().map(|t| article(t)).collect::<Vec<_>>().join(" or ")
}

fn article(t: &str) -> String {
    match t {
        "integer" => "an integer".into(),
        "object" => "a table".into(),
        "array" => "an array".into(),
        "string" => "a string".into(),
        "number" => "a number".into(),
        "boolean" => "a boolean".into(),
        other => other.into(),
    }
}

/// What a value is, in TOML's words (never the value itself).
fn kind_of(v: &Value) -> &'static str {
    match v {
        Value::Null => "nothing",
        Value::Bool(_) => "a boolean",
        Value::Number(n) if n.is_f64() => "a float",
        Value::Number(_) => "an integer",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "a table",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn misfit(schema: Value, params: Value) -> (String, Option<String>, String) {
        match check(&schema.to_string(), &params.to_string()) {
            Err(Refusal::Misfit { key, top, message }) => (key, top, message),
            other => panic!("{other:?}"),
        }
    }

    fn schema() -> Value {
        json!({
            "type": "object",
            "additionalProperties": false,
            "properties": {
                "separator": {"type": "string"},
                "max_depth": {"type": ["integer", "null"], "minimum": 0},
                "rules": {"type": "array", "items": {"$ref": "#/$defs/Rule"}},
                "arrays": {"enum": ["keep", "index"]}
            },
            "$defs": {"Rule": {"type": "object", "additionalProperties": false, "required": ["field"],
                "properties": {"field": {"type": "string"}, "equals": {}}}}
        })
    }

    #[test]
    fn fitting_params_pass() {
        assert_eq!(check(&schema().to_string(), r#"{"separator":"_","rules":[{"field":"a"}]}"#), Ok(()));
    }

    #[test]
    fn a_misspelt_key_is_named_with_the_keys_there_are() {
        let (key, top, message) = misfit(schema(), json!({"sepparator": "_"}));
        assert_eq!((key.as_str(), top.as_deref()), ("sepparator", Some("sepparator")));
        assert_eq!(message, "is not a parameter; expected one of `arrays`, `max_depth`, `rules`, `separator`");
        let (key, top, message) = misfit(schema(), json!({"rules": [{"field": "a"}, {"field": "b", "equal": 1}]}));
        assert_eq!((key.as_str(), top.as_deref()), ("rules[1].equal", Some("rules")));
        assert_eq!(message, "is not a parameter; expected one of `equals`, `field`");
    }

    #[test]
    fn a_mistyped_value_says_what_it_must_be() {
        let (key, _, message) = misfit(schema(), json!({"separator": 1}));
        assert_eq!((key.as_str(), message.as_str()), ("separator", "must be a string, not an integer"));
        let (_, _, message) = misfit(schema(), json!({"max_depth": "two"}));
        assert_eq!(message, "must be an integer, not a string");
        let (key, _, message) = misfit(schema(), json!({"arrays": "flat"}));
        assert_eq!((key.as_str(), message.as_str()), ("arrays", r#"must be one of "keep", "index""#));
        let (key, _, message) = misfit(schema(), json!({"rules": [{}]}));
        assert_eq!((key.as_str(), message.as_str()), ("rules[0].field", "is required"));
    }

    #[test]
    fn of_several_forms_the_one_of_the_values_type_explains() {
        let schema = json!({
            "type": "object",
            "properties": {"to": {"anyOf": [
                {"enum": ["integer", "float"]},
                {"type": "object", "additionalProperties": false, "properties": {"to": {"enum": ["integer"]}}}
            ]}}
        });
        let (key, _, message) = misfit(schema.clone(), json!({"to": "integr"}));
        assert_eq!((key.as_str(), message.as_str()), ("to", r#"must be one of "integer", "float""#));
        let (key, _, message) = misfit(schema.clone(), json!({"to": {"too": 1}}));
        assert_eq!((key.as_str(), message.as_str()), ("to.too", "is not a parameter; expected one of `to`"));
        let (_, _, message) = misfit(schema, json!({"to": 5}));
        assert_eq!(message, r#"must be one of "integer", "float""#);
        let schema = json!({"properties": {"n": {"anyOf": [{"type": "integer"}, {"type": "array"}]}}});
        let (_, _, message) = misfit(schema, json!({"n": "x"}));
        assert_eq!(message, "does not fit any of its allowed forms (a string)");
    }

    #[test]
    fn digits_are_a_key_in_a_table_and_an_index_in_an_array_and_values_are_never_repeated() {
        let schema = json!({"properties": {
            "fields": {"additionalProperties": {"enum": ["integer"]}},
            "depth": {"type": "integer", "minimum": 0},
            "rules": {"type": "array", "items": {"type": "string", "pattern": "^[a-z]+$"}}
        }});
        let (key, top, _) = misfit(schema.clone(), json!({"fields": {"2024": "integr"}}));
        assert_eq!((key.as_str(), top.as_deref()), ("fields.2024", Some("fields")));
        let (key, _, message) = misfit(schema.clone(), json!({"depth": -7}));
        assert_eq!((key.as_str(), message.as_str()), ("depth", "must be at least 0"));
        let (key, _, message) = misfit(schema, json!({"rules": ["ok", "Secret-Value"]}));
        assert_eq!((key.as_str(), message.as_str()), ("rules[1]", "must match `^[a-z]+$`"));
    }

    #[test]
    fn a_broken_schema_is_the_plugins_fault() {
        assert!(matches!(check("{", "{}"), Err(Refusal::Schema(m)) if m.contains("not JSON")));
        assert!(
            matches!(check(r#"{"type": 5}"#, "{}"), Err(Refusal::Schema(m)) if m.contains("not a valid JSON Schema"))
        );
    }
}
