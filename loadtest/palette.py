"""One colour per target, the same in every figure the project draws (loadtest's plots and bench's).

A reader who learns "moonrelay is blue, nginx is green" in one figure must be able to trust it in the next, so
the colours live here, once, and both programs read them; bench imports this module, loadtest never imports
bench or the relay. Hues from Okabe & Ito's colour-blind-safe set, then Paul Tol's, each used once.
"""

from __future__ import annotations

import zlib

# Lower-case hex, as matplotlib gives colours back.
COLORS: dict[str, str] = {
    "direct": "#7f7f7f",  # grey: the floor, not a contender
    "moonrelay": "#0072b2",
    "moonrelay-nopump": "#56b4e9",
    "moonrelay-quiet": "#332288",
    "moonrelay-capped": "#999933",
    "moonrelay-state": "#ddcc77",
    "moonrelay-anthropic": "#44aa99",
    "moonrelay-responses": "#6699cc",
    "moonrelay-traced": "#ee6677",
    "moonrelay-cached": "#228833",
    "moonrelay-priced": "#66ccee",
    "moonrelay-spend": "#aa3377",
    "moonrelay-admin": "#661100",
    "nginx": "#009e73",
    "litellm": "#d55e00",
    "litellm-tuned": "#e69f00",
    "openai-forward": "#cc79a7",
    "openai-forward-tuned": "#882255",
}
# Names that stand for a target above: loadtest calls the system under test "relay" (moonrelay, embedded).
ALIASES: dict[str, str] = {"relay": "moonrelay"}
# Lines that belong to no target (a whole run's open sessions, chunks per second).
NEUTRAL = "#404040"
# Goal and reference lines drawn over data.
GOAL = "#b00000"
# A target not listed yet still gets one fixed colour (chosen from its name), never one a listed target has.
_SPARE = ("#aa4499", "#117733", "#88ccee", "#aa4466", "#4b0092")


def color(target: str) -> str:
    """The colour of ``target`` in every figure."""
    name = ALIASES.get(target, target)
    if name in COLORS:
        return COLORS[name]
    return _SPARE[zlib.crc32(name.encode()) % len(_SPARE)]
