#!/bin/sh
# What ran (20:09-20:10 UTC), under flock /tmp/moonrelay-measure.lock. "before" is main's loadtest/ with this
# branch's harness (bench/clientbias.py and bench/rawclient.py copied into a detached worktree of main, so only
# loadtest/ differs); "after" is the ltperf branch. Both with the ltperf worktree's .venv.
#   git worktree add --detach /tmp/ltperf-main main && cp bench/clientbias.py bench/rawclient.py /tmp/ltperf-main/bench/
set -e
PY=/work/wt/ltperf/.venv/bin/python
OUT=/work/wt/ltperf/results/clientbias-2026-12-07
for c in 500 1000; do
  (cd /tmp/ltperf-main && $PY -m bench.clientbias -c $c --repeat 2 --paired --out $OUT/before-c$c)
  (cd /work/wt/ltperf && $PY -m bench.clientbias -c $c --repeat 2 --paired --out $OUT/after-c$c)
done
