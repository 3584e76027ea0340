"""Side-by-side benchmark: direct / moonrelay / nginx / LiteLLM / openai-forward on one simulated upstream.

Run ``python -m bench.run --help``. Peers are installed on demand into ``.bench/`` (never moonrelay
dependencies); every result lands in ``results/bench-<date>/``.
"""
