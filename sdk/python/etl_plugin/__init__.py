"""Write ETL transform plugins in Python.

A plugin is a class decorated with `@plugin`, working on plain records
(dicts). It defines exactly one of:

- `transform(self, record)`: returns the record to emit (a dict),
  `emit(r1, r2, ...)` for several, `drop()`, or `reject("reason")`
  (raising `Reject("reason")` does the same);
- `transform_batch(self, records)`: returns a list of those, one per
  record, for steps that do one thing per batch (one `hex_digests` call
  for all the batch's values, say);
- `keep(self, record)`: True or False. Kept records pass byte for byte,
  and a batch where all are kept costs no encoding at all.

A plugin that uses a few of each record's fields may also define
`projection(self)`, returning `(reads, writes)`: the top-level fields it
reads and those it may add or replace besides. The host then gives it
records of only the fields it reads and keeps the others itself (less to
decode and encode); each record it emits may hold only fields of the two
lists. See `plugins/README.md`, "Declaring the fields a step uses".

Params are a dataclass given as `@plugin(params=Params)`; its JSON Schema
is what `host plugins inspect` prints and what `host check` checks the
pipeline's params against. `__init__(self, params)` gets the instance and
raises `ValueError("...")` to refuse params a schema cannot judge.

A reject reason is logged and shown on the status page: it names fields
and rules, never values. An exception escaping the plugin's code rejects
only its record, with a reason naming the exception's type and line, not
its message (messages often quote values). MemoryError, SystemExit and
KeyboardInterrupt are not caught: the call traps, the host throws the
instance away and isolates the record that caused it, as for a Rust panic.

The same code runs natively (`etl_plugin.testing`, for pytest) and inside
the component that `componentize-py` builds against the host's WIT.
"""

import json
import sys
from itertools import accumulate

from . import _codec
from ._params import ParamsError, param, schema

__all__ = [
    "plugin",
    "emit",
    "drop",
    "reject",
    "Reject",
    "Emitted",
    "Dropped",
    "Rejected",
    "hex_digests",
    "DigestError",
    "param",
    "ParamsError",
]

try:  # Inside the component: the bindings componentize-py generates.
    from wit_world.imports import host as _host  # type: ignore[import-not-found]
except ImportError:  # Natively: tests, with hashlib standing in for the host.
    _host = None


class Emitted:
    """The records one input record became (usually one)."""

    __slots__ = ("records",)

    def __init__(self, records):
        self.records = records

    def __eq__(self, other):
        return isinstance(other, Emitted) and list(self.records) == list(other.records)

    def __repr__(self):
        return "emit(" + ", ".join(repr(r) for r in self.records) + ")"


class Dropped:
    """Filtered out on purpose: counted, never a dead letter."""

    __slots__ = ()

    def __eq__(self, other):
        return isinstance(other, Dropped)

    def __repr__(self):
        return "drop()"


class Rejected:
    """Refused: the record becomes a dead letter with this reason."""

    __slots__ = ("reason",)

    def __init__(self, reason):
        self.reason = reason

    def __eq__(self, other):
        return isinstance(other, Rejected) and self.reason == other.reason

    def __repr__(self):
        return f"reject({self.reason!r})"


_DROPPED = Dropped()


def emit(*records):
    """One input record becomes these records (none counts as a drop)."""
    return Emitted(records)


def drop():
    """The record is filtered out."""
    return _DROPPED


def reject(reason):
    """The record is refused. The reason names fields and rules, never
    values: it is logged."""
    return Rejected(str(reason))


class Reject(Exception):
    """Raised from `transform`: the record is rejected with this reason."""

    def __init__(self, reason):
        super().__init__(reason)
        self.reason = str(reason)


class DigestError(Exception):
    """The host refused to hash (a secret not granted, too much at once)."""


_ALGORITHMS = {"sha256": 64, "sha512": 128, "hmac-sha256": 64}
# Secrets for native runs (etl_plugin.testing sets them); inside the
# component the key stays in the host and the plugin only names it.
_native_secrets = {}


def hex_digests(algorithm, values, secret=None):
    """Lowercase hex digests of `values` (str or bytes) in one call into
    the host: "sha256", "sha512", or "hmac-sha256" keyed by the secret the
    pipeline grants the step under the name `secret`."""
    width = _ALGORITHMS.get(algorithm)
    if width is None:
        raise ValueError(f"unknown algorithm {algorithm!r}; use sha256, sha512 or hmac-sha256")
    values = values if isinstance(values, list) else list(values)
    if all(type(v) is str for v in values):
        joined = "".join(values)
        data = joined.encode()
        if len(data) == len(joined):  # ASCII: a character is a byte
            ends = list(accumulate(map(len, values)))
        else:
            ends = list(accumulate(len(v.encode()) for v in values))
    else:
        data = b"".join(v.encode() if type(v) is str else bytes(v) for v in values)
        ends = list(accumulate(len(v.encode()) if type(v) is str else len(v) for v in values))
    if _host is not None:
        from componentize_py_types import Err  # type: ignore[import-not-found]

        which = {
            "sha256": _host.Algorithm.SHA256,
            "sha512": _host.Algorithm.SHA512,
            "hmac-sha256": _host.Algorithm.HMAC_SHA256,
        }[algorithm]
        try:
            out = _host.hex_digests(which, secret, bytes(data), ends)
        except Err as e:
            raise DigestError(str(e.value)) from None
        text = out.decode("ascii")
    else:
        text = _native_digests(algorithm, secret, bytes(data), ends)
    return [text[i : i + width] for i in range(0, len(text), width)]


def _native_digests(algorithm, secret, data, ends):
    import hashlib
    import hmac

    if algorithm == "hmac-sha256":
        if secret is None:
            raise DigestError("hmac-sha256 needs a secret")
        key = _native_secrets.get(secret)
        if key is None:
            raise DigestError(f"secret `{secret}` is not granted to this step")
    out = []
    start = 0
    for end in ends:
        chunk = data[start:end]
        start = end
        if algorithm == "sha256":
            out.append(hashlib.sha256(chunk).hexdigest())
        elif algorithm == "sha512":
            out.append(hashlib.sha512(chunk).hexdigest())
        else:
            out.append(hmac.new(key, chunk, hashlib.sha256).hexdigest())
    return "".join(out)


class _Meta:
    __slots__ = ("name", "version", "summary", "params", "mode")

    def __init__(self, name, version, summary, params, mode):
        self.name = name
        self.version = version
        self.summary = summary
        self.params = params
        self.mode = mode


def plugin(*, name, version, summary, params=None):
    """Declares a plugin class: its name, version and one-line summary (for
    `host plugins inspect`), and its params dataclass."""

    def wrap(cls):
        modes = [m for m in ("transform", "transform_batch", "keep") if callable(getattr(cls, m, None))]
        if len(modes) != 1:
            raise TypeError(
                f"plugin {cls.__name__} must define exactly one of transform, transform_batch and keep "
                f"(it defines {', '.join(modes) or 'none'})"
            )
        schema(params)  # an unsupported annotation fails here, at build time
        cls.__etl__ = _Meta(name, version, summary, params, modes[0])
        if _host is not None:
            from . import _component

            sys.modules[cls.__module__].WitWorld = _component.world(cls)
        return cls

    return wrap


def describe(cls):
    """(name, version, summary, params schema as JSON text)."""
    m = cls.__etl__
    return m.name, m.version, m.summary, json.dumps(schema(m.params), separators=(",", ":"))


class Step:
    """A configured plugin: what one instance of the component holds."""

    def __init__(self, cls, params_json):
        meta = getattr(cls, "__etl__", None)
        if meta is None:
            raise TypeError(f"{cls.__name__} is not decorated with @etl_plugin.plugin")
        params = json.loads(params_json) if isinstance(params_json, str) else params_json
        self.mode = meta.mode
        if meta.params is None:
            _load_params(None, params)
            self.plugin = cls()
        else:
            self.plugin = cls(_load_params(meta.params, params))
        self.projection = _projection(self.plugin)

    def transform(self, batch, emit_outcome, drop_outcome, reject_outcome):
        """None (every record passes unchanged), or (columns, outcomes)."""
        records, source = _codec.decode_columns(batch)
        if self.mode == "keep":
            return self._keep(batch, records, emit_outcome(1), drop_outcome, reject_outcome)
        if self.mode == "transform":
            f = self.plugin.transform
            results = []
            for r in records:
                try:
                    results.append(f(r))
                except Reject as e:
                    results.append(Rejected(e.reason))
                except MemoryError:
                    # Out of memory: the instance is not to be trusted; the
                    # host throws it away and isolates the record.
                    raise
                except Exception as e:  # noqa: BLE001 - one record's failure is its own
                    results.append(Rejected(_escaped(e, "transform")))
        else:
            try:
                results = self.plugin.transform_batch(records)
            except MemoryError:
                raise
            except Exception:  # noqa: BLE001 - isolated below
                results = None
            if not isinstance(results, list) or len(results) != len(records):
                results = self._one_by_one(batch)
        one = emit_outcome(1)
        if all(type(r) is dict for r in results):
            columns = _codec.encode_uniform(results, source)
            if columns is not None:
                return columns, [one] * len(results)
        else:
            emitted = []
            outcomes = []
            for result in results:
                t = type(result)
                if t is dict:
                    emitted.append(result)
                    outcomes.append(one)
                elif t is Emitted:
                    n = len(result.records)
                    emitted.extend(result.records)
                    outcomes.append(one if n == 1 else emit_outcome(n) if n else drop_outcome)
                elif t is Dropped:
                    outcomes.append(drop_outcome)
                elif t is Rejected:
                    outcomes.append(reject_outcome(result.reason))
                else:
                    break
            else:
                columns = _codec.encode_uniform(emitted)
                if columns is not None:
                    return columns, outcomes
        return self._encode_each(results, one, emit_outcome, drop_outcome, reject_outcome)

    def _encode_each(self, results, one, emit_outcome, drop_outcome, reject_outcome):
        """Record by record: what cannot be encoded (or is not a result)
        rejects its own record only, saying why."""
        enc = _codec.Encoder()
        outcomes = []
        for result in results:
            t = type(result)
            try:
                if t is dict:
                    enc.record(result)
                    outcomes.append(one)
                elif t is Emitted:
                    mark = enc.mark()
                    try:
                        for r in result.records:
                            enc.record(r)
                    except _codec.EncodeError:
                        enc.rollback(mark)
                        raise
                    n = len(result.records)
                    outcomes.append(one if n == 1 else emit_outcome(n) if n else drop_outcome)
                elif t is Dropped:
                    outcomes.append(drop_outcome)
                elif t is Rejected:
                    outcomes.append(reject_outcome(result.reason))
                elif isinstance(result, dict):
                    enc.record(result)
                    outcomes.append(one)
                else:
                    got = "None" if result is None else type(result).__name__
                    outcomes.append(
                        reject_outcome(f"{self.mode} returned {got}: return the record, emit(...), drop() or reject(reason)")
                    )
            except _codec.EncodeError as e:
                outcomes.append(reject_outcome(f"cannot emit the record: {e}"))
        return enc.columns(), outcomes

    def _one_by_one(self, batch):
        """After a transform_batch that raised or answered the wrong number
        of results: each record alone (decoded afresh: the failed call may
        have changed them), so one bad record fails only itself."""
        results = []
        for r in _codec.decode(batch):
            try:
                answer = self.plugin.transform_batch([r])
            except MemoryError:
                raise
            except Reject as e:
                answer = [Rejected(e.reason)]
            except Exception as e:  # noqa: BLE001
                answer = [Rejected(_escaped(e, "transform_batch"))]
            if not isinstance(answer, list) or len(answer) != 1:
                n = len(answer) if isinstance(answer, list) else type(answer).__name__
                answer = [Rejected(f"transform_batch returned {n} results for 1 record")]
            results.append(answer[0])
        return results

    def _keep(self, batch, records, one, drop_outcome, reject_outcome):
        f = self.plugin.keep
        verdicts = []
        for r in records:
            try:
                verdicts.append(bool(f(r)))
            except Reject as e:
                verdicts.append(Rejected(e.reason))
            except MemoryError:
                raise
            except Exception as e:  # noqa: BLE001
                verdicts.append(Rejected(_escaped(e, "keep")))
        if all(v is True for v in verdicts):
            return None
        enc = _codec.Encoder(batch.keys, batch.text)
        outcomes = []
        start = 0
        for v, n in zip(verdicts, batch.records):
            if v is True:
                enc.copy(batch, start, start + n)
                outcomes.append(one)
            elif v is False:
                outcomes.append(drop_outcome)
            else:
                outcomes.append(reject_outcome(v.reason))
            start += n
        return enc.columns(), outcomes


def _projection(plugin):
    """The configured plugin's `projection()`, as (reads, writes) lists of
    field names, or None."""
    declare = getattr(plugin, "projection", None)
    if not callable(declare):
        return None
    declared = declare()
    if declared is None:
        return None
    try:
        reads, writes = declared
        reads, writes = list(reads), list(writes)
    except (TypeError, ValueError):
        raise TypeError("projection() returns (reads, writes): two lists of field names, or None") from None
    if not all(isinstance(n, str) for n in reads + writes):
        raise TypeError("projection() names fields by their names (str)")
    return reads, writes


def _load_params(cls, params):
    from ._params import load

    return load(cls, params)


def _escaped(e, where):
    """A reason for an exception out of plugin code: its type and the line
    it came from in the plugin's own file, never its message."""
    tb = e.__traceback__
    line = None
    while tb is not None:
        name = tb.tb_frame.f_code.co_filename
        # The deepest frame of the plugin's own code (not the SDK's, not
        # the standard library's).
        if "etl_plugin" not in name and "/lib/python" not in name and not name.startswith("<"):
            line = f"{name.rsplit('/', 1)[-1]} line {tb.tb_lineno}"
        tb = tb.tb_next
    at = f" ({line})" if line else ""
    return f"{type(e).__name__} in {where}{at}"
