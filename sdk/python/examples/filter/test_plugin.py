"""The Rust `filter`'s rules, natively."""

import pytest

from etl_plugin import drop, emit
from etl_plugin.testing import configure, run
from plugin import Filter


def kept(params, records):
    return [r == emit(rec) for r, rec in zip(run(configure(Filter, params), records), records)]


def test_all_conditions_of_the_fetch_fixture():
    params = {
        "all": [
            {"field": "device_type", "in": ["android", "ios"]},
            {"field": "app_version", "matches": r"^[2-9]\."},
            {"field": "locale", "is_null": False},
        ]
    }
    records = [
        {"device_type": "android", "app_version": "2.3.0", "locale": "RU"},
        {"device_type": "ios", "app_version": "0.96", "locale": "PH"},
        {"device_type": "ios", "app_version": "2.0.1", "locale": None},
        {"device_type": "web", "app_version": "3.0", "locale": "US"},
    ]
    assert kept(params, records) == [True, False, False, False]


def test_types_compare_strictly_but_numbers_by_value():
    records = [{"n": 5}, {"n": 5.0}, {"n": "5"}, {"n": True}, {}, {"n": None}]
    assert kept({"all": [{"field": "n", "equals": 5}]}, records) == [True, True, False, False, False, False]
    assert kept({"all": [{"field": "n", "not_equals": 5}]}, records) == [False, False, True, True, True, True]
    assert kept({"all": [{"field": "n", "equals": True}]}, records) == [False, False, False, True, False, False]
    assert kept({"all": [{"field": "n", "gte": 5}]}, records) == [True, True, False, False, False, False]
    assert kept({"all": [{"field": "n", "is_null": True}]}, records) == [False] * 4 + [True, True]


def test_any_and_keep_false():
    params = {"any": [{"field": "n", "gte": 10}, {"field": "n", "is_null": True}], "keep": False}
    results = run(configure(Filter, params), [{"n": 10}, {"n": 3}, {}])
    assert results == [drop(), emit({"n": 3}), drop()]


@pytest.mark.parametrize(
    "params, message",
    [
        ({"all": [{"field": "a", "equals": 1}], "any": [{"field": "a", "equals": 1}]}, "give `all` or `any`, not both"),
        ({}, "give the conditions as `all = [...]` or `any = [...]`"),
        ({"all": []}, "`all` must hold at least one condition"),
        ({"all": [{"field": "a"}]}, "condition 1 (`a`) needs exactly one test"),
        ({"any": [{"field": "a", "matches": "("}]}, "condition 1 (`a`): `matches`:"),
        ({"all": [{"field": "a", "equal": 1}]}, "unknown key `all[0].equal`"),
    ],
)
def test_bad_parameters_say_what_is_wrong(params, message):
    with pytest.raises(ValueError) as e:
        configure(Filter, params)
    assert message in str(e.value)
