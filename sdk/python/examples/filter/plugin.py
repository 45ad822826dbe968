"""`py-filter`: the standard `filter` in Python. Keeps (or drops) the
records that meet conditions on their top-level fields: `equals`,
`not_equals`, `in`, `not_in` (scalars compared with their type: the text
"5" is not the number 5, but 5 and 5.0 are equal), `matches` (a Python
`re` pattern searched in the text; the Rust `filter` uses Rust's `regex`
syntax, which differs in places), `is_null`, `gt`, `gte`, `lt`, `lte`.
`all` needs every condition, `any` one; `keep = false` drops the records
that meet them instead. A record left out is dropped, never a dead letter.
Kept records pass byte for byte.
"""

import re
from dataclasses import dataclass
from typing import Optional, Union

import etl_plugin as etl
from etl_plugin import param

Scalar = Union[bool, int, float, str]


@dataclass
class Condition:
    """One test on one field; exactly one of the tests is set."""

    field: str = param(doc="A top-level field name.")
    equals: Optional[Scalar] = None
    not_equals: Optional[Scalar] = None
    in_: Optional[list[Scalar]] = param(None, name="in")
    not_in: Optional[list[Scalar]] = None
    matches: Optional[str] = param(None, doc="A regular expression (Python `re`) searched in the text.")
    is_null: Optional[bool] = None
    gt: Optional[float] = None
    gte: Optional[float] = None
    lt: Optional[float] = None
    lte: Optional[float] = None


@dataclass
class Params:
    all: Optional[list[Condition]] = param(None, doc="Every condition must hold.")
    any: Optional[list[Condition]] = param(None, doc="At least one condition must hold.")
    keep: bool = param(True, doc="Keep the records that meet the conditions (default), or drop them (false).")


def _equal(v, s):
    """Numbers compare by value across int and float; other types only
    with their own (True is not 1 here)."""
    tv, ts = type(v), type(s)
    if tv is bool or ts is bool:
        return tv is ts and v == s
    if tv in (int, float) and ts in (int, float):
        return v == s
    return tv is str and ts is str and v == s


def _rule(n, c):
    tests = []
    if c.equals is not None:
        tests.append(lambda v, s=c.equals: v is not _ABSENT and _equal(v, s))
    if c.not_equals is not None:
        tests.append(lambda v, s=c.not_equals: not (v is not _ABSENT and _equal(v, s)))
    if c.in_ is not None:
        tests.append(lambda v, xs=c.in_: v is not _ABSENT and any(_equal(v, s) for s in xs))
    if c.not_in is not None:
        tests.append(lambda v, xs=c.not_in: not (v is not _ABSENT and any(_equal(v, s) for s in xs)))
    if c.matches is not None:
        try:
            pattern = re.compile(c.matches)
        except re.error as e:
            raise ValueError(f"condition {n} (`{c.field}`): `matches`: {e}") from None
        tests.append(lambda v, p=pattern: type(v) is str and p.search(v) is not None)
    if c.is_null is not None:
        tests.append(lambda v, want=c.is_null: (v is _ABSENT or v is None) == want)
    for bound, test in (
        (c.gt, lambda x, b: x > b),
        (c.gte, lambda x, b: x >= b),
        (c.lt, lambda x, b: x < b),
        (c.lte, lambda x, b: x <= b),
    ):
        if bound is not None:
            tests.append(lambda v, b=bound, t=test: type(v) in (int, float) and t(v, b))
    if len(tests) != 1:
        raise ValueError(
            f"condition {n} (`{c.field}`) needs exactly one test (equals, not_equals, in, not_in, matches, "
            f"is_null, gt, gte, lt, lte); it has {len(tests)}"
        )
    return c.field, tests[0]


_ABSENT = object()


@etl.plugin(
    name="py-filter",
    version="0.1.0",
    summary="Keeps or drops records by conditions on their fields (all or any)",
    params=Params,
)
class Filter:
    def __init__(self, p: Params):
        if p.all is not None and p.any is not None:
            raise ValueError("give `all` or `any`, not both")
        if p.all is None and p.any is None:
            raise ValueError("give the conditions as `all = [...]` or `any = [...]`")
        conditions = p.all if p.all is not None else p.any
        self.all = p.all is not None
        if not conditions:
            raise ValueError(f"`{'all' if self.all else 'any'}` must hold at least one condition")
        self.rules = [_rule(i + 1, c) for i, c in enumerate(conditions)]
        self.keep_met = p.keep

    def projection(self):
        # Reads the fields of its conditions and writes none: a kept
        # record's other fields stay in the host.
        return [field for field, _ in self.rules], []

    def keep(self, record):
        get = record.get
        if self.all:
            met = all(test(get(field, _ABSENT)) for field, test in self.rules)
        else:
            met = any(test(get(field, _ABSENT)) for field, test in self.rules)
        return met == self.keep_met
