"""Pages on the worker's web server (Faust web views): /metrics for Prometheus, /health for probes.

Access: the server binds 127.0.0.1 unless `web.host` says otherwise, and anywhere else `web.token` is
required (config.py refuses to start without it). When a token is set, every request — our pages, Faust's
own (/router, /table, ...) and any page added later — must carry `Authorization: Bearer <token>`: one
aiohttp middleware (`bearer_auth_middleware`, installed by faust_app.create_app) checks it before any view
runs, so a new page cannot forget to. The one exception is PUBLIC_PAGES: the dashboard's HTML, the same
static bytes for everyone and no data; the page itself sends the token on /api/live (pipeline/dashboard).
"""

from __future__ import annotations

import hmac
from collections.abc import Awaitable, Callable

import faust
from aiohttp import web as aioweb
from faust.web import Request, Response, View
from prometheus_client import CONTENT_TYPE_LATEST
from pydantic import SecretStr

from pipeline import metrics
from pipeline.dashboard.live import LiveState
from pipeline.dashboard.page import dashboard_headers, dashboard_html, live_json

Handler = Callable[[aioweb.Request], Awaitable[aioweb.StreamResponse]]

# Paths served without the token: static bytes, no data. A browser cannot add a header to a page it navigates
# to, so /dashboard must load without one; it takes the token from `#token=`/`?token=` for its API calls.
PUBLIC_PAGES = frozenset({"/dashboard"})


def bearer_token_ok(authorization: str | None, token: str) -> bool:
    """True when an `Authorization` header value is `Bearer <token>` (constant-time comparison)."""
    if not authorization:
        return False
    scheme, _, given = authorization.strip().partition(" ")
    if scheme.lower() != "bearer":
        return False
    return hmac.compare_digest(given.strip().encode("utf-8", "replace"), token.encode("utf-8", "replace"))


def bearer_auth_middleware(token: SecretStr) -> Callable[[aioweb.Request, Handler], Awaitable[aioweb.StreamResponse]]:
    """aiohttp middleware: 401 for every request without `Authorization: Bearer <token>`."""
    expected = token.get_secret_value()

    @aioweb.middleware
    async def require_bearer_token(request: aioweb.Request, handler: Handler) -> aioweb.StreamResponse:
        if request.method in ("GET", "HEAD") and request.path in PUBLIC_PAGES:
            return await handler(request)
        if not bearer_token_ok(request.headers.get("Authorization"), expected):
            return aioweb.json_response(
                {"error": "unauthorized", "detail": "send 'Authorization: Bearer <web.token>'"},
                status=401,
                headers={"WWW-Authenticate": 'Bearer realm="slmstream"'},
            )
        return await handler(request)

    return require_bearer_token


def register_pages(app: faust.App, is_ready: Callable[[], bool], live: LiveState) -> None:
    @app.page("/health")
    class Health(View):
        async def get(self, request: Request) -> Response:
            ready = is_ready()
            return self.json({"ready": ready}, status=200 if ready else 503)

    @app.page("/metrics")
    class Metrics(View):
        async def get(self, request: Request) -> Response:
            # As a header: aiohttp refuses a `content_type` argument with a charset, and prometheus_client's
            # CONTENT_TYPE_LATEST has one ("text/plain; version=1.0.0; charset=utf-8").
            return self.bytes(metrics.render(), headers={"Content-Type": CONTENT_TYPE_LATEST})

    @app.page("/dashboard")
    class Dashboard(View):
        async def get(self, request: Request) -> Response:
            return self.html(dashboard_html(), headers=dashboard_headers())

    @app.page("/api/live")
    class LiveApi(View):
        async def get(self, request: Request) -> Response:
            return self.bytes(live_json(live), content_type="application/json", headers={"Cache-Control": "no-store"})
