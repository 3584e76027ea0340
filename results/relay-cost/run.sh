#!/usr/bin/env bash
# Relay CPU per relayed chunk at 100 and 1,000 concurrent streams (issue 2's load: sim TTFT 1 s,
# 20 chunks 0.5 s apart, one relay worker), for our h11 transport and for httpx's default
# (httpcore) transport behind the same relay. Run from the repository root.
set -euo pipefail
cd "$(dirname "$0")/../.."
for transport in h11 httpcore; do
  for c in 100 1000; do
    MOONRELAY_TRANSPORT=$transport ./dev loadtest -c $c --ttft 1 --ttft-jitter 0 --chunks 20 --interval 0.5 \
      --relay-workers 1 --ramp-up 1 --no-save-requests --quiet --out results/relay-cost/$transport-c$c
  done
done
