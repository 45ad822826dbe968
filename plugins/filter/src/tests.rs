use super::*;
use plugin_sdk::json::{self, Result::*};
use serde_json::{Value as Json, json};

fn filter(params: Json) -> Result<Filter, String> {
    plugin_sdk::configure(&params.to_string())
}

fn run(params: Json, records: &[Json]) -> Vec<json::Result> {
    let mut t = filter(params).expect("params");
    json::results(&plugin_sdk::run(&mut t, json::batch(records)))
}

/// Which of `records` are kept.
fn kept(params: Json, records: &[Json]) -> Vec<bool> {
    run(params, records)
        .into_iter()
        .map(|r| match r {
            Emit(out) => {
                assert_eq!(out.len(), 1);
                true
            }
            Drop => false,
            other => panic!("{other:?}"),
        })
        .collect()
}

#[test]
fn equals_keeps_matching_records_whole() {
    let records = [json!({"d": "ios", "n": 1}), json!({"d": "android", "n": 2}), json!({"n": 3})];
    let got = run(json!({"all": [{"field": "d", "equals": "ios"}]}), &records);
    assert_eq!(got, vec![Emit(vec![records[0].clone()]), Drop, Drop]);
}

#[test]
fn types_are_compared_with_their_type_but_numbers_by_value() {
    let records = [json!({"v": 5}), json!({"v": 5.0}), json!({"v": "5"}), json!({"v": true})];
    assert_eq!(kept(json!({"all": [{"field": "v", "equals": 5}]}), &records), [true, true, false, false]);
    assert_eq!(kept(json!({"all": [{"field": "v", "equals": "5"}]}), &records), [false, false, true, false]);
    assert_eq!(kept(json!({"all": [{"field": "v", "not_equals": 5}]}), &records), [false, false, true, true]);
}

#[test]
fn in_and_not_in_a_set() {
    let records = [json!({"l": "RU"}), json!({"l": "US"}), json!({"l": null}), json!({})];
    let set = json!(["RU", "DE"]);
    assert_eq!(kept(json!({"all": [{"field": "l", "in": set}]}), &records), [true, false, false, false]);
    assert_eq!(kept(json!({"all": [{"field": "l", "not_in": set}]}), &records), [false, true, true, true]);
}

#[test]
fn matches_a_regex_on_text_only() {
    let records = [json!({"v": "2.3.0"}), json!({"v": "0.96"}), json!({"v": 2})];
    assert_eq!(kept(json!({"all": [{"field": "v", "matches": "^2\\."}]}), &records), [true, false, false]);
}

#[test]
fn is_null_means_missing_or_null() {
    let records = [json!({"x": null}), json!({}), json!({"x": 0})];
    assert_eq!(kept(json!({"all": [{"field": "x", "is_null": true}]}), &records), [true, true, false]);
    assert_eq!(kept(json!({"all": [{"field": "x", "is_null": false}]}), &records), [false, false, true]);
}

#[test]
fn numeric_comparisons_and_other_types_never_compare() {
    let records = [json!({"n": 1}), json!({"n": 2.5}), json!({"n": 3}), json!({"n": "3"}), json!({})];
    assert_eq!(kept(json!({"all": [{"field": "n", "gt": 2}]}), &records), [false, true, true, false, false]);
    assert_eq!(kept(json!({"all": [{"field": "n", "gte": 3}]}), &records), [false, false, true, false, false]);
    assert_eq!(kept(json!({"all": [{"field": "n", "lt": 2.5}]}), &records), [true, false, false, false, false]);
    assert_eq!(kept(json!({"all": [{"field": "n", "lte": 2.5}]}), &records), [true, true, false, false, false]);
}

#[test]
fn all_any_and_dropping_what_matches() {
    let records = [json!({"a": 1, "b": 1}), json!({"a": 1, "b": 2}), json!({"a": 2, "b": 2})];
    let c = json!([{"field": "a", "equals": 1}, {"field": "b", "equals": 1}]);
    assert_eq!(kept(json!({"all": c}), &records), [true, false, false]);
    assert_eq!(kept(json!({"any": c}), &records), [true, true, false]);
    assert_eq!(kept(json!({"any": c, "keep": false}), &records), [false, false, true]);
}

#[test]
fn bad_params_say_what_is_wrong() {
    let err = |p: Json| filter(p).err().expect("refused");
    assert!(err(json!({})).contains("`all = [...]` or `any = [...]`"));
    assert!(err(json!({"all": [], "any": []})).contains("not both"));
    assert!(err(json!({"all": []})).contains("at least one condition"));
    assert!(err(json!({"all": [{"field": "a"}]})).contains("condition 1 (`a`) needs exactly one test"));
    assert!(err(json!({"all": [{"field": "a", "gt": 1, "lt": 2}]})).contains("it has 2"));
    assert!(err(json!({"all": [{"field": "a", "matches": "("}]})).contains("condition 1 (`a`): `matches`"));
    assert!(err(json!({"all": [{"field": "a", "equal": 1}]})).contains("unknown field `equal`"));
}
