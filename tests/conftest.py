from functools import partial

import pytest

from proxy.config import Settings
from proxy.server import serve


@pytest.fixture
def relay_settings():
    return {}


async def start_relay(nursery, upstream_url: str, **overrides) -> str:
    """Start the relay in-process on an ephemeral port; return its root URL."""
    settings = Settings(bind="127.0.0.1:0", upstream=upstream_url, **overrides)
    return await nursery.start(partial(serve, settings))


async def start_sim(nursery, **config):
    from loadtest.sim import SimConfig, serve_sim

    config.setdefault("ttft", 0.02)
    config.setdefault("interval", 0.005)
    config.setdefault("chunks", 5)
    return await nursery.start(partial(serve_sim, SimConfig(port=0, **config)))
