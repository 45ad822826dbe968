use super::*;
use plugin_sdk::json::{self, Result::*};
use serde_json::json;

fn run(params: serde_json::Value, records: &[serde_json::Value]) -> Vec<json::Result> {
    let mut t: Flatten = plugin_sdk::configure(&params.to_string()).expect("params");
    json::results(&plugin_sdk::run(&mut t, json::batch(records)))
}

#[test]
fn flat_records_pass_unchanged() {
    let r = json!({"a": 1, "b": "x", "c": null, "d": [1, 2]});
    assert_eq!(run(json!({}), &[r.clone()]), vec![Emit(vec![r])]);
}

#[test]
fn nested_objects_join_keys() {
    let r = json!({"a": {"b": {"c": 1}, "d": "x"}, "e": true});
    let got = run(json!({"separator": "_"}), &[r]);
    assert_eq!(got, vec![Emit(vec![json!({"a_b_c": 1, "a_d": "x", "e": true})])]);
}

#[test]
fn max_depth_keeps_deeper_objects_whole() {
    let r = json!({"a": {"b": {"c": 1}}});
    let got = run(json!({"max_depth": 1}), &[r]);
    assert_eq!(got, vec![Emit(vec![json!({"a.b": {"c": 1}})])]);
}

#[test]
fn arrays_are_kept_or_indexed() {
    let r = json!({"t": [{"k": 1}, 2]});
    assert_eq!(run(json!({}), &[r.clone()]), vec![Emit(vec![r.clone()])]);
    let got = run(json!({"arrays": "index"}), &[r]);
    assert_eq!(got, vec![Emit(vec![json!({"t.0.k": 1, "t.1": 2})])]);
}

#[test]
fn empty_objects_vanish() {
    assert_eq!(run(json!({}), &[json!({"a": {}, "b": 1})]), vec![Emit(vec![json!({"b": 1})])]);
}

#[test]
fn collisions_reject_only_their_record() {
    let records = [json!({"a.b": 1, "a": {"b": 2}}), json!({"a": {"b": 2}})];
    assert_eq!(
        run(json!({}), &records),
        vec![Reject("two fields flatten to the same key `a.b`".into()), Emit(vec![json!({"a.b": 2})])]
    );
}

#[test]
fn bad_parameters_are_refused() {
    let err = |p: serde_json::Value| plugin_sdk::configure::<Flatten>(&p.to_string()).err().unwrap();
    assert_eq!(err(json!({"separator": ""})), "`separator` must not be empty");
    assert_eq!(err(json!({"max_depth": 0})), "`max_depth` must be at least 1");
    assert!(err(json!({"arrays": "explode"})).starts_with("unknown variant `explode`"));
}
