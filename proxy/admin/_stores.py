"""Where the admin API keeps its client keys, shared by every worker and instance: the ``--state`` Redis (a hash of
records and a version counter moved by every change, on a connection of its own), or a JSON file
(``admin_keys_file``) that every worker of one machine reads, changed under an exclusive lock and replaced by a
rename so a reader never sees half of it. Either answers :meth:`version` cheaply: the workers ask it every
``POLL_S`` and read the records only when it moved (proxy/admin/_managed.py).

A store that does not answer raises :class:`KeyStoreUnavailable`: the API answers 503, the workers keep the keys
they hold.
"""

from __future__ import annotations

import fcntl
import json
import os
from pathlib import Path
from typing import Protocol

import trio

from ..limits import RedisConnection, RedisUnavailable, ReplyError, parse_state_url

# Create: only if the id is new. Update: only if it exists. Delete: only if it existed. Each moves the version.
_CREATE = ("if redis.call('HSETNX', KEYS[1], ARGV[1], ARGV[2]) == 1 then redis.call('INCR', KEYS[2]) return 1 end "
           "return 0")  # fmt: skip
_UPDATE = ("if redis.call('HEXISTS', KEYS[1], ARGV[1]) == 1 then redis.call('HSET', KEYS[1], ARGV[1], ARGV[2]) "
           "redis.call('INCR', KEYS[2]) return 1 end return 0")  # fmt: skip
_DELETE = "if redis.call('HDEL', KEYS[1], ARGV[1]) == 1 then redis.call('INCR', KEYS[2]) return 1 end return 0"
FILE_FORMAT = 1


class KeyStoreUnavailable(Exception):
    """The store of managed keys did not answer (in time)."""


class KeyStore(Protocol):
    where: str  # for log lines

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None: ...

    async def version(self) -> str: ...

    async def load(self) -> dict[str, str]: ...

    async def write(self, key_id: str, record: str, *, new: bool) -> bool: ...

    async def delete(self, key_id: str) -> bool: ...


class RedisKeys:
    """The records in the hash ``PREFIX + "admin:keys"`` (id → record), the version in ``PREFIX +
    "admin:keys:version"``; serve :meth:`run` in a nursery first."""

    def __init__(self, url: str, *, prefix: str = "moonrelay:", timeout_s: float = 1.0) -> None:
        self.address = parse_state_url(url)
        self.where = f"Redis {self.address.shown}"
        self.timeout_s = timeout_s
        self._names = (prefix + "admin:keys", prefix + "admin:keys:version")
        self._client = RedisConnection(self.address)

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        await self._client.run(task_status=task_status)  # calls before it fail: the client is not running

    async def _call(self, *args: str | bytes | int) -> object:
        with trio.move_on_after(self.timeout_s):
            try:
                return await self._client.call(*args)
            except (RedisUnavailable, ReplyError) as exc:
                raise KeyStoreUnavailable(f"{self.where}: {exc}") from exc
        raise KeyStoreUnavailable(f"{self.where}: no answer within {self.timeout_s} s")

    async def version(self) -> str:
        reply = await self._call("GET", self._names[1])
        return reply.decode() if isinstance(reply, bytes) else "0"

    async def load(self) -> dict[str, str]:
        reply = await self._call("HGETALL", self._names[0])
        flat = [item.decode() for item in reply] if isinstance(reply, list) else []  # type: ignore[union-attr]
        return dict(zip(flat[::2], flat[1::2], strict=True))

    async def write(self, key_id: str, record: str, *, new: bool) -> bool:
        return await self._call("EVAL", _CREATE if new else _UPDATE, 2, *self._names, key_id, record) == 1

    async def delete(self, key_id: str) -> bool:
        return await self._call("EVAL", _DELETE, 2, *self._names, key_id) == 1


class FileKeys:
    """The records in a JSON file ``{"moonrelay_admin_keys": 1, "keys": {id: record}}``; its version is its
    identity (inode, size, modification time): every change writes a new file and renames it over the old one,
    under ``PATH.lock``."""

    def __init__(self, path: str) -> None:
        self.path = Path(path)
        self.where = f"admin_keys_file {path!r}"
        self._lock = Path(path + ".lock")

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        task_status.started()  # nothing to hold open

    async def version(self) -> str:
        try:
            st = await trio.to_thread.run_sync(os.stat, self.path)
        except FileNotFoundError:
            return "none"
        except OSError as exc:
            raise KeyStoreUnavailable(f"{self.where}: {exc.strerror or exc}") from exc
        return f"{st.st_ino}:{st.st_size}:{st.st_mtime_ns}"

    async def load(self) -> dict[str, str]:
        return await trio.to_thread.run_sync(self._read)

    async def write(self, key_id: str, record: str, *, new: bool) -> bool:
        return await trio.to_thread.run_sync(self._change, key_id, record, new)

    async def delete(self, key_id: str) -> bool:
        return await trio.to_thread.run_sync(self._change, key_id, None, False)

    def _read(self) -> dict[str, str]:
        try:
            text = self.path.read_text(encoding="utf-8")
        except FileNotFoundError:
            return {}
        except OSError as exc:
            raise KeyStoreUnavailable(f"{self.where}: {exc.strerror or exc}") from exc
        try:
            data = json.loads(text)
            if data.get("moonrelay_admin_keys") != FILE_FORMAT:
                raise ValueError(f"not a moonrelay admin keys file of format {FILE_FORMAT}")
            return {str(k): json.dumps(v) for k, v in data["keys"].items()}
        except (ValueError, TypeError, KeyError, AttributeError) as exc:
            raise KeyStoreUnavailable(f"{self.where} does not parse: {exc}") from exc

    def _change(self, key_id: str, record: str | None, new: bool) -> bool:
        """Under the lock: read, change one record (None: delete it), write beside, rename over."""
        try:
            with open(self._lock, "a") as lock:
                fcntl.flock(lock, fcntl.LOCK_EX)
                records = self._read()
                if (key_id in records) == new:  # create: already there; update, delete: not there
                    return False
                if record is None:
                    del records[key_id]
                else:
                    records[key_id] = record
                data = {"moonrelay_admin_keys": FILE_FORMAT, "keys": {k: json.loads(v) for k, v in records.items()}}
                temporary = self.path.with_name(self.path.name + f".{os.getpid()}.tmp")
                with open(temporary, "w", encoding="utf-8") as out:
                    json.dump(data, out, indent=1, sort_keys=True)
                    out.flush()
                    os.fsync(out.fileno())
                os.chmod(temporary, 0o600)
                os.replace(temporary, self.path)
                return True
        except OSError as exc:
            raise KeyStoreUnavailable(f"{self.where}: {exc.strerror or exc}") from exc
