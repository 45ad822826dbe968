// The codec: records -> column batch -> records, as the component does it.
import { test } from "node:test";
import assert from "node:assert/strict";
import { Encoder, decodeBatch } from "etl-plugin";
import { batch } from "etl-plugin/testing";

const roundTrip = (records) => decodeBatch(batch(records)).records;

test("every kind comes back as it went, nesting included", () => {
  const records = [
    { n: null, b: true, f: false, i: 42, neg: -7, x: 1.5, s: "text", e: "" },
    { o: { a: 1, inner: { deep: [1, "two", null, { three: 3 }] } }, a: [[], {}, [[]]] },
    {},
    { only: "one" },
  ];
  assert.deepEqual(roundTrip(records), records);
});

test("integers: numbers within 2^53, BigInt beyond, the full i64 range", () => {
  const records = [
    { a: 2 ** 53 - 1, b: -(2 ** 53 - 1), c: 2 ** 32, d: -(2 ** 32), e: 4294967295, f: -1 },
    { big: 2n ** 62n, small: -(2n ** 63n), max: 2n ** 63n - 1n, fits: 5n },
  ];
  const got = roundTrip(records);
  assert.deepEqual(got[0], records[0]);
  assert.deepEqual(got[1], { big: 2n ** 62n, small: -(2n ** 63n), max: 2n ** 63n - 1n, fits: 5 });
});

test("floats keep their bits; integral floats read back as numbers", () => {
  const got = roundTrip([{ a: 0.1, b: -2.5e300, c: NaN, d: Infinity, e: 2 ** 60 }]);
  assert.equal(got[0].a, 0.1);
  assert.equal(got[0].b, -2.5e300);
  assert.ok(Number.isNaN(got[0].c));
  assert.equal(got[0].d, Infinity);
  assert.equal(got[0].e, 2 ** 60);
  const b = batch([{ x: 2 ** 60, y: 3 }]);
  assert.deepEqual([...b.cellKinds], [3, 2], "beyond 2^53 a number is a float, within an integer");
});

test("non-ASCII text, a leading BOM and astral characters", () => {
  const records = [{ a: "é", b: "\uFEFFbom", c: "日本語", d: "😀 ok", e: "ascii" }, { f: "ß".repeat(100) }];
  assert.deepEqual(roundTrip(records), records);
  const b = batch([{ a: "é" }]);
  assert.deepEqual([...b.text], [0xc3, 0xa9]);
});

test("the batch layout is the WIT one", () => {
  const b = batch([{ k: "ab", o: { m: 1 } }, { k: "c" }]);
  assert.deepEqual(b.keys, ["k", "o", "m"]);
  assert.deepEqual([...b.records], [3, 1]);
  assert.deepEqual([...b.cellKinds], [4, 5, 2, 4]);
  assert.deepEqual([...b.cellKeys], [0, 1, 2, 0]);
  assert.deepEqual([...b.cellValues], [2n, 1n, 1n, (2n << 32n) | 1n]); // text: offset << 32 | length
  assert.equal(new TextDecoder().decode(b.text), "abc");
  const a = batch([{ l: [true] }]);
  assert.deepEqual([...a.cellKeys], [0, 0xffffffff], "array elements have no key");
});

test("field order is kept (JavaScript puts integer-like keys first)", () => {
  const got = roundTrip([{ z: 1, a: 2, m: { y: 1, b: 2 } }]);
  assert.deepEqual(Object.keys(got[0]), ["z", "a", "m"]);
  assert.deepEqual(Object.keys(got[0].m), ["y", "b"]);
});

test("a key named __proto__ is a field, not a prototype", () => {
  const r = JSON.parse('{"__proto__": {"x": 1}, "a": 2}');
  const got = roundTrip([r])[0];
  assert.deepEqual(Object.keys(got), ["__proto__", "a"]);
  assert.equal(Object.getPrototypeOf(got), Object.prototype);
});

test("many records grow the columns", () => {
  const records = Array.from({ length: 3000 }, (_, i) => ({ i, s: `v${i}`, a: [i, { j: i }] }));
  assert.deepEqual(roundTrip(records), records);
});

test("values that are not record values are refused, naming the field", () => {
  const enc = new Encoder();
  assert.throws(() => enc.record({ a: { when: new Date(0) } }), /`a.when` is a Date/);
  assert.throws(() => enc.record({ f: () => 1 }), /`f` is a function/);
  assert.throws(() => enc.record({ big: 2n ** 64n }), /`big` is an integer outside 64 bits/);
  assert.throws(() => enc.record([1]), /plain object/);
});
