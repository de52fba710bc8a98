"""Pages on the worker's web server (Faust web views): /metrics for Prometheus, /health for probes."""

from __future__ import annotations

from collections.abc import Callable

import faust
from faust.web import Request, Response, View
from prometheus_client import CONTENT_TYPE_LATEST

from pipeline import metrics


def register_pages(app: faust.App, is_ready: Callable[[], bool]) -> None:
    @app.page("/health")
    class Health(View):
        async def get(self, request: Request) -> Response:
            ready = is_ready()
            return self.json({"ready": ready}, status=200 if ready else 503)

    @app.page("/metrics")
    class Metrics(View):
        async def get(self, request: Request) -> Response:
            return self.bytes(metrics.render(), content_type=CONTENT_TYPE_LATEST)
