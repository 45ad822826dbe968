#!/bin/sh
# Group commit (k batches a transaction) with its 1-batch baseline in the same
# run; and the ledger lock per second of sent time instead of per pipeline,
# 2 and 4 batches in flight (one run; run it twice).
cd "$(dirname "$0")"
PY=${PY:-../../target/sinkexp/venv/bin/python}
N=${N:-300000} $PY sinkbench.py \
  append:1000:10000:new append:1000:10000:new::2 append:1000:10000:new::4 append:1000:10000:new::8 \
  upsert:1000:10000:new upsert:1000:10000:new::2 upsert:1000:10000:new::4 upsert:1000:10000:new::8 \
  append:1000:10000:new:::epochlock upsert:1000:10000:new:::epochlock
N=${N:-300000} FLIGHT=4 $PY sinkbench.py append:1000:10000:new append:1000:10000:new:::epochlock \
  upsert:1000:10000:new upsert:1000:10000:new:::epochlock
