"""pipeline/model/onnx_encoder.py against the real models built by `slmstream models build` into .cache/models."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import orjson
import pytest
import yaml

from pipeline.config import Label
from pipeline.model.base import Encoder, ModelError
from pipeline.model.classifier import LabelClassifier
from pipeline.model.onnx_encoder import OnnxEncoder, choose_providers, load_encoder
from pipeline.samples import SAMPLE_EVENTS, sample_lines

REPO = Path(__file__).resolve().parents[3]
CACHE = REPO / ".cache" / "models"
PRIMARY = "minilm-l6-int8"
FALLBACK = "minilm-l3"


def built(name: str) -> bool:
    d = CACHE / name
    return all((d / f).exists() for f in ("manifest.json", "model.onnx", "tokenizer.json"))


needs_primary = pytest.mark.skipif(
    not built(PRIMARY), reason=f"{PRIMARY} is not built in {CACHE}: run `slmstream models build` first"
)
needs_fallback = pytest.mark.skipif(
    not built(FALLBACK), reason=f"{FALLBACK} is not built in {CACHE}: run `slmstream models build` first"
)

SENTENCES = [
    "I was charged twice for my order this month.",
    "My package still hasn't arrived and the tracking page shows nothing.",
    "The app crashes every time I open the settings page.",
    "Thanks so much, your support team was amazing!",
    "ok",
    "Could you tell me whether the blue version of this jacket comes in a size large, and if so when it will be "
    "back in stock? I have been waiting for weeks and would really like to order it before the holidays.",
]


@pytest.fixture(scope="module")
def encoder() -> OnnxEncoder:
    if not built(PRIMARY):
        pytest.skip(f"{PRIMARY} is not built in {CACHE}: run `slmstream models build` first")
    # CPU on purpose: the numbers below (and the accuracy noted) are for the CPU provider.
    return OnnxEncoder(CACHE / PRIMARY, threads=2, max_tokens=128, provider="cpu")


def cosines(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return (a * b).sum(axis=1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))


# ---- the encoder -------------------------------------------------------------------------------------------
@needs_primary
def test_loads_with_manifest_facts(encoder: OnnxEncoder) -> None:
    manifest = orjson.loads((CACHE / PRIMARY / "manifest.json").read_bytes())
    assert isinstance(encoder, Encoder)
    assert encoder.name == PRIMARY
    assert encoder.dim == 384
    assert encoder.provider == "CPUExecutionProvider"
    assert encoder.content_hash == "sha256:" + manifest["sha256"][:16]


@needs_primary
def test_embeddings_are_unit_length_with_shape_n_by_384(encoder: OnnxEncoder) -> None:
    emb = encoder.encode(SENTENCES)
    assert emb.shape == (len(SENTENCES), 384)
    assert emb.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(emb, axis=1), 1.0, atol=1e-5)
    assert np.isfinite(emb).all()
    assert encoder.encode([]).shape == (0, 384)


@needs_primary
def test_same_batch_is_deterministic(encoder: OnnxEncoder) -> None:
    a = encoder.encode(SENTENCES)
    b = encoder.encode(SENTENCES)
    np.testing.assert_array_equal(a, b)
    # A batch of copies of one sentence is that sentence alone.
    one = encoder.encode(SENTENCES[:1])
    np.testing.assert_allclose(encoder.encode(SENTENCES[:1] * 4), np.repeat(one, 4, axis=0), atol=1e-5)


# ---- batch independence: the same text, the same embedding and label, whatever it is batched with ------------
FP16 = "minilm-l6-fp16"
# The encoder sorts a batch by length and runs it in padded sub-batches, so these compositions change both the
# batch-mates and the padding of a text. The int8-per-token builds measured max |delta| 7e-8 (L6 and L3; fp16
# on the CPU provider 1e-9) on the 420 sample events over such compositions; the int8 dynamic quantization they
# replaced: 0.043, cosine 0.974, 49 label changes. 1e-5 on unit vectors lets float reordering through and
# catches any batch-wide scale.
BATCH_ATOL = {PRIMARY: 1e-5, FALLBACK: 1e-5, FP16: 1e-5}
LONG_TEXTS = [
    " ".join(["the parcel never arrived and nobody at the depot answers the phone"] * 20 + [f"order {i}"])
    for i in range(31)
]


@pytest.fixture(scope="module", params=[PRIMARY, FALLBACK, FP16])
def any_encoder(request: pytest.FixtureRequest) -> OnnxEncoder:
    name = request.param
    if not built(name):
        if name == FP16:  # not a default model: its absence is no failure (tests/conftest.py fails the others)
            pytest.skip(f"{FP16} is built only on request, and not in {CACHE}: `slmstream models build {FP16}`")
        pytest.skip(f"{name} is not built in {CACHE}: run `slmstream models build`")
    try:
        return OnnxEncoder(CACHE / name, threads=2, max_tokens=128, provider="cpu")
    except ModelError as exc:
        if name == FP16:  # fp16 is for CUDA; an onnxruntime without CPU fp16 kernels cannot load it
            pytest.skip(f"the CPU provider cannot run {FP16} here: {exc}")
        raise


def sample_texts() -> list[str]:
    return [orjson.loads(line)["text"] for line in sample_lines(SAMPLE_EVENTS)]


def real_labels(encoder: OnnxEncoder) -> LabelClassifier:
    config = yaml.safe_load((REPO / "config" / "slmstream.yaml").read_text())
    return LabelClassifier(
        encoder,
        {name: Label(**spec) for name, spec in config["labels"].items()},
        min_confidence=config["classifier"]["min_confidence"],
        temperature=config["classifier"]["temperature"],
    )


def labels_of(clf: LabelClassifier, embeddings: np.ndarray) -> list[str]:
    probs = clf.score(embeddings)
    return [clf.names[int(row.argmax())] if row.max() >= clf.min_confidence else "unknown" for row in probs]


def test_embedding_and_label_do_not_depend_on_the_batch(any_encoder: OnnxEncoder) -> None:
    enc = any_encoder
    others = sample_texts()
    texts = SENTENCES + others[:10]  # 16 texts, 1 to 50 tokens
    alone = np.concatenate([enc.encode([t]) for t in texts])
    sub_batch = enc.sub_batch
    try:
        enc.sub_batch = 32  # one batch padded to its longest text, no length sorting
        one_padded_batch = enc.encode(texts + others[100:116])[:16]
    finally:
        enc.sub_batch = sub_batch
    compositions = {
        "batch of 32 (sample events after them)": enc.encode(texts + others[20:36])[:16],
        "other batch-mates (before them)": enc.encode(others[200:216] + texts)[16:],
        "each among 31 texts of 128 tokens": np.concatenate([enc.encode([t, *LONG_TEXTS])[:1] for t in texts]),
        "one padded batch of 32": one_padded_batch,
    }
    clf = real_labels(enc)
    expected = labels_of(clf, alone)
    for what, emb in compositions.items():
        np.testing.assert_allclose(emb, alone, rtol=0, atol=BATCH_ATOL[enc.name], err_msg=f"{enc.name}: {what}")
        assert labels_of(clf, emb) == expected, f"{enc.name}: {what}"


@needs_primary
def test_paraphrases_are_closer_than_unrelated_sentences(encoder: OnnxEncoder) -> None:
    a, para, other, other2 = encoder.encode(
        [
            "I was charged twice for the same order.",
            "My card got billed two times for one purchase.",
            "The weather in Lisbon is lovely this time of year.",
            "How do I reset my router?",
        ]
    )
    assert float(a @ para) > 0.5
    assert float(a @ para) > float(a @ other) + 0.3
    assert float(a @ para) > float(a @ other2) + 0.3


@needs_primary
def test_long_text_is_truncated_not_rejected(encoder: OnnxEncoder) -> None:
    long = " ".join(["the parcel never arrived"] * 300)
    emb = encoder.encode([long, "ok"])
    assert emb.shape == (2, 384)
    assert encoder.tokenize([long])["input_ids"].shape[1] == 128


@needs_fallback
def test_fallback_model_loads_and_encodes() -> None:
    enc = load_encoder(CACHE, FALLBACK, threads=1, max_tokens=64, provider="cpu")
    emb = enc.encode(SENTENCES[:3])
    assert enc.name == FALLBACK
    assert emb.shape == (3, 384)
    np.testing.assert_allclose(np.linalg.norm(emb, axis=1), 1.0, atol=1e-5)


def test_cpu_provider_choice() -> None:
    assert choose_providers("cpu") == ["CPUExecutionProvider"]
    assert choose_providers("auto")[-1] == "CPUExecutionProvider"


# ---- missing and broken model folders ----------------------------------------------------------------------
def test_missing_model_dir_says_to_build(tmp_path: Path) -> None:
    with pytest.raises(ModelError) as info:
        OnnxEncoder(tmp_path / PRIMARY)
    assert "slmstream models build" in str(info.value)
    assert PRIMARY in str(info.value)


def test_unknown_model_name(tmp_path: Path) -> None:
    with pytest.raises(ModelError, match="unknown model 'gpt-9'"):
        OnnxEncoder(tmp_path / "gpt-9")


def broken_copy(tmp_path: Path, *, model: bytes | None = b"not an onnx file", manifest_sha: bool = True) -> Path:
    """A model folder with the real manifest and tokenizer and (unless None) a bogus model.onnx."""
    src = CACHE / PRIMARY
    if not built(PRIMARY):
        pytest.skip(f"{PRIMARY} is not built in {CACHE}: run `slmstream models build` first")
    dst = tmp_path / PRIMARY
    dst.mkdir()
    manifest = orjson.loads((src / "manifest.json").read_bytes())
    if not manifest_sha:
        manifest.pop("sha256")
    (dst / "manifest.json").write_bytes(orjson.dumps(manifest))
    shutil.copy(src / "tokenizer.json", dst / "tokenizer.json")
    if model is not None:
        (dst / "model.onnx").write_bytes(model)
    return dst


def test_corrupt_manifest_says_to_rebuild(tmp_path: Path) -> None:
    d = broken_copy(tmp_path)
    (d / "manifest.json").write_text("{not json")
    with pytest.raises(ModelError) as info:
        OnnxEncoder(d)
    assert "corrupt" in str(info.value)
    assert "slmstream models build --force" in str(info.value)


def test_missing_model_file_says_to_rebuild(tmp_path: Path) -> None:
    d = broken_copy(tmp_path, model=None)
    with pytest.raises(ModelError) as info:
        OnnxEncoder(d)
    assert "model.onnx is missing" in str(info.value)
    assert "slmstream models build --force" in str(info.value)


def test_unloadable_model_file_says_to_rebuild(tmp_path: Path) -> None:
    d = broken_copy(tmp_path, manifest_sha=False)
    with pytest.raises(ModelError) as info:
        OnnxEncoder(d, provider="cpu")
    assert "cannot load" in str(info.value)
    assert "slmstream models build --force" in str(info.value)


def test_corrupt_model_file_says_to_run_models_build(tmp_path: Path) -> None:
    d = broken_copy(tmp_path)
    with pytest.raises(ModelError) as info:
        OnnxEncoder(d, provider="cpu")
    assert "corrupt" in str(info.value)
    assert "slmstream models build" in str(info.value)


def test_corrupt_tokenizer_is_a_model_error(tmp_path: Path) -> None:
    src = CACHE / PRIMARY
    if not built(PRIMARY):
        pytest.skip(f"{PRIMARY} is not built in {CACHE}: run `slmstream models build` first")
    d = tmp_path / PRIMARY
    shutil.copytree(src, d)
    (d / "tokenizer.json").write_text("garbage")
    with pytest.raises(ModelError, match="slmstream models build"):
        OnnxEncoder(d, provider="cpu")


# ---- the classifier with the real taxonomy -----------------------------------------------------------------
@needs_primary
def test_classifier_accuracy_on_sample_events(encoder: OnnxEncoder) -> None:
    config = yaml.safe_load((REPO / "config" / "slmstream.yaml").read_text())
    labels = {name: Label(**spec) for name, spec in config["labels"].items()}
    clf = LabelClassifier(
        encoder,
        labels,
        min_confidence=config["classifier"]["min_confidence"],
        temperature=config["classifier"]["temperature"],
    )
    events = [orjson.loads(line) for line in sample_lines(SAMPLE_EVENTS)][:140]
    results = []
    for i in range(0, len(events), 32):  # batches of max_batch, as the worker runs them
        results += clf.classify([e["text"] for e in events[i : i + 32]])
    correct = sum(r.label == e["attrs"]["expected_label"] for r, e in zip(results, events, strict=True))
    # Measured on CPU (int8 per token: the same at any batching): 104/140 = 74.3%; all 420 events: 79.5%
    # (fp32: 80.0%; the int8 dynamic build before it: 79.0% in batches of 32). The fallback minilm-l3: 99/140.
    assert correct / len(events) >= 0.70, f"{correct}/{len(events)}"
    assert {r.label for r in results} >= set(labels)
