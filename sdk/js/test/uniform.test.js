// Uniform batches (same keys in the same order, scalars only): decoded
// column by column, and encoded column by column with unchanged cells
// copied. The results must be those of the record-by-record paths.
import { test } from "node:test";
import assert from "node:assert/strict";
import { decodeBatch, plugin, run as runBatch, t } from "etl-plugin";
import { batch, run } from "etl-plugin/testing";

const same = (got, want) => {
  assert.deepEqual(got, want);
  for (let i = 0; i < want.length; i++) assert.deepEqual(Object.keys(got[i]), Object.keys(want[i]), "field order");
};

test("uniform decode: every scalar kind, integer-like keys, non-ASCII text", () => {
  const records = [
    { id: "a", n: null, b: true, i: 42, big: 2n ** 62n, x: 1.5, s: "日本", 10: "ten" },
    { id: "b", n: null, b: false, i: -(2 ** 40), big: -(2n ** 63n), x: NaN, s: "", 10: "x" },
  ];
  const d = decodeBatch(batch(records));
  assert.ok(d.uniform, "taken as uniform");
  same(d.records, records);
  assert.deepEqual([...d.starts], [0, 8, 16]);
});

test("not uniform: other shapes, containers, __proto__", () => {
  for (const records of [
    [{ a: 1, b: 2 }, { b: 2, a: 1 }],
    [{ a: 1 }, { a: 1, b: 2 }],
    [{ a: [1] }, { a: [2] }],
    [{ a: { b: 1 } }, { a: { b: 2 } }],
  ]) {
    const d = decodeBatch(batch(records));
    assert.equal(d.uniform, undefined);
    same(d.records, records);
  }
  const proto = JSON.parse('[{"__proto__": 1, "a": "x"}, {"__proto__": 2, "a": "y"}]');
  const d = decodeBatch(batch(proto));
  assert.equal(d.uniform, undefined);
  assert.deepEqual(d.records.map((r) => Object.getOwnPropertyDescriptor(r, "__proto__").value), [1, 2]);
  assert.equal(Object.getPrototypeOf(d.records[0]), Object.prototype);
});

const edit = plugin({
  name: "edit",
  version: "0.1.0",
  params: t.object({}),
  transform(r) {
    return { id: r.id, upper: r.name.toUpperCase(), name: r.name, n: r.n, big: r.big, f: r.f, yes: !r.no, nul: null, 10: r[10] };
  },
});

test("uniform encode: copied cells and new ones give the same records", () => {
  const records = [
    { 10: 1, id: "é1", name: "ann", n: 5, big: 2n ** 60n, f: 2 ** 60, no: true },
    { 10: 2, id: "x2", name: "bob", n: -1, big: 1n, f: 0.5, no: false },
  ];
  const out = run(edit, {}, records);
  same(out.map((r) => r.emit[0]), [
    { 10: 1, id: "é1", upper: "ANN", name: "ann", n: 5, big: 2n ** 60n, f: 2 ** 60, yes: false, nul: null },
    { 10: 2, id: "x2", upper: "BOB", name: "bob", n: -1, big: 1, f: 0.5, yes: true, nul: null },
  ]);
  // The input's text is the start of the output's, its cells copied.
  const input = batch(records);
  const o = runBatch(edit, {}, input);
  assert.equal(o.tag, "changed");
  const b = o.val.batch;
  assert.deepEqual([...b.text.subarray(0, input.text.length)], [...input.text]);
  assert.deepEqual(b.keys.slice(0, input.keys.length), input.keys);
  assert.deepEqual(o.val.outcomes, [{ tag: "emit", val: 1 }, { tag: "emit", val: 1 }]);
  const idKey = input.keys.indexOf("id");
  const inCell = [...input.cellKeys].indexOf(idKey), outCell = [...b.cellKeys].indexOf(idKey);
  assert.equal(b.cellValues[outCell], input.cellValues[inCell], "the id cell points into the input's text");
});

test("uniform encode: new non-ASCII text after the input's text; fallbacks keep behaviour", () => {
  const p = plugin({
    name: "p",
    version: "0.1.0",
    transform(r) {
      if (r.k === "drop") return { k: r.k, v: undefined };
      if (r.k === "nest") return { k: r.k, v: { a: [1] } };
      if (r.k === "wide") return { k: r.k, v: 2n ** 64n };
      return { k: r.k, v: `${r.v}·日本` };
    },
  });
  same(run(p, {}, [{ k: "a", v: "x" }, { k: "b", v: "é" }]).map((r) => r.emit[0]), [
    { k: "a", v: "x·日本" },
    { k: "b", v: "é·日本" },
  ]);
  const mixed = run(p, {}, [{ k: "a", v: "x" }, { k: "drop", v: "y" }, { k: "nest", v: "z" }, { k: "wide", v: "w" }]);
  assert.deepEqual(mixed[0].emit, [{ k: "a", v: "x·日本" }]);
  assert.deepEqual(mixed[1].emit, [{ k: "drop" }]);
  assert.deepEqual(mixed[2].emit, [{ k: "nest", v: { a: [1] } }]);
  assert.match(mixed[3].reject, /outside 64 bits/);
});

test("uniform encode: a non-plain result is rejected as before", () => {
  class Row {
    constructor(k) {
      this.k = k;
    }
  }
  const p = plugin({ name: "p", version: "0.1.0", transform: (r) => (r.k === "b" ? new Row(r.k) : { k: r.k }) });
  const out = run(p, {}, [{ k: "a" }, { k: "b" }]);
  assert.deepEqual(out[0].emit, [{ k: "a" }]);
  assert.match(out[1].reject, /a record must be a plain object, not a Row/);
  const inherit = plugin({ name: "q", version: "0.1.0", transform: (r) => Object.assign(Object.create({}), r) });
  assert.match(run(inherit, {}, [{ k: "a" }, { k: "b" }])[0].reject, /plain object/);
});
