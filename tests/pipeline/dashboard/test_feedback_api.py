"""POST /api/feedback (the dashboard's one-click correction) and the learning fields of /api/live: a signed-in
analyst (the web token) only; 401 without the token, and 401 when no token is configured at all."""

from __future__ import annotations

import importlib
import os
from pathlib import Path
from typing import Any

import faust
import orjson
import pytest
from aiohttp.test_utils import TestClient, TestServer

from pipeline.config import load_settings
from pipeline.dashboard.live import LiveState
from pipeline.dashboard.page import dashboard_html
from pipeline.ingest.validate import Rejection
from pipeline.learning.feedback import Feedback, parse_feedback
from pipeline.output.observers import Delivered
from pipeline.web import register_pages
from schemas import Event, Origin

REPO_CONFIG = Path(__file__).resolve().parents[3] / "config" / "slmstream.yaml"
TOKEN = "tok-4f9c2d7e1b8a6053-feedback"


class FakeLearning:
    version = "head-3-abcdef0123"

    def __init__(self) -> None:
        self.published: list[bytes] = []

    def label_names(self) -> list[str]:
        return ["billing", "shipping"]

    async def publish_feedback(self, value: bytes) -> Feedback | Rejection:
        parsed = parse_feedback(value, set(self.label_names()), load_settings().input)
        if not isinstance(parsed, Rejection):
            self.published.append(value)
        return parsed


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in list(os.environ):
        if name.startswith("SLMSTREAM_"):
            monkeypatch.delenv(name)
    monkeypatch.setenv("SLMSTREAM_CONFIG", str(REPO_CONFIG))


def make_app(monkeypatch: pytest.MonkeyPatch, learning: FakeLearning, live: LiveState, **env: str) -> faust.App:
    for key, value in env.items():
        monkeypatch.setenv(f"SLMSTREAM_{key}", value)
    app = importlib.import_module("pipeline.faust_app").create_app(load_settings())
    register_pages(app, lambda: True, live, learning)  # type: ignore[arg-type]
    return app


async def call(app: faust.App, method: str, path: str, body: Any = None, token: str | None = None) -> tuple[int, Any]:
    web = app.web
    if not web.blueprints.applied:
        web.init_server()
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    async with TestClient(TestServer(web.web_app)) as client:
        data = body if isinstance(body, bytes) or body is None else orjson.dumps(body)
        resp = await client.request(method, path, data=data, headers=headers)
        return resp.status, orjson.loads(await resp.read())


async def test_a_signed_in_analyst_corrects_a_label(monkeypatch: pytest.MonkeyPatch) -> None:
    learning = FakeLearning()
    app = make_app(monkeypatch, learning, LiveState(), WEB__TOKEN=TOKEN)
    status, body = await call(app, "POST", "/api/feedback", {"id": "e1", "label": "shipping"}, TOKEN)
    assert (status, body) == (202, {"accepted": True, "label": "shipping"})
    assert learning.published == [orjson.dumps({"id": "e1", "label": "shipping"})]
    status, body = await call(app, "POST", "/api/feedback", {"id": "e1", "label": "nope"}, TOKEN)
    assert status == 400 and body["error"] == "unknown_label"
    assert len(learning.published) == 1


@pytest.mark.parametrize("token", [None, "wrong-token-00000000000"])
async def test_without_the_token_401(monkeypatch: pytest.MonkeyPatch, token: str | None) -> None:
    learning = FakeLearning()
    app = make_app(monkeypatch, learning, LiveState(), WEB__TOKEN=TOKEN)
    status, _ = await call(app, "POST", "/api/feedback", {"id": "e1", "label": "shipping"}, token)
    assert status == 401 and learning.published == []


async def test_no_token_configured_means_nobody_is_signed_in(monkeypatch: pytest.MonkeyPatch) -> None:
    learning = FakeLearning()
    app = make_app(monkeypatch, learning, LiveState())  # loopback, no token: the pages are open, corrections not
    status, body = await call(app, "POST", "/api/feedback", {"id": "e1", "label": "shipping"}, "anything-at-all-1234")
    assert status == 401 and "web.token" in body["detail"]
    assert learning.published == []


async def test_live_shows_recent_events_the_labels_and_the_head(monkeypatch: pytest.MonkeyPatch) -> None:
    live = LiveState(clock=lambda: 1_800_000_000.0)
    events = [Event(f"e{i}", f"text {i}", 1_800_000_000_000, {}, Origin("events", 0, i)) for i in range(20)]
    live.on_delivered(
        Delivered("enriched", 20, 1_800_000_000.0, labels=["billing"] * 20, latencies_s=[0.1] * 20, events=events)
    )
    app = make_app(monkeypatch, FakeLearning(), live)
    status, snap = await call(app, "GET", "/api/live")
    assert status == 200
    assert snap["learning"] == {"labels": ["billing", "shipping"], "head": "head-3-abcdef0123"}
    assert [r["id"] for r in snap["recent"]][:2] == ["e19", "e18"]  # newest first, bounded
    assert len(snap["recent"]) < len(events)
    assert snap["recent"][0] == {"id": "e19", "label": "billing", "text": "text 19"}


def test_the_page_offers_the_correction() -> None:
    html = dashboard_html()
    for testid in ("recent", "head-version"):
        assert f'data-testid="{testid}"' in html
    for testid in ("recent-event", "correct-label", "correct-status"):  # made by the script, per event
        assert f'"data-testid": "{testid}"' in html
    assert 'fetch("api/feedback"' in html and '"Authorization": "Bearer " + t' in html
