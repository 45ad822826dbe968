// Plugins through the real codec: outcomes, exceptions, keep, hashing.
import { test } from "node:test";
import assert from "node:assert/strict";
import { plugin, emit, drop, reject, Reject, hexDigests, t, run as runBatch } from "etl-plugin";
import { run, batch } from "etl-plugin/testing";
import { createHash } from "node:crypto";

const echo = (transform) => plugin({ name: "p", version: "0.1.0", transform });

test("a record returned is emitted; emit() is one to many; drop and reject", () => {
  const p = echo((r) => {
    if (r.n === 1) return { ...r, seen: true };
    if (r.n === 2) return emit({ part: 1 }, { part: 2 }, { part: 3 });
    if (r.n === 3) return drop();
    if (r.n === 4) return reject("`n` is four");
    if (r.n === 5) return emit();
    throw new Reject("`n` is out of range");
  });
  const got = run(p, {}, [{ n: 1 }, { n: 2 }, { n: 3 }, { n: 4 }, { n: 5 }, { n: 6 }]);
  assert.deepEqual(got, [
    { emit: [{ n: 1, seen: true }] },
    { emit: [{ part: 1 }, { part: 2 }, { part: 3 }] },
    { drop: true },
    { reject: "`n` is four" },
    { drop: true },
    { reject: "`n` is out of range" },
  ]);
});

test("an exception rejects only its record, naming its type but never its message", () => {
  const p = echo((r) => {
    if (r.secret === "boom") throw new TypeError(`bad value ${r.secret}`);
    if (r.secret === "odd") throw "a string with boom";
    if (r.secret === "null") return r.nothing.at(0);
    return r;
  });
  const got = run(p, {}, [{ secret: "ok" }, { secret: "boom" }, { secret: "odd" }, { secret: "null" }, { secret: "fine" }]);
  assert.deepEqual(got[0], { emit: [{ secret: "ok" }] });
  assert.deepEqual(got[4], { emit: [{ secret: "fine" }] });
  assert.match(got[1].reject, /^TypeError in transform \(plugin\.test\.js:\d+:\d+\)$/);
  assert.equal(got[2].reject, "string in transform");
  assert.match(got[3].reject, /^TypeError in transform/);
  for (const g of got.slice(1, 4)) assert.doesNotMatch(g.reject, /boom|nothing|undefined \(reading/);
});

test("returning undefined is an error, and so is a value that is not a record", () => {
  const p = echo((r) => (r.n === 1 ? undefined : r.n === 2 ? [r] : { when: new Date(0) }));
  const got = run(p, {}, [{ n: 1 }, { n: 2 }, { n: 3 }]);
  assert.equal(got[0].reject, "transform returned undefined: return the record, emit(...), drop() or reject(reason)");
  assert.equal(got[1].reject, "cannot emit the record: a record must be a plain object, not an array");
  assert.equal(got[2].reject, "cannot emit the record: `when` is a Date, not a record value");
  const later = echo(async (r) => r);
  assert.deepEqual(run(later, {}, [{ n: 1 }]), [{ reject: "cannot emit the record: a record must be a plain object, not a Promise" }]);
});

test("a record that fails to encode leaves no cells behind", () => {
  const p = echo((r) => (r.n === 2 ? emit({ ok: "yes" }, { s: "é", bad: { deep: Symbol("x") } }) : r));
  const got = run(p, {}, [{ n: 1, s: "a" }, { n: 2 }, { n: 3, s: "bc" }]);
  assert.deepEqual(got, [{ emit: [{ n: 1, s: "a" }] }, { reject: "cannot emit the record: `bad.deep` is a symbol, not a record value" }, { emit: [{ n: 3, s: "bc" }] }]);
});

test("transformBatch gives one result per record; when it fails, records are retried one by one", () => {
  const p = plugin({ name: "b", version: "0.1.0", transformBatch: (rs) => rs.map((r, i) => (i % 2 ? drop() : { i, ...r })) });
  assert.deepEqual(run(p, {}, [{ a: 1 }, { a: 2 }, { a: 3 }]), [{ emit: [{ i: 0, a: 1 }] }, { drop: true }, { emit: [{ i: 2, a: 3 }] }]);
  const short = plugin({ name: "b", version: "0.1.0", transformBatch: () => [] });
  assert.deepEqual(run(short, {}, [{ a: 1 }]), [{ reject: "transformBatch returned 0 results for 1 record" }]);
  // One bad record (a = 2) makes the batch throw; alone, only it fails.
  const throws = plugin({ name: "b", version: "0.1.0", transformBatch: (rs) => rs.map((r) => {
    if (r.a === 2) throw new RangeError(`bad ${r.a}`);
    if (r.a === 3) throw new Reject("`a` is three");
    r.seen = true;
    return r;
  }) });
  assert.deepEqual(run(throws, {}, [{ a: 1 }, { a: 2 }, { a: 3 }]).map((g) => g.reject ?? g.emit), [
    [{ a: 1, seen: true }],
    run(throws, {}, [{ a: 2 }])[0].reject,
    "`a` is three",
  ]);
  assert.match(run(throws, {}, [{ a: 2 }])[0].reject, /^RangeError in transformBatch/);
});

test("keep: kept records pass byte for byte; a batch all kept is unchanged", () => {
  const p = plugin({ name: "k", version: "0.1.0", keep: (r) => {
    if (r.n === 4) throw new Error("no");
    if (r.n === 5) return "yes";
    return r.n % 2 === 1;
  } });
  const input = batch([{ n: 1, s: "é", o: { a: [1] } }, { n: 2 }, { n: 3, f: 0.5 }, { n: 4 }, { n: 5 }]);
  const out = runBatch(p, undefined, input);
  assert.equal(out.tag, "changed");
  const { batch: b, outcomes } = out.val;
  assert.deepEqual(outcomes.map((o) => o.tag), ["emit", "drop", "emit", "reject", "reject"]);
  assert.match(outcomes[3].val, /^Error in keep/);
  assert.equal(outcomes[4].val, "keep returned a string, not true or false");
  assert.equal(b.text, input.text, "the input's arena, not a copy");
  assert.deepEqual(b.keys, input.keys);
  const first = input.records[0], third = input.records[2];
  const cells = (c, from, n) => [...c.subarray(from, from + n)];
  const third_at = input.records[0] + input.records[1];
  assert.deepEqual([...b.cellValues], [...cells(input.cellValues, 0, first), ...cells(input.cellValues, third_at, third)]);
  assert.deepEqual([...b.records], [first, third]);
  const all = runBatch(p, undefined, batch([{ n: 1 }, { n: 3 }]));
  assert.deepEqual(all, { tag: "unchanged" });
  assert.deepEqual(run(p, {}, [{ n: 1 }]), [{ emit: [{ n: 1 }] }]);
});

test("hexDigests: sha256, sha512, hmac-sha256 with a granted secret, UTF-8 bytes", () => {
  const p = plugin({ name: "h", version: "0.1.0", params: t.object({ algorithm: t.string(), secret: t.string({ optional: true }) }),
    transformBatch(rs, s) {
      const d = hexDigests(s.algorithm, rs.map((r) => r.v), { secret: s.secret });
      return rs.map((r, i) => ({ d: d[i] }));
    } });
  const one = (params, v, secrets) => run(p, params, [{ v }], { secrets })[0].emit[0].d;
  assert.equal(one({ algorithm: "sha256" }, "199.172.111.135"), "a6d0e2f27f6111e10b06790db42f34123e724aa0fd24b280f4a0ef5ee986784c");
  assert.equal(one({ algorithm: "sha256" }, "é"), "4a99557e4033c3539de2eb65472017cad5f9557f7a0625a09f1c3f6e2ba69c4c");
  assert.equal(one({ algorithm: "sha512" }, "abc"), "ddaf35a193617abacc417349ae20413112e6fa4e89a97ea20a9eeee64b55d39a2192992a274fc1a836ba3c23a3feebbd454d4423643ce80e2a9ac94fa54ca49f");
  assert.equal(one({ algorithm: "hmac-sha256", secret: "k" }, "The quick brown fox jumps over the lazy dog", { k: "key" }),
    "f7bc83f430538424b13298e6aa6fb143ef4d59a14946175997479dbc2d1a3cd8");
  assert.match(run(p, { algorithm: "hmac-sha256", secret: "nope" }, [{ v: "x" }])[0].reject, /^Error in transformBatch/);
  const many = run(p, { algorithm: "sha256" }, [{ v: "" }, { v: "a" }, { v: "日本" }]).map((r) => r.emit[0].d);
  assert.deepEqual(many, [
    "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855",
    "ca978112ca1bbdcafac231b39a23dc4da786eff8147c4e72b9807785afee48bb",
    createHash("sha256").update(Buffer.from("日本", "utf8")).digest("hex"),
  ]);
});

test("a projected step sees only what it reads, and the rest keep their place", () => {
  const seen = plugin({
    name: "seen",
    version: "1.0.0",
    projection: () => [["v", "u"], ["w"]],
    transform: (r) => (String(r.v).includes("sneak") ? { ...r, k: "mine" } : { w: Object.keys(r).join(","), ...r }),
  });
  const got = run(seen, {}, [{ v: "a", k: 1, u: "b", z: 2 }, { k: 3 }]);
  assert.deepEqual(Object.entries(got[0].emit[0]), [["w", "v,u"], ["k", 1], ["v", "a"], ["u", "b"], ["z", 2]]);
  assert.deepEqual(Object.entries(got[1].emit[0]), [["k", 3], ["w", ""]]);
  assert.throws(() => run(seen, {}, [{ v: "sneak", k: 1 }]), /field `k` is not among the fields it declared/);
  const bad = plugin({ name: "bad", version: "1.0.0", projection: () => "v", transform: (r) => r });
  assert.throws(() => run(bad, {}, [{ v: 1 }]), /two arrays of field names/);
});
