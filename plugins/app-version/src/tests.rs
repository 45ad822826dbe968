use super::*;
use plugin_sdk::json::{self, Result::*};
use serde_json::json;

fn run(params: serde_json::Value, records: &[serde_json::Value]) -> Vec<json::Result> {
    let mut t: AppVersion = plugin_sdk::configure(&params.to_string()).expect("params");
    json::results(&plugin_sdk::run(&mut t, json::batch(records)))
}

#[test]
fn parses_the_issue_vectors() {
    assert_eq!(parse("2.3.0"), Ok(Version { major: 2, minor: 3, patch: 0 }));
    assert_eq!(parse("0.96"), Ok(Version { major: 0, minor: 96, patch: 0 }));
    assert_eq!(parse("2"), Ok(Version { major: 2, minor: 0, patch: 0 }));
    assert_eq!(parse("10.11.12"), Ok(Version { major: 10, minor: 11, patch: 12 }));
    assert_eq!(parse("1.2.3.4"), Ok(Version { major: 1, minor: 2, patch: 3 }));
}

#[test]
fn refuses_malformed_versions_without_echoing_them() {
    assert_eq!(parse(""), Err("is empty"));
    assert_eq!(parse("abc"), Err("is not a version: components must be decimal digits"));
    assert_eq!(parse("2..3"), Err("is not a version: empty component"));
    assert_eq!(parse("2."), Err("is not a version: empty component"));
    assert_eq!(parse(" 2"), Err("is not a version: components must be decimal digits"));
    assert_eq!(parse("-1"), Err("is not a version: components must be decimal digits"));
    assert_eq!(parse("99999999999"), Err("is not a version: component too large"));
}

#[test]
fn replaces_the_field_with_the_major_by_default() {
    let got = run(json!({}), &[json!({"a": 1, "app_version": "2.3.0", "z": "x"})]);
    assert_eq!(got, vec![Emit(vec![json!({"a": 1, "app_version": 2, "z": "x"})])]);
}

#[test]
fn writes_optional_outputs_and_keeps_the_original_when_renamed() {
    let params = json!({"field": "v", "major": "maj", "minor": "min", "patch": "pat", "sortable": "sort"});
    let got = run(params, &[json!({"v": "10.11.12"})]);
    let row = json!({"v": "10.11.12", "maj": 10, "min": 11, "pat": 12, "sort": 10_011_012});
    assert_eq!(got, vec![Emit(vec![row])]);
}

#[test]
fn rejects_bad_values_with_the_reason_and_keeps_good_neighbours() {
    let records = [
        json!({"app_version": ""}),
        json!({"app_version": "abc"}),
        json!({"app_version": "2..3"}),
        json!({"app_version": null}),
        json!({"app_version": 2}),
        json!({"other": "2.0"}),
        json!({"app_version": "0.96"}),
    ];
    let got = run(json!({}), &records);
    assert_eq!(
        got,
        vec![
            Reject("`app_version` is empty".into()),
            Reject("`app_version` is not a version: components must be decimal digits".into()),
            Reject("`app_version` is not a version: empty component".into()),
            Reject("`app_version` is null".into()),
            Reject("`app_version` is not text but a number or boolean".into()),
            Reject("`app_version` is missing".into()),
            Emit(vec![json!({"app_version": 0})]),
        ]
    );
}

#[test]
fn a_configured_default_replaces_rejection() {
    let got = run(json!({"default": -1, "minor": "minor"}), &[json!({"app_version": "x"}), json!({"k": 1})]);
    assert_eq!(
        got,
        vec![
            Emit(vec![json!({"app_version": -1, "minor": null})]),
            Emit(vec![json!({"k": 1, "app_version": -1, "minor": null})]),
        ]
    );
}

#[test]
fn unknown_parameters_are_refused() {
    let err = plugin_sdk::configure::<AppVersion>(r#"{"feild": "x"}"#).err().unwrap();
    assert!(err.starts_with("unknown field `feild`"), "{err}");
}
