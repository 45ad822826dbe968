// The params schema builder: JSON Schema out, checks and defaults in.
import { test } from "node:test";
import assert from "node:assert/strict";
import { plugin, t, describe } from "etl-plugin";
import { configure } from "etl-plugin/testing";

const p = plugin({
  name: "params",
  version: "1.2.3",
  summary: "checks params",
  params: t.object({
    field: t.string({ description: "The field." }),
    mode: t.enum(["a", "b"], { default: "a" }),
    n: t.integer({ default: 3, minimum: 1 }),
    ratio: t.number({ optional: true }),
    flag: t.boolean({ default: false }),
    names: t.union([t.array(t.string(), { minItems: 1 }), t.map(t.string())], { optional: true, expecting: "a list or a table" }),
    rules: t.array(t.object({ on: t.string(), value: t.scalar({ optional: true }) }), { default: [] }),
  }),
  init(params) {
    if (params.mode === "b" && params.ratio === undefined) throw new Error("mode `b` needs `ratio`");
    return params;
  },
  transform: (r) => r,
});

test("the schema: no unknown keys, required keys, defaults and descriptions", () => {
  const d = describe(p);
  assert.deepEqual([d.name, d.version, d.summary], ["params", "1.2.3", "checks params"]);
  const s = JSON.parse(d.paramsSchema);
  assert.equal(s.type, "object");
  assert.equal(s.additionalProperties, false);
  assert.deepEqual(s.required, ["field"]);
  assert.deepEqual(s.properties.field, { type: "string", description: "The field." });
  assert.deepEqual(s.properties.mode, { type: "string", enum: ["a", "b"], default: "a" });
  assert.deepEqual(s.properties.n, { type: "integer", minimum: 1, default: 3 });
  assert.equal(s.properties.rules.items.additionalProperties, false);
  assert.deepEqual(s.properties.rules.items.required, ["on"]);
  assert.equal(s.properties.names.anyOf.length, 2);
});

test("defaults are filled in before init", () => {
  assert.deepEqual(configure(p, { field: "x" }), { field: "x", mode: "a", n: 3, flag: false, rules: [] });
  assert.deepEqual(configure(p, { field: "x", names: { a: "b" }, rules: [{ on: "y", value: 2 }] }).names, { a: "b" });
});

test("errors name the key", () => {
  const message = (params) => {
    try {
      configure(p, params);
    } catch (e) {
      return e.message;
    }
    return "accepted";
  };
  assert.equal(message({}), "missing field `field`");
  assert.equal(message({ field: "x", feild: 1 }), "unknown field `feild`, expected one of `field`, `mode`, `n`, `ratio`, `flag`, `names`, `rules`");
  assert.equal(message({ field: 1 }), "`field`: expected a string, got a number");
  assert.equal(message({ field: "x", mode: "c" }), "`mode`: unknown variant `c`, expected one of `a`, `b`");
  assert.equal(message({ field: "x", n: 0 }), "`n`: must be at least 1");
  assert.equal(message({ field: "x", n: 1.5 }), "`n`: expected an integer, got a number");
  assert.equal(message({ field: "x", names: 3 }), "`names`: expected a list or a table");
  assert.equal(message({ field: "x", names: [] }), "`names`: expected a list or a table");
  assert.equal(message({ field: "x", rules: [{ on: "a" }, { on: "b", valu: 1 }] }), "`rules[1]`: unknown field `valu`, expected one of `on`, `value`");
  assert.equal(message({ field: "x", rules: [{ on: "a", value: [1] }] }), "`rules[0].value`: expected a string, number or boolean, got an array");
  assert.equal(message({ field: "x", mode: "b" }), "mode `b` needs `ratio`");
  assert.equal(message({ field: "x", mode: "b", ratio: 0.5 }), "accepted");
});

test("a plugin needs exactly one of transform, transformBatch, keep", () => {
  assert.throws(() => plugin({ name: "x", version: "1" }), /exactly one of/);
  assert.throws(() => plugin({ name: "x", version: "1", transform() {}, keep() {} }), /exactly one of/);
  assert.throws(() => plugin({ name: "x", version: "1", transform() {}, params: { type: "object" } }), /made with `t`/);
});
