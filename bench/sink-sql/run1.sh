#!/bin/sh
# The cases of notes/sink-experiments.md, tables 1-4 (one run; run it twice).
cd "$(dirname "$0")"
PY=${PY:-../../target/sinkexp/venv/bin/python}
N=${N:-300000} $PY sinkbench.py \
  x:0:0:old:::keyedcopy \
  append:1000:10000:old upsert:1000:10000:old \
  update:1000:10000:old update:1000:10000:old:merge update:1000:10000:old:merge::mergelock \
  update:1000:10000:old:update_insert update:1000:10000:old:update_insert::mergelock \
  update:1000:10000:old:onconflict_nodistinct update:1000:10000:old:onconflict::stageonce \
  update:10000:10000:old failcopy:1000 \
  append:1000:10000:old:::timing,serial update:1000:10000:old:::timing,serial update:1000:10000:old:merge::timing,serial \
  update:1000:10000:old:onconflict::stageonce,timing,serial
