"""Pages on the worker's web server (Faust web views): /metrics for Prometheus, /health for probes.

Access: the server binds 127.0.0.1 unless `web.host` says otherwise, and anywhere else `web.token` is
required (config.py refuses to start without it). When a token is set, every request — our pages, Faust's
own (/router, /table, ...) and any page added later — must carry `Authorization: Bearer <token>`: one
aiohttp middleware (`bearer_auth_middleware`, installed by faust_app.create_app) checks it before any view
runs, so a new page cannot forget to. The one exception is PUBLIC_PAGES: the dashboard's HTML, the same
static bytes for everyone and no data; the page itself sends the token on /api/live (pipeline/dashboard).

Corrections (POST /api/feedback, the dashboard's label select) need a signed-in analyst: the request must carry
the token, and with no `web.token` configured nobody is signed in, so the endpoint answers 401 even on loopback.
"""

from __future__ import annotations

import hmac
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

import faust
from aiohttp import web as aioweb
from faust.web import Request, Response, View
from prometheus_client import CONTENT_TYPE_LATEST
from pydantic import SecretStr

from pipeline import metrics
from pipeline.dashboard.live import LiveState
from pipeline.dashboard.page import dashboard_headers, dashboard_html, live_json
from pipeline.ingest.validate import Rejection

if TYPE_CHECKING:
    from pipeline.learning.service import LearningService

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


CHALLENGE = {"WWW-Authenticate": 'Bearer realm="slmstream"'}


def register_pages(
    app: faust.App, is_ready: Callable[[], bool], live: LiveState, learning: LearningService | None = None
) -> None:
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
            extra: dict[str, Any] = {}
            if learning is not None:  # what the correction select offers, and the head in use
                extra["learning"] = {"labels": learning.label_names(), "head": learning.version}
            return self.bytes(
                live_json(live, extra=extra), content_type="application/json", headers={"Cache-Control": "no-store"}
            )

    web_settings = getattr(getattr(app, "settings", None), "web", None)
    token = web_settings.token if web_settings is not None else None

    @app.page("/api/feedback")
    class FeedbackApi(View):
        async def post(self, request: Request) -> Response:
            """`{"id": ..., "label": ...}` (or `"text"`, optional `"by"`) → the feedback topic; 202 once stored."""
            if token is None:
                detail = "corrections need a signed-in analyst: set web.token (SLMSTREAM_WEB__TOKEN)"
                return self.json({"error": "unauthorized", "detail": detail}, status=401, headers=CHALLENGE)
            if not bearer_token_ok(request.headers.get("Authorization"), token.get_secret_value()):
                detail = "send 'Authorization: Bearer <web.token>'"
                return self.json({"error": "unauthorized", "detail": detail}, status=401, headers=CHALLENGE)
            if learning is None:
                return self.json({"error": "learning is off (learning.enabled)"}, status=503)
            body = await request.read()
            result = await learning.publish_feedback(body)
            if isinstance(result, Rejection):
                return self.json({"error": result.type, "detail": result.message}, status=400)
            return self.json({"accepted": True, "label": result.label}, status=202)
