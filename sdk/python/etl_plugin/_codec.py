"""The column batch of `wit/transform.wit`, to and from plain records.

Decoding builds one dict per record in one pass over the cells; encoding
writes the output columns in one pass over the records. Both run once per
batch, inside the component as natively in tests, so the tests exercise
the codec the component uses.
"""

import struct

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
    keys = batch.keys
    cell_keys = batch.cell_keys
    kinds = batch.cell_kinds
    values = batch.cell_values
    raw = batch.text
    if raw.isascii():
        # One decode for the whole arena; byte offsets are then str offsets.
        arena = raw.decode("ascii")

        def text(v):
            o = v >> 32
            return arena[o : o + (v & _LOW32)]
    else:
        arena = None

        def text(v):
            o = v >> 32
            return raw[o : o + (v & _LOW32)].decode("utf-8")

    def scalar(kind, v):
        if kind == TEXT:
            return text(v)
        if kind == INTEGER:
            return v - (1 << 64) if v & _SIGN else v
        if kind == NULL:
            return None
        if kind == BOOLEAN:
            return v != 0
        if kind == FLOAT:
            return _F64.unpack(_U64S.pack(v))[0]
        raise ValueError(f"unknown cell kind {kind}")

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
                if arena is not None:
                    o = v >> 32
                    record[keys[cell_keys[i]]] = arena[o : o + (v & _LOW32)]
                else:
                    record[keys[cell_keys[i]]] = text(v)
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
