"""`py-mask`: the standard `mask` in Python. Replaces text fields by
lowercase hex digests of their UTF-8 bytes, hashed by the host in one call
per batch: sha256 or sha512 (unsalted: equal inputs give equal outputs,
which is not anonymisation), or hmac-sha256 keyed by a secret the pipeline
grants the step (the key stays in the host).

Null stays null; a non-text value is rejected; a missing field is rejected
unless `missing = "null"`. Gives the same rows as the Rust `mask`.
"""

from dataclasses import dataclass
from typing import Literal, Optional, Union

import etl_plugin as etl
from etl_plugin import param


@dataclass
class Params:
    fields: Union[list[str], dict[str, str]] = param(
        doc='Fields to mask: a list (masked in place) or a table `field = "output"`.'
    )
    algorithm: Literal["sha256", "sha512", "hmac-sha256"] = "sha256"
    secret: Optional[str] = param(None, doc="Name of the secret granted to the step (hmac-sha256 only).")
    keep_original: bool = param(False, doc="Keep the raw field next to its masked output.")
    missing: Literal["reject", "null"] = "reject"


_NULL = -1
_MISSING = -2
_ABSENT = object()


@etl.plugin(
    name="py-mask",
    version="0.1.0",
    summary="Replaces text fields by hex SHA-256, SHA-512 or keyed HMAC-SHA-256 digests",
    params=Params,
)
class Mask:
    def __init__(self, p: Params):
        if isinstance(p.fields, dict):
            # In the order of the input names, as the Rust mask's table.
            self.fields = sorted(p.fields.items())
        else:
            self.fields = [(f, f) for f in p.fields]
        if not self.fields:
            raise ValueError("`fields` must name at least one field")
        if p.algorithm == "hmac-sha256" and p.secret is None:
            raise ValueError("hmac-sha256 needs `secret`, the name of a secret granted to this step")
        if p.algorithm != "hmac-sha256" and p.secret is not None:
            raise ValueError("`secret` is only used by hmac-sha256")
        self.algorithm = p.algorithm
        self.secret = p.secret
        self.keep_original = p.keep_original
        self.null_if_missing = p.missing == "null"
        self.index = {src: i for i, (src, _) in enumerate(self.fields)}
        self.outputs = {dst for _, dst in self.fields}
        self.in_place = all(src == dst for src, dst in self.fields) and not self.keep_original
        # Renamed without the originals: each output takes its input's place.
        self.renamed = not self.in_place and not self.keep_original and len(self.outputs) == len(self.fields)
        self.rename = {src: dst for src, dst in self.fields}
        # Output names that are not inputs: a record holding one of them
        # loses it (the output wins), which the quick path cannot do.
        self.clashes = self.outputs - set(self.index)

    def projection(self):
        # Reads the fields it masks, writes their outputs; the host keeps
        # the rest.
        return [src for src, _ in self.fields], [dst for _, dst in self.fields]

    def transform_batch(self, records):
        # The usual batch: every field to mask is text in every record.
        columns = [[r.get(src, _ABSENT) for r in records] for src, _ in self.fields]
        if all(set(map(type, column)) == {str} for column in columns) and not self.keep_original:
            return self._all_text(records, columns)
        return self._each(records)

    def _all_text(self, records, columns):
        try:
            digests = etl.hex_digests(self.algorithm, [v for column in columns for v in column], secret=self.secret)
        except etl.DigestError as e:
            return [etl.reject(f"hashing failed: {e}")] * len(records)
        n = len(records)
        per_field = [digests[i * n : (i + 1) * n] for i in range(len(columns))]
        if self.in_place:
            for (src, _), column in zip(self.fields, per_field):
                for r, d in zip(records, column):
                    r[src] = d
            return records
        if not self.renamed or any(not self.clashes.isdisjoint(r) for r in records):
            return self._each(records)
        rename = self.rename.get
        out = [dict(zip(map(rename, r, r), r.values())) for r in records]
        for (_, dst), column in zip(self.fields, per_field):
            for r, d in zip(out, column):
                r[dst] = d
        return out

    def _each(self, records):
        """Record by record: nulls, missing fields, non-text values."""
        # Pass 1: the texts to hash, and each record's verdict.
        values = []
        plans = []
        for r in records:
            why = None
            slots = []
            for src, _ in self.fields:
                v = r.get(src, _ABSENT)
                if type(v) is str:
                    slots.append(len(values))
                    values.append(v)
                elif v is None:
                    slots.append(_NULL)
                elif v is _ABSENT:
                    if not self.null_if_missing:
                        why = f"`{src}` is missing"
                    slots.append(_MISSING)
                else:
                    why = f"`{src}` is not text; mask takes text"
                    slots.append(_NULL)
            plans.append((why, slots))
        try:
            digests = etl.hex_digests(self.algorithm, values, secret=self.secret)
        except etl.DigestError as e:
            return [etl.reject(f"hashing failed: {e}")] * len(records)
        # Pass 2: each digest in its field's place.
        out = []
        for r, (why, slots) in zip(records, plans):
            if why is not None:
                out.append(etl.reject(why))
                continue
            if self.in_place:
                for (src, _), s in zip(self.fields, slots):
                    r[src] = digests[s] if s >= 0 else None
                out.append(r)
                continue
            if self.renamed and self.clashes.isdisjoint(r):
                rename = self.rename.get
                new = {rename(k, k): v for k, v in r.items()}
                for (_, dst), s in zip(self.fields, slots):
                    new[dst] = digests[s] if s >= 0 else None
                out.append(new)
                continue
            new = {}
            for k, v in r.items():
                i = self.index.get(k)
                if i is not None:
                    if self.keep_original:
                        new[k] = v
                    s = slots[i]
                    new[self.fields[i][1]] = digests[s] if s >= 0 else None
                elif k not in self.outputs:
                    new[k] = v
            for (_, dst), s in zip(self.fields, slots):
                if s == _MISSING:
                    new[dst] = None
            out.append(new)
        return out
