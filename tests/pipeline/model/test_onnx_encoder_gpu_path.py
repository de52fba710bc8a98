"""The GPU path of pipeline/model/onnx_encoder.py, exercised on the CPU provider: provider choice and its errors,
IO binding (onnxruntime binds CPU inputs and outputs too), sub-batch choice. The CPU default stays plain
session.run: test_onnx_encoder.py pins its results."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest

from pipeline.model.base import ModelError
from pipeline.model.onnx_encoder import OnnxEncoder, choose_providers

REPO = Path(__file__).resolve().parents[3]
CACHE = REPO / ".cache" / "models"
PRIMARY = "minilm-l6-int8"
NO_GPU = "CUDAExecutionProvider" not in ort.get_available_providers()

SENTENCES = [
    "I was charged twice for my order this month.",
    "ok",
    "My package still hasn't arrived and the tracking page shows nothing.",
    "The app crashes every time I open the settings page.",
    "Thanks so much, your support team was amazing!",
    "Could you tell me whether the blue version of this jacket comes in a size large, and when it is back?",
    "refund please",
    "How do I reset my password?",
    "Where is my parcel",
    "The checkout page times out when I pay with a card from abroad.",
]


def built(name: str) -> bool:
    return all((CACHE / name / f).exists() for f in ("manifest.json", "model.onnx", "tokenizer.json"))


needs_primary = pytest.mark.skipif(not built(PRIMARY), reason=f"{PRIMARY} is not built: run `slmstream models build`")


# ---- provider choice -----------------------------------------------------------------------------------------
@pytest.mark.skipif(not NO_GPU, reason="this host has a CUDA provider")
@pytest.mark.parametrize(
    ("asked", "missing"), [("cuda", "CUDAExecutionProvider"), ("tensorrt", "TensorrtExecutionProvider")]
)
def test_gpu_provider_asked_but_absent_is_a_clear_error(asked: str, missing: str) -> None:
    with pytest.raises(ModelError) as info:
        choose_providers(asked)
    msg = str(info.value)
    assert f"model.provider={asked}" in msg
    assert missing in msg
    assert "CPUExecutionProvider" in msg  # what is available
    assert "provider=auto" in msg  # what to do


def test_unknown_provider_is_refused() -> None:
    with pytest.raises(ModelError, match="choose one of auto, cpu, cuda, tensorrt"):
        choose_providers("tpu")


@pytest.mark.skipif(not NO_GPU, reason="this host has a CUDA provider")
def test_auto_without_gpu_is_cpu_only() -> None:
    assert choose_providers("auto") == ["CPUExecutionProvider"]
    assert choose_providers("cpu") == ["CPUExecutionProvider"]


@needs_primary
@pytest.mark.skipif(not NO_GPU, reason="this host has a CUDA provider")
def test_encoder_asked_for_cuda_without_it_stops_at_load() -> None:
    with pytest.raises(ModelError, match="model.provider=cuda"):
        OnnxEncoder(CACHE / PRIMARY, provider="cuda")


# ---- IO binding on the CPU provider ---------------------------------------------------------------------------
@pytest.fixture(scope="module")
def plain() -> OnnxEncoder:
    if not built(PRIMARY):
        pytest.skip(f"{PRIMARY} is not built")
    return OnnxEncoder(CACHE / PRIMARY, threads=2, provider="cpu")


@needs_primary
def test_cpu_defaults_are_unchanged(plain: OnnxEncoder) -> None:
    assert plain.provider == "CPUExecutionProvider"
    assert plain.on_gpu is False
    assert plain.io_binding is False  # the CPU path is plain session.run
    assert plain.sub_batch == 8  # gpu_sub_batch applies on a GPU only


@needs_primary
@pytest.mark.parametrize("sub_batch", [1, 3, 8, 64])
def test_io_binding_gives_the_same_embeddings(plain: OnnxEncoder, sub_batch: int) -> None:
    bound = OnnxEncoder(CACHE / PRIMARY, threads=2, provider="cpu", sub_batch=sub_batch, io_binding=True)
    assert bound.io_binding is True
    plain.sub_batch = sub_batch
    try:
        expected = plain.encode(SENTENCES)
    finally:
        plain.sub_batch = 8
    got = bound.encode(SENTENCES)
    assert got.shape == (len(SENTENCES), plain.dim)
    assert got.dtype == np.float32
    # same graph, same provider, same sub-batches: the same numbers
    np.testing.assert_allclose(got, expected, rtol=0, atol=1e-6)
    np.testing.assert_allclose(np.linalg.norm(got, axis=1), 1.0, atol=1e-5)
    assert bound.encode([]).shape == (0, plain.dim)


@needs_primary
def test_io_binding_keeps_the_order_of_the_texts(plain: OnnxEncoder) -> None:
    bound = OnnxEncoder(CACHE / PRIMARY, threads=2, provider="cpu", sub_batch=1, io_binding=True)
    forward = bound.encode(SENTENCES)
    backward = bound.encode(SENTENCES[::-1])
    np.testing.assert_allclose(forward, backward[::-1], rtol=0, atol=1e-6)
