#!/bin/sh
# Trickle and dense side by side, new layout first this time; and 4 batches
# in flight instead of 2 (one run; run it twice).
cd "$(dirname "$0")"
PY=${PY:-../../target/sinkexp/venv/bin/python}
N=${N:-300000} $PY sinkbench.py \
  append:1000:100:new append:1000:100:old append:1000:10000:new append:1000:10000:old \
  upsert:1000:100:new upsert:1000:100:old upsert:1000:10000:new upsert:1000:10000:old
N=${N:-300000} FLIGHT=4 $PY sinkbench.py append:1000:10000:old upsert:1000:10000:old update:1000:10000:old
