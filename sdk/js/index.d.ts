// Types of `etl-plugin` (`etl-plugin/testing` is in testing.d.ts).

/** A value in a record. Integers beyond 2^53 arrive as BigInt. */
export type Value = null | boolean | number | bigint | string | Value[] | Record;
/** A record: a plain object; field order is kept (integer-like keys come first, as in any JS object). */
export interface Record {
  [field: string]: Value;
}

/** What `emit`, `drop` and `reject` make. */
export interface Outcome {
  readonly kind: 0 | 1 | 2;
}

/** What `transform` gives for one record; `undefined` is an error (the record is rejected). */
export type Result = Record | Outcome;

/** Emits records for the input record: one to many; none counts as a drop. */
export function emit(...records: Record[]): Outcome;
/** Filters the input record out on purpose (counted, never a dead letter). */
export function drop(): Outcome;
/** Refuses the input record; the reason names fields and rules, never values. */
export function reject(reason: string): Outcome;
/** Thrown from `transform` or `keep`: rejects the record with `reason`. */
export class Reject extends Error {
  constructor(reason: string);
  readonly reason: string;
}

export type Algorithm = "sha256" | "sha512" | "hmac-sha256";
/**
 * Lowercase hex digests of the UTF-8 bytes of `values`, in one call into the
 * host. `secret` names a secret granted to the step (hmac-sha256 only).
 * Throws an Error saying why (e.g. the secret is not granted).
 */
export function hexDigests(algorithm: Algorithm, values: string[], options?: { secret?: string }): string[];

/** A params type: a JSON Schema and a check that fills defaults. */
export interface Type<T> {
  readonly schema: object;
  /** @internal */ readonly __type?: T;
}
export interface Options<T> {
  description?: string;
  /** Filled in when the key is absent; makes the key optional. */
  default?: T;
  /** The key may be absent (then `undefined`). */
  optional?: boolean;
}
type Out<P> = { [K in keyof P]: P[K] extends Type<infer T> ? T : never };

export const t: {
  string(opts?: Options<string>): Type<string>;
  integer(opts?: Options<number> & { minimum?: number; maximum?: number }): Type<number>;
  number(opts?: Options<number>): Type<number>;
  boolean(opts?: Options<boolean>): Type<boolean>;
  enum<const V extends string>(values: readonly V[], opts?: Options<V>): Type<V>;
  /** A string, number or boolean (a TOML scalar). */
  scalar(opts?: Options<string | number | boolean>): Type<string | number | boolean>;
  array<T>(item: Type<T>, opts?: Options<T[]> & { minItems?: number }): Type<T[]>;
  /** A table of any keys to values of one type. */
  map<T>(value: Type<T>, opts?: Options<{ [k: string]: T }>): Type<{ [k: string]: T }>;
  /** A table of known keys (unknown keys are errors; defaults are filled). */
  object<P extends { [k: string]: Type<any> }>(props: P, opts?: Options<Out<P>>): Type<Out<P>>;
  /** The first type that accepts the value; `expecting` is the error's words. */
  union<T extends Type<any>[]>(types: T, opts?: Options<any> & { expecting?: string }): Type<T[number] extends Type<infer U> ? U : never>;
};

interface Common<P, S> {
  /** Kebab-case name, shown by `host plugins inspect`. */
  name: string;
  version: string;
  /** One line on what the plugin does. */
  summary?: string;
  /** The step's params; its JSON Schema is carried in the component. */
  params?: Type<P>;
  /** Builds the state from checked params; throw an Error naming the wrong param. */
  init?(params: P): S;
  /**
   * The top-level fields the configured step reads and those it may add or
   * replace besides: the host then gives it records of only the fields it
   * reads and keeps the others (see plugins/README.md, "Declaring the
   * fields a step uses"). Undefined: whole records.
   */
  projection?(state: S): [reads: string[], writes: string[]] | undefined;
}

export type PluginDef<P = any, S = any> = Common<P, S> &
  (
    | { /** One outcome per record. */ transform(record: Record, state: S): Result; transformBatch?: never; keep?: never }
    | { /** One result per record, in order. */ transformBatch(records: Record[], state: S): Result[]; transform?: never; keep?: never }
    | { /** true keeps the record byte for byte, false drops it. */ keep(record: Record, state: S): boolean; transform?: never; transformBatch?: never }
  );

/** An opaque plugin; the module's default export. */
export interface Plugin {
  readonly name: string;
  readonly version: string;
  readonly summary: string;
}

/** Declares a plugin; export it as the module's default. */
export function plugin<P = any, S = P>(def: PluginDef<P, S>): Plugin;
