// js-mask: the Rust `mask` plugin in JavaScript. Replaces text fields by
// lowercase hex digests of their UTF-8 bytes; null stays null; a non-text
// value is rejected; a missing field is rejected unless `missing = "null"`.
// One `hexDigests` call (one call into the host) per batch.
//
// Output field order is the Rust plugin's: an output takes its input field's
// place; with `missing = "null"` the missing outputs are appended in field
// order (a table's fields sorted by input name, as Rust's BTreeMap does).

import { plugin, reject, hexDigests, t } from "etl-plugin";

const NULL = -1, MISSING = -2;

function sameNames(a, b) {
  if (b === null || a.length !== b.length) return false;
  for (let i = 0; i < a.length; i++) if (a[i] !== b[i]) return false;
  return true;
}

/**
 * The function (record, digests, slots, at) -> output record for records
 * with own fields `names`, in order: compiled to one object literal, which
 * in the component (JavaScript interpreted) costs far less than adding the
 * fields one by one. Falls back to the generic loop.
 */
function builder(s, names) {
  const id = JSON.stringify(names);
  let f = s.builders.get(id);
  if (f !== undefined) return f;
  f = generic(s);
  // What the generic loop writes, in order: [output name, expression].
  const parts = [];
  const k = s.from.length;
  const present = new Set(names);
  const add = (name, expr) => parts.push([name, expr]);
  for (const name of names) {
    const i = s.fromIndex[name];
    if (i !== undefined) {
      if (s.keepOriginal) add(name, `r[${JSON.stringify(name)}]`);
      add(s.to[i], `(slots[at + ${i}] < 0 ? null : digests[slots[at + ${i}]])`);
    } else if (s.isOutput[name] !== true) add(name, `r[${JSON.stringify(name)}]`);
  }
  // Missing fields (not own: decoded records hold no undefined values).
  for (let i = 0; i < k; i++) if (!present.has(s.from[i])) add(s.to[i], "null");
  if (!parts.some(([name]) => name === "__proto__")) {
    try {
      const body = parts.map(([name, expr]) => `${JSON.stringify(name)}: ${expr}`).join(", ");
      f = new Function("r", "digests", "slots", "at", `return {${body}};`);
    } catch {
      // No run-time compilation: the generic loop.
    }
  }
  if (s.builders.size < 64) s.builders.set(id, f);
  return f;
}

/** The output record, field by field. */
function generic(s) {
  const k = s.from.length;
  return (record, digests, slots, at) => {
    const o = {};
    const names = Object.keys(record);
    for (let j = 0; j < names.length; j++) {
      const name = names[j];
      const i = s.fromIndex[name];
      if (i !== undefined) {
        if (s.keepOriginal) o[name] = record[name];
        const slot = slots[at + i];
        o[s.to[i]] = slot < 0 ? null : digests[slot];
      } else if (s.isOutput[name] !== true) o[name] = record[name];
    }
    for (let i = 0; i < k; i++) if (slots[at + i] === MISSING) o[s.to[i]] = null;
    return o;
  };
}

export default plugin({
  name: "js-mask",
  version: "0.1.0",
  summary: "Replaces text fields by hex SHA-256, SHA-512 or keyed HMAC-SHA-256 digests",
  params: t.object({
    fields: t.union([t.array(t.string()), t.map(t.string())], {
      expecting: 'a list of field names or a table of field = "output name"',
      description: "Fields to mask: a list (masked in place) or a table `field = \"output\"`.",
    }),
    algorithm: t.enum(["sha256", "sha512", "hmac-sha256"], { default: "sha256" }),
    secret: t.string({ optional: true, description: "Name of the secret granted to the step (hmac-sha256 only)." }),
    keep_original: t.boolean({
      default: false,
      description: "Keep the raw field next to its masked output. Off by default: the raw value is usually the PII being masked.",
    }),
    missing: t.enum(["reject", "null"], { default: "reject" }),
  }),

  init(p) {
    const fields = Array.isArray(p.fields) ? p.fields.map((n) => [n, n]) : Object.entries(p.fields).sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0));
    if (fields.length === 0) throw new Error("`fields` must name at least one field");
    if (p.algorithm === "hmac-sha256" && p.secret === undefined) {
      throw new Error("hmac-sha256 needs `secret`, the name of a secret granted to this step");
    }
    if (p.algorithm !== "hmac-sha256" && p.secret !== undefined) throw new Error("`secret` is only used by hmac-sha256");
    // Lookups by property on prototype-less objects: in the component, a
    // property read is cheaper than a method call.
    const fromIndex = Object.create(null), isOutput = Object.create(null);
    fields.forEach(([f, o], i) => {
      if (!(f in fromIndex)) fromIndex[f] = i;
      isOutput[o] = true;
    });
    return {
      from: fields.map(([f]) => f),
      to: fields.map(([, o]) => o),
      fromIndex,
      isOutput,
      // A field named like an Object.prototype member needs an own-property check.
      inherited: fields.map(([f]) => f in Object.prototype),
      algorithm: p.algorithm,
      secret: p.secret,
      keepOriginal: p.keep_original,
      missingNull: p.missing === "null",
      builders: new Map(), // JSON of a record's names -> its output builder
    };
  },

  // Reads the fields it masks, writes their outputs; the host keeps the rest.
  projection: (s) => [s.from, s.to],

  transformBatch(records, s) {
    const k = s.from.length, n = records.length;
    const has = Object.prototype.hasOwnProperty;
    // Pass 1, field by field: the texts to hash; slots[r * k + i] is the
    // digest index of record r's field i, or NULL / MISSING.
    const texts = new Array(n * k);
    let count = 0;
    const slots = new Int32Array(n * k);
    const verdicts = new Array(n);
    for (let i = 0; i < k; i++) {
      const name = s.from[i], inherited = s.inherited[i];
      for (let r = 0, at = i; r < n; r++, at += k) {
        const record = records[r];
        const v = !inherited || has.call(record, name) ? record[name] : undefined;
        if (typeof v === "string") {
          slots[at] = count;
          texts[count++] = v;
        } else if (v === null) slots[at] = NULL;
        else if (v === undefined) {
          slots[at] = MISSING;
          if (!s.missingNull) verdicts[r] = `\`${name}\` is missing`;
        } else {
          slots[at] = NULL;
          verdicts[r] = `\`${name}\` is not text; mask takes text`;
        }
      }
    }
    texts.length = count;
    let digests;
    try {
      digests = hexDigests(s.algorithm, texts, { secret: s.secret });
    } catch (e) {
      const why = reject(`hashing failed: ${e.message}`);
      return records.map(() => why);
    }
    // Pass 2: each digest in its field's place, by a function compiled for
    // the record's field names (in a batch, usually all the same).
    const out = new Array(records.length);
    let lastNames = null, build = null;
    for (let r = 0; r < records.length; r++) {
      if (verdicts[r] !== undefined) {
        out[r] = reject(verdicts[r]);
        continue;
      }
      const record = records[r];
      const names = Object.keys(record);
      if (!sameNames(names, lastNames)) {
        build = builder(s, names);
        lastNames = names;
      }
      out[r] = build(record, digests, slots, r * k);
    }
    return out;
  },
});
