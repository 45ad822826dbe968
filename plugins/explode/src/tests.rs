use super::*;
use plugin_sdk::json::{self, Result::*};
use serde_json::{Value as Json, json};

fn explode(params: Json) -> Result<Explode, String> {
    plugin_sdk::configure(&params.to_string())
}

fn run(params: Json, records: &[Json]) -> Vec<json::Result> {
    let mut t = explode(params).expect("params");
    json::results(&plugin_sdk::run(&mut t, json::batch(records)))
}

#[test]
fn one_record_per_element_in_the_arrays_place() {
    let got = run(json!({"field": "items"}), &[json!({"id": 1, "items": ["a", {"b": [2]}], "z": true})]);
    assert_eq!(
        got,
        vec![Emit(vec![json!({"id": 1, "items": "a", "z": true}), json!({"id": 1, "items": {"b": [2]}, "z": true})])]
    );
}

#[test]
fn as_and_index_name_the_outputs() {
    let got = run(json!({"field": "items", "as": "item", "index": "n"}), &[json!({"items": [10, 20], "id": 7})]);
    assert_eq!(got, vec![Emit(vec![json!({"item": 10, "n": 0, "id": 7}), json!({"item": 20, "n": 1, "id": 7})])]);
}

#[test]
fn empty_null_or_missing_arrays_drop_the_record_or_keep_it_once() {
    let records = [json!({"id": 1, "items": []}), json!({"id": 2, "items": null}), json!({"id": 3})];
    assert_eq!(run(json!({"field": "items"}), &records), vec![Drop, Drop, Drop]);
    let got = run(json!({"field": "items", "empty": "keep", "index": "i"}), &records);
    assert_eq!(
        got,
        vec![
            Emit(vec![json!({"id": 1, "items": null, "i": null})]),
            Emit(vec![json!({"id": 2, "items": null, "i": null})]),
            Emit(vec![json!({"id": 3, "items": null, "i": null})]),
        ]
    );
}

#[test]
fn a_field_that_is_not_an_array_is_rejected_and_the_others_go_on() {
    let got = run(json!({"field": "items"}), &[json!({"items": "x"}), json!({"items": [1]})]);
    assert_eq!(got, vec![Reject("`items` is not an array".into()), Emit(vec![json!({"items": 1})])]);
}

#[test]
fn bad_params_say_what_is_wrong() {
    assert!(explode(json!({})).err().unwrap().contains("missing field `field`"));
    assert!(explode(json!({"field": "a", "index": "a"})).err().unwrap().contains("both name `a`"));
    assert!(explode(json!({"field": "a", "empty": "skip"})).err().unwrap().contains("unknown variant `skip`"));
}
