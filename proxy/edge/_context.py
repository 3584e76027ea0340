"""Quart's request context, lighter, for a request whose path is exactly one of the app's static routes.

Per request Quart binds a werkzeug URL adapter to the request and matches the path through it, and opens a session
(none here: with no secret key that is a null session, made anew each time). For a path that is exactly a static
rule's, allowed for the request's method, the rule is the one werkzeug would match (it prefers a static rule to any
rule with converters), so it is looked up in a table built once, and the null session is made once. Everything else
is Quart's own: the app context, ``handle_request`` with its hooks, error handlers and teardown, run as before. The
URL adapter is still made if something asks for it (``url_for``). Any other request (another path, a method the rule
does not allow, an app with sessions, a ``SERVER_NAME`` or host matching) gets Quart's context, counted in
``FALLBACKS``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from quart import Quart, Request
from quart.ctx import RequestContext
from quart.globals import _cv_request
from quart.sessions import SecureCookieSessionInterface
from werkzeug.routing import MapAdapter, Rule

from ._taken import FALLBACKS, TAKEN


class LightContext(RequestContext):
    """A request context whose rule is known and whose session is the app's null session."""

    def __init__(self, app: Quart, request: Request, rule: Rule, session: Any) -> None:  # noqa: D107
        # RequestContext's own attributes, without binding a URL adapter
        self.app = app
        self.request_websocket = request
        self._adapter: MapAdapter | None = None
        request.routing_exception = None
        request.json_module = app.json
        request.url_rule = rule
        request.view_args = {}
        self.session = session
        self.preserved = False
        self._cv_tokens = []
        self.flashes = None
        self._after_request_functions = []

    @property  # type: ignore[override]
    def url_adapter(self) -> MapAdapter | None:
        if self._adapter is None:
            self._adapter = self.app.create_url_adapter(self.request_websocket)
        return self._adapter

    async def push(self) -> None:
        """Quart's push without its session-and-match step (``_push``): the session and the rule are set."""
        await self._push_appctx(_cv_request.set(self))

    def copy(self) -> RequestContext:
        return RequestContext(self.app, self.request_websocket, self.session)


def _static_rules(app: Quart) -> dict[str, Rule] | None:
    """path -> rule for each path exactly one static HTTP rule has; None where werkzeug may decide otherwise."""
    if (
        app.secret_key is not None
        or type(app.session_interface) is not SecureCookieSessionInterface
        or app.config.get("SERVER_NAME") is not None
        or app.url_map.host_matching
        or app.subdomain_matching
    ):
        return None
    table: dict[str, Rule] = {}
    shared: set[str] = set()
    for rule in app.url_map.iter_rules():
        if rule.arguments or rule.websocket or rule.host or rule.subdomain:
            continue
        if rule.rule in table:
            shared.add(rule.rule)
        table[rule.rule] = rule
    for path in shared:
        del table[path]
    return table


def light_contexts(app: Quart) -> Callable[[Request], RequestContext]:
    """``app.request_context`` giving a :class:`LightContext` where it is exact, Quart's own elsewhere."""
    quart_own = app.request_context
    built: list[dict[str, Rule] | None] = []  # the table, built on the first request: every route exists by then
    null_session: list[Any] = []

    def request_context(request: Request) -> RequestContext:
        if not built:
            built.append(_static_rules(app))
            null_session.append(app.session_interface.null_session_class())
        table = built[0]
        if table is None:
            FALLBACKS["light_context: the app has sessions or host rules"] += 1
            return quart_own(request)
        rule = table.get(request.path)
        if rule is None or request.method not in rule.methods:  # type: ignore[operator]
            FALLBACKS["light_context: not a static route"] += 1
            return quart_own(request)
        TAKEN.light_context += 1
        return LightContext(app, request, rule, null_session[0])

    return request_context
