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
    """One result per input record: emit(...), drop() or reject(reason)."""
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
