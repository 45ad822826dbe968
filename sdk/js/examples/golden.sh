#!/usr/bin/env bash
# Golden check: the JS mask gives byte-identical output to the Rust mask on
# the 100 Fetch messages, through the logins chain (flatten -> app-version ->
# mask), once as pipelines/logins.toml maps rows onto its sink's columns and
# once without the sink (records as they are: field order shows). Then the
# same for the JS filter against the Rust filter (a set and a null test).
#
#   sdk/js/examples/golden.sh          (from the repository root)
#
# HOST: the host binary (default target/release/host); HOST_PLUGIN_PATH: the
# Rust components (default target/plugins); JS_MASK: the JS component
# (default sdk/js/examples/mask/dist/js-mask.wasm, built if missing);
# JS_FILTER likewise.
# Exits non-zero, printing the diff, if any line differs.
set -euo pipefail
repo=$(cd "$(dirname "$0")/../../.." && pwd)
host=${HOST:-$repo/target/release/host}
export HOST_PLUGIN_PATH=${HOST_PLUGIN_PATH:-$repo/target/plugins}
js=${JS_MASK:-$repo/sdk/js/examples/mask/dist/js-mask.wasm}
jsf=${JS_FILTER:-$repo/sdk/js/examples/filter/dist/js-filter.wasm}
data=$repo/tests/data/fetch_login_queue_bodies.jsonl
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

if [ ! -f "$js" ]; then
  (cd "$repo/sdk/js/examples/mask" && node ../../build.js plugin.js -o "$js" --wit ../../../../wit)
fi
if [ ! -f "$jsf" ]; then
  (cd "$repo/sdk/js/examples/filter" && node ../../build.js plugin.js -o "$jsf" --wit ../../../../wit)
fi

# The same pipeline with the mask step's `uses` pointing at the JS component.
cp "$repo/pipelines/logins.toml" "$work/rust.toml"
sed "s#^uses = \"mask\"\$#uses = \"$js\"#" "$repo/pipelines/logins.toml" > "$work/js.toml"
if cmp -s "$work/rust.toml" "$work/js.toml"; then
  echo "golden: no 'uses = \"mask\"' line in pipelines/logins.toml" >&2
  exit 1
fi
# And both without [sink] (and the [[tests]] after it, which expect rows).
for v in rust js; do sed '/^\[sink\]$/,$d' "$work/$v.toml" > "$work/$v-records.toml"; done
# The filters, alone on the records.
for v in rust js; do
  uses=filter
  [ "$v" = js ] && uses=$jsf
  cat > "$work/$v-filter.toml" <<TOML
name = "golden-filter"
[[transforms]]
uses = "$uses"
params = { all = [{ field = "device_type", in = ["android", "ios"] }, { field = "locale", is_null = false }, { field = "app_version", matches = "^[0-2]\\\\." }] }
TOML
done

# Edge cases through the masks alone: null, a number, missing, nested,
# non-ASCII, a field named like an output; twice (default params, and the
# originals kept with missing fields as null).
cat > "$work/edge.jsonl" <<'JSON'
{"ip": "199.172.111.135", "device_id": "593-47-5928", "n": 1}
{"ip": null, "device_id": "d", "x": [1, 2.5, {"y": null}]}
{"ip": 42, "device_id": "d"}
{"device_id": "d"}
{"ip": "1.2.3.4", "device_id": {"nested": true}}
{"ip": "é日本😀", "device_id": "\u0000\t\"", "masked_ip": "old", "z": -9007199254740993}
{"a": 1}
{"device_id": "only", "ip": "x", "big": 18446744073709551615, "f": 1e300}
JSON
for v in rust js; do
  uses=mask
  [ "$v" = js ] && uses=$js
  printf 'name = "golden-edge"\n[[transforms]]\nuses = "%s"\nparams = { fields = { ip = "masked_ip", device_id = "masked_device_id" } }\n' "$uses" > "$work/$v-edge.toml"
  printf 'name = "golden-edge-kept"\n[[transforms]]\nuses = "%s"\nparams = { fields = ["ip", "device_id"], keep_original = false, missing = "null", algorithm = "sha512" }\n' "$uses" > "$work/$v-edge2.toml"
done

status=0
for v in "" -records -filter -edge -edge2; do
  input=$data
  case $v in -edge*) input=$work/edge.jsonl ;; esac
  # Rows on stdout; rejects (line, step, reason) and the summary on stderr.
  "$host" test "$work/rust$v.toml" --input "$input" > "$work/rust$v.out" 2> "$work/rust$v.err" || true
  "$host" test "$work/js$v.toml" --input "$input" > "$work/js$v.out" 2> "$work/js$v.err" || true
  cat "$work/rust$v.err" >> "$work/rust$v.out"
  # The plugins' names differ (js-mask, js-filter); nothing else may.
  sed -e 's/"plugin":"js-\(mask\|filter\)"/"plugin":"\1"/' "$work/js$v.err" >> "$work/js$v.out"
  [ -n "${GOLDEN_SHOW:-}" ] && cat "$work/js$v.out"
  lines=$(wc -l < "$work/rust$v.out")
  if cmp -s "$work/rust$v.out" "$work/js$v.out"; then
    echo "golden${v:- (rows)}: identical, $lines lines ($(sha256sum < "$work/js$v.out" | cut -c1-16))"
  else
    echo "golden${v:- (rows)}: the JS mask differs from the Rust mask:" >&2
    diff "$work/rust$v.out" "$work/js$v.out" >&2 || true
    status=1
  fi
done
exit $status
