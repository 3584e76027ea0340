#!/bin/sh
# py-spy over loadtest (this branch) at 1,000 streams due at once, beside the raw client (paired start).
PY=/work/wt/ltperf/.venv/bin/python
OUT=/work/wt/ltperf/results/clientbias-2026-12-07/profile-c1000
mkdir -p $OUT
cd /work/wt/ltperf
$PY -m loadtest.sim --bind 127.0.0.1:0 --ttft 1 --ttft-jitter 0 --chunks 5 --interval 0.1 > $OUT/sim.log 2>&1 &
SIM=$!
while ! grep -q listening $OUT/sim.log; do sleep 0.1; done
URL=$(sed -n 's/.*listening on \(http:[^ ]*\).*/\1/p' $OUT/sim.log | head -1)
AT=$($PY -c 'import time; print(f"{time.time()+6:.6f}")')
$PY -m bench.rawclient --url $URL -c 1000 --start-at $AT > $OUT/rawclient.json &
RAW=$!
/work/tools/bin/py-spy record --rate 1000 --format raw -o $OUT/loadtest.collapsed -- \
  $PY -m loadtest --url $URL -c 1000 --quiet --ramp-up 0 --shard 0/1 --start-at $AT --out $OUT/loadtest > $OUT/loadtest.log 2>&1
wait $RAW
kill $SIM
