// The Rust mask's tests (plugins/mask/src/tests.rs), on the JS port.
import { test } from "node:test";
import assert from "node:assert/strict";
import { run, configure } from "etl-plugin/testing";
import mask from "../plugin.js";

const IP = "199.172.111.135";
const IP_SHA256 = "a6d0e2f27f6111e10b06790db42f34123e724aa0fd24b280f4a0ef5ee986784c";
const DEVICE = "593-47-5928";
const DEVICE_SHA256 = "4f00c1a807b673887c7af517d0df68e6b41aecf8cbec26c71fe4c580664669ed";
const ABC_SHA512 = "ddaf35a193617abacc417349ae20413112e6fa4e89a97ea20a9eeee64b55d39a2192992a274fc1a836ba3c23a3feebbd454d4423643ce80e2a9ac94fa54ca49f";
const E_ACUTE_SHA256 = "4a99557e4033c3539de2eb65472017cad5f9557f7a0625a09f1c3f6e2ba69c4c";

test("renames into outputs in place and drops the raw values", () => {
  const got = run(mask, { fields: { ip: "masked_ip", device_id: "masked_device_id" } }, [{ user_id: "u", ip: IP, locale: null, device_id: DEVICE }]);
  assert.deepEqual(got, [{ emit: [{ user_id: "u", masked_ip: IP_SHA256, locale: null, masked_device_id: DEVICE_SHA256 }] }]);
  assert.deepEqual(Object.keys(got[0].emit[0]), ["user_id", "masked_ip", "locale", "masked_device_id"]);
});

test("sha512 and UTF-8 bytes", () => {
  assert.deepEqual(run(mask, { fields: ["a"], algorithm: "sha512" }, [{ a: "abc" }]), [{ emit: [{ a: ABC_SHA512 }] }]);
  assert.deepEqual(run(mask, { fields: ["a"] }, [{ a: "é" }]), [{ emit: [{ a: E_ACUTE_SHA256 }] }]);
});

test("hmac uses the granted secret", () => {
  const params = { fields: ["a"], algorithm: "hmac-sha256", secret: "k" };
  const got = run(mask, params, [{ a: "The quick brown fox jumps over the lazy dog" }], { secrets: { k: "key" } });
  assert.deepEqual(got, [{ emit: [{ a: "f7bc83f430538424b13298e6aa6fb143ef4d59a14946175997479dbc2d1a3cd8" }] }]);
  const ungranted = run(mask, params, [{ a: "x" }, { a: "y" }]);
  assert.deepEqual(ungranted, Array(2).fill({ reject: "hashing failed: secret `k` is not granted to this step" }));
});

test("null stays null; non-text and missing are rejected", () => {
  const got = run(mask, { fields: { ip: "masked_ip", device_id: "d" } }, [
    { ip: null, device_id: DEVICE },
    { ip: 42, device_id: DEVICE },
    { device_id: DEVICE },
    { ip: IP, device_id: { nested: 1 } },
    { ip: IP, device_id: DEVICE },
  ]);
  assert.deepEqual(got, [
    { emit: [{ masked_ip: null, d: DEVICE_SHA256 }] },
    { reject: "`ip` is not text; mask takes text" },
    { reject: "`ip` is missing" },
    { reject: "`device_id` is not text; mask takes text" },
    { emit: [{ masked_ip: IP_SHA256, d: DEVICE_SHA256 }] },
  ]);
});

test("missing may become null (appended) and originals may be kept", () => {
  const got = run(mask, { fields: { ip: "m" }, missing: "null", keep_original: true }, [{ x: 1 }, { ip: IP }]);
  assert.deepEqual(got, [{ emit: [{ x: 1, m: null }] }, { emit: [{ ip: IP, m: IP_SHA256 }] }]);
});

test("bad parameters say what is wrong", () => {
  const err = (p) => assert.throws(() => configure(mask, p), (e) => (err.last = e.message, true)) ?? err.last;
  assert.equal(err({ fields: [] }), "`fields` must name at least one field");
  assert.equal(err({ fields: ["a"], algorithm: "hmac-sha256" }), "hmac-sha256 needs `secret`, the name of a secret granted to this step");
  assert.equal(err({ fields: ["a"], secret: "k" }), "`secret` is only used by hmac-sha256");
  assert.match(err({ fields: ["a"], algorithm: "md5" }), /unknown variant `md5`/);
  assert.match(err({ fields: 3 }), /a list of field names or a table/);
});
