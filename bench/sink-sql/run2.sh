#!/bin/sh
# Ledger old vs new layout (V20) and group commit (one run; run it twice).
cd "$(dirname "$0")"
PY=${PY:-../../target/sinkexp/venv/bin/python}
N=${N:-300000} $PY sinkbench.py \
  append:1000:100:old append:1000:100:new append:1000:10000:old append:1000:10000:new \
  append:10000:10000:old append:10000:10000:new upsert:1000:100:old upsert:1000:100:new \
  update:1000:100:old update:1000:100:new \
  append:1000:10000:old::2 append:1000:10000:old::4 append:1000:10000:old::8 \
  upsert:1000:10000:old::2 upsert:1000:10000:old::4 upsert:1000:10000:old::8 \
  update:1000:10000:old::4
