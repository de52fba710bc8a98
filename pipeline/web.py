"""Pages on the worker's web server (Faust web views): /metrics for Prometheus, /health for probes.

Access: the server binds 127.0.0.1 unless `web.host` says otherwise, and anywhere else `web.token` is
required (config.py refuses to start without it). When a token is set, every request — our pages, Faust's
own (/router, /table, ...) and any page added later — must carry `Authorization: Bearer <token>`: one
aiohttp middleware (`bearer_auth_middleware`, installed by faust_app.create_app) checks it before any view
runs, so a new page cannot forget to.
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

Handler = Callable[[aioweb.Request], Awaitable[aioweb.StreamResponse]]


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
        if not bearer_token_ok(request.headers.get("Authorization"), expected):
            return aioweb.json_response(
                {"error": "unauthorized", "detail": "send 'Authorization: Bearer <web.token>'"},
                status=401,
                headers={"WWW-Authenticate": 'Bearer realm="slmstream"'},
            )
        return await handler(request)

    return require_bearer_token


def register_pages(app: faust.App, is_ready: Callable[[], bool]) -> None:
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
