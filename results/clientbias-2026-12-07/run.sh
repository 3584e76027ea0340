#!/bin/sh
# Before (main's loadtest, this branch's harness) and after (this branch), 500 and 1,000 paired streams, 2 repeats each.
set -e
PY=/work/wt/ltperf/.venv/bin/python
OUT=/work/wt/ltperf/results/clientbias-2026-12-07
date -u +"lock taken %H:%M:%SZ"; uptime
for c in 500 1000; do
  (cd /tmp/ltperf-main && $PY -m bench.clientbias -c $c --repeat 2 --paired --out $OUT/before-c$c)
  (cd /work/wt/ltperf && $PY -m bench.clientbias -c $c --repeat 2 --paired --out $OUT/after-c$c)
done
date -u +"done %H:%M:%SZ"; uptime
