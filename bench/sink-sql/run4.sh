#!/bin/sh
# The update path leaving equal rows alone (onconflict_skip), against today's,
# over rows equal to those in the table (the sink bench's "update") and over
# changed rows (one column differs) (one run; run it twice).
cd "$(dirname "$0")"
PY=${PY:-../../target/sinkexp/venv/bin/python}
N=${N:-300000} $PY sinkbench.py \
  update:1000:10000:old update:1000:10000:old:onconflict_skip \
  update:1000:10000:old::::changed update:1000:10000:old:onconflict_skip:::changed
