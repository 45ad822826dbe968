// etl-plugin's codec: the host's column batch (wit/transform.wit) to plain
// records and back. Must not know about plugins or outcomes.

const KIND_NULL = 0, KIND_BOOLEAN = 1, KIND_INTEGER = 2, KIND_FLOAT = 3;
const KIND_TEXT = 4, KIND_OBJECT = 5, KIND_ARRAY = 6;
const NO_KEY = 0xffffffff;
const MAX_DEPTH = 128;
const TWO_32 = 4294967296;
const TWO_53 = 9007199254740992;

// ---------------------------------------------------------------------------
// Text. In the component, SpiderMonkey interprets JavaScript, and its
// String.prototype.substring is itself JavaScript (self-hosted): 1.1 us a
// call under wasmtime, against 0.65 us for TextDecoder.decode of a subarray
// (native). So each text value is decoded from its bytes, and the output's
// strings are joined and encoded once.

export const decoder = new TextDecoder("utf-8", { ignoreBOM: true });
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
export function arena(strings, count) {
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

/**
 * The records of a batch, and where each starts among the cells. A uniform
 * batch (see `decodeUniform`) also gives `uniform`, its columns.
 */
export function decodeBatch(b) {
  const u = decodeUniform(b);
  if (u !== null) return u;
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

// ---------------------------------------------------------------------------
// Uniform batches: every record has the same keys in the same order, with
// scalar values only (the usual JSON-lines case). Decoded column by column,
// and each record made by one object literal of the batch's shape, compiled
// once per shape: in the component, where JavaScript is interpreted, a
// literal of n properties costs about one property added.

const MAX_UNIFORM = 64; // widest shape compiled
const shapes = new Map(); // JSON of the names -> the records builder, or null
let compile = true; // false once `new Function` is refused

/** The function that builds records from columns for `names`, or null. */
function builder(names) {
  const id = JSON.stringify(names);
  let f = shapes.get(id);
  if (f !== undefined) return f;
  f = null;
  if (compile && !names.includes("__proto__")) {
    const params = names.map((_, j) => `c${j}`);
    const fields = names.map((name, j) => `${JSON.stringify(name)}: c${j}[r]`).join(", ");
    try {
      f = new Function(...params, "n", `const out = new Array(n);\nfor (let r = 0; r < n; r++) out[r] = {${fields}};\nreturn out;`);
    } catch {
      compile = false;
      f = null;
    }
  }
  if (shapes.size < 256) shapes.set(id, f);
  return f;
}

/**
 * A uniform batch's records, or null. `uniform` keeps what encoding needs to
 * copy unchanged columns: the width, the key ids, the columns' values and
 * which columns had a float (re-encoding those may change the kind).
 */
export function decodeUniform(b) {
  const counts = b.records, n = counts.length;
  if (n === 0) return null;
  const width = counts[0];
  if (width === 0 || width > MAX_UNIFORM) return null;
  for (let r = 1; r < n; r++) if (counts[r] !== width) return null;
  const keys = b.cellKeys, kinds = b.cellKinds;
  if (keys.length !== n * width) return null;
  const keyIds = new Array(width), names = new Array(width);
  for (let j = 0; j < width; j++) {
    const k = keys[j];
    if (k >= b.keys.length) return null;
    for (let i = 0; i < j; i++) if (keyIds[i] === k) return null;
    keyIds[j] = k;
    names[j] = b.keys[k];
  }
  const make = builder(names);
  if (make === null) return null;
  const v = b.cellValues;
  const w = new Uint32Array(v.buffer, v.byteOffset, v.length * 2);
  const f64 = new Float64Array(v.buffer, v.byteOffset, v.length);
  const buffer = b.text.buffer, offset = b.text.byteOffset;
  const cols = new Array(width), floats = new Array(width);
  for (let j = 0; j < width; j++) {
    const k = keyIds[j];
    const col = new Array(n);
    let hasFloat = false;
    for (let r = 0, c = j; r < n; r++, c += width) {
      if (keys[c] !== k) return null;
      const kind = kinds[c];
      if (kind === KIND_TEXT) {
        // A new view costs less than `subarray` (self-hosted, interpreted).
        // (Cutting the values from the arena decoded once, by sticky
        // RegExps of their lengths, was tried: compiling a RegExp per few
        // hundred values costs six times the decoding; RegExps cached by a
        // record's lengths need a key built per record, which costs as much
        // as the decoding; and an exec is itself slow over many characters.)
        col[r] = decoder.decode(new Uint8Array(buffer, offset + w[2 * c + 1], w[2 * c]));
      } else if (kind === KIND_NULL) col[r] = null;
      else if (kind === KIND_INTEGER) {
        const hi = w[2 * c + 1] | 0;
        col[r] = hi >= -0x200000 && hi < 0x200000 ? hi * TWO_32 + w[2 * c] : BigInt.asIntN(64, v[c]);
      } else if (kind === KIND_BOOLEAN) col[r] = w[2 * c] !== 0;
      else if (kind === KIND_FLOAT) {
        col[r] = f64[c];
        hasFloat = true;
      } else return null;
    }
    cols[j] = col;
    floats[j] = hasFloat;
  }
  const records = make(...cols, n);
  const starts = new Uint32Array(n + 1);
  for (let r = 0; r <= n; r++) starts[r] = r * width;
  return { records, starts, uniform: { width, keyIds, names, cols, floats } };
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
export class Unencodable extends Error {}

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

/**
 * The output batch of a uniform input batch `b` (decoded as `u`) whose
 * results are one record each, all plain objects of one shape with scalar
 * values; null when they are not (the caller then encodes record by record).
 * A cell whose value is the very value decoded from the same input field
 * (`===`; for strings, the same string) is copied with its text span, the
 * input's text being the start of the output's; only the other cells are
 * encoded. The batch holds what `Encoder` would write, but for where the
 * text lies in the arena.
 */
export function encodeUniform(b, u, results) {
  const n = results.length;
  if (n === 0 || n !== b.records.length) return null;
  const first = results[0];
  if (first === null || typeof first !== "object") return null;
  const names = Object.keys(first);
  const width = names.length;
  if (width === 0) return null;
  // Reflect.getPrototypeOf is native; Object.getPrototypeOf is self-hosted
  // JavaScript in SpiderMonkey (interpreted in the component).
  const proto = Object.prototype, getProto = Reflect.getPrototypeOf;
  for (let r = 0; r < n; r++) {
    const o = results[r];
    if (o === null || typeof o !== "object") return null;
    const p = getProto(o);
    if (p !== proto && p !== null) return null;
    if (o !== first) {
      const ks = Object.keys(o);
      if (ks.length !== width) return null;
      for (let j = 0; j < width; j++) if (ks[j] !== names[j]) return null;
    }
  }
  // Key ids: the input's keys first, in order (as `run` interns them).
  const outNames = b.keys.slice();
  const index = new Map();
  for (let i = 0; i < outNames.length; i++) if (!index.has(outNames[i])) index.set(outNames[i], i);
  const cells = n * width, inWidth = u.width;
  const keys = new Uint32Array(cells), kinds = new Uint8Array(cells), big = new BigUint64Array(cells);
  const w = new Uint32Array(big.buffer), f64 = new Float64Array(big.buffer);
  const iv = b.cellValues;
  const iw = new Uint32Array(iv.buffer, iv.byteOffset, iv.length * 2);
  const ikinds = b.cellKinds;
  const same = inWidth === width;
  if (same) {
    keys.set(b.cellKeys);
    kinds.set(ikinds);
    big.set(iv);
  }
  const strings = [], spans = []; // new text, and the cells that hold it
  let chars = 0;
  const base = b.text.length;
  for (let j = 0; j < width; j++) {
    const name = names[j];
    let key = index.get(name);
    if (key === undefined) {
      key = outNames.length;
      outNames.push(name);
      index.set(name, key);
    }
    // The input column of the same name, if its cells can be copied.
    let from = -1;
    for (let i = 0; i < inWidth; i++) {
      if (u.names[i] === name) {
        if (!u.floats[i]) from = i;
        break;
      }
    }
    const col = from >= 0 ? u.cols[from] : null;
    const inPlace = same && from === j; // the cells are there already
    if (!(inPlace && key === u.keyIds[j])) for (let c = j; c < cells; c += width) keys[c] = key;
    for (let r = 0, c = j; r < n; r++, c += width) {
      const v = results[r][name];
      if (col !== null && v === col[r]) {
        if (!inPlace) {
          const ic = r * inWidth + from;
          kinds[c] = ikinds[ic];
          w[2 * c] = iw[2 * ic];
          w[2 * c + 1] = iw[2 * ic + 1];
        }
      } else if (typeof v === "string") {
        kinds[c] = KIND_TEXT;
        w[2 * c] = v.length;
        w[2 * c + 1] = base + chars;
        chars += v.length;
        strings.push(v);
        spans.push(c);
      } else if (v === null) {
        kinds[c] = KIND_NULL;
        w[2 * c] = 0;
        w[2 * c + 1] = 0;
      } else if (typeof v === "number") {
        if ((v | 0) === v) {
          kinds[c] = KIND_INTEGER;
          w[2 * c] = v;
          w[2 * c + 1] = v < 0 ? 0xffffffff : 0;
        } else if (Number.isInteger(v) && v <= TWO_53 && v >= -TWO_53) {
          kinds[c] = KIND_INTEGER;
          const hi = Math.floor(v / TWO_32);
          w[2 * c] = v - hi * TWO_32;
          w[2 * c + 1] = hi;
        } else {
          kinds[c] = KIND_FLOAT;
          f64[c] = v;
        }
      } else if (typeof v === "boolean") {
        kinds[c] = KIND_BOOLEAN;
        w[2 * c] = v ? 1 : 0;
        w[2 * c + 1] = 0;
      } else if (typeof v === "bigint" && BigInt.asIntN(64, v) === v) {
        kinds[c] = KIND_INTEGER;
        big[c] = BigInt.asUintN(64, v);
      } else return null; // undefined, containers, bigints past 64 bits, others: record by record
    }
  }
  let text = b.text;
  if (strings.length > 0) {
    const joined = strings.join("");
    const bytes = encoder.encode(joined);
    if (bytes.length !== joined.length) {
      let at = base;
      for (let i = 0; i < spans.length; i++) {
        const c = spans[i], len = utf8Length(strings[i]);
        w[2 * c] = len;
        w[2 * c + 1] = at;
        at += len;
      }
    }
    text = new Uint8Array(base + bytes.length);
    text.set(b.text);
    text.set(bytes, base);
  }
  const counts = new Uint32Array(n).fill(width);
  return { keys: outNames, text, cellKeys: keys, cellKinds: kinds, cellValues: big, records: counts };
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

export function describeType(v) {
  if (v === null) return "null";
  if (typeof v !== "object") return `a ${typeof v}`;
  if (Array.isArray(v)) return "an array";
  const c = v.constructor;
  return `a ${c && c.name ? c.name : "object"}`;
}
