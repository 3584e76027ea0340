"""What a reload takes from a new config (proxy/config.py ``reloaded``) and which upstreams it keeps
(``Upstreams.successor``), without sockets; the reload of a running relay: tests/relay/functional/test_reload.py."""

from __future__ import annotations

from proxy.config import LIVE_SETTINGS, Settings, reloaded
from proxy.routing import Upstreams


def table(name: str, url: str = "http://127.0.0.1:9100/v1", **extra) -> dict:
    return {"name": name, "base_url": url, **extra}


def test_a_reload_takes_the_live_settings_and_names_the_ones_that_wait_for_a_restart():
    running = Settings(bind="127.0.0.1:8117", workers=2, max_streams=10, key_rpm=5, upstreams=(table("a"),))
    new = Settings(bind="127.0.0.1:9999", workers=4, max_streams=20, key_rpm=7,
                   upstreams=(table("a", weight=2), table("b")))  # fmt: skip
    merged, waiting = reloaded(running, new)
    assert (merged.bind, merged.workers) == ("127.0.0.1:8117", 2)  # the socket and the processes stay
    assert (merged.max_streams, merged.key_rpm) == (20, 7)
    assert [(c.name, c.weight) for c in merged.routes] == [("a", 2), ("b", 1)]
    assert waiting == ["bind", "workers"]
    assert reloaded(running, running) == (running, [])
    assert {"upstreams", "api_keys_file", "max_streams"} <= LIVE_SETTINGS and "bind" not in LIVE_SETTINGS


async def test_an_unchanged_upstream_is_kept_whole_and_a_changed_one_is_new():
    before = Settings(upstreams=(table("same"), table("moved"), table("dropped")))
    old = Upstreams(before)
    after = Settings(upstreams=(table("same"), table("moved", "http://127.0.0.1:9101/v1"), table("added")))
    new = old.successor(after)
    same, moved, added = new.all
    assert same is old.by_name["same"]  # its pooled connections and its key pool's turn
    assert moved is not old.by_name["moved"] and moved.base == "http://127.0.0.1:9101/v1"
    assert added.name == "added" and "dropped" not in new.by_name
    assert new.store is old.store  # breakers and rests are counted where they were
    assert old.successor(Settings(upstreams=before.upstreams, pool_timeout_s=1.0)).all[0] is not same
    await new.aclose()
    await old.aclose()
