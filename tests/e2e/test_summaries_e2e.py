"""Window summaries, stats and spike alerts on a real broker with real worker processes.

Events carry explicit event times (`ts`) placed in the windows the test chooses, close to the wall clock, so
the windows close live (end + grace) and every expected (key, window) count is known exactly.

Timing: an enriched record that reaches the `analyze` agent after its window closed (wall clock past end +
grace) counts as late and joins another window. The windows and graces here are wide enough for a loaded
2-core machine (events are sent 0.1 s into their window: they have window_s - 0.1 + grace_s to get there);
everything else waits by polling for the condition it needs, with a generous deadline.
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter, defaultdict
from pathlib import Path

import jsonschema
import orjson
import pytest

from pipeline.kafka_client import ensure_topics
from schemas import load_schema
from tests.e2e.conftest import MODELS, PARTITIONS, collect, produce
from tests.e2e.faults import metric
from tests.e2e.test_startup import run_worker

DATA = Path(__file__).resolve().parents[2] / "pipeline" / "samples"
pytestmark = pytest.mark.e2e

WINDOW_S = 6
GRACE_S = 3
# The restart test stops the worker while a window is open: that window's records must be enriched and held
# before it closes (wall clock past end + grace), so it gets a longer one.
RESTART_WINDOW_S = 10
KEYS = ("k1", "k2", "k3")


def samples() -> dict[str, list[str]]:
    by_label: dict[str, list[str]] = defaultdict(list)
    for line in (DATA / "sample_events.jsonl").read_bytes().splitlines():
        doc = orjson.loads(line)
        by_label[doc["attrs"]["expected_label"]].append(doc["text"])
    return by_label


def analytics_env(**extra: str) -> dict[str, str]:
    env = {
        "SLMSTREAM_SUMMARIES__ENABLED": "true",
        "SLMSTREAM_SUMMARIES__WINDOW_S": str(WINDOW_S),
        "SLMSTREAM_SUMMARIES__GRACE_S": str(GRACE_S),
        "SLMSTREAM_ALERTS__ENABLED": "true",
        "SLMSTREAM_ALERTS__MIN_BASELINE_WINDOWS": "2",
        "SLMSTREAM_ALERTS__MIN_COUNT": "6",
        "SLMSTREAM_ALERTS__Z": "off",
    }
    return env | extra


def next_boundary(after: float, window_s: float = WINDOW_S) -> float:
    return (int(after // window_s) + 1) * window_s


def event(i: int, tag: str, key: str, ts_s: float, text: str) -> bytes:
    return orjson.dumps({"id": f"{tag}-{i:04d}", "text": text, "ts": int(ts_s * 1000), "key": key, "source": "chat"})


async def produce_window(bootstrap: str, topic: str, start: float, values: list[bytes]) -> None:
    """Send `values` just after the window starting at `start` opens (their ts lie inside it)."""
    delay = start + 0.1 - time.time()
    if delay > 0:
        await asyncio.sleep(delay)
    await produce(bootstrap, topic, values)


def by_window(summaries: list[dict]) -> dict[tuple[str, int], list[dict]]:
    out: dict[tuple[str, int], list[dict]] = defaultdict(list)
    for s in summaries:
        out[(s["key"], s["window"]["start_ms"])].append(s)
    return out


def test_one_summary_per_closed_window_per_key_and_one_alert_for_a_spike(broker, topics, start_worker) -> None:
    env = analytics_env()
    summaries_t, stats_t, alerts_t = topics.summaries, topics.stats, topics.alerts
    asyncio.run(ensure_topics(broker.bootstrap, [summaries_t, stats_t, alerts_t], PARTITIONS))
    start_worker(**env)
    texts = samples()
    quiet = [texts[label][j] for j in range(2) for label in sorted(texts)]  # 14 texts, 2 per label
    expected: Counter[tuple[str, int]] = Counter()
    t_start = time.monotonic()

    async def scenario() -> None:
        start = next_boundary(time.time())
        i = 0
        for _ in range(3):  # three quiet windows: 2 events per key, mixed labels
            values = []
            for key in KEYS:
                for _ in range(2):
                    values.append(event(i, topics.uid, key, start + 0.1, quiet[i % len(quiet)]))
                    expected[(key, int(start * 1000))] += 1
                    i += 1
            await produce_window(broker.bootstrap, topics.events, start, values)
            start += WINDOW_S
        values = []  # the spike: 18 account_access messages in one window
        for j in range(18):
            key = KEYS[j % 3]
            values.append(event(i, topics.uid, key, start + 0.1, texts["account_access"][j]))
            expected[(key, int(start * 1000))] += 1
            i += 1
        await produce_window(broker.bootstrap, topics.events, start, values)

    asyncio.run(scenario())
    got = asyncio.run(
        collect(broker.bootstrap, [summaries_t, stats_t, alerts_t], {summaries_t: len(expected), alerts_t: 1}, 90, 4)
    )
    summaries, stats, alerts = got[summaries_t], got[stats_t], got[alerts_t]
    schema = load_schema("summary")
    for s in summaries:
        jsonschema.validate(s, schema)
    windows = by_window(summaries)
    assert {k: len(v) for k, v in windows.items()} == dict.fromkeys(expected, 1), "one summary per key and window"
    assert {k: v[0]["count"] for k, v in windows.items()} == dict(expected)
    assert all(s["summary"].strip() for s in summaries)
    methods = Counter(s["method"] for s in summaries)
    assert methods["extractive"] >= 9  # the 2-event windows are below min_events_abstractive
    for s in stats:
        jsonschema.validate(s, load_schema("stats"))
    assert sorted(s["events"] for s in stats) == [6, 6, 6, 18]

    assert len(alerts) == 1, alerts
    (alert,) = alerts
    jsonschema.validate(alert, load_schema("alert"))
    assert alert["label"] == "account_access" and alert["count"] >= 12
    assert alert["baseline"]["windows"] == 3 and alert["explanation"].strip()
    assert set(alert["sample_ids"]) <= {f"{topics.uid}-{i:04d}" for i in range(18, 36)}
    print(
        f"[{broker.engine}] {len(summaries)} summaries ({dict(methods)}), 1 alert ({alert['method']}: "
        f"{alert['explanation']!r}), {time.monotonic() - t_start:.1f}s"
    )


@pytest.mark.parametrize("how", ["sigkill", "sigterm"])
@pytest.mark.parametrize("broker", ["tansu"], indirect=True)
def test_restart_with_open_windows_loses_no_summary(broker, topics, start_worker, how: str) -> None:
    """Kill -9 (or stop) the worker while windows are open; a new worker summarizes every window (duplicates
    allowed). A graceful stop does not wait for open windows: their records are simply not committed."""
    env = analytics_env(SLMSTREAM_ALERTS__ENABLED="false", SLMSTREAM_SUMMARIES__WINDOW_S=str(RESTART_WINDOW_S))
    summaries_t, stats_t = topics.summaries, topics.stats
    asyncio.run(ensure_topics(broker.bootstrap, [summaries_t, stats_t], PARTITIONS))
    first = start_worker(**env)
    texts = samples()["billing"] + samples()["shipping"]
    expected: Counter[tuple[str, int]] = Counter()

    async def before_kill() -> float:
        """Window 0: sent, closed and summarized. Window 1: sent, enriched and held by the worker; returns when
        window 1 closes (wall clock)."""
        i = 0
        for w in range(2):
            start = next_boundary(time.time(), RESTART_WINDOW_S)
            values = []
            for key in KEYS:
                for _ in range(4):
                    values.append(event(i, topics.uid, key, start + 0.1, texts[i % len(texts)]))
                    expected[(key, int(start * 1000))] += 1
                    i += 1
            await produce_window(broker.bootstrap, topics.events, start, values)
            if w == 0:  # wait for window 0's summaries
                got = await collect(broker.bootstrap, [summaries_t], {summaries_t: len(KEYS)}, 60, 0)
                assert len(got[summaries_t]) >= len(KEYS), "window 0 was not summarized"
        # Window 1's records are enriched and held by the analyze agent (not yet summarized): poll for both.
        got = await collect(broker.bootstrap, [topics.enriched], {topics.enriched: i}, 60, 0)
        assert len(got[topics.enriched]) >= i, f"{len(got[topics.enriched])}/{i} events enriched"
        deadline = time.monotonic() + 30
        while sum(v for _, v in metric(first, "slmstream_analytics_held")) < i // 2:
            assert time.monotonic() < deadline, f"window 1's records not held by the worker:\n{first.log_tail()}"
            await asyncio.sleep(0.1)
        return start + RESTART_WINDOW_S + GRACE_S

    closes_at = asyncio.run(before_kill())
    assert time.time() < closes_at, "window 1 closed before the stop: this machine is too slow for the test's windows"
    if how == "sigkill":
        first.kill()
    else:
        t = time.monotonic()
        assert first.stop(30) is not None
        assert time.monotonic() - t < 15, "a graceful stop waited for the open windows"
    # The first worker left window 1 open: its summaries can only come from the next worker.
    before = asyncio.run(collect(broker.bootstrap, [summaries_t], {summaries_t: 0}, 30, 1))[summaries_t]
    last_window = max(w for _, w in expected)
    assert not [x for x in before if x["window"]["start_ms"] == last_window], "window 1 was summarized at the stop"
    start_worker(**env)
    got = asyncio.run(collect(broker.bootstrap, [summaries_t], {summaries_t: len(expected)}, 120, 4))
    windows = by_window(got[summaries_t])
    missing = [w for w in expected if w not in windows]
    assert not missing, f"windows without a summary after the kill: {missing}"
    # At least one summary of each window covers all its events (a re-read may add a partial duplicate).
    assert {w: max(s["count"] for s in windows[w]) for w in expected} == dict(expected)
    dups = sum(len(v) - 1 for v in windows.values())
    print(f"[{broker.engine}] after {how}: {len(windows)} windows summarized, {dups} duplicate summaries")


def test_missing_generator_stops_the_worker_before_kafka(tmp_path: Path) -> None:
    result = run_worker(
        {
            "SLMSTREAM_MODEL__CACHE_DIR": str(MODELS),
            "SLMSTREAM_BROKER": "kafka://127.0.0.1:1",  # nothing listens: the check comes before Kafka
            "SLMSTREAM_SUMMARIES__ENABLED": "true",
            "SLMSTREAM_SUMMARIES__GENERATOR": "no-such-generator",
        },
        tmp_path,
        timeout=30,
    )
    assert result.returncode == 2, result.stderr[-2000:]
    assert "no-such-generator" in result.stderr and "cannot start" in result.stderr
