"""The simulated upstream's ``open`` gauge, sampled: how many streams a relay in front of it holds right now.

A load generator counts its own open sessions, and an overloaded relay has not taken all of them
yet (they wait in its listen backlog, costing it nothing); the sim counts the streams the relay
actually opened upstream. Memory per open stream divides by this peak (``loadtest`` embedded mode,
``bench``).
"""

from __future__ import annotations

import httpx
import trio

SAMPLE_INTERVAL_S = 0.5


class OpenStreams:
    """The peak of the sim's ``open`` gauge, sampled every ``SAMPLE_INTERVAL_S`` by ``sample_forever``."""

    def __init__(self, sim_url: str) -> None:
        self.url = sim_url.removesuffix("/v1") + "/sim/stats"
        self.peak = 0

    async def sample(self, client: httpx.AsyncClient) -> None:
        try:
            self.peak = max(self.peak, int((await client.get(self.url)).json()["open"]))
        except (httpx.HTTPError, ValueError, KeyError):
            pass  # a busy sim may miss a sample; the peak is kept from the others

    async def sample_forever(self) -> None:
        async with httpx.AsyncClient(timeout=5.0) as client:
            while True:
                await self.sample(client)
                await trio.sleep(SAMPLE_INTERVAL_S)
