// etl-plugin: transform plugins for the ETL host, written in JavaScript.
//
// A plugin works on plain records (objects of null, booleans, numbers,
// BigInts, strings, objects and arrays). This module owns the codec between
// the host's column batch (wit/transform.wit) and those records, the outcome
// helpers, the params schema builder `t`, and the glue that `build.js` wires
// into a component. It imports nothing: hashing is injected (the host's
// `hex-digests` inside the component, node:crypto in `etl-plugin/testing`).

const KIND_NULL = 0, KIND_BOOLEAN = 1, KIND_INTEGER = 2, KIND_FLOAT = 3;
const KIND_TEXT = 4, KIND_OBJECT = 5, KIND_ARRAY = 6;
const NO_KEY = 0xffffffff;
const MAX_DEPTH = 128;
const TWO_32 = 4294967296;
const TWO_53 = 9007199254740992;

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
// Text. In the component, SpiderMonkey interprets JavaScript, and its
// String.prototype.substring is itself JavaScript (self-hosted): 1.1 us a
// call under wasmtime, against 0.65 us for TextDecoder.decode of a subarray
// (native). So each text value is decoded from its bytes, and the output's
// strings are joined and encoded once.

const decoder = new TextDecoder("utf-8", { ignoreBOM: true });
const encoder = new TextEncoder();

/** UTF-8 length of a string (for batches that are not all ASCII). */
function utf8Length(s) {
  let n = s.length;
  for (let i = 0; i < s.length; i++) {
    const c = s.charCodeAt(i);
    if (c < 0x80) continue;
    if (c < 0x800) n += 1;
    else if (c >= 0xd800 && c < 0xdc00 && i + 1 < s.length) {
      const d = s.charCodeAt(i + 1);
      if (d >= 0xdc00 && d < 0xe000) {
        n += 2; // a pair: 2 UTF-16 units, 4 bytes
        i++;
      } else n += 2; // lone surrogate: U+FFFD, 3 bytes
    } else n += 2;
  }
  return n;
}

/**
 * Many strings as one UTF-8 arena: its bytes and each string's byte offset
 * and length; one encode for the lot.
 */
function arena(strings, count) {
  const joined = count === strings.length ? strings.join("") : strings.slice(0, count).join("");
  const bytes = encoder.encode(joined);
  const lens = new Uint32Array(count);
  if (bytes.length === joined.length) {
    for (let i = 0; i < count; i++) lens[i] = strings[i].length;
  } else {
    for (let i = 0; i < count; i++) lens[i] = utf8Length(strings[i]);
  }
  return { bytes, lens };
}

// ---------------------------------------------------------------------------
// Decoding a batch into records

/** The records of a batch, and where each starts among the cells. */
export function decodeBatch(b) {
  const n = b.records.length;
  const d = new Decoder(b);
  const records = new Array(n);
  const starts = new Uint32Array(n + 1);
  let c = 0;
  for (let r = 0; r < n; r++) {
    starts[r] = c;
    const end = c + b.records[r];
    records[r] = d.object(c, end);
    c = end;
  }
  starts[n] = c;
  return { records, starts };
}

class Decoder {
  constructor(b) {
    const v = b.cellValues;
    this.names = b.keys;
    this.proto = b.keys.includes("__proto__");
    this.keys = b.cellKeys;
    this.kinds = b.cellKinds;
    this.big = v;
    this.words = new Uint32Array(v.buffer, v.byteOffset, v.length * 2);
    this.floats = new Float64Array(v.buffer, v.byteOffset, v.length);
    this.bytes = b.text;
    this.next = 0; // the cell after the last value read by `value`
  }

  /**
   * The fields in cells [c, end) as an object. The common kinds are inlined:
   * in the component, JavaScript is interpreted and every call counts.
   */
  object(c, end) {
    const o = {};
    const names = this.names, keys = this.keys, kinds = this.kinds, w = this.words, bytes = this.bytes, proto = this.proto;
    while (c < end) {
      const name = names[keys[c]];
      const k = kinds[c];
      let v;
      if (k === KIND_TEXT) {
        const at = w[2 * c + 1];
        v = decoder.decode(bytes.subarray(at, at + w[2 * c]));
        c++;
      } else if (k === KIND_INTEGER) {
        const hi = w[2 * c + 1] | 0;
        v = hi >= -0x200000 && hi < 0x200000 ? hi * TWO_32 + w[2 * c] : BigInt.asIntN(64, this.big[c]);
        c++;
      } else if (k === KIND_NULL) {
        v = null;
        c++;
      } else {
        v = this.value(c);
        c = this.next;
      }
      if (proto && name === "__proto__") {
        Object.defineProperty(o, name, { value: v, enumerable: true, writable: true, configurable: true });
      } else o[name] = v;
    }
    return o;
  }

  /** The value of cell c; sets `next` to the cell after it. */
  value(c) {
    const w = this.words;
    switch (this.kinds[c]) {
      case KIND_NULL:
        this.next = c + 1;
        return null;
      case KIND_BOOLEAN:
        this.next = c + 1;
        return w[2 * c] !== 0;
      case KIND_INTEGER: {
        this.next = c + 1;
        const hi = w[2 * c + 1] | 0;
        if (hi >= -0x200000 && hi < 0x200000) return hi * TWO_32 + w[2 * c];
        return BigInt.asIntN(64, this.big[c]);
      }
      case KIND_FLOAT:
        this.next = c + 1;
        return this.floats[c];
      case KIND_TEXT: {
        this.next = c + 1;
        const at = w[2 * c + 1], len = w[2 * c];
        return decoder.decode(this.bytes.subarray(at, at + len));
      }
      case KIND_OBJECT: {
        const end = c + 1 + w[2 * c];
        const o = this.object(c + 1, end);
        this.next = end;
        return o;
      }
      case KIND_ARRAY: {
        const end = c + 1 + w[2 * c];
        const a = [];
        let i = c + 1;
        while (i < end) {
          a.push(this.value(i));
          i = this.next;
        }
        this.next = end;
        return a;
      }
      default:
        throw new Error(`unknown cell kind ${this.kinds[c]}`);
    }
  }
}

// ---------------------------------------------------------------------------
// Encoding records into a batch

/** Why a record cannot be encoded; names the field, never the value. */
class Unencodable extends Error {}

/** Builds a batch from records, growing typed arrays as it goes. */
export class Encoder {
  constructor(cells = 1024, records = 64) {
    this.names = [];
    this.index = new Map();
    this.cells = 0;
    this.grow(Math.max(cells, 16));
    this.counts = new Uint32Array(Math.max(records, 4));
    this.records = 0;
    this.strings = []; // the text cells' strings, in cell order
    this.nstrings = 0;
    // UTF-16 offset of the next string in the joined output text: its byte
    // offset too when the text is ASCII, as it usually is (see `finish`).
    this.chars = 0;
  }

  grow(size) {
    const keys = new Uint32Array(size), kinds = new Uint8Array(size), big = new BigUint64Array(size);
    if (this.keys) {
      keys.set(this.keys);
      kinds.set(this.kinds);
      big.set(this.big);
    }
    this.keys = keys;
    this.kinds = kinds;
    this.big = big;
    this.words = new Uint32Array(big.buffer);
    this.floats = new Float64Array(big.buffer);
  }

  key(name) {
    let k = this.index.get(name);
    if (k === undefined) {
      k = this.names.length;
      this.names.push(name);
      this.index.set(name, k);
    }
    return k;
  }

  /** Appends one record; throws Unencodable, after which the caller rolls the counters back. */
  record(r) {
    const proto = r !== null && typeof r === "object" ? Object.getPrototypeOf(r) : undefined;
    if (proto !== Object.prototype && proto !== null) {
      throw new Unencodable(`a record must be a plain object, not ${describeType(r)}`);
    }
    const start = this.cells;
    this.fields(r, 0, "");
    if (this.records === this.counts.length) {
      const c = new Uint32Array(this.counts.length * 2);
      c.set(this.counts);
      this.counts = c;
    }
    this.counts[this.records++] = this.cells - start;
  }

  /**
   * Appends the fields of object `o`. Strings, null and small integers are
   * inlined with the counters in locals: in the component JavaScript is
   * interpreted, and every call and property access counts.
   */
  fields(o, depth, path) {
    const names = Object.keys(o);
    const index = this.index, strings = this.strings;
    if (this.cells + names.length > this.keys.length) this.grow(Math.max(this.keys.length * 2, this.cells + names.length));
    let keys = this.keys, kinds = this.kinds, w = this.words;
    let cells = this.cells, ns = this.nstrings, chars = this.chars;
    for (let i = 0; i < names.length; i++) {
      const name = names[i];
      const v = o[name];
      let k = index.get(name);
      if (k === undefined) k = this.key(name);
      if (typeof v === "string") {
        keys[cells] = k;
        kinds[cells] = KIND_TEXT;
        w[2 * cells] = v.length;
        w[2 * cells + 1] = chars;
        chars += v.length;
        strings[ns++] = v;
        cells++;
      } else if (v === null) {
        keys[cells] = k;
        kinds[cells] = KIND_NULL;
        w[2 * cells] = 0;
        w[2 * cells + 1] = 0;
        cells++;
      } else if (v !== undefined) {
        this.cells = cells;
        this.nstrings = ns;
        this.chars = chars;
        this.cell(k, v, depth, path, name);
        cells = this.cells;
        ns = this.nstrings;
        chars = this.chars;
        // Containers may have used the room reserved for the rest.
        if (cells + names.length - i > this.keys.length) this.grow(Math.max(this.keys.length * 2, cells + names.length));
        keys = this.keys;
        kinds = this.kinds;
        w = this.words;
      }
    }
    this.cells = cells;
    this.nstrings = ns;
    this.chars = chars;
  }

  /** Appends one cell (and a container's members); `path`/`name` are for errors. */
  cell(key, v, depth, path, name) {
    const c = this.cells;
    if (c === this.keys.length) this.grow(c * 2);
    this.cells = c + 1;
    this.keys[c] = key;
    const w = this.words;
    switch (typeof v) {
      case "string":
        this.kinds[c] = KIND_TEXT;
        w[2 * c] = v.length;
        w[2 * c + 1] = this.chars;
        this.chars += v.length;
        this.strings[this.nstrings++] = v;
        return;
      case "number":
        if ((v | 0) === v) {
          this.kinds[c] = KIND_INTEGER;
          w[2 * c] = v;
          w[2 * c + 1] = v < 0 ? 0xffffffff : 0;
        } else if (Number.isInteger(v) && v <= TWO_53 && v >= -TWO_53) {
          this.kinds[c] = KIND_INTEGER;
          const hi = Math.floor(v / TWO_32);
          w[2 * c] = v - hi * TWO_32;
          w[2 * c + 1] = hi;
        } else {
          this.kinds[c] = KIND_FLOAT;
          this.floats[c] = v;
        }
        return;
      case "boolean":
        this.kinds[c] = KIND_BOOLEAN;
        w[2 * c] = v ? 1 : 0;
        w[2 * c + 1] = 0;
        return;
      case "bigint":
        if (BigInt.asIntN(64, v) !== v) throw new Unencodable(`\`${join(path, name)}\` is an integer outside 64 bits`);
        this.kinds[c] = KIND_INTEGER;
        this.big[c] = BigInt.asUintN(64, v);
        return;
      case "object": {
        if (v === null) {
          this.kinds[c] = KIND_NULL;
          w[2 * c] = 0;
          w[2 * c + 1] = 0;
          return;
        }
        const here = join(path, name);
        if (depth + 1 >= MAX_DEPTH) throw new Unencodable(`\`${here}\` is nested deeper than ${MAX_DEPTH}`);
        if (Array.isArray(v)) {
          this.kinds[c] = KIND_ARRAY;
          for (let i = 0; i < v.length; i++) {
            const e = v[i];
            this.cell(NO_KEY, e === undefined ? null : e, depth + 1, here, i);
          }
        } else if (plain(v)) {
          this.kinds[c] = KIND_OBJECT;
          this.fields(v, depth + 1, here);
        } else throw new Unencodable(`\`${here}\` is ${describeType(v)}, not a record value`);
        // The columns may have grown (new buffers) while the members were added.
        this.words[2 * c] = this.cells - c - 1;
        this.words[2 * c + 1] = 0;
        return;
      }
      default:
        throw new Unencodable(`\`${join(path, name)}\` is ${describeType(v)}, not a record value`);
    }
  }

  /** Appends cells [from, to) of a decoded batch `b` as they are (for `keep`; never mixed with `record`, whose text `finish` lays out). */
  copy(b, from, to, count) {
    const n = to - from;
    while (this.cells + n > this.keys.length) this.grow(this.keys.length * 2);
    this.keys.set(b.cellKeys.subarray(from, to), this.cells);
    this.kinds.set(b.cellKinds.subarray(from, to), this.cells);
    this.big.set(b.cellValues.subarray(from, to), this.cells);
    this.cells += n;
    if (this.records === this.counts.length) {
      const c = new Uint32Array(this.counts.length * 2);
      c.set(this.counts);
      this.counts = c;
    }
    this.counts[this.records++] = count;
  }

  /** The batch (WIT field names); text spans filled in from one encode. */
  finish() {
    const n = this.nstrings;
    const joined = n === this.strings.length ? this.strings.join("") : this.strings.slice(0, n).join("");
    const bytes = encoder.encode(joined);
    if (bytes.length !== joined.length) {
      // Not all ASCII: spans in bytes, string by string (the text cells
      // hold the strings in order).
      const w = this.words, kinds = this.kinds, strings = this.strings;
      let at = 0, i = 0;
      for (let c = 0; c < this.cells; c++) {
        if (kinds[c] !== KIND_TEXT) continue;
        const len = utf8Length(strings[i++]);
        w[2 * c] = len;
        w[2 * c + 1] = at;
        at += len;
      }
    }
    return {
      keys: this.names,
      text: bytes,
      cellKeys: this.keys.subarray(0, this.cells),
      cellKinds: this.kinds.subarray(0, this.cells),
      cellValues: this.big.subarray(0, this.cells),
      records: this.counts.subarray(0, this.records),
    };
  }
}

/** A field's path for errors: `a.b`, `a[2]`. */
function join(path, name) {
  if (typeof name === "number") return `${path}[${name}]`;
  return path ? `${path}.${name}` : name;
}

function plain(o) {
  const p = Object.getPrototypeOf(o);
  return p === Object.prototype || p === null;
}

function describeType(v) {
  if (v === null) return "null";
  if (typeof v !== "object") return `a ${typeof v}`;
  if (Array.isArray(v)) return "an array";
  const c = v.constructor;
  return `a ${c && c.name ? c.name : "object"}`;
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
  for (let i = 0; i < out.length; i++) out[i] = decoder.decode(hex.subarray(i * width, (i + 1) * width));
  return out;
}

// ---------------------------------------------------------------------------
// Params: a tiny schema builder that makes JSON Schema and checks values

class Type {
  constructor(schema, check, opts = {}) {
    this.schema = schema;
    this.check = check; // (value, path) -> value; throws ParamError
    if (opts.description !== undefined) this.schema.description = opts.description;
    if (opts.default !== undefined) this.schema.default = opts.default;
    this.hasDefault = opts.default !== undefined;
    this.default = opts.default;
    this.optional = Boolean(opts.optional) || this.hasDefault;
  }
}

class ParamError extends Error {}

const at = (path) => (path ? `\`${path}\`: ` : "");
const show = (v) => (typeof v === "string" ? `\`${v}\`` : JSON.stringify(v) ?? String(v));
const kindOf = (v) => (v === null ? "null" : Array.isArray(v) ? "an array" : typeof v === "object" ? "a table" : `a ${typeof v}`);

function need(ok, path, what, v) {
  if (!ok) throw new ParamError(`${at(path)}expected ${what}, got ${kindOf(v)}`);
}

/** Schema builders; options: `description`, `default`, `optional`. */
export const t = {
  string(opts = {}) {
    return new Type({ type: "string" }, (v, p) => (need(typeof v === "string", p, "a string", v), v), opts);
  },
  integer(opts = {}) {
    const s = { type: "integer" };
    if (opts.minimum !== undefined) s.minimum = opts.minimum;
    if (opts.maximum !== undefined) s.maximum = opts.maximum;
    return new Type(s, (v, p) => {
      need(Number.isInteger(v), p, "an integer", v);
      if (opts.minimum !== undefined && v < opts.minimum) throw new ParamError(`${at(p)}must be at least ${opts.minimum}`);
      if (opts.maximum !== undefined && v > opts.maximum) throw new ParamError(`${at(p)}must be at most ${opts.maximum}`);
      return v;
    }, opts);
  },
  number(opts = {}) {
    return new Type({ type: "number" }, (v, p) => (need(typeof v === "number", p, "a number", v), v), opts);
  },
  boolean(opts = {}) {
    return new Type({ type: "boolean" }, (v, p) => (need(typeof v === "boolean", p, "a boolean", v), v), opts);
  },
  /** One of fixed strings. */
  enum(values, opts = {}) {
    return new Type({ type: "string", enum: [...values] }, (v, p) => {
      if (!values.includes(v)) {
        throw new ParamError(`${at(p)}unknown variant ${show(v)}, expected one of ${values.map((x) => `\`${x}\``).join(", ")}`);
      }
      return v;
    }, opts);
  },
  /** A string, integer, float or boolean (a TOML scalar). */
  scalar(opts = {}) {
    return new Type({ type: ["string", "number", "boolean"] }, (v, p) => {
      need(typeof v === "string" || typeof v === "number" || typeof v === "boolean", p, "a string, number or boolean", v);
      return v;
    }, opts);
  },
  array(item, opts = {}) {
    const s = { type: "array", items: item.schema };
    if (opts.minItems !== undefined) s.minItems = opts.minItems;
    return new Type(s, (v, p) => {
      need(Array.isArray(v), p, "a list", v);
      if (opts.minItems !== undefined && v.length < opts.minItems) {
        throw new ParamError(`${at(p)}must hold at least ${opts.minItems} item${opts.minItems === 1 ? "" : "s"}`);
      }
      return v.map((e, i) => item.check(e, `${p}[${i}]`));
    }, opts);
  },
  /** A table of any keys to values of one type. */
  map(value, opts = {}) {
    return new Type({ type: "object", additionalProperties: value.schema }, (v, p) => {
      need(v !== null && typeof v === "object" && !Array.isArray(v), p, "a table", v);
      const out = {};
      for (const k of Object.keys(v)) out[k] = value.check(v[k], p ? `${p}.${k}` : k);
      return out;
    }, opts);
  },
  /** A table of known keys; unknown keys are errors, defaults are filled. */
  object(props, opts = {}) {
    const names = Object.keys(props);
    const required = names.filter((k) => !props[k].optional);
    const properties = {};
    for (const k of names) properties[k] = props[k].schema;
    const s = { type: "object", properties, additionalProperties: false };
    if (required.length) s.required = required;
    return new Type(s, (v, p) => {
      need(v !== null && typeof v === "object" && !Array.isArray(v), p, "a table", v);
      for (const k of Object.keys(v)) {
        if (!Object.prototype.hasOwnProperty.call(props, k)) {
          throw new ParamError(`${at(p)}unknown field \`${k}\`, expected one of ${names.map((x) => `\`${x}\``).join(", ")}`);
        }
      }
      const out = {};
      for (const k of names) {
        const path = p ? `${p}.${k}` : k;
        if (v[k] === undefined || v[k] === null) {
          if (props[k].hasDefault) out[k] = structuredCopy(props[k].default);
          else if (!props[k].optional) throw new ParamError(`missing field \`${path}\``);
        } else out[k] = props[k].check(v[k], path);
      }
      return out;
    }, opts);
  },
  /** The first of several types that accepts the value; `expecting` says what. */
  union(types, opts = {}) {
    return new Type({ anyOf: types.map((x) => x.schema) }, (v, p) => {
      for (const x of types) {
        try {
          return x.check(v, p);
        } catch (e) {
          if (!(e instanceof ParamError)) throw e;
        }
      }
      throw new ParamError(`${at(p)}expected ${opts.expecting ?? types.map((x) => x.schema.type ?? "a value").join(" or ")}`);
    }, opts);
  },
};

function structuredCopy(v) {
  return v === null || typeof v !== "object" ? v : JSON.parse(JSON.stringify(v));
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
 * One batch through a configured plugin: the WIT `output` value
 * ({tag: "unchanged"} or {tag: "changed", val: {batch, outcomes}}).
 */
export function run(p, state, b) {
  const { records, starts } = decodeBatch(b);
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

function encodeOne(enc, r) {
  const cells = enc.cells, count = enc.records, strings = enc.nstrings, chars = enc.chars;
  try {
    enc.record(r);
  } catch (e) {
    enc.cells = cells;
    enc.records = count;
    enc.nstrings = strings;
    enc.chars = chars;
    if (e instanceof Unencodable) return { tag: "reject", val: `cannot emit the record: ${e.message}` };
    if (e instanceof RangeError) return { tag: "reject", val: "cannot emit the record: too large or circular" };
    throw e;
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
    enc.cells = cells;
    enc.records = count;
    enc.nstrings = strings;
    enc.chars = chars;
    if (e instanceof Unencodable) return { tag: "reject", val: `cannot emit the record: ${e.message}` };
    if (e instanceof RangeError) return { tag: "reject", val: "cannot emit the record: too large or circular" };
    throw e;
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
 * The component's three exports for a plugin (what `build.js` wires to the
 * WIT world `plugin`). `hostHexDigests` is the host import.
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
        configured = true;
        return { tag: "ok", val: undefined };
      } catch (e) {
        configured = false;
        return { tag: "err", val: e instanceof Error ? e.message : String(e) };
      }
    },
    transform(b) {
      if (!configured) {
        return { tag: "changed", val: { batch: new Encoder(16, 4).finish(), outcomes: Array.from(b.records, () => ({ tag: "reject", val: "plugin was not configured" })) } };
      }
      return run(p, state, b);
    },
  };
}
