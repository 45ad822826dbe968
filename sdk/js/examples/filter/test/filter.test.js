// The Rust filter's tests (plugins/filter/src/tests.rs), on the JS port.
import { test } from "node:test";
import assert from "node:assert/strict";
import { run, configure } from "etl-plugin/testing";
import filter from "../plugin.js";

/** Which of `records` are kept. */
function kept(params, records) {
  return run(filter, params, records).map((r) => {
    if (r.emit) {
      assert.equal(r.emit.length, 1);
      return true;
    }
    assert.deepEqual(r, { drop: true });
    return false;
  });
}

test("equals keeps matching records whole", () => {
  const records = [{ d: "ios", n: 1 }, { d: "android", n: 2 }, { n: 3 }];
  assert.deepEqual(run(filter, { all: [{ field: "d", equals: "ios" }] }, records), [{ emit: [records[0]] }, { drop: true }, { drop: true }]);
});

test("types are compared with their type, but numbers by value", () => {
  const records = [{ v: 5 }, { v: 5.5 - 0.5 }, { v: "5" }, { v: true }, { v: 5n }];
  assert.deepEqual(kept({ all: [{ field: "v", equals: 5 }] }, records), [true, true, false, false, true]);
  assert.deepEqual(kept({ all: [{ field: "v", equals: "5" }] }, records), [false, false, true, false, false]);
  assert.deepEqual(kept({ all: [{ field: "v", not_equals: 5 }] }, records), [false, false, true, true, false]);
});

test("in and not_in a set", () => {
  const records = [{ l: "RU" }, { l: "US" }, { l: null }, {}];
  const set = ["RU", "DE"];
  assert.deepEqual(kept({ all: [{ field: "l", in: set }] }, records), [true, false, false, false]);
  assert.deepEqual(kept({ all: [{ field: "l", not_in: set }] }, records), [false, true, true, true]);
});

test("matches a regex on text only", () => {
  const records = [{ v: "2.3.0" }, { v: "0.96" }, { v: 2 }];
  assert.deepEqual(kept({ all: [{ field: "v", matches: "^2\\." }] }, records), [true, false, false]);
});

test("is_null means missing or null", () => {
  const records = [{ x: null }, {}, { x: 0 }];
  assert.deepEqual(kept({ all: [{ field: "x", is_null: true }] }, records), [true, true, false]);
  assert.deepEqual(kept({ all: [{ field: "x", is_null: false }] }, records), [false, false, true]);
});

test("numeric comparisons; other types never compare", () => {
  const records = [{ n: 1 }, { n: 2.5 }, { n: 3 }, { n: "3" }, {}];
  assert.deepEqual(kept({ all: [{ field: "n", gt: 2 }] }, records), [false, true, true, false, false]);
  assert.deepEqual(kept({ all: [{ field: "n", gte: 3 }] }, records), [false, false, true, false, false]);
  assert.deepEqual(kept({ all: [{ field: "n", lt: 2.5 }] }, records), [true, false, false, false, false]);
  assert.deepEqual(kept({ all: [{ field: "n", lte: 2.5 }] }, records), [true, true, false, false, false]);
});

test("all, any, and dropping what matches", () => {
  const records = [{ a: 1, b: 1 }, { a: 1, b: 2 }, { a: 2, b: 2 }];
  const c = [{ field: "a", equals: 1 }, { field: "b", equals: 1 }];
  assert.deepEqual(kept({ all: c }, records), [true, false, false]);
  assert.deepEqual(kept({ any: c }, records), [true, true, false]);
  assert.deepEqual(kept({ any: c, keep: false }, records), [false, false, true]);
});

test("a field named like an Object method is missing unless present", () => {
  assert.deepEqual(kept({ all: [{ field: "constructor", is_null: true }] }, [{}, { constructor: 1 }]), [true, false]);
});

test("bad params say what is wrong", () => {
  const err = (p) => {
    try {
      configure(filter, p);
    } catch (e) {
      return e.message;
    }
    assert.fail("accepted");
  };
  assert.match(err({}), /`all = \[\.\.\.\]` or `any = \[\.\.\.\]`/);
  assert.match(err({ all: [], any: [] }), /not both/);
  assert.match(err({ all: [] }), /at least one condition/);
  assert.match(err({ all: [{ field: "a" }] }), /condition 1 \(`a`\) needs exactly one test/);
  assert.match(err({ all: [{ field: "a", gt: 1, lt: 2 }] }), /it has 2/);
  assert.match(err({ all: [{ field: "a", matches: "(" }] }), /condition 1 \(`a`\): `matches`/);
  assert.match(err({ all: [{ field: "a", equal: 1 }] }), /unknown field `equal`/);
});
