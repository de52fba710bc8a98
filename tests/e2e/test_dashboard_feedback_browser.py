"""The dashboard's correction in real headless Chromium (as tests/e2e/test_dashboard_browser.py): a signed-in
analyst picks the right label under a recent event, one click, and the worker's POST /api/feedback gets it; the
recent events' hostile text stays text; without the token the page says to sign in and sends nothing."""

from __future__ import annotations

import importlib
from pathlib import Path

import orjson
import pytest
from aiohttp.test_utils import TestServer

from pipeline.config import load_settings
from pipeline.dashboard.live import LiveState
from pipeline.ingest.validate import Rejection
from pipeline.learning.feedback import Feedback, parse_feedback
from pipeline.output.observers import Delivered
from pipeline.web import register_pages
from schemas import Event, Origin
from tests.e2e.test_dashboard_browser import (  # noqa: F401  the same autouse Chromium check, the token fixture
    TOKEN,
    WAIT_MS,
    XSS,
    chromium_available,
    open_browser,
    screenshot,
    token_settings,
)

pytestmark = pytest.mark.e2e
NOW = 1_800_000_000.0


class Learning:
    version = "head-12-0123456789"

    def __init__(self) -> None:
        self.published: list[dict] = []

    def label_names(self) -> list[str]:
        return ["billing", "shipping", "praise"]

    async def publish_feedback(self, value: bytes) -> Feedback | Rejection:
        parsed = parse_feedback(value, set(self.label_names()), load_settings().input)
        if not isinstance(parsed, Rejection):
            self.published.append(orjson.loads(value))
        return parsed


async def serve(state: LiveState, learning: Learning) -> TestServer:
    app = importlib.import_module("pipeline.faust_app").create_app(load_settings())
    register_pages(app, lambda: True, state, learning)  # type: ignore[arg-type]
    app.web.init_server()
    server = TestServer(app.web.web_app, host="127.0.0.1")  # the worker's views and token middleware
    await server.start_server()
    return server


def planted() -> LiveState:
    state = LiveState()
    texts = ["my parcel never came", XSS]
    events = [Event(f"ev-{i}", t, int(NOW * 1000), {}, Origin("events", 0, i)) for i, t in enumerate(texts)]
    state.on_delivered(
        Delivered("enriched", 2, NOW, labels=["billing", "praise"], latencies_s=[0.1, 0.1], events=events)
    )
    return state


WAIT_RECENT = "() => document.querySelectorAll('[data-testid=recent-event]').length === 2"
STATUS_OF_EV0 = "document.querySelector('[data-id=ev-0] [data-testid=correct-status]').textContent"


@pytest.mark.usefixtures("token_settings")
async def test_an_analyst_corrects_a_label_with_one_click(tmp_path: Path) -> None:
    learning = Learning()
    server = await serve(planted(), learning)
    try:
        async with open_browser(tmp_path / "chromium-profile") as context:
            page = await context.new_page()
            errors: list[str] = []
            page.on("pageerror", lambda exc: errors.append(str(exc)))
            await page.goto(f"http://127.0.0.1:{server.port}/dashboard#token={TOKEN}")
            await page.wait_for_function(WAIT_RECENT, timeout=WAIT_MS)
            assert "head-12-0123456789" in (await page.get_by_test_id("head-version").text_content() or "")
            parcel = page.locator("[data-testid=recent-event][data-id=ev-0]")
            assert "ev-0 · billing" in (await parcel.text_content() or "")  # the label it got
            assert await parcel.get_by_test_id("correct-label").input_value() == ""  # nothing picked yet
            await parcel.get_by_test_id("correct-label").select_option("shipping")
            await page.wait_for_function(f"() => {STATUS_OF_EV0} === 'taught: shipping'", timeout=WAIT_MS)
            assert learning.published == [{"id": "ev-0", "label": "shipping", "by": "dashboard"}]
            hostile = page.locator("[data-testid=recent-event][data-id=ev-1]")
            assert XSS in (await hostile.text_content() or "")
            assert await page.locator("#recent img, #recent script").count() == 0
            assert await page.evaluate("() => window.__pwned") is None
            await screenshot(page, "dashboard-correction.png")
            assert errors == []
    finally:
        await server.close()


@pytest.mark.usefixtures("token_settings")
async def test_without_a_token_nobody_corrects(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.delenv("SLMSTREAM_WEB__TOKEN")  # loopback without a token: the page shows data, nobody signs in
    learning = Learning()
    server = await serve(planted(), learning)
    try:
        async with open_browser(tmp_path / "chromium-profile") as context:
            page = await context.new_page()
            await page.goto(f"http://127.0.0.1:{server.port}/dashboard")
            await page.wait_for_function(WAIT_RECENT, timeout=WAIT_MS)
            await page.locator("[data-id=ev-0]").get_by_test_id("correct-label").select_option("shipping")
            await page.wait_for_function(f"() => {STATUS_OF_EV0}.startsWith('sign in')", timeout=WAIT_MS)
            page = await context.new_page()  # a tab that has a token: the server refuses it (none is configured)
            await page.goto(f"http://127.0.0.1:{server.port}/dashboard#token=made-up-token-0000000000")
            await page.wait_for_function(WAIT_RECENT, timeout=WAIT_MS)
            await page.locator("[data-id=ev-0]").get_by_test_id("correct-label").select_option("shipping")
            await page.wait_for_function(f"() => {STATUS_OF_EV0}.startsWith('not signed in')", timeout=WAIT_MS)
            assert learning.published == []
    finally:
        await server.close()
