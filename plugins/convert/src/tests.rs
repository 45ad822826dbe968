use super::*;
use plugin_sdk::json::{self, Result::*};
use serde_json::{Value as Json, json};

fn convert(params: Json) -> Result<Convert, String> {
    plugin_sdk::configure(&params.to_string())
}

/// The value of `x` after converting `{"x": v}` by `spec`, or the reason.
fn one(spec: Json, v: Json) -> Result<Json, String> {
    let mut t = convert(json!({"fields": {"x": spec}})).expect("params");
    match json::results(&plugin_sdk::run(&mut t, json::batch(&[json!({"x": v, "y": 1})]))).remove(0) {
        Emit(mut out) => {
            let r = out.remove(0);
            assert_eq!(r["y"], 1, "other fields are kept");
            Ok(r["x"].clone())
        }
        Reject(why) => Err(why),
        other => panic!("{other:?}"),
    }
}

#[test]
fn text_to_numbers_and_booleans() {
    assert_eq!(one(json!("integer"), json!(" 42 ")), Ok(json!(42)));
    assert_eq!(one(json!("integer"), json!(7.0)), Ok(json!(7)));
    assert_eq!(one(json!("float"), json!("2.5")), Ok(json!(2.5)));
    assert_eq!(one(json!("float"), json!(3)), Ok(json!(3.0)));
    assert_eq!(one(json!("boolean"), json!("Yes")), Ok(json!(true)));
    assert_eq!(one(json!("boolean"), json!("0")), Ok(json!(false)));
    assert_eq!(one(json!("boolean"), json!(1)), Ok(json!(true)));
    assert_eq!(one(json!("text"), json!(12)), Ok(json!("12")));
    assert_eq!(one(json!("text"), json!(true)), Ok(json!("true")));
}

#[test]
fn what_does_not_convert_is_rejected_naming_the_field_and_rule_not_the_value() {
    assert_eq!(one(json!("integer"), json!("4x2")), Err("`x` does not convert to integer".into()));
    assert_eq!(one(json!("integer"), json!(1.5)), Err("`x` does not convert to integer".into()));
    assert_eq!(one(json!("boolean"), json!("maybe")), Err("`x` does not convert to boolean".into()));
    assert_eq!(one(json!("float"), json!({"a": 1})), Err("`x` does not convert to float".into()));
    let spec = json!({"to": "timestamp", "format": "%d/%m/%Y"});
    assert_eq!(one(spec, json!("2023-13-45")), Err("`x` does not convert to timestamp (format `%d/%m/%Y`)".into()));
}

#[test]
fn a_default_replaces_what_does_not_convert() {
    assert_eq!(one(json!({"to": "integer", "default": -1}), json!("n/a")), Ok(json!(-1)));
    assert_eq!(one(json!({"to": "integer", "default": "0"}), json!("n/a")), Ok(json!(0)));
    assert_eq!(one(json!({"to": "integer", "default": -1}), json!("5")), Ok(json!(5)));
    let spec = json!({"to": "timestamp", "default": "1970-01-01"});
    assert_eq!(one(spec, json!("never")), Ok(json!("1970-01-01T00:00:00Z")));
}

#[test]
fn null_stays_null_and_missing_stays_missing() {
    assert_eq!(one(json!("integer"), json!(null)), Ok(json!(null)));
    let mut t = convert(json!({"fields": {"x": "integer"}})).unwrap();
    let got = json::results(&plugin_sdk::run(&mut t, json::batch(&[json!({"y": 1})])));
    assert_eq!(got, vec![Emit(vec![json!({"y": 1})])]);
}

#[test]
fn timestamps_in_iso8601_epoch_and_patterns_become_utc_rfc3339() {
    let ts = |format: &str, v: Json| one(json!({"to": "timestamp", "format": format}), v);
    assert_eq!(one(json!("timestamp"), json!("2023-02-01 08:00:00")), Ok(json!("2023-02-01T08:00:00Z")));
    assert_eq!(one(json!("timestamp"), json!("2023-02-01T08:00:00+02:00")), Ok(json!("2023-02-01T06:00:00Z")));
    assert_eq!(one(json!("timestamp"), json!("2023-02-01T08:00:00.250Z")), Ok(json!("2023-02-01T08:00:00.250Z")));
    assert_eq!(one(json!("timestamp"), json!("2023-02-01")), Ok(json!("2023-02-01T00:00:00Z")));
    assert_eq!(ts("epoch-seconds", json!(1675238400)), Ok(json!("2023-02-01T08:00:00Z")));
    assert_eq!(ts("epoch-seconds", json!("1675238400.5")), Ok(json!("2023-02-01T08:00:00.500Z")));
    assert_eq!(ts("epoch-millis", json!(1675238400000i64)), Ok(json!("2023-02-01T08:00:00Z")));
    assert_eq!(ts("%d/%m/%Y %H:%M", json!("01/02/2023 08:00")), Ok(json!("2023-02-01T08:00:00Z")));
    assert_eq!(ts("%d/%m/%Y", json!("01/02/2023")), Ok(json!("2023-02-01T00:00:00Z")));
    assert_eq!(one(json!("timestamp"), json!(1675238400)), Err("`x` does not convert to timestamp (ISO 8601)".into()));
}

#[test]
fn dates_from_times() {
    assert_eq!(one(json!("date"), json!("2023-02-01T23:30:00-02:00")), Ok(json!("2023-02-02")));
    assert_eq!(one(json!({"to": "date", "format": "epoch-seconds"}), json!(0)), Ok(json!("1970-01-01")));
}

#[test]
fn bad_params_say_what_is_wrong() {
    let err = |p: Json| convert(p).err().expect("refused");
    assert!(err(json!({"fields": {}})).contains("at least one field"));
    assert!(err(json!({"fields": {"x": {"to": "integer", "format": "%Y"}}})).contains("only for timestamps"));
    assert!(err(json!({"fields": {"x": {"to": "date", "format": "yyyy"}}})).contains("not iso8601"));
    assert!(
        err(json!({"fields": {"x": {"to": "integer", "default": "zero"}}}))
            .contains("`x`: `default` does not convert to integer")
    );
    assert!(err(json!({"fields": {"x": "integr"}})).contains("did not match any variant"));
}
