#!/bin/sh
# What tracing, the response cache's miss path and cost accounting cost per chunk on the token-rate bench
# (issue 26), run as one measurement under the machine's lock:
#   flock /tmp/moonrelay-measure.lock sh results/ops-cost-2026-12-07/run.sh
# 1. this checkout: plain moonrelay (every feature off) and the four variants of bench/peers.py, interleaved;
# 2. main before the features were wired (an export of main's tree, its own bench), plain moonrelay: "off" costs.
set -eu
OUT=$(pwd)/results/ops-cost-2026-12-07
./dev python -m bench.run --scenarios token-rate \
  --targets moonrelay,moonrelay-traced,moonrelay-cached,moonrelay-priced,moonrelay-spend --repeat 3 --out "$OUT/head"
MAIN=$(mktemp -d /tmp/moonrelay-main-XXXXXX)
git archive "${MAIN_REV:-main}" | tar -x -C "$MAIN"
(cd "$MAIN" && "$OLDPWD/.venv/bin/python" -m bench.run --scenarios token-rate --targets moonrelay --repeat 3 \
  --out "$OUT/main")
rm -rf "$MAIN"
