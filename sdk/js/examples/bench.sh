#!/usr/bin/env bash
# Records per second of the JS mask against the Rust mask through the real
# host, without cargo: `host test PIPELINE --input FILE` on N Fetch records
# (the 100 messages repeated), at batches of 100 and 1,000; mask only
# (sha256 of `ip` and `device_id`, two fields of six). Each pipeline also
# runs a one-record file: its time (start-up, loading and compiling or
# un-caching the component, configure) is subtracted. The same file through
# a pipeline with no step gives the host's own cost per record (JSON in,
# rows out), subtracted too to get the step's rate. Rounds alternate;
# medians are printed. Times are CPU seconds (user + sys), so that a busy
# machine does not skew them.
#
#   sdk/js/examples/bench.sh [N] [ROUNDS]        (from the repository root)
set -euo pipefail
repo=$(cd "$(dirname "$0")/../../.." && pwd)
host=${HOST:-$repo/target/release/host}
export HOST_PLUGIN_PATH=${HOST_PLUGIN_PATH:-$repo/target/plugins}
js=${JS_MASK:-$repo/sdk/js/examples/mask/dist/js-mask.wasm}
n=${1:-100000}
rounds=${2:-5}
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

data=$repo/tests/data/fetch_login_queue_bodies.jsonl
reps=$(( (n + 99) / 100 ))
for _ in $(seq "$reps"); do cat "$data"; done | head -n "$n" > "$work/in.jsonl"
head -n 1 "$data" > "$work/one.jsonl"

pipeline() { # name batch uses
  {
    echo "name = \"bench-$1\""
    echo "[batch]"
    echo "max_records = $2"
    if [ -n "$3" ]; then
      echo "[[transforms]]"
      echo "uses = \"$3\""
      echo 'params = { fields = { ip = "masked_ip", device_id = "masked_device_id" }, algorithm = "sha256" }'
    fi
  } > "$work/$1-$2.toml"
}

secs() { # pipeline -> CPU seconds (user + sys) of the N-record run less the one-record run
  # CPU time, not wall time: the figures hold on a machine busy with other work.
  /usr/bin/time -o "$work/t1" -f "%U %S" "$host" test "$1" --input "$work/one.jsonl" > /dev/null 2>&1
  /usr/bin/time -o "$work/t2" -f "%U %S" "$host" test "$1" --input "$work/in.jsonl" > /dev/null 2>&1
  cat "$work/t2" "$work/t1" | tr '\n' ' ' | awk '{print ($1 + $2) - ($3 + $4)}'
}

median() { sort -g | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }

echo "records: $n; rounds: $rounds; rates in records/s (step only = N / (t - t_none))"
printf "%6s | %10s | %12s | %12s | %14s | %14s\n" batch none_s rust_s js_s "rust step/s" "js step/s"
for b in 100 1000; do
  pipeline none "$b" ""
  pipeline rust "$b" mask
  pipeline js "$b" "$js"
  for v in none rust js; do : > "$work/$v-$b.times"; done
  for _ in $(seq "$rounds"); do
    for v in none rust js; do secs "$work/$v-$b.toml" >> "$work/$v-$b.times"; done
  done
  tn=$(median < "$work/none-$b.times"); tr=$(median < "$work/rust-$b.times"); tj=$(median < "$work/js-$b.times")
  printf "%6s | %10.3f | %12.3f | %12.3f | %14.0f | %14.0f\n" "$b" "$tn" "$tr" "$tj" \
    "$(echo "$n / ($tr - $tn)" | bc -l)" "$(echo "$n / ($tj - $tn)" | bc -l)"
done
