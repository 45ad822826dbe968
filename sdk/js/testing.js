// etl-plugin/testing: runs a plugin natively (Node) through the same codec
// the component uses: records are encoded into a column batch, the plugin's
// `transform` runs on the decoded batch, and its output batch is decoded
// back. Hashing uses node:crypto, with the secrets a test grants.

import { createHash, createHmac } from "node:crypto";
import { Encoder, configure as configurePlugin, decodeBatch, projection, run as runBatch, setHasher } from "./index.js";

let secrets = new Map();

setHasher((algorithm, secret, data, ends) => {
  const width = algorithm === "sha512" ? 128 : 64;
  let key = null;
  if (algorithm === "hmac-sha256") {
    if (!secrets.has(secret)) throw new Error(`secret \`${secret}\` is not granted to this step`);
    key = secrets.get(secret);
  }
  const out = Buffer.alloc(ends.length * width);
  let from = 0;
  for (let i = 0; i < ends.length; i++) {
    const h = key === null ? createHash(algorithm) : createHmac("sha256", key);
    h.update(data.subarray(from, ends[i]));
    out.write(h.digest("hex"), i * width, "latin1");
    from = ends[i];
  }
  return new Uint8Array(out.buffer, out.byteOffset, out.length);
});

/** Checks `params` and runs `init`: the state, or an Error saying what is wrong. */
export function configure(pluginDef, params = {}) {
  return configurePlugin(pluginDef, JSON.stringify(params));
}

/** The column batch of `records`, as the host would send it. */
export function batch(records) {
  const enc = new Encoder(64, records.length);
  for (const r of records) enc.record(r);
  return enc.finish();
}

/**
 * Runs `records` through the plugin as one batch; one result per record:
 * `{emit: [records]}`, `{drop: true}` or `{reject: "reason"}`.
 * `secrets` maps granted secret names to keys (strings or bytes).
 */
export function run(pluginDef, params, records, { secrets: granted = {} } = {}) {
  secrets = new Map(Object.entries(granted).map(([k, v]) => [k, typeof v === "string" ? Buffer.from(v) : v]));
  const state = configure(pluginDef, params);
  // A step that declares its fields is given only those and its records
  // are completed as the host completes them.
  const p = projection(pluginDef, state);
  const given = p ? records.map((r) => Object.fromEntries(Object.entries(r).filter(([k]) => p.reads.includes(k)))) : records;
  const input = batch(given);
  const got = results(input, runBatch(pluginDef, state, input));
  if (!p) return got;
  const owned = new Set([...p.reads, ...p.writes]);
  return got.map((g, i) => (g.emit ? { emit: g.emit.map((e) => merge(records[i], e, owned)) } : g));
}

/**
 * `emitted` completed with `record`'s fields the step does not own: those
 * keep their place, the step's fields take the owned fields' places in
 * order, the rest after the last of those (or at the end).
 */
function merge(record, emitted, owned) {
  for (const k of Object.keys(emitted)) {
    if (!owned.has(k)) throw new Error(`malformed output: field \`${k}\` is not among the fields it declared (reads and writes)`);
  }
  const places = Object.keys(record).filter((k) => owned.has(k)).length;
  let mine = Object.entries(emitted);
  const out = {};
  let seen = 0;
  for (const [k, v] of Object.entries(record)) {
    if (!owned.has(k)) {
      out[k] = v;
      continue;
    }
    seen += 1;
    const take = seen === places ? mine : mine.slice(0, 1);
    for (const [name, value] of take) out[name] = value;
    mine = mine.slice(take.length);
  }
  for (const [name, value] of mine) out[name] = value;
  return out;
}

/** The results of a WIT output against its input batch. */
export function results(input, output) {
  if (output.tag === "unchanged") return decodeBatch(input).records.map((r) => ({ emit: [r] }));
  const { batch: b, outcomes } = output.val;
  check(b, outcomes.length === input.records.length, "one outcome per input record");
  const out = decodeBatch(b).records;
  let next = 0;
  const got = outcomes.map((o) => {
    if (o.tag === "drop") return { drop: true };
    if (o.tag === "reject") return { reject: o.val };
    if (o.val === 0) return { drop: true };
    const emitted = out.slice(next, next + o.val);
    next += o.val;
    return { emit: emitted };
  });
  check(b, next === out.length, "emitted counts that add up to the output records");
  return got;
}

/** What the host checks of an output batch's columns. */
function check(b, ok, what) {
  if (!ok) throw new Error(`malformed output: expected ${what}`);
  const n = b.cellKeys.length;
  if (b.cellKinds.length !== n || b.cellValues.length !== n) throw new Error("malformed output: column lengths differ");
  let cells = 0;
  for (const c of b.records) cells += c;
  if (cells !== n) throw new Error("malformed output: record cell counts do not add up");
}
