"""The SDK natively: the codec both ways, outcomes, exceptions, params."""

import math
from dataclasses import dataclass
from typing import Literal, Optional

import pytest

import etl_plugin as etl
from etl_plugin import _codec, param
from etl_plugin.testing import configure, describe, run


def roundtrip(records):
    return _codec.decode(_codec.encode(records))


def test_every_kind_round_trips():
    records = [
        {"n": None, "b": True, "f": False, "i": -7, "big": 2**63 - 1, "small": -(2**63), "x": 1.5, "s": "text"},
        {"nested": {"a": [1, "two", {"three": 3.0}, [], {}], "b": {"c": {"d": None}}}, "after": "x"},
        {},
        {"unicode": "Zürich — 東京 🚀", "empty": ""},
    ]
    assert roundtrip(records) == records


def test_floats_keep_their_bits():
    out = roundtrip([{"nan": math.nan, "inf": math.inf, "neg0": -0.0}])[0]
    assert math.isnan(out["nan"]) and out["inf"] == math.inf and math.copysign(1, out["neg0"]) == -1


def test_text_offsets_are_bytes_when_the_arena_is_not_ascii():
    records = [{"a": "é", "b": "plain"}, {"a": "ascii", "b": "ü"}]
    assert roundtrip(records) == records


@etl.plugin(name="lower", version="1.0.0", summary="Lowercases `field`", params=None)
class Lower:
    def transform(self, record):
        if "bad" in record:
            raise etl.Reject("`bad` is set")
        if "boom" in record:
            return {"x": 1} if record["boom"] is None else int(record["boom"])
        if "many" in record:
            return etl.emit(*({"i": i} for i in range(record["many"])))
        if "skip" in record:
            return etl.drop()
        if "none" in record:
            return None
        if "huge" in record:
            return {"huge": 2**64}
        return {k: v.lower() if isinstance(v, str) else v for k, v in record.items()}


def test_outcomes_one_per_record():
    step = configure(Lower)
    results = run(
        step,
        [
            {"s": "ABC"},
            {"bad": 1},
            {"many": 3},
            {"many": 0},
            {"skip": True},
            {"none": 1},
            {"huge": 1},
            {"boom": "not a number 4111-1111"},
        ],
    )
    assert results[0] == etl.emit({"s": "abc"})
    assert results[1] == etl.reject("`bad` is set")
    assert results[2] == etl.emit({"i": 0}, {"i": 1}, {"i": 2})
    assert results[3] == etl.drop()  # emit() of nothing counts as a drop
    assert results[4] == etl.drop()
    assert results[5] == etl.reject("transform returned None: return the record, emit(...), drop() or reject(reason)")
    assert results[6] == etl.reject("cannot emit the record: field `huge`: integer outside the 64-bit range")
    # The exception's type and line, never its message (it quotes the value).
    assert isinstance(results[7], etl.Rejected)
    assert results[7].reason.startswith("ValueError in transform (test_sdk.py line ")
    assert "4111" not in results[7].reason


def test_a_record_that_cannot_be_encoded_leaves_nothing_behind():
    @etl.plugin(name="t", version="0", summary="s")
    class T:
        def transform(self, record):
            return etl.emit({"ok": 1}, {"bad": object()}) if record["k"] == 1 else record

    results = run(configure(T), [{"k": 1}, {"k": 2}])
    assert results[0] == etl.reject(
        "cannot emit the record: field `bad` is object; a record holds None, bool, int, float, str, dict and list"
    )
    assert results[1] == etl.emit({"k": 2})


@etl.plugin(name="keep-even", version="0", summary="keeps even n")
class KeepEven:
    def keep(self, record):
        return record["n"] % 2 == 0

KEEP_LINE = KeepEven.keep.__code__.co_firstlineno + 1


def test_keep_copies_kept_records_and_answers_unchanged_when_all_stay():
    step = configure(KeepEven)
    assert run(step, [{"n": 2, "s": "é"}, {"n": 1}, {"n": "x"}, {"m": 1}]) == [
        etl.emit({"n": 2, "s": "é"}),
        etl.drop(),
        etl.reject(f"TypeError in keep (test_sdk.py line {KEEP_LINE})"),
        etl.reject(f"KeyError in keep (test_sdk.py line {KEEP_LINE})"),
    ]
    batch = _codec.encode([{"n": 2}, {"n": 4}])
    assert step.transform(batch, lambda n: n, "drop", lambda why: why) is None


def test_transform_batch_must_answer_every_record():
    @etl.plugin(name="t", version="0", summary="s")
    class Short:
        def transform_batch(self, records):
            return records[:-1]

    assert run(configure(Short), [{"a": 1}, {"a": 2}]) == [etl.reject("transform_batch returned 0 results for 1 record")] * 2


def test_an_exception_in_transform_batch_costs_only_its_record():
    @etl.plugin(name="t", version="0", summary="s")
    class Fragile:
        def transform_batch(self, records):
            for r in records:
                r["a"] = 10 // r["a"]  # changes records before it fails
            return records

    results = run(configure(Fragile), [{"a": 1}, {"a": 0}, {"a": 5}])
    assert results[0] == etl.emit({"a": 10}) and results[2] == etl.emit({"a": 2})
    assert results[1].reason.startswith("ZeroDivisionError in transform_batch (test_sdk.py line ")


def test_a_plugin_defines_exactly_one_mode():
    with pytest.raises(TypeError, match="exactly one of transform, transform_batch and keep"):

        @etl.plugin(name="t", version="0", summary="s")
        class Two:
            def transform(self, r):
                return r

            def keep(self, r):
                return True


@dataclass
class Inner:
    name: str


@dataclass
class Params:
    """Params of a test plugin."""

    field: str = param(doc="The field.")
    mode: Literal["a", "b"] = "a"
    limit: Optional[int] = None
    ratio: float = 0.5
    names: list[str] = param(default_factory=list)
    table: dict[str, int] = param(default_factory=dict)
    inner: Optional[Inner] = None
    in_: Optional[list[str]] = param(None, name="in")


@etl.plugin(name="p", version="2.0.0", summary="params", params=Params)
class P:
    def __init__(self, p: Params):
        if p.limit is not None and p.limit < 0:
            raise ValueError("`limit` must be 0 or more")
        self.p = p

    def transform(self, record):
        return record


def test_params_schema():
    d = describe(P)
    assert (d["name"], d["version"], d["summary"]) == ("p", "2.0.0", "params")
    s = d["params_schema"]
    assert s["type"] == "object" and s["additionalProperties"] is False
    assert s["required"] == ["field"]
    assert s["description"] == "Params of a test plugin."
    props = s["properties"]
    assert props["field"] == {"type": "string", "description": "The field."}
    assert props["mode"] == {"enum": ["a", "b"], "default": "a"}
    assert props["limit"] == {"anyOf": [{"type": "integer"}, {"type": "null"}], "default": None}
    assert props["names"] == {"type": "array", "items": {"type": "string"}}
    assert props["table"] == {"type": "object", "additionalProperties": {"type": "integer"}}
    assert props["inner"]["anyOf"][0]["properties"] == {"name": {"type": "string"}}
    assert "in" in props and "in_" not in props


def test_params_load_and_errors_name_the_key():
    step = configure(P, {"field": "f", "ratio": 1, "inner": {"name": "x"}, "in": ["a"]})
    p = step.plugin.p
    assert (p.field, p.ratio, p.inner, p.in_, p.names) == ("f", 1.0, Inner("x"), ["a"], [])
    cases = [
        ({}, "missing key `field`"),
        ({"field": "f", "feild": 1}, "unknown key `feild`"),
        ({"field": 1}, "`field`: expected a string, got an integer"),
        ({"field": "f", "mode": "c"}, '`mode`: expected one of "a", "b", got "c"'),
        ({"field": "f", "inner": {"nam": "x"}}, "unknown key `inner.nam`"),
        ({"field": "f", "table": {"k": "v"}}, "`table.k`: expected an integer, got a string"),
        ({"field": "f", "limit": -1}, "`limit` must be 0 or more"),
    ]
    for params, message in cases:
        with pytest.raises(ValueError) as e:
            configure(P, params)
        assert message in str(e.value), (params, str(e.value))


def test_no_params_means_none_accepted():
    assert describe(Lower)["params_schema"]["additionalProperties"] is False
    with pytest.raises(etl.ParamsError, match="takes no params, but `x` given"):
        configure(Lower, {"x": 1})


def test_native_digests_match_the_host_vectors():
    assert etl.hex_digests("sha256", ["199.172.111.135", b"593-47-5928"]) == [
        "a6d0e2f27f6111e10b06790db42f34123e724aa0fd24b280f4a0ef5ee986784c",
        "4f00c1a807b673887c7af517d0df68e6b41aecf8cbec26c71fe4c580664669ed",
    ]
    assert etl.hex_digests("sha512", ["abc"])[0].startswith("ddaf35a193617aba")
    configure(Lower, secrets={"k": b"key"})
    assert etl.hex_digests("hmac-sha256", ["The quick brown fox jumps over the lazy dog"], secret="k") == [
        "f7bc83f430538424b13298e6aa6fb143ef4d59a14946175997479dbc2d1a3cd8"
    ]
    with pytest.raises(etl.DigestError, match="secret `other` is not granted"):
        etl.hex_digests("hmac-sha256", ["x"], secret="other")


def test_uniform_batches_take_the_column_path_and_round_trip():
    records = [
        {"s": "a", "i": -1, "f": 0.5, "b": True, "mixed": None, "u": "é"},
        {"s": "bb", "i": 2**63 - 1, "f": -0.0, "b": False, "mixed": "text", "u": "東京"},
        {"s": "", "i": 0, "f": 1e300, "b": True, "mixed": 3, "u": "x"},
    ]
    batch = _codec.encode(records)
    decoded, source = _codec.decode_columns(batch)
    assert source is not None and decoded == records
    again = _codec.encode_uniform(decoded, source)
    assert _codec.decode(again) == records
    # Unchanged columns are copied as cells: their spans point into the
    # input's arena, which leads the output's.
    assert again.text.startswith(batch.text)
    assert again.cell_values[0::6] == batch.cell_values[0::6]
    assert _codec.encode_uniform([{"a": 1}, {"b": 1}]) is None, "another shape"
    assert _codec.encode_uniform([{"a": 2**64}]) is None, "out of range: the slow path names it"
    assert _codec.encode_uniform([{"a": [1]}]) is None, "containers: the slow path"


@etl.plugin(name="upper-s", version="0", summary="s")
class UpperS:
    def transform(self, record):
        record["s"] = record["s"].upper()
        return record


def test_a_changed_column_is_encoded_and_the_others_copied():
    records = [{"s": "a", "t": "keep", "n": 1}, {"s": "ü", "t": "also", "n": -2}]
    assert run(configure(UpperS), records) == [
        etl.emit({"s": "A", "t": "keep", "n": 1}),
        etl.emit({"s": "Ü", "t": "also", "n": -2}),
    ]


@etl.plugin(name="seen", version="1.0.0", summary="Says which fields it was given", params=None)
class Seen:
    def projection(self):
        return ["v", "u"], ["w"]

    def transform(self, record):
        if "sneak" in record.get("v", ""):
            return {**record, "k": "mine"}
        return {"w": ",".join(record), **record}


def test_a_projected_step_sees_only_what_it_reads_and_the_rest_keep_their_place():
    step = configure(Seen)
    out = run(step, [{"v": "a", "k": 1, "u": "b", "z": 2}, {"k": 3}])
    # Its fields take the owned places in order, the rest after the last.
    assert list(out[0].records[0].items()) == [("w", "v,u"), ("k", 1), ("v", "a"), ("u", "b"), ("z", 2)]
    assert list(out[1].records[0].items()) == [("k", 3), ("w", "")]
    with pytest.raises(AssertionError, match="field `k` is not among the fields it declared"):
        run(step, [{"v": "sneak", "k": 1}])


def test_a_projection_that_is_not_two_lists_is_refused():
    @etl.plugin(name="bad", version="1.0.0", summary="x", params=None)
    class Bad:
        def projection(self):
            return "v"

        def transform(self, record):
            return record

    with pytest.raises(TypeError, match="two lists"):
        configure(Bad)
