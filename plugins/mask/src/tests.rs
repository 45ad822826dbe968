//! Known vectors computed independently (coreutils `sha256sum`/`sha512sum`,
//! Python's `hmac`).
use super::*;
use plugin_sdk::json::{self, Result::*};
use serde_json::json;

const IP: &str = "199.172.111.135";
const IP_SHA256: &str = "a6d0e2f27f6111e10b06790db42f34123e724aa0fd24b280f4a0ef5ee986784c";
const DEVICE: &str = "593-47-5928";
const DEVICE_SHA256: &str = "4f00c1a807b673887c7af517d0df68e6b41aecf8cbec26c71fe4c580664669ed";
const ABC_SHA512: &str = "ddaf35a193617abacc417349ae20413112e6fa4e89a97ea20a9eeee64b55d39a2192992a274fc1a836ba3c23a3feebbd454d4423643ce80e2a9ac94fa54ca49f";
const E_ACUTE_SHA256: &str = "4a99557e4033c3539de2eb65472017cad5f9557f7a0625a09f1c3f6e2ba69c4c";

fn run(params: serde_json::Value, records: &[serde_json::Value]) -> Vec<json::Result> {
    let mut t: Mask = plugin_sdk::configure(&params.to_string()).expect("params");
    json::results(&plugin_sdk::run(&mut t, json::batch(records)))
}

#[test]
fn renames_into_outputs_in_place_and_drops_the_raw_values() {
    let params = json!({"fields": {"ip": "masked_ip", "device_id": "masked_device_id"}});
    let got = run(params, &[json!({"user_id": "u", "ip": IP, "locale": null, "device_id": DEVICE})]);
    let row = json!({"user_id": "u", "masked_ip": IP_SHA256, "locale": null, "masked_device_id": DEVICE_SHA256});
    assert_eq!(got, vec![Emit(vec![row])]);
}

#[test]
fn sha512_and_utf8_bytes() {
    let got = run(json!({"fields": ["a"], "algorithm": "sha512"}), &[json!({"a": "abc"})]);
    assert_eq!(got, vec![Emit(vec![json!({"a": ABC_SHA512})])]);
    let got = run(json!({"fields": ["a"]}), &[json!({"a": "é"})]);
    assert_eq!(got, vec![Emit(vec![json!({"a": E_ACUTE_SHA256})])]);
}

#[test]
fn hmac_uses_the_granted_secret() {
    plugin_sdk::grant_native_secret("k", b"key");
    let params = json!({"fields": ["a"], "algorithm": "hmac-sha256", "secret": "k"});
    let got = run(params, &[json!({"a": "The quick brown fox jumps over the lazy dog"})]);
    let want = "f7bc83f430538424b13298e6aa6fb143ef4d59a14946175997479dbc2d1a3cd8";
    assert_eq!(got, vec![Emit(vec![json!({"a": want})])]);
}

#[test]
fn null_stays_null_non_text_and_missing_are_rejected() {
    let params = json!({"fields": {"ip": "masked_ip", "device_id": "d"}});
    let records = [
        json!({"ip": null, "device_id": DEVICE}),
        json!({"ip": 42, "device_id": DEVICE}),
        json!({"device_id": DEVICE}),
        json!({"ip": IP, "device_id": {"nested": 1}}),
        json!({"ip": IP, "device_id": DEVICE}),
    ];
    assert_eq!(
        run(params, &records),
        vec![
            Emit(vec![json!({"masked_ip": null, "d": DEVICE_SHA256})]),
            Reject("`ip` is not text; mask takes text".into()),
            Reject("`ip` is missing".into()),
            Reject("`device_id` is not text; mask takes text".into()),
            Emit(vec![json!({"masked_ip": IP_SHA256, "d": DEVICE_SHA256})]),
        ]
    );
}

#[test]
fn missing_may_become_null_and_originals_may_be_kept() {
    let params = json!({"fields": {"ip": "m"}, "missing": "null", "keep_original": true});
    let got = run(params, &[json!({"x": 1}), json!({"ip": IP})]);
    assert_eq!(got, vec![Emit(vec![json!({"x": 1, "m": null})]), Emit(vec![json!({"ip": IP, "m": IP_SHA256})])]);
}

#[test]
fn bad_parameters_say_what_is_wrong() {
    let err = |p: serde_json::Value| plugin_sdk::configure::<Mask>(&p.to_string()).err().unwrap();
    assert_eq!(err(json!({"fields": []})), "`fields` must name at least one field");
    assert_eq!(
        err(json!({"fields": ["a"], "algorithm": "hmac-sha256"})),
        "hmac-sha256 needs `secret`, the name of a secret granted to this step"
    );
    assert!(err(json!({"fields": ["a"], "algorithm": "md5"})).starts_with("unknown variant `md5`"));
    assert!(err(json!({"fields": 3})).contains("a list of field names or a table"));
}
