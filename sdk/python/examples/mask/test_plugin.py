"""The Rust `mask`'s cases, natively (hashing by hashlib here, by the host
in the component)."""

import pytest

from etl_plugin import emit, reject
from etl_plugin.testing import configure, run
from plugin import Mask

IP = "199.172.111.135"
IP_SHA256 = "a6d0e2f27f6111e10b06790db42f34123e724aa0fd24b280f4a0ef5ee986784c"
DEVICE = "593-47-5928"
DEVICE_SHA256 = "4f00c1a807b673887c7af517d0df68e6b41aecf8cbec26c71fe4c580664669ed"
E_ACUTE_SHA256 = "4a99557e4033c3539de2eb65472017cad5f9557f7a0625a09f1c3f6e2ba69c4c"


def test_renames_into_outputs_in_place_and_drops_the_raw_values():
    step = configure(Mask, {"fields": {"ip": "masked_ip", "device_id": "masked_device_id"}})
    got = run(step, [{"user_id": "u", "ip": IP, "locale": None, "device_id": DEVICE}])
    assert got == [emit({"user_id": "u", "masked_ip": IP_SHA256, "locale": None, "masked_device_id": DEVICE_SHA256})]
    assert list(got[0].records[0]) == ["user_id", "masked_ip", "locale", "masked_device_id"]


def test_in_place_and_utf8_bytes():
    assert run(configure(Mask, {"fields": ["a"]}), [{"a": "é", "b": 1}]) == [emit({"a": E_ACUTE_SHA256, "b": 1})]
    got = run(configure(Mask, {"fields": ["a"], "algorithm": "sha512"}), [{"a": "abc"}])
    assert got[0].records[0]["a"].startswith("ddaf35a193617aba")


def test_hmac_uses_the_granted_secret():
    step = configure(Mask, {"fields": ["a"], "algorithm": "hmac-sha256", "secret": "k"}, secrets={"k": b"key"})
    got = run(step, [{"a": "The quick brown fox jumps over the lazy dog"}])
    assert got == [emit({"a": "f7bc83f430538424b13298e6aa6fb143ef4d59a14946175997479dbc2d1a3cd8"})]


def test_a_secret_not_granted_rejects_the_batch():
    step = configure(Mask, {"fields": ["a"], "algorithm": "hmac-sha256", "secret": "other"}, secrets={})
    assert run(step, [{"a": "x"}]) == [reject("hashing failed: secret `other` is not granted to this step")]


def test_null_stays_null_non_text_and_missing_are_rejected():
    step = configure(Mask, {"fields": {"ip": "masked_ip", "device_id": "d"}})
    records = [
        {"ip": None, "device_id": DEVICE},
        {"ip": 42, "device_id": DEVICE},
        {"device_id": DEVICE},
        {"ip": IP, "device_id": {"nested": 1}},
        {"ip": IP, "device_id": DEVICE},
    ]
    assert run(step, records) == [
        emit({"masked_ip": None, "d": DEVICE_SHA256}),
        reject("`ip` is not text; mask takes text"),
        reject("`ip` is missing"),
        reject("`device_id` is not text; mask takes text"),
        emit({"masked_ip": IP_SHA256, "d": DEVICE_SHA256}),
    ]


def test_missing_may_become_null_and_originals_may_be_kept():
    step = configure(Mask, {"fields": {"ip": "m"}, "missing": "null", "keep_original": True})
    assert run(step, [{"x": 1}, {"ip": IP}]) == [emit({"x": 1, "m": None}), emit({"ip": IP, "m": IP_SHA256})]


@pytest.mark.parametrize(
    "params, message",
    [
        ({"fields": []}, "`fields` must name at least one field"),
        ({"fields": ["a"], "algorithm": "hmac-sha256"}, "hmac-sha256 needs `secret`"),
        ({"fields": ["a"], "secret": "k"}, "`secret` is only used by hmac-sha256"),
        ({"fields": ["a"], "algorithm": "md5"}, '`algorithm`: expected one of "sha256", "sha512", "hmac-sha256"'),
        ({"fields": 3}, "`fields`: fits none of its types"),
    ],
)
def test_bad_parameters_say_what_is_wrong(params, message):
    with pytest.raises(ValueError) as e:
        configure(Mask, params)
    assert message in str(e.value)
