"""pipeline/dashboard/page.py and its views in pipeline/web.py: the page is self-contained and locked down,
/api/live serves the live state, and with web.token set only the static page loads without the token."""

from __future__ import annotations

import base64
import hashlib
import importlib
import os
import re
from pathlib import Path
from typing import Any

import faust
import orjson
import pytest
from aiohttp.test_utils import TestClient, TestServer

from pipeline.config import load_settings
from pipeline.dashboard import live
from pipeline.dashboard.page import dashboard_headers, dashboard_html, live_json
from pipeline.web import register_pages

REPO_CONFIG = Path(__file__).resolve().parents[3] / "config" / "slmstream.yaml"
TOKEN = "tok-4f9c2d7e1b8a6053-dashboard"
T0 = 1_800_000_000.0


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in list(os.environ):
        if name.startswith("SLMSTREAM_"):
            monkeypatch.delenv(name)
    monkeypatch.setenv("SLMSTREAM_CONFIG", str(REPO_CONFIG))


@pytest.fixture
def fake_live() -> live.LiveState:
    return live.LiveState(clock=lambda: T0 + 1)  # /api/live reads the state as of its clock


def make_app(monkeypatch: pytest.MonkeyPatch, state: live.LiveState, **env: str) -> faust.App:
    for key, value in env.items():
        monkeypatch.setenv(f"SLMSTREAM_{key}", value)
    app = importlib.import_module("pipeline.faust_app").create_app(load_settings())
    register_pages(app, lambda: True, state)
    return app


async def get(app: faust.App, path: str, headers: dict[str, str] | None = None, method: str = "GET") -> Any:
    web = app.web
    if not web.blueprints.applied:
        web.init_server()
    async with TestClient(TestServer(web.web_app)) as client:
        resp = await client.request(method, path, headers=headers or {})
        return resp.status, await resp.read(), resp.headers


# ---- the page itself --------------------------------------------------------------------------------------
def test_page_fetches_nothing_from_elsewhere_and_never_parses_data_as_html() -> None:
    html = dashboard_html()
    urls = set(re.findall(r"https?://[^\s\"'<>]+", html))
    assert urls <= {"http://www.w3.org/2000/svg"}, urls  # the SVG namespace is a name, not a fetch
    for sink in ("innerHTML", "outerHTML", "insertAdjacentHTML", "document.write", "eval(", "new Function"):
        assert sink not in html, sink
    assert re.search(r"<(link|img|iframe|object|embed)\b", html) is None
    assert re.search(r"<script[^>]*\ssrc=", html) is None
    assert " style=" not in html  # the CSP allows no inline style attributes
    for testid in ("events-per-s", "latency-p50", "latency-p95", "latency-p99", "label-mix-chart", "label-legend"):
        assert f'data-testid="{testid}"' in html


def test_csp_allows_exactly_the_inline_script_and_style() -> None:
    headers = dashboard_headers()
    csp = dict(d.strip().split(" ", 1) for d in headers["Content-Security-Policy"].split(";"))
    html = dashboard_html()
    for kind in ("script", "style"):
        (body,) = re.findall(rf"<{kind}>(.*?)</{kind}>", html, re.S)
        digest = base64.b64encode(hashlib.sha256(body.encode()).digest()).decode()
        assert csp[f"{kind}-src"] == f"'sha256-{digest}'"
    assert csp["default-src"] == "'none'"
    assert csp["connect-src"] == "'self'"
    assert headers["Referrer-Policy"] == "no-referrer"


def test_live_json_is_the_snapshot_and_survives_odd_record_values(fake_live: live.LiveState) -> None:
    from decimal import Decimal

    fake_live.observe_enriched("billing", 42.0, T0)
    fake_live.add_alert({"label": "outage", "count": Decimal("12"), "ids": {"a"}, 3: "int key"})
    doc = orjson.loads(live_json(fake_live))
    assert doc["events_total"] == 1
    assert doc["labels"] == ["billing"]
    assert doc["alerts"] == [{"label": "outage", "count": "12", "ids": "{'a'}", "3": "int key"}]


# ---- served by the worker's web server ---------------------------------------------------------------------
async def test_dashboard_and_api_open_on_loopback_without_token(monkeypatch, fake_live) -> None:
    fake_live.observe_enriched("shipping", 10.0, T0)
    app = make_app(monkeypatch, fake_live)
    status, body, headers = await get(app, "/dashboard")
    assert status == 200
    assert headers["Content-Type"].startswith("text/html")
    assert headers["Content-Security-Policy"] == dashboard_headers()["Content-Security-Policy"]
    assert b'id="label-mix-chart"' in body
    status, body, headers = await get(app, "/api/live")
    assert status == 200
    assert headers["Content-Type"].startswith("application/json")
    assert headers["Cache-Control"] == "no-store"
    doc = orjson.loads(body)
    assert doc["events_total"] == 1 and "latency_ms" in doc and "label_mix" in doc


async def test_with_a_token_only_the_static_page_loads_without_it(monkeypatch, fake_live) -> None:
    fake_live.observe_enriched("shipping", 10.0, T0)
    app = make_app(monkeypatch, fake_live, WEB__HOST="0.0.0.0", WEB__TOKEN=TOKEN)
    status, body, _ = await get(app, "/dashboard")
    assert status == 200 and TOKEN.encode() not in body
    assert (await get(app, "/dashboard?token=anything"))[0] == 200  # the page reads it; the server does not
    for path in ("/api/live", "/dashboard/", "/dashboardx", "/health"):
        assert (await get(app, path))[0] == 401, path
        assert (await get(app, path, {"Authorization": "Bearer wrong-token-000000000"}))[0] == 401, path
    assert (await get(app, "/dashboard", method="POST"))[0] == 401  # only GET/HEAD skip the check
    status, body, _ = await get(app, "/api/live", {"Authorization": f"Bearer {TOKEN}"})
    assert status == 200 and orjson.loads(body)["events_total"] == 1
