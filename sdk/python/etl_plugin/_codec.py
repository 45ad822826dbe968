"""The column batch of `wit/transform.wit`, to and from plain records.

Decoding builds one dict per record in one pass over the cells; encoding
writes the output columns in one pass over the records. Both run once per
batch, inside the component as natively in tests, so the tests exercise
the codec the component uses.
"""

import struct
from itertools import accumulate
from operator import is_

NULL, BOOLEAN, INTEGER, FLOAT, TEXT, OBJECT, ARRAY = range(7)
NO_KEY = 0xFFFF_FFFF
_LOW32 = 0xFFFF_FFFF
_U64 = 0xFFFF_FFFF_FFFF_FFFF
_I64_MIN = -(1 << 63)
_I64_MAX = (1 << 63) - 1
_SIGN = 1 << 63
_F64 = struct.Struct("<d")
_U64S = struct.Struct("<Q")


class Columns:
    """A batch's six columns, whatever carries them (the WIT `batch` record
    inside the component, this class in native tests)."""

    __slots__ = ("keys", "text", "cell_keys", "cell_kinds", "cell_values", "records")

    def __init__(self, keys, text, cell_keys, cell_kinds, cell_values, records):
        self.keys = keys
        self.text = text
        self.cell_keys = cell_keys
        self.cell_kinds = cell_kinds
        self.cell_values = cell_values
        self.records = records


def decode(batch):
    """The batch's records as dicts (objects as dicts, arrays as lists)."""
    return decode_columns(batch)[0]


class Source:
    """A uniform batch as decoded: its columns, so that an output column
    still holding the very same values is copied as cells, not encoded."""

    __slots__ = ("batch", "names", "columns", "index")

    def __init__(self, batch, names, columns):
        self.batch = batch
        self.names = names
        self.columns = columns
        self.index = {name: i for i, name in enumerate(names)}


def decode_columns(batch):
    """(records, Source or None)."""
    kinds = batch.cell_kinds
    if OBJECT not in kinds and ARRAY not in kinds:
        decoded = _decode_uniform(batch)
        if decoded is not None:
            return decoded
    return _decode(batch), None


# Record makers by field names: a compiled dict display builds a record
# about twice as fast as dict(zip()).
_MAKERS = {}


def _maker(names):
    make = _MAKERS.get(names)
    if make is None:
        if len(_MAKERS) > 64:
            _MAKERS.clear()
        args = ", ".join(f"v{i}" for i in range(len(names)))
        # repr() of a str is a str literal, whatever the name holds.
        body = ", ".join(f"{name!r}: v{i}" for i, name in enumerate(names))
        make = eval(f"lambda {args}: {{{body}}}")  # noqa: S307 - built from str literals only
        _MAKERS[names] = make
    return make


def _decode_uniform(batch):
    """Records that all have the same fields in the same order, of scalars
    (the usual batch: JSON lines of one producer), column by column with
    extended slices; None for other batches."""
    counts = batch.records
    r = len(counts)
    if r == 0:
        return [], None
    n = counts[0]
    cell_keys = batch.cell_keys
    if counts.count(n) != r or (n and cell_keys != cell_keys[:n] * r):
        return None
    names = tuple(batch.keys[k] for k in cell_keys[:n])
    if len(set(names)) != n or any(type(k) is not str for k in names):
        return None
    raw = batch.text
    ascii = raw.isascii()
    arena = raw.decode("ascii") if ascii else raw
    kinds = batch.cell_kinds
    values = batch.cell_values
    columns = []
    for j in range(n):
        kj = kinds[j::n]
        vj = values[j::n]
        if kj.count(TEXT) == r:
            if ascii:
                column = [arena[(o := v >> 32) : o + (v & _LOW32)] for v in vj]
            else:
                column = [raw[(o := v >> 32) : o + (v & _LOW32)].decode("utf-8") for v in vj]
        elif kj.count(INTEGER) == r and max(vj) < _SIGN:
            column = vj
        else:
            column = [_scalar(k, v, arena, ascii) for k, v in zip(kj, vj)]
        columns.append(column)
    if n == 0:
        return [{} for _ in range(r)], None
    if n > 200:
        return [dict(zip(names, row)) for row in zip(*columns)], Source(batch, names, columns)
    return list(map(_maker(names), *columns)), Source(batch, names, columns)


def _scalar(kind, v, arena, ascii):
    if kind == TEXT:
        o = v >> 32
        return arena[o : o + (v & _LOW32)] if ascii else arena[o : o + (v & _LOW32)].decode("utf-8")
    if kind == INTEGER:
        return v - (1 << 64) if v & _SIGN else v
    if kind == NULL:
        return None
    if kind == BOOLEAN:
        return v != 0
    if kind == FLOAT:
        return _F64.unpack(_U64S.pack(v))[0]
    raise ValueError(f"unknown cell kind {kind}")


def _decode(batch):
    keys = batch.keys
    cell_keys = batch.cell_keys
    kinds = batch.cell_kinds
    values = batch.cell_values
    raw = batch.text
    # One decode for the whole arena when it is ASCII: byte offsets are
    # then str offsets.
    ascii = raw.isascii()
    arena = raw.decode("ascii") if ascii else raw

    def scalar(kind, v):
        return _scalar(kind, v, arena, ascii)

    def container(i):
        """The object or array at cell i, and the cell after it."""
        kind = kinds[i]
        end = i + 1 + values[i]
        i += 1
        if kind == ARRAY:
            items = []
            while i < end:
                k = kinds[i]
                if k >= OBJECT:
                    item, i = container(i)
                else:
                    item = scalar(k, values[i])
                    i += 1
                items.append(item)
            return items, end
        members = {}
        while i < end:
            k = kinds[i]
            if k >= OBJECT:
                members[keys[cell_keys[i]]], i = container(i)
            else:
                members[keys[cell_keys[i]]] = scalar(k, values[i])
                i += 1
        return members, end

    out = []
    append = out.append
    i = 0
    for n in batch.records:
        end = i + n
        record = {}
        while i < end:
            k = kinds[i]
            # The common kinds inline: this loop is the decoder's cost.
            if k == TEXT:
                v = values[i]
                if ascii:
                    o = v >> 32
                    record[keys[cell_keys[i]]] = arena[o : o + (v & _LOW32)]
                else:
                    record[keys[cell_keys[i]]] = _scalar(TEXT, v, arena, False)
                i += 1
            elif k >= OBJECT:
                record[keys[cell_keys[i]]], i = container(i)
            else:
                record[keys[cell_keys[i]]] = scalar(k, values[i])
                i += 1
        append(record)
    return out


class EncodeError(Exception):
    """A record the batch cannot carry; the message names the field and the
    type, never the value."""


class Encoder:
    """Output columns built record by record. `keys` and `text` may start
    as the input's, so that kept records' cells are copied as they are."""

    __slots__ = ("keys", "key_ix", "text", "cell_keys", "cell_kinds", "cell_values", "records")

    def __init__(self, keys=None, text=b""):
        self.keys = list(keys) if keys else []
        self.key_ix = {k: i for i, k in enumerate(self.keys)}
        self.text = bytearray(text)
        self.cell_keys = []
        self.cell_kinds = bytearray()
        self.cell_values = []
        self.records = []

    def key(self, name):
        ix = self.key_ix.get(name)
        if ix is None:
            if type(name) is not str:
                raise EncodeError(f"a field name is {type(name).__name__}, not str")
            ix = len(self.keys)
            self.keys.append(name)
            self.key_ix[name] = ix
        return ix

    def record(self, record):
        """Appends one record (a dict); on an error nothing of it stays."""
        if type(record) is not dict and not isinstance(record, dict):
            raise EncodeError(f"a record is {type(record).__name__}, not dict")
        mark = (len(self.cell_keys), len(self.text))
        try:
            self._members(record)
        except EncodeError:
            self._truncate(mark)
            raise
        except RecursionError:
            self._truncate(mark)
            raise EncodeError("a record nests too deep") from None
        except UnicodeEncodeError:
            self._truncate(mark)
            raise EncodeError("a text holds a lone surrogate, which UTF-8 cannot carry") from None
        self.records.append(len(self.cell_keys) - mark[0])

    def mark(self):
        return (len(self.cell_keys), len(self.text), len(self.records))

    def rollback(self, mark):
        self._truncate(mark[:2])
        del self.records[mark[2]:]

    def copy(self, batch, start, end):
        """Appends cells [start, end) of `batch` as one record; the encoder
        must have started from the batch's keys and text."""
        self.cell_keys += batch.cell_keys[start:end]
        self.cell_kinds += batch.cell_kinds[start:end]
        self.cell_values += batch.cell_values[start:end]
        self.records.append(end - start)

    def _truncate(self, mark):
        cells, text = mark
        del self.cell_keys[cells:]
        del self.cell_kinds[cells:]
        del self.cell_values[cells:]
        del self.text[text:]

    def _members(self, members):
        key_ix = self.key_ix
        cell_keys = self.cell_keys
        kinds = self.cell_kinds
        values = self.cell_values
        text = self.text
        for name, v in members.items():
            k = key_ix.get(name)
            if k is None:
                k = self.key(name)
            t = type(v)
            if t is str:
                b = v.encode()
                values.append(len(text) << 32 | len(b))
                text += b
                kinds.append(TEXT)
            elif t is int:
                if v < _I64_MIN or v > _I64_MAX:
                    raise EncodeError(f"field `{name}`: integer outside the 64-bit range")
                values.append(v & _U64)
                kinds.append(INTEGER)
            elif v is None:
                values.append(0)
                kinds.append(NULL)
            elif t is bool:
                values.append(1 if v else 0)
                kinds.append(BOOLEAN)
            elif t is float:
                values.append(_U64S.unpack(_F64.pack(v))[0])
                kinds.append(FLOAT)
            else:
                cell_keys.append(k)
                self._other(name, v)
                continue
            cell_keys.append(k)

    def _other(self, name, v):
        """A container, or a subclass of a scalar type; the cell's key is
        already pushed."""
        kinds = self.cell_kinds
        values = self.cell_values
        if isinstance(v, dict):
            at = len(values)
            kinds.append(OBJECT)
            values.append(0)
            self._members(v)
            values[at] = len(values) - at - 1
        elif isinstance(v, (list, tuple)):
            at = len(values)
            kinds.append(ARRAY)
            values.append(0)
            for item in v:
                self._members_item(name, item)
            values[at] = len(values) - at - 1
        elif isinstance(v, bool):
            kinds.append(BOOLEAN)
            values.append(1 if v else 0)
        elif isinstance(v, int):
            self.cell_keys.pop()
            self._members({name: int(v)})
        elif isinstance(v, float):
            self.cell_keys.pop()
            self._members({name: float(v)})
        elif isinstance(v, str):
            self.cell_keys.pop()
            self._members({name: str(v)})
        else:
            raise EncodeError(
                f"field `{name}` is {type(v).__name__}; a record holds None, bool, int, float, str, dict and list"
            )

    def _members_item(self, name, item):
        """One array element: a cell with no key."""
        n = len(self.cell_keys)
        self._members({name: item})
        self.cell_keys[n] = NO_KEY

    def columns(self):
        return Columns(
            self.keys,
            bytes(self.text),
            self.cell_keys,
            bytes(self.cell_kinds),
            self.cell_values,
            self.records,
        )


def encode(records):
    """A batch holding `records` (native tests and fixtures)."""
    e = Encoder()
    for r in records:
        e.record(r)
    return e.columns()


_SCALARS = {str: TEXT, int: INTEGER, type(None): NULL, bool: BOOLEAN, float: FLOAT}
_TEXT_BYTE = bytes([TEXT])
_INTEGER_BYTE = bytes([INTEGER])


def encode_uniform(records, source=None):
    """`records` as columns, field by field with extended slices, when they
    are dicts that all have the same str keys in the same order and hold
    scalars (None, bool, int in range, float, str): the usual output. None
    otherwise: the caller then encodes record by record, which names what
    is wrong with a record."""
    r = len(records)
    if r == 0:
        return Columns([], b"", [], b"", [], [])
    shape = tuple(records[0])
    if list(map(tuple, records)).count(shape) != r or any(type(k) is not str for k in shape):
        return None
    n = len(shape)
    cell_values = [0] * (r * n)
    cell_kinds = bytearray(r * n)
    pieces = []
    base = 0
    if source is not None and len(source.batch.records) == r:
        # The input's arena first: unchanged columns keep their spans.
        pieces.append(source.batch.text)
        base = len(source.batch.text)
        index = source.index
        n_in = len(source.names)
    else:
        index = {}
    for j, column in enumerate(zip(*map(dict.values, records))):
        i = index.get(shape[j])
        if i is not None and all(map(is_, column, source.columns[i])):
            cell_values[j::n] = source.batch.cell_values[i::n_in]
            cell_kinds[j::n] = source.batch.cell_kinds[i::n_in]
            continue
        types = set(map(type, column))
        if types == {str}:
            try:
                joined = "".join(column).encode()
            except UnicodeEncodeError:
                return None
            lens = list(map(len, column)) if len(joined) == sum(map(len, column)) else [len(s.encode()) for s in column]
            starts = accumulate(lens, initial=base)
            cell_values[j::n] = [o << 32 | m for o, m in zip(starts, lens)]
            cell_kinds[j::n] = _TEXT_BYTE * r
            pieces.append(joined)
            base += len(joined)
        elif types == {int}:
            if min(column) < _I64_MIN or max(column) > _I64_MAX:
                return None
            cell_values[j::n] = column if min(column) >= 0 else [v & _U64 for v in column]
            cell_kinds[j::n] = _INTEGER_BYTE * r
        elif types <= _SCALARS.keys():
            vals = []
            for v in column:
                t = type(v)
                if t is str:
                    try:
                        b = v.encode()
                    except UnicodeEncodeError:
                        return None
                    vals.append(base << 32 | len(b))
                    pieces.append(b)
                    base += len(b)
                elif t is int:
                    if v < _I64_MIN or v > _I64_MAX:
                        return None
                    vals.append(v & _U64)
                elif v is None:
                    vals.append(0)
                elif t is bool:
                    vals.append(1 if v else 0)
                else:
                    vals.append(_U64S.unpack(_F64.pack(v))[0])
            cell_values[j::n] = vals
            cell_kinds[j::n] = bytes(map(_SCALARS.__getitem__, map(type, column)))
        else:
            return None
    return Columns(list(shape), b"".join(pieces), list(range(n)) * r, bytes(cell_kinds), cell_values, [n] * r)
