use super::*;
use plugin_sdk::json::{self, Result::*};
use serde_json::{Value as Json, json};

fn fields(params: Json) -> Result<Fields, String> {
    plugin_sdk::configure(&params.to_string())
}

/// Each record after the step (all are emitted once).
fn run(params: Json, records: &[Json]) -> Vec<Json> {
    let mut t = fields(params).expect("params");
    json::results(&plugin_sdk::run(&mut t, json::batch(records)))
        .into_iter()
        .map(|r| match r {
            Emit(mut out) if out.len() == 1 => out.remove(0),
            other => panic!("{other:?}"),
        })
        .collect()
}

/// The field names of the first output record, in order (records of
/// scalars only; `json!` objects come in key order).
fn order(params: Json, record: Json) -> Vec<String> {
    let mut t = fields(params).expect("params");
    let out = plugin_sdk::run(&mut t, json::batch(&[record]));
    let n = out.batch.records[0] as usize;
    out.batch.cells[..n].iter().map(|c| out.batch.keys[c.key as usize].clone()).collect()
}

#[test]
fn keep_and_drop() {
    let r = json!({"a": 1, "b": {"c": 2}, "d": 3});
    assert_eq!(run(json!({"keep": ["d", "b", "zz"]}), &[r.clone()]), [json!({"b": {"c": 2}, "d": 3})]);
    assert_eq!(run(json!({"drop": ["b"]}), &[r]), [json!({"a": 1, "d": 3})]);
}

#[test]
fn rename_keeps_the_place_and_replaces_a_field_of_that_name() {
    let got = run(json!({"rename": {"a": "x"}}), &[json!({"a": [1, 2], "b": 2}), json!({"b": 2, "x": 9, "a": 1})]);
    assert_eq!(got[0], json!({"x": [1, 2], "b": 2}));
    assert_eq!(order(json!({"rename": {"a": "x"}}), json!({"a": 1, "b": 2})), ["x", "b"]);
    assert_eq!(got[1], json!({"b": 2, "x": 1}), "the renamed field wins");
}

#[test]
fn set_replaces_or_adds_and_default_fills_missing_or_null() {
    let params = json!({"set": {"source": "sftp", "v": 2}, "default": {"country": "US", "n": 0.5}});
    let got = run(params, &[json!({"v": 1, "country": null}), json!({"country": "DE", "n": 1})]);
    assert_eq!(got[0], json!({"v": 2, "country": "US", "source": "sftp", "n": 0.5}));
    let params = json!({"set": {"source": "sftp", "v": 2}, "default": {"country": "US", "n": 0.5}});
    assert_eq!(
        order(params, json!({"v": 1, "country": null})),
        ["country", "v", "source", "n"],
        "in place, then the added ones"
    );
    assert_eq!(got[1], json!({"country": "DE", "n": 1, "source": "sftp", "v": 2}));
}

#[test]
fn steps_compose_in_order() {
    let params = json!({"keep": ["a", "b"], "rename": {"a": "id"}, "default": {"id": "none"}});
    let got = run(params, &[json!({"a": null, "b": true, "c": 1}), json!({"b": false})]);
    assert_eq!(got, [json!({"id": "none", "b": true}), json!({"b": false, "id": "none"})]);
}

#[test]
fn bad_params_say_what_is_wrong() {
    let err = |p: Json| fields(p).err().expect("refused");
    assert!(err(json!({})).contains("nothing to do"));
    assert!(err(json!({"keep": [], "drop": []})).contains("not both"));
    assert!(err(json!({"rename": {"a": "x", "b": "x"}})).contains("two fields the name `x`"));
    assert!(err(json!({"set": {"a": 1}, "default": {"a": 2}})).contains("both `set` and `default`"));
    assert!(err(json!({"rename": {"a": 1}})).contains("invalid type"));
}
