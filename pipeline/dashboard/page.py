"""The dashboard's bytes: the one self-contained HTML page (dashboard.html: inline CSS and JS, nothing fetched
from elsewhere) with headers that lock it down, and the JSON body of /api/live.

The Content-Security-Policy allows exactly the page's own inline <style> and <script> (by hash) and requests
to this origin: even if some event text slipped into the DOM as markup, no injected script would run and no
data could be sent elsewhere.
"""

from __future__ import annotations

import base64
import hashlib
import re
from functools import cache
from importlib import resources
from typing import Any

import orjson

from pipeline.dashboard.live import LiveState

_INLINE = {"script": re.compile(r"<script>(.*?)</script>", re.S), "style": re.compile(r"<style>(.*?)</style>", re.S)}


def _csp_hash(body: str) -> str:
    return "'sha256-" + base64.b64encode(hashlib.sha256(body.encode()).digest()).decode() + "'"


@cache
def dashboard_html() -> str:
    return resources.files("pipeline.dashboard").joinpath("dashboard.html").read_text(encoding="utf-8")


@cache
def dashboard_headers() -> dict[str, str]:
    html = dashboard_html()
    sources = {kind: " ".join(_csp_hash(m) for m in rx.findall(html)) for kind, rx in _INLINE.items()}
    csp = (
        "default-src 'none'; "
        f"script-src {sources['script']}; style-src {sources['style']}; "
        "connect-src 'self'; img-src 'self' data:; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
    )
    return {
        "Content-Security-Policy": csp,
        "Referrer-Policy": "no-referrer",  # a ?token= in the address must not travel in a Referer
        "X-Content-Type-Options": "nosniff",
        "Cache-Control": "no-store",
    }


def _jsonable(value: Any) -> str:
    return str(value)  # a record field orjson cannot encode (a Decimal, a set...) is shown as text


def live_json(state: LiveState, now: float | None = None, extra: dict[str, Any] | None = None) -> bytes:
    """/api/live: the live state as JSON, as of `now` (default: the state's clock), plus `extra` fields."""
    snap = state.snapshot(now)
    if extra:
        snap.update(extra)
    return orjson.dumps(snap, default=_jsonable, option=orjson.OPT_NON_STR_KEYS)
