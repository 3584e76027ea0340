#!/bin/sh
# The admin API's and the config reload's cost per chunk on the token-rate bench (issue 26, items 3 and 4), one
# measurement under the machine's lock:
#   flock /tmp/moonrelay-measure.lock sh results/ops-cost-2026-12-07-admin-reload/run.sh
# 1. this checkout: plain moonrelay and moonrelay-admin (the admin API on: every key's usage counted), interleaved;
# 2. the reload: main just before its merge (51a7e0e) and at its merge (8508816), each an export of its tree running
#    its own bench, plain moonrelay.
set -eu
OUT=$(pwd)/results/ops-cost-2026-12-07-admin-reload
./dev python -m bench.run --scenarios token-rate --targets moonrelay,moonrelay-admin --repeat 3 --out "$OUT/head"
for REV in 51a7e0e 8508816; do
  TREE=$(mktemp -d /tmp/moonrelay-rev-XXXXXX)
  git archive "$REV" | tar -x -C "$TREE"
  (cd "$TREE" && "$OLDPWD/.venv/bin/python" -m bench.run --scenarios token-rate --targets moonrelay --repeat 3 \
    --out "$OUT/$REV")
  rm -rf "$TREE"
done
