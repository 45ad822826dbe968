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
