"""The admin API's HTTP face: its own key (``Authorization: Bearer`` with the key in the environment variable
``admin_key_env`` names; compared by digest, in constant time), a route table, and the key routes:

    GET    /admin/keys          every key: the keys file's (read-only) and the API's, never a key itself
    POST   /admin/keys          create one (its fields; ``key`` to bring one's own): 201 with the key, shown once
    GET    /admin/keys/ID       one key, with its usage so far (requests, tokens, cost)
    PATCH  /admin/keys/ID       change its fields, disable or enable it
    DELETE /admin/keys/ID       delete it

Errors are the relay's own (proxy/errors.py: 400 for a body that is wrong, 401 for a wrong admin key, 404, 409 for
a key or name that is taken or that the keys file holds, 503 when the store does not answer), rendered by the edge.
Every change names the key's id and what changed in the request's access-log line (``admin``), and in one log line.

Other admin endpoints join by adding a :class:`Route` to :attr:`AdminAPI.routes` before :meth:`AdminAPI.install`.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import secrets
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from functools import wraps
from typing import Any

from quart import Response, request

from ..auth import KeySource, bearer_token
from ..errors import InvalidRequest, Refused
from ..limits import ClientKey, Store, StoreUnavailable, usage_of
from ..pricing import money
from ..protocol import JSON
from ..state import STATE
from ._managed import ManagedKeys
from ._records import KeyRecord, changed, digest_of, new_record, parse_change, shown
from ._stores import KeyStoreUnavailable

log = logging.getLogger("moonrelay")

PREFIX = "/admin/"
View = Callable[..., Awaitable[Response]]


@dataclass(frozen=True, slots=True)
class Route:
    method: str
    rule: str
    view: View


def _json(body: Any, status: int = 200, headers: dict[str, str] | None = None) -> Response:
    return Response(json.dumps(body), status=status, content_type=JSON, headers=headers)


def _unavailable(exc: Exception) -> Refused:
    log.warning("admin API: %s", exc)
    return Refused("The admin store did not answer; retry shortly.", "admin_store_unavailable", 503)


class AdminAPI:
    """``admin_key``: the admin key; ``managed``: the API's keys (their store, as this worker holds them);
    ``keys``: the worker's keys in force (the keys file's are listed, never changed); ``usage``: the store keys'
    usage is counted in (proxy.limits)."""

    def __init__(self, admin_key: str, managed: ManagedKeys, keys: KeySource, usage: Store) -> None:
        self._digest = hashlib.sha256(admin_key.encode()).digest()
        self.managed = managed
        self.keys = keys
        self.usage = usage
        self.routes = [
            Route("GET", "/admin/keys", self.list_keys),
            Route("POST", "/admin/keys", self.create_key),
            Route("GET", "/admin/keys/<key_id>", self.show_key),
            Route("PATCH", "/admin/keys/<key_id>", self.update_key),
            Route("DELETE", "/admin/keys/<key_id>", self.delete_key),
        ]

    def install(self, app: Any) -> None:
        """Add every route of the table to ``app``, each behind the admin key."""
        for route in self.routes:
            app.add_url_rule(route.rule, endpoint=f"admin {route.method} {route.rule}",
                             view_func=self._guarded(route.view), methods=[route.method])  # fmt: skip

    def _guarded(self, view: View) -> View:
        @wraps(view)
        async def guarded(**kwargs: Any) -> Response:
            token = bearer_token(request.headers.get("authorization"))
            given = hashlib.sha256((token or "").encode()).digest()
            if token is None or not hmac.compare_digest(given, self._digest):
                raise InvalidRequest("Invalid or missing admin key: send Authorization: Bearer <admin key>.",
                                     "invalid_admin_key", 401)  # fmt: skip
            try:
                return await view(**kwargs)
            except (KeyStoreUnavailable, StoreUnavailable) as exc:
                raise _unavailable(exc) from None

        return guarded

    # -- what the API reads -------------------------------------------------------------------------

    def _file_keys(self) -> dict[str, ClientKey]:
        return {key.id: key for _, key in self.keys.from_file}

    def _names(self, but: str | None = None) -> set[str]:
        """Every key's name (its label) but ``but``'s: the file's and the API's."""
        keys = [*self._file_keys().values(), *(limits for _, limits in self.managed.records.values())]
        return {key.label for key in keys if key.id != but}

    async def list_keys(self) -> Response:
        await self.managed.refresh()
        out = [shown(key, "keys_file") for key in self._file_keys().values()]
        out += [shown(limits, "admin", record) for record, limits in self.managed.records.values()]
        return _json({"keys": out})

    async def show_key(self, key_id: str) -> Response:
        await self.managed.refresh()
        file_key = self._file_keys().get(key_id)
        if file_key is not None:
            body = shown(file_key, "keys_file")
        else:
            record, limits = self._record(key_id)
            body = shown(limits, "admin", record)
        used = await usage_of(self.usage, key_id)
        body["usage"] = {"requests": used["requests"], "tokens": used["tokens"], "cost": money(used["cost"])}
        return _json(body)

    def _record(self, key_id: str) -> tuple[KeyRecord, ClientKey]:
        found = self.managed.records.get(key_id)
        if found is None:
            if key_id in self._file_keys():
                raise InvalidRequest(f"Key {key_id} is the keys file's: change it there (then SIGHUP).",
                                     "key_in_keys_file", 409)  # fmt: skip
            raise InvalidRequest(f"No key with id {key_id}.", "key_not_found", 404)
        return found

    # -- what the API changes -----------------------------------------------------------------------

    async def create_key(self) -> Response:
        change = parse_change(await request.get_data(), creating=True)
        key = change.key if change.key is not None else "mr-" + secrets.token_urlsafe(32)
        record = new_record(key, change, time.time())
        await self.managed.refresh()
        if record.id in self._file_keys() or any(r.digest == digest_of(key) for r, _ in self.managed.records.values()):
            raise InvalidRequest("That key is already a client key.", "key_exists", 409)
        limits = record.limits(self.managed.base)
        if limits.label in self._names():
            raise InvalidRequest(f"The name {limits.label!r} is already another key's.", "name_taken", 409)
        if not await self.managed.store.write(record.id, record.encode(), new=True):
            raise InvalidRequest("That key is already a client key.", "key_exists", 409)
        await self.managed.refresh(always=True)
        self._changed("create", record.id, limits.label, sorted([*record.fields, *["disabled"] * record.disabled]))
        body = {"key": key, **shown(limits, "admin", record)}
        return _json(body, 201, {"location": f"/admin/keys/{record.id}"})

    async def update_key(self, key_id: str) -> Response:
        change = parse_change(await request.get_data(), creating=False)
        await self.managed.refresh()
        record, _ = self._record(key_id)
        updated = changed(record, change, time.time())
        limits = updated.limits(self.managed.base)
        if limits.label in self._names(but=key_id):
            raise InvalidRequest(f"The name {limits.label!r} is already another key's.", "name_taken", 409)
        if not await self.managed.store.write(key_id, updated.encode(), new=False):
            raise InvalidRequest(f"No key with id {key_id}.", "key_not_found", 404)  # deleted meanwhile
        await self.managed.refresh(always=True)
        what = sorted([*change.fields, *(["disabled"] if change.disabled is not None else [])])
        self._changed("disable" if change.disabled else "enable" if change.disabled is False else "update", key_id,
                      limits.label, what)  # fmt: skip
        return _json(shown(limits, "admin", updated))

    async def delete_key(self, key_id: str) -> Response:
        await self.managed.refresh()
        _, limits = self._record(key_id)
        if not await self.managed.store.delete(key_id):
            raise InvalidRequest(f"No key with id {key_id}.", "key_not_found", 404)
        await self.managed.refresh(always=True)
        self._changed("delete", key_id, limits.label, [])
        return _json({"id": key_id, "deleted": True})

    def _changed(self, action: str, key_id: str, name: str, fields: list[str]) -> None:
        """The change in the request's access-log line and in one log line."""
        note: dict[str, Any] = {"action": action, "key_id": key_id, "name": name}
        if fields:
            note["fields"] = fields
        request.scope[STATE].admin = note
        log.info("admin API: %s client key %s (%s)%s", action, key_id, name,
                 f": {', '.join(fields)}" if fields else "")  # fmt: skip
