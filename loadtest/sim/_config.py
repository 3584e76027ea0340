"""The simulated upstream's settings: defaults for every request, overridable per request (see ``_plan``)."""

from __future__ import annotations

from dataclasses import dataclass, field

from loadtest import simcontent

__all__ = ["SimConfig"]


@dataclass
class SimConfig:
    host: str = "127.0.0.1"
    port: int = 9100
    ttft: float = 1.0  # seconds to the first chunk; uniform in [ttft - ttft_jitter, ttft + ttft_jitter], >= 0
    ttft_jitter: float = 0.0
    chunks: int = 20  # content chunks per stream
    interval: float = 0.1  # seconds between chunks; each uniform in [interval +- interval_jitter], >= 0
    interval_jitter: float = 0.0
    tokens_per_chunk: int = 1
    seed: int | None = None
    backlog: int = 4096
    tls_dir: str | None = None  # serve https with a trustme cert; writes DIR/ca.pem, DIR/server.pem, DIR/server.key
    require_key: str | None = None  # requests without "Authorization: Bearer <key>" get Moonshot's 401
    tls_reuse: bool = False  # load DIR's cert instead of writing a new one (the CLI's workers share one)
    models: tuple[str, ...] = simcontent.MODELS  # what GET /v1/models lists
    key_faults: dict[str, str] = field(default_factory=dict)  # API key -> fault for its requests (a 429ing key)
