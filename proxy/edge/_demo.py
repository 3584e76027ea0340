"""The browser demo: one static page (``GET /``), no build step and no CDN.

The page lists models from ``/v1/models``, POSTs an OpenAI body with ``stream: true`` to the seed's
NDJSON route ``/chat/completions`` and shows each piece as it is read from ``response.body``, with
TTFC and tokens/s. It records every piece's arrival (``performance.now()``) in ``window.pieces``,
which the browser test reads.
"""

from __future__ import annotations

from importlib import resources

PAGE: bytes = resources.files("proxy").joinpath("static/index.html").read_bytes()
