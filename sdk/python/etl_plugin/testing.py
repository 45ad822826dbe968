"""Run a plugin natively, through the same codec the component uses:

    from etl_plugin import emit, drop, reject
    from etl_plugin.testing import configure, run

    step = configure(Mask, {"fields": ["ip"]}, secrets={"ip-key": b"k"})
    assert run(step, [{"ip": "1.2.3.4"}]) == [emit({"ip": "..."})]

`hex_digests` runs on hashlib here, with the secrets given to
`configure` standing in for the ones a pipeline grants.
"""

import json

from . import Dropped, Emitted, Rejected, Step, _codec, describe as _describe
from . import _native_secrets


def configure(cls, params=None, *, secrets=None):
    """The configured step, as the host's `configure` makes it; raises
    ParamsError or ValueError naming what is wrong."""
    _native_secrets.clear()
    for name, key in (secrets or {}).items():
        _native_secrets[name] = key.encode() if isinstance(key, str) else bytes(key)
    return Step(cls, json.dumps(params if params is not None else {}))


def run(step, records):
    """One result per input record: emit(...), drop() or reject(reason).
    A step with a `projection()` is given only the fields it reads, and
    its records are completed as the host completes them (raising
    AssertionError for a field it emits without declaring it)."""
    if step.projection is None:
        return _run(step, records)
    reads, writes = step.projection
    owned = set(reads) | set(writes)
    given = [{k: v for k, v in r.items() if k in reads} for r in records]
    results = _run(step, given)
    for i, result in enumerate(results):
        if isinstance(result, Emitted):
            results[i] = Emitted(tuple(_merge(records[i], r, owned) for r in result.records))
    return results


def _merge(record, emitted, owned):
    """`emitted` completed with `record`'s fields the step does not own:
    those keep their place, the step's fields take the owned fields'
    places in order, the rest after the last of those (or at the end)."""
    for k in emitted:
        if k not in owned:
            raise AssertionError(f"field `{k}` is not among the fields it declared (reads and writes)")
    places = sum(1 for k in record if k in owned)
    mine = list(emitted.items())
    out = {}
    seen = 0
    for k, v in record.items():
        if k not in owned:
            out[k] = v
            continue
        seen += 1
        take = mine if seen == places else mine[:1]
        for name, value in take:
            out[name] = value
        mine = mine[len(take) :]
    for name, value in mine:
        out[name] = value
    return out


def _run(step, records):
    batch = _codec.encode(records)
    out = step.transform(batch, lambda n: ("emit", n), ("drop",), lambda why: ("reject", why))
    if out is None:
        return [Emitted((r,)) for r in _codec.decode(batch)]
    columns, outcomes = out
    if len(outcomes) != len(records):
        raise AssertionError(f"{len(outcomes)} outcomes for {len(records)} records")
    emitted = _codec.decode(columns)
    results = []
    at = 0
    for o in outcomes:
        if o[0] == "emit":
            results.append(Emitted(tuple(emitted[at : at + o[1]])))
            at += o[1]
        elif o[0] == "drop":
            results.append(Dropped())
        else:
            results.append(Rejected(o[1]))
    if at != len(emitted):
        raise AssertionError(f"outcomes emit {at} records, the batch holds {len(emitted)}")
    return results


def describe(cls):
    """{"name", "version", "summary", "params_schema"} as the host sees them."""
    name, version, summary, schema = _describe(cls)
    return {"name": name, "version": version, "summary": summary, "params_schema": json.loads(schema)}
