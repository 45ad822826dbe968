"""A step's params: a dataclass declares them, this module makes its JSON
Schema (carried by `describe`, checked by the host before `configure`)
and turns the params' JSON into an instance, naming the key that is wrong.

Supported annotations: str, int, float, bool, None, Any, list[X],
dict[str, X], Literal[...], Optional[X] / X | None, unions of these, and
nested dataclasses. A field's description is `param(doc="...")`.
"""

import dataclasses
import json
import types
import typing

_MISSING = dataclasses.MISSING


def param(default=_MISSING, *, default_factory=_MISSING, doc=None, name=None):
    """A dataclass field with a description for the schema, and the key it
    has in the params when that is not its Python name (`in`, say)."""
    metadata = {}
    if doc:
        metadata["doc"] = doc
    if name:
        metadata["name"] = name
    if default_factory is not _MISSING:
        return dataclasses.field(default_factory=default_factory, metadata=metadata)
    return dataclasses.field(default=default, metadata=metadata)


def schema(cls):
    """The JSON Schema (draft 2020-12) of the params dataclass `cls`, or of
    an empty object when `cls` is None."""
    if cls is None:
        return {
            "$schema": "https://json-schema.org/draft/2020-12/schema",
            "type": "object",
            "additionalProperties": False,
        }
    s = _object(cls)
    s["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    s.setdefault("title", cls.__name__)
    return s


def _object(cls):
    if not dataclasses.is_dataclass(cls):
        raise TypeError(f"params must be a dataclass, not {cls!r}")
    hints = typing.get_type_hints(cls)
    properties = {}
    required = []
    for f in dataclasses.fields(cls):
        p = _type(hints[f.name])
        doc = f.metadata.get("doc")
        if doc:
            p = dict(p, description=doc)
        if f.default is not _MISSING:
            if _jsonable(f.default):
                p = dict(p, default=f.default)
        elif f.default_factory is _MISSING:
            required.append(_key(f))
        properties[_key(f)] = p
    s = {"type": "object", "properties": properties, "additionalProperties": False}
    if required:
        s["required"] = required
    doc = (cls.__doc__ or "").strip()
    if doc and not doc.startswith(cls.__name__ + "("):
        s["description"] = doc
    return s


def _key(f):
    """The params key of dataclass field `f`."""
    return f.metadata.get("name", f.name)


def _jsonable(v):
    try:
        json.dumps(v)
        return True
    except (TypeError, ValueError):
        return False


def _type(t):
    if t is str:
        return {"type": "string"}
    if t is bool:
        return {"type": "boolean"}
    if t is int:
        return {"type": "integer"}
    if t is float:
        return {"type": "number"}
    if t is type(None) or t is None:
        return {"type": "null"}
    if t is typing.Any:
        return {}
    if dataclasses.is_dataclass(t):
        return _object(t)
    origin = typing.get_origin(t)
    args = typing.get_args(t)
    if origin is typing.Literal:
        return {"enum": list(args)}
    if origin in (typing.Union, types.UnionType):
        return {"anyOf": [_type(a) for a in args]}
    if origin is list:
        return {"type": "array", "items": _type(args[0]) if args else {}}
    if origin is dict:
        if args and args[0] is not str:
            raise TypeError(f"params: dict keys must be str, not {args[0]!r}")
        return {"type": "object", "additionalProperties": _type(args[1]) if args else {}}
    raise TypeError(f"params: cannot make a schema of {t!r}")


class ParamsError(ValueError):
    """Params that do not fit the dataclass; the message names the key."""


def load(cls, params):
    """An instance of `cls` from the params' JSON value (a dict)."""
    if cls is None:
        if params not in (None, {}):
            keys = ", ".join(f"`{k}`" for k in params) if isinstance(params, dict) else "a value"
            raise ParamsError(f"this plugin takes no params, but {keys} given")
        return None
    return _load(cls, params if params is not None else {}, "")


def _where(path):
    return f"`{path}`" if path else "params"


def _load(t, v, path):
    if t is typing.Any:
        return v
    if dataclasses.is_dataclass(t):
        if not isinstance(v, dict):
            raise ParamsError(f"{_where(path)}: expected a table, got {_kind(v)}")
        hints = typing.get_type_hints(t)
        names = {_key(f) for f in dataclasses.fields(t)}
        for k in v:
            if k not in names:
                known = ", ".join(sorted(names)) or "none"
                raise ParamsError(f"unknown key `{_join(path, k)}` (known: {known})")
        kwargs = {}
        for f in dataclasses.fields(t):
            key = _key(f)
            if key in v:
                kwargs[f.name] = _load(hints[f.name], v[key], _join(path, key))
            elif f.default is _MISSING and f.default_factory is _MISSING:
                raise ParamsError(f"missing key `{_join(path, key)}`")
        return t(**kwargs)
    origin = typing.get_origin(t)
    args = typing.get_args(t)
    if origin is typing.Literal:
        if v in args and type(v) in {type(a) for a in args}:
            return v
        choices = ", ".join(json.dumps(a) for a in args)
        raise ParamsError(f"{_where(path)}: expected one of {choices}, got {json.dumps(v)}")
    if origin in (typing.Union, types.UnionType):
        errors = []
        for a in args:
            try:
                return _load(a, v, path)
            except ParamsError as e:
                errors.append(str(e))
        raise ParamsError(f"{_where(path)}: fits none of its types ({'; '.join(errors)})")
    if origin is list:
        if not isinstance(v, list):
            raise ParamsError(f"{_where(path)}: expected a list, got {_kind(v)}")
        item = args[0] if args else typing.Any
        return [_load(item, x, f"{path}[{i}]") for i, x in enumerate(v)]
    if origin is dict:
        if not isinstance(v, dict):
            raise ParamsError(f"{_where(path)}: expected a table, got {_kind(v)}")
        item = args[1] if args else typing.Any
        return {k: _load(item, x, _join(path, k)) for k, x in v.items()}
    if t is type(None) or t is None:
        if v is None:
            return None
        raise ParamsError(f"{_where(path)}: expected null, got {_kind(v)}")
    if t is bool:
        if type(v) is bool:
            return v
    elif t is int:
        if type(v) is int:
            return v
    elif t is float:
        if type(v) in (int, float):
            return float(v)
    elif t is str:
        if type(v) is str:
            return v
    else:
        raise ParamsError(f"{_where(path)}: unsupported type {t!r}")
    raise ParamsError(f"{_where(path)}: expected {_NAMES[t]}, got {_kind(v)}")


_NAMES = {bool: "a boolean", int: "an integer", float: "a number", str: "a string"}


def _kind(v):
    if v is None:
        return "null"
    return {bool: "a boolean", int: "an integer", float: "a number", str: "a string", list: "a list", dict: "a table"}.get(
        type(v), type(v).__name__
    )


def _join(path, key):
    return f"{path}.{key}" if path else key
