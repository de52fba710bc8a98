"""The sample events that ship inside the package (so an installed wheel has them): read them through
`importlib.resources`, never through a path relative to the source tree. README.md here says what each
file holds; the files are CC0 and made up.

    sample_events.jsonl   420 valid events with an expected label (the demo, the bench, tests)
    spike_events.jsonl    100 "locked out" events sent in one burst (the demo's planted spike)
    malformed_events.txt  24 messages the validator must reject, one per line
    multilingual_events.jsonl  196 short customer messages, 28 in each of en, de, es, fr, ru, zh, ar (4 per
                          label), with attrs.lang and attrs.expected_label (`slmstream bench languages`)
"""

from __future__ import annotations

from importlib.resources import files
from importlib.resources.abc import Traversable

SAMPLE_EVENTS = "sample_events.jsonl"
SPIKE_EVENTS = "spike_events.jsonl"
MALFORMED_EVENTS = "malformed_events.txt"
MULTILINGUAL_EVENTS = "multilingual_events.jsonl"


def sample(name: str) -> Traversable:
    """A shipped sample file (`.read_bytes()`, `.open()`): one of the names above."""
    return files(__name__) / name


def sample_lines(name: str) -> list[bytes]:
    """The non-blank lines of a shipped sample file."""
    return [line for line in sample(name).read_bytes().splitlines() if line.strip()]
