"""The ``--state`` URL, checked once at start-up: where Redis is, which database, and the credentials sent on every
connection. Pure: a string in, a :class:`RedisAddress` or a :class:`StateURLError` out.

- ``redis://[[USER]:PASSWORD@]HOST[:PORT][/DB]`` (port 6379 and db 0 when left out);
- ``unix://[[USER]:PASSWORD@]/PATH[?db=DB]``.

A password or user with ``@ : / ? #`` or ``%`` in it is percent-encoded, as in any URL. Anything else is refused
rather than guessed at: TLS (``rediss://``), query options (``?protocol=3``, ``?ssl_cert_reqs=``), a database index
that is not a whole number, a user without a password. The password is never shown: every message and log line
writes the URL as :attr:`RedisAddress.shown` (or :func:`redact`), with ``***`` in its place.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from urllib.parse import parse_qsl, unquote, urlsplit

FORMS = "redis://HOST:PORT/DB (with a password redis://:PASSWORD@HOST:PORT/DB, an ACL user \
redis://USER:PASSWORD@HOST:PORT/DB) or unix:///PATH?db=DB"
_DB = re.compile(r"[0-9]{1,9}")


class StateURLError(ValueError):
    """A ``--state`` URL the relay cannot use (a configuration error: the relay does not start)."""


@dataclass(frozen=True, slots=True)
class RedisAddress:
    shown: str  # the URL with its password as ***: what messages and logs write
    db: int = 0
    host: str | None = None  # redis://
    port: int = 6379
    path: str | None = None  # unix://
    username: str | None = None  # an ACL user (AUTH USER PASSWORD); None: AUTH PASSWORD (requirepass)
    password: str | None = field(default=None, repr=False)


def redact(url: str) -> str:
    """``url`` with whatever may be a password as ``***``: after the user's ``:`` in the credentials, or the whole
    credentials when they have no ``:`` (``redis://SECRET@host`` is a password written where the user goes)."""
    scheme, sep, rest = url.partition("://")
    if not sep or "@" not in rest:
        return url
    credentials, _, place = rest.rpartition("@")
    user, colon, _ = credentials.partition(":")
    return f"{scheme}://{user}:***@{place}" if colon else f"{scheme}://***@{place}"


def parse_state_url(url: str) -> RedisAddress:
    shown = redact(url)
    where = f"state {shown}"
    scheme = url.partition("://")[0].lower() if "://" in url else ""
    if scheme == "rediss":
        raise StateURLError(f"{where}: TLS (rediss://) is not supported; use {FORMS}")
    if scheme not in ("redis", "unix"):
        raise StateURLError(f"{where}: expected {FORMS}")
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError:
        raise StateURLError(f"{where}: the host or port cannot be read (a port is a number from 1 to 65535)") from None
    if parts.fragment:
        raise StateURLError(f"{where}: a URL fragment (#...) is not supported")
    username = unquote(parts.username) if parts.username else None
    password = unquote(parts.password) if parts.password is not None else None
    if (username or "@" in parts.netloc) and not password:
        raise StateURLError(f"{where}: no password: write redis://:PASSWORD@HOST or redis://USER:PASSWORD@HOST "
                            "(percent-encode @ : / ? # % in it)")  # fmt: skip
    query = parse_qsl(parts.query, keep_blank_values=True)
    if scheme == "redis":
        if query:
            raise StateURLError(f"{where}: query options are not supported ({parts.query}); the database is the "
                                "path: redis://HOST:PORT/DB")  # fmt: skip
        if not parts.hostname:
            raise StateURLError(f"{where}: no host: expected {FORMS}")
        db = _database(parts.path.removeprefix("/"), where)
        return RedisAddress(shown, db, host=parts.hostname, port=port or 6379, username=username, password=password)
    options = dict(query)
    unknown = sorted({name for name, _ in query} - {"db"})
    if unknown or len(options) != len(query):
        raise StateURLError(f"{where}: query options are not supported ({', '.join(unknown) or 'db twice'}); "
                            "only ?db=DB")  # fmt: skip
    if not parts.path:
        raise StateURLError(f"{where}: no path to the socket: expected {FORMS}")
    db = _database(options.get("db", ""), where)
    return RedisAddress(shown, db, path=parts.path, username=username, password=password)


def _database(text: str, where: str) -> int:
    if not text:
        return 0
    if not _DB.fullmatch(text):
        raise StateURLError(f"{where}: database index {text!r} is not a whole number 0, 1, 2 ...")
    return int(text)
