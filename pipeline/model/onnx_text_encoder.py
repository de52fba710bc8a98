"""Sentence encoder whose ONNX graph takes the texts themselves (its tokenizer is an op inside the graph):
the multilingual encoder `use-m-v3-int8` (build.py). CPU only: the SentencePiece op of onnxruntime-extensions
has no GPU kernel.

A batch runs in one call, unpadded (the graph works on ragged token lists), and a text's embedding does not
depend on its batch-mates: the build replaced the batch-wide activation scales by per-token ones and checks it
(`batch_max_abs_diff` in the manifest).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import structlog

from pipeline.model.base import ModelError
from pipeline.model.catalog import read_manifest, verified_hash

log = structlog.get_logger(__name__)


class OnnxTextEncoder:
    """An `Encoder` (base.py) for a built model whose manifest says `input: text`."""

    def __init__(self, path: Path, *, threads: int = 2) -> None:
        from pipeline.model.build import text_session

        manifest = read_manifest(path.parent, path.name)
        if manifest.get("input") != "text":
            raise ModelError(f"{path} takes token ids, not text: load it with OnnxEncoder")
        self.name: str = manifest["name"]
        self.dim: int = manifest["dim"]
        self.languages: tuple[str, ...] = tuple(manifest.get("languages", ()))
        self.content_hash = verified_hash(path, manifest)
        try:
            self._session = text_session(path / "model.onnx", threads)
        except ModelError:
            raise
        except Exception as exc:  # onnxruntime raises its own types for bad files
            raise ModelError(
                f"cannot load {path / 'model.onnx'}: {exc}; rebuild with `slmstream models build --force`"
            ) from exc
        self._input = self._session.get_inputs()[0].name
        self._output: str = manifest["output"]
        log.info(
            "model_loaded", model=self.name, provider="CPUExecutionProvider", threads=threads, hash=self.content_hash
        )

    def encode(self, texts: Sequence[str]) -> np.ndarray:
        """L2-normalised embeddings in the order of `texts`, the whole batch in one call."""
        if not texts:
            return np.zeros((0, self.dim), dtype=np.float32)
        (out,) = self._session.run([self._output], {self._input: np.asarray(list(texts), dtype=object)})
        rows = np.asarray(out, dtype=np.float32)
        unit: np.ndarray = rows / np.maximum(np.linalg.norm(rows, axis=1, keepdims=True), 1e-12)
        return unit
