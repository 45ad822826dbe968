// Types of `etl-plugin/testing`.
import type { Plugin, Record } from "./index.js";

/** What became of one record. */
export type TestResult = { emit: Record[] } | { drop: true } | { reject: string };

/**
 * Runs `records` as one batch through the plugin and the real codec (encoded
 * to columns, decoded, transformed, encoded, decoded); one result per record.
 * `secrets` are the keys of granted secrets, for hmac-sha256.
 */
export function run(
  plugin: Plugin,
  params: object,
  records: Record[],
  options?: { secrets?: { [name: string]: string | Uint8Array } },
): TestResult[];

/** Checks params and runs `init`: the state, or throws an Error saying what is wrong. */
export function configure(plugin: Plugin, params?: object): unknown;

/** The column batch of `records`, as the host would send it. */
export function batch(records: Record[]): object;
