// etl-plugin's params: a tiny schema builder that makes JSON Schema (for the
// host's check) and checks values, filling defaults (for `init`).

export class Type {
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

export class ParamError extends Error {}

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
