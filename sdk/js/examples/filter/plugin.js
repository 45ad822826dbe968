// js-filter: the Rust `filter` plugin in JavaScript. Keeps (or drops) the
// records that meet conditions on their top-level fields. Kept records pass
// byte for byte (`keep`), and a batch where all are kept passes unchanged.
//
// `matches` is a JavaScript RegExp (with the `u` flag), not Rust `regex`
// syntax: lookaround and backreferences work here, `(?i)` inline flags do
// not, and a pattern may be slow on some inputs (backtracking).

import { plugin, t } from "etl-plugin";

const scalar = (description) => t.scalar({ optional: true, description });
const bound = () => t.number({ optional: true });

const condition = t.object(
  {
    field: t.string({ description: "A top-level field name." }),
    equals: scalar(),
    not_equals: scalar(),
    in: t.array(t.scalar(), { optional: true }),
    not_in: t.array(t.scalar(), { optional: true }),
    matches: t.string({
      optional: true,
      description: "A regular expression (JavaScript RegExp syntax, `u` flag) the text must match somewhere; anchor it with `^...$` for the whole text.",
    }),
    is_null: t.boolean({ optional: true }),
    gt: bound(),
    gte: bound(),
    lt: bound(),
    lte: bound(),
  },
  { description: "One test on one field; exactly one of the tests is set." },
);

const TESTS = ["equals", "not_equals", "in", "not_in", "matches", "is_null", "gt", "gte", "lt", "lte"];

export default plugin({
  name: "js-filter",
  version: "0.1.0",
  summary: "Keeps or drops records by conditions on their fields (all or any)",
  params: t.object({
    all: t.array(condition, { optional: true, description: "Every condition must hold." }),
    any: t.array(condition, { optional: true, description: "At least one condition must hold." }),
    keep: t.boolean({
      default: true,
      description: "Keep the records that meet the conditions (default), or drop them (`false`).",
    }),
  }),

  init(p) {
    if (p.all && p.any) throw new Error("give `all` or `any`, not both");
    if (!p.all && !p.any) throw new Error("give the conditions as `all = [...]` or `any = [...]`");
    const all = Boolean(p.all);
    const conditions = p.all ?? p.any;
    if (conditions.length === 0) throw new Error(`\`${all ? "all" : "any"}\` must hold at least one condition`);
    return { rules: conditions.map((c, i) => rule(i + 1, c)), fields: conditions.map((c) => c.field), all, keep: p.keep };
  },

  // Reads the fields of its conditions and writes none: a kept record's
  // other fields stay in the host.
  projection: (s) => [s.fields, []],

  keep(record, s) {
    const met = s.all ? s.rules.every((r) => r(record)) : s.rules.some((r) => r(record));
    return met === s.keep;
  },
});

/** The test of condition `n` (1-based, for errors), as a function of a record. */
function rule(n, c) {
  const set = TESTS.filter((k) => c[k] !== undefined);
  if (set.length !== 1) {
    throw new Error(`condition ${n} (\`${c.field}\`) needs exactly one test (${TESTS.join(", ")}); it has ${set.length}`);
  }
  const field = c.field;
  const has = Object.prototype.hasOwnProperty;
  const get = (r) => (has.call(r, field) ? r[field] : undefined);
  const present = (v) => v !== undefined;
  switch (set[0]) {
    case "equals":
      return (r) => equal(get(r), c.equals);
    case "not_equals":
      return (r) => !equal(get(r), c.not_equals);
    case "in":
      return (r) => {
        const v = get(r);
        return present(v) && c.in.some((s) => equal(v, s));
      };
    case "not_in":
      return (r) => {
        const v = get(r);
        return !(present(v) && c.not_in.some((s) => equal(v, s)));
      };
    case "matches": {
      let re;
      try {
        re = new RegExp(c.matches, "u");
      } catch (e) {
        throw new Error(`condition ${n} (\`${field}\`): \`matches\`: ${e.message}`);
      }
      return (r) => {
        const v = get(r);
        return typeof v === "string" && re.test(v);
      };
    }
    case "is_null":
      return (r) => (get(r) == null) === c.is_null;
    default: {
      const b = c[set[0]];
      const cmp = { gt: (x) => x > b, gte: (x) => x >= b, lt: (x) => x < b, lte: (x) => x <= b }[set[0]];
      return (r) => {
        const v = get(r);
        if (typeof v === "number") return cmp(v);
        if (typeof v === "bigint") return cmp(Number(v));
        return false;
      };
    }
  }
}

/**
 * Whether a record's value equals a scalar of the params: numbers by value
 * (5 equals 5.0; big integers as floats, like Rust's `as f64`), other types
 * only with their own type.
 */
function equal(v, s) {
  switch (typeof v) {
    case "number":
      return typeof s === "number" && v === s;
    case "bigint":
      return typeof s === "number" && Number(v) === s;
    case "string":
    case "boolean":
      return v === s;
    default:
      return false;
  }
}
