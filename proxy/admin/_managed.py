"""The admin API's keys as every worker holds them: read from their store (proxy/admin/_stores.py) when serving
starts, then whenever its version moves (asked every ``POLL_S``), and handed to the worker's
:class:`proxy.auth.KeySource` whole. So a key created, changed, disabled or deleted on any worker of any instance is
in force everywhere within ``POLL_S`` and one read; the worker that made the change reads it at once.

A store that stops answering keeps the keys in force (one log line when it stops, one when it answers again).
"""

from __future__ import annotations

import logging

import trio

from ..auth import KeySource
from ..limits import ClientKey, KeysFileError
from ._records import KeyRecord, decode
from ._stores import KeyStore, KeyStoreUnavailable

log = logging.getLogger("moonrelay")

POLL_S = 0.25  # how often each worker asks whether the keys changed: "within a second" with room to spare


class ManagedKeys:
    """``store``: where the records are; ``keys``: the worker's keys in force, given the enabled ones; ``base``:
    the ``key_*`` defaults a record's fields apply to."""

    def __init__(self, store: KeyStore, keys: KeySource, base: ClientKey) -> None:
        self.store = store
        self.keys = keys
        self.base = base
        self.records: dict[str, tuple[KeyRecord, ClientKey]] = {}  # id → the record and its limits, as last read
        self._version: str | None = None
        self._down = False

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Read the keys once (so the first request finds them), report ready, then follow their changes."""
        async with trio.open_nursery() as nursery:
            await nursery.start(self.store.run)
            await self.follow()
            task_status.started()
            while True:
                await trio.sleep(POLL_S)
                await self.follow()

    async def follow(self) -> None:
        """Read the records again if their version moved; a store that fails keeps the keys in force."""
        try:
            await self.refresh()
        except KeyStoreUnavailable as exc:
            if not self._down:
                self._down = True
                log.warning("admin keys: %s; the keys in force stay until it answers", exc)
            return
        if self._down:
            self._down = False
            log.info("admin keys: %s answers again", self.store.where)

    async def refresh(self, *, always: bool = False) -> None:
        """Read the records if their version moved (``always``: whatever it says); KeyStoreUnavailable if the
        store fails."""
        version = await self.store.version()
        if version == self._version and not always:
            return
        raw = await self.store.load()
        records: dict[str, tuple[KeyRecord, ClientKey]] = {}
        for key_id, text in raw.items():
            record = decode(text)
            if record is None or record.id != key_id:
                log.error("admin keys: record %r in %s is not one this relay reads; skipped", key_id, self.store.where)
                continue
            try:
                records[key_id] = (record, record.limits(self.base))
            except KeysFileError as exc:
                log.error("admin keys: %s; skipped", exc)
        self.records = records
        self._version = version
        enabled = [(bytes.fromhex(r.digest), limits) for r, limits in records.values() if not r.disabled]
        self.keys.set_managed(enabled)
