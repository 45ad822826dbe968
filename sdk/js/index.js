// etl-plugin: transform plugins for the ETL host, written in JavaScript.
//
// A plugin works on plain records (objects of null, booleans, numbers,
// BigInts, strings, objects and arrays). This module owns the plugin API
// (`plugin`, the outcome helpers, `hexDigests`) and the glue that
// `build.js` wires into a component; `codec.js` owns the batch layout and
// `params.js` the schema builder `t`. It imports nothing from Node: hashing
// is injected (the host's `hex-digests` inside the component, node:crypto
// in `etl-plugin/testing`).

import { Encoder, Unencodable, arena, decodeBatch, decoder, describeType, encodeUniform } from "./codec.js";
import { ParamError, Type, t } from "./params.js";

export { Encoder, decodeBatch, t };

// ---------------------------------------------------------------------------
// Outcomes

/** What became of one input record; made by `emit`, `drop` and `reject`. */
class Outcome {
  constructor(kind, records, reason) {
    this.kind = kind; // 0 emit, 1 drop, 2 reject
    this.records = records;
    this.reason = reason;
  }
}
const DROPPED = new Outcome(1, null, null);

/** Emits records for the input record (one to many; none counts as a drop). */
export function emit(...records) {
  return new Outcome(0, records, null);
}

/** Filters the input record out on purpose (counted, never a dead letter). */
export function drop() {
  return DROPPED;
}

/** Refuses the input record; the reason names fields and rules, never values. */
export function reject(reason) {
  return new Outcome(2, null, String(reason));
}

/** Thrown from `transform` or `keep`: rejects the record with `reason`. */
export class Reject extends Error {
  constructor(reason) {
    super(String(reason));
    this.name = "Reject";
    this.reason = String(reason);
  }
}

/**
 * The reason for an exception thrown by user code: its type and, where the
 * stack says so, the place; never its message (it may hold record values).
 */
function thrown(e, what) {
  if (e instanceof Reject) return e.reason;
  let type = typeof e;
  if (e !== null && type === "object") {
    const c = e.constructor;
    type = c && typeof c.name === "string" && c.name ? c.name : "object";
  }
  const where = place(e);
  return `${type} in ${what}${where ? ` (${where})` : ""}`;
}

/** `file:line:column` of the innermost frame of `e`'s stack, if known. */
function place(e) {
  if (!(e instanceof Error)) return "";
  let stack;
  try {
    stack = e.stack;
  } catch {
    return "";
  }
  if (typeof stack !== "string") return "";
  // V8 starts the stack with "Name: message"; SpiderMonkey has frames only.
  const head = String(e);
  if (stack.startsWith(head)) stack = stack.slice(head.length);
  for (const line of stack.split("\n")) {
    const m = /([^\s()@/]+):(\d+):(\d+)\)?\s*$/.exec(line);
    if (m && !line.includes("etl-plugin")) return `${m[1]}:${m[2]}:${m[3]}`;
  }
  return "";
}

// ---------------------------------------------------------------------------
// Hashing

let hasher = null;

/**
 * Sets the function that hashes for `hexDigests`:
 * (algorithm, secret | undefined, data: Uint8Array, ends: Uint32Array) ->
 * Uint8Array of hex digits end to end; throws an Error whose message says why.
 * `build.js` sets the host's import; `etl-plugin/testing` sets node:crypto.
 */
export function setHasher(fn) {
  hasher = fn;
}

const WIDTH = { sha256: 64, sha512: 128, "hmac-sha256": 64 };

/**
 * Lowercase hex digests of the UTF-8 bytes of many strings in one call
 * (inside the component, one call into the host). `secret` names a secret
 * granted to the step; required by hmac-sha256 only.
 */
export function hexDigests(algorithm, values, { secret } = {}) {
  const width = WIDTH[algorithm];
  if (width === undefined) throw new Error(`unknown algorithm \`${algorithm}\`; use sha256, sha512 or hmac-sha256`);
  if (algorithm === "hmac-sha256" && secret == null) throw new Error("hmac-sha256 needs a secret's name");
  if (!Array.isArray(values)) throw new TypeError("hexDigests takes an array of strings");
  if (hasher === null) throw new Error("no hasher: run inside a component or through etl-plugin/testing");
  for (let i = 0; i < values.length; i++) {
    if (typeof values[i] !== "string") throw new TypeError(`hexDigests: value ${i} is ${describeType(values[i])}, not a string`);
  }
  const { bytes, lens } = arena(values, values.length);
  const ends = new Uint32Array(values.length);
  let at = 0;
  for (let i = 0; i < lens.length; i++) ends[i] = at += lens[i];
  const hex = hasher(algorithm, secret == null ? undefined : String(secret), bytes, ends);
  const out = new Array(values.length);
  // A new view costs less than `subarray` (self-hosted, interpreted, in the
  // component). (Cutting the digests from one decoded string by cached
  // sticky RegExps of 256 captures was tried: 2.5 times slower.)
  const buffer = hex.buffer, offset = hex.byteOffset;
  for (let i = 0; i < out.length; i++) out[i] = decoder.decode(new Uint8Array(buffer, offset + i * width, width));
  return out;
}

// ---------------------------------------------------------------------------
// Plugins

const DEF = Symbol("etl-plugin definition");

/** Declares a plugin; the module's default export. See index.d.ts. */
export function plugin(def) {
  for (const k of ["name", "version"]) {
    if (typeof def[k] !== "string" || !def[k]) throw new Error(`plugin: \`${k}\` must be a non-empty string`);
  }
  const modes = ["transform", "transformBatch", "keep"].filter((k) => def[k] !== undefined);
  if (modes.length !== 1) throw new Error("plugin: give exactly one of `transform`, `transformBatch` or `keep`");
  if (typeof def[modes[0]] !== "function") throw new Error(`plugin: \`${modes[0]}\` must be a function`);
  if (def.params !== undefined && !(def.params instanceof Type)) throw new Error("plugin: `params` must be made with `t`");
  if (def.init !== undefined && typeof def.init !== "function") throw new Error("plugin: `init` must be a function");
  if (def.projection !== undefined && typeof def.projection !== "function") throw new Error("plugin: `projection` must be a function");
  return Object.freeze({ ...def, summary: def.summary ?? "", [DEF]: modes[0] });
}

/** What `describe` answers (WIT field names). */
export function describe(p) {
  return {
    name: p.name,
    version: p.version,
    summary: p.summary,
    paramsSchema: p.params ? JSON.stringify({ $schema: "http://json-schema.org/draft-07/schema#", ...p.params.schema }) : undefined,
  };
}

/** Checks `params` (a JSON text) and runs `init`; returns the state, throws an Error saying what is wrong. */
export function configure(p, params) {
  if (!p || !p[DEF]) throw new Error("configure: not a plugin made with plugin({...})");
  let value;
  try {
    value = typeof params === "string" ? JSON.parse(params) : params;
  } catch {
    throw new Error("params are not JSON");
  }
  if (value === undefined || value === null) value = {};
  let checked = value;
  if (p.params) {
    try {
      checked = p.params.check(value, "");
    } catch (e) {
      if (e instanceof ParamError) throw new Error(e.message);
      throw e;
    }
  }
  if (!p.init) return checked;
  try {
    return p.init(checked);
  } catch (e) {
    throw new Error(e instanceof Error ? e.message : String(e));
  }
}

/**
 * The configured step's declared fields, `{reads, writes}` (the WIT
 * `projection`), or undefined for whole records.
 */
export function projection(p, state) {
  if (!p.projection) return undefined;
  const declared = p.projection(state);
  if (declared === undefined || declared === null) return undefined;
  const names = (l) => Array.isArray(l) && l.every((n) => typeof n === "string");
  if (!Array.isArray(declared) || declared.length !== 2 || !names(declared[0]) || !names(declared[1])) {
    throw new Error("projection() returns [reads, writes]: two arrays of field names, or undefined");
  }
  return { reads: [...declared[0]], writes: [...declared[1]] };
}

/**
 * One batch through a configured plugin: the WIT `output` value
 * ({tag: "unchanged"} or {tag: "changed", val: {batch, outcomes}}).
 */
export function run(p, state, b) {
  const { records, starts, uniform } = decodeBatch(b);
  const mode = p[DEF];
  if (mode === "keep") return runKeep(p, state, b, records, starts);
  let results;
  if (mode === "transform") {
    results = new Array(records.length);
    for (let i = 0; i < records.length; i++) {
      try {
        results[i] = p.transform(records[i], state);
      } catch (e) {
        results[i] = new Outcome(2, null, thrown(e, "transform"));
      }
    }
  } else {
    try {
      results = p.transformBatch(records, state);
    } catch {
      results = null;
    }
    if (!Array.isArray(results) || results.length !== records.length) results = oneByOne(p, state, b);
  }
  if (uniform !== undefined && results.length > 0) {
    // One record of one shape per input record (an Outcome is no plain
    // object): column by column.
    const out = encodeUniform(b, uniform, results);
    if (out !== null) return { tag: "changed", val: { batch: out, outcomes: new Array(results.length).fill(EMIT_ONE) } };
  }
  const enc = new Encoder(b.cellKeys.length + records.length * 2, records.length);
  for (const name of b.keys) enc.key(name); // input key order first: cheaper lookups and stable ids
  const outcomes = new Array(records.length);
  for (let i = 0; i < records.length; i++) outcomes[i] = settle(enc, results[i], mode);
  return { tag: "changed", val: { batch: enc.finish(), outcomes } };
}

/**
 * After a transformBatch that threw or answered the wrong number of
 * results: each record alone (decoded afresh: the failed call may have
 * changed them), so that one bad record fails only itself.
 */
function oneByOne(p, state, b) {
  const { records } = decodeBatch(b);
  const results = new Array(records.length);
  for (let i = 0; i < records.length; i++) {
    let answer;
    try {
      answer = p.transformBatch([records[i]], state);
    } catch (e) {
      answer = [new Outcome(2, null, thrown(e, "transformBatch"))];
    }
    if (!Array.isArray(answer) || answer.length !== 1) {
      const n = Array.isArray(answer) ? answer.length : describeType(answer);
      answer = [new Outcome(2, null, `transformBatch returned ${n} results for 1 record`)];
    }
    results[i] = answer[0];
  }
  return results;
}

/** Encodes one result; its WIT outcome. */
function settle(enc, r, mode) {
  if (r instanceof Outcome) {
    if (r.kind === 1) return DROP;
    if (r.kind === 2) return { tag: "reject", val: r.reason };
    return encodeAll(enc, r.records);
  }
  if (r === undefined) {
    return { tag: "reject", val: `${mode} returned undefined: return the record, emit(...), drop() or reject(reason)` };
  }
  return encodeOne(enc, r);
}

/** After a record that cannot be encoded: the encoder back where it was
 * (nothing of the record stays) and the reject that says why. */
function undo(enc, cells, count, strings, chars, e) {
  enc.cells = cells;
  enc.records = count;
  enc.nstrings = strings;
  enc.chars = chars;
  if (e instanceof Unencodable) return { tag: "reject", val: `cannot emit the record: ${e.message}` };
  if (e instanceof RangeError) return { tag: "reject", val: "cannot emit the record: too large or circular" };
  throw e;
}

function encodeOne(enc, r) {
  const cells = enc.cells, count = enc.records, strings = enc.nstrings, chars = enc.chars;
  try {
    enc.record(r);
  } catch (e) {
    return undo(enc, cells, count, strings, chars, e);
  }
  return EMIT_ONE;
}

/** Encodes a record or an array of records; on failure, leaves nothing behind. */
function encodeAll(enc, records) {
  const cells = enc.cells, count = enc.records, strings = enc.nstrings, chars = enc.chars;
  let n = 1;
  try {
    n = records.length;
    for (let i = 0; i < n; i++) enc.record(records[i]);
  } catch (e) {
    return undo(enc, cells, count, strings, chars, e);
  }
  return n === 1 ? EMIT_ONE : { tag: "emit", val: n };
}

function runKeep(p, state, b, records, starts) {
  const n = records.length;
  const outcomes = new Array(n);
  let kept = 0;
  for (let i = 0; i < n; i++) {
    let k;
    try {
      k = p.keep(records[i], state);
    } catch (e) {
      outcomes[i] = { tag: "reject", val: thrown(e, "keep") };
      continue;
    }
    if (k === true) {
      outcomes[i] = EMIT_ONE;
      kept++;
    } else if (k === false) outcomes[i] = DROP;
    else if (k instanceof Outcome && k.kind === 2) outcomes[i] = { tag: "reject", val: k.reason };
    else outcomes[i] = { tag: "reject", val: `keep returned ${describeType(k)}, not true or false` };
  }
  if (kept === n) return { tag: "unchanged" };
  // Kept records pass as their cells, byte for byte, over the input's keys and text.
  const enc = new Encoder(b.cellKeys.length, n);
  for (let i = 0; i < n; i++) {
    if (outcomes[i] === EMIT_ONE) enc.copy(b, starts[i], starts[i + 1], starts[i + 1] - starts[i]);
  }
  return {
    tag: "changed",
    val: {
      batch: {
        keys: b.keys,
        text: b.text,
        cellKeys: enc.keys.subarray(0, enc.cells),
        cellKinds: enc.kinds.subarray(0, enc.cells),
        cellValues: enc.big.subarray(0, enc.cells),
        records: enc.counts.subarray(0, enc.records),
      },
      outcomes,
    },
  };
}

const EMIT_ONE = Object.freeze({ tag: "emit", val: 1 });
const DROP = Object.freeze({ tag: "drop" });

/**
 * The component's exports for a plugin (what `build.js` wires to the WIT
 * world `projecting-plugin`). `hostHexDigests` is the host import.
 */
export function component(p, hostHexDigests) {
  setHasher((algorithm, secret, data, ends) => {
    try {
      return hostHexDigests(algorithm, secret, data, ends);
    } catch (e) {
      throw new Error(e && e.payload !== undefined ? String(e.payload) : "the host's hex-digests failed");
    }
  });
  let configured = false;
  let state;
  return {
    describe: () => describe(p),
    configure(params) {
      try {
        state = configure(p, params);
        projection(p, state); // a malformed declaration is the params' error, not a trap later
        configured = true;
        return { tag: "ok", val: undefined };
      } catch (e) {
        configured = false;
        return { tag: "err", val: e instanceof Error ? e.message : String(e) };
      }
    },
    fields: () => (configured ? projection(p, state) : undefined),
    transform(b) {
      if (!configured) {
        return { tag: "changed", val: { batch: new Encoder(16, 4).finish(), outcomes: Array.from(b.records, () => ({ tag: "reject", val: "plugin was not configured" })) } };
      }
      return run(p, state, b);
    },
  };
}
