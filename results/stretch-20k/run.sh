#!/usr/bin/env bash
# Issue 5's stretch: 20,000 concurrent relayed streams on this 2-core machine, every process under the
# 20,000-fd limit: 2 load-generator processes (~10,000 client sockets each), 3 relay workers (~13,300 fds
# each at most: client + upstream socket per stream), 2 sim processes. Arrivals at 200/s (the embedded
# default's rate, which 2 cores sustain): a 100-s ramp, and sessions of ~112 s (TTFT 1.5 ± 0.5 s, 6 chunks
# 22 s apart) so that every session is open at once; per-session timeout 300 s.
set -euo pipefail
cd "$(dirname "$0")/../.."
rm -rf results/stretch-20k/run
./dev loadtest --concurrency 20000 --workers 2 --relay-workers 3 --sim-workers 2 \
  --ramp-up 100 --interval 22 --timeout 300 --out results/stretch-20k/run
