"""`slmstream models build minilm-l6-fp16`: the CUDA variant, built only when named, checked against torch fp32."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import onnx
import orjson
import pytest

from pipeline.model.catalog import CATALOG, default_models

FP16 = "minilm-l6-fp16"


def test_fp16_is_in_the_catalog_but_not_built_by_default() -> None:
    assert FP16 in CATALOG
    assert CATALOG[FP16].kind == "encoder"
    assert FP16 not in default_models()
    assert {"minilm-l6-int8", "minilm-l3", "smollm2-135m-int8"} <= set(default_models())


@pytest.mark.skipif(importlib.util.find_spec("transformers") is None, reason="needs the build extra")
def test_build_fp16_checks_it_against_fp32(tmp_path: Path) -> None:
    from pipeline.model.build import MAX_BATCH_DIFF, MIN_COSINE_FP16, build, is_current
    from pipeline.model.onnx_encoder import OnnxEncoder

    (manifest,) = build(tmp_path, [FP16])
    target = tmp_path / FP16
    assert manifest["name"] == FP16
    assert manifest["precision"] == "fp16"
    assert manifest["pooled"] is True and manifest["dim"] == 384
    assert manifest["check"] in ("cpu", "structure")
    if manifest["check"] == "cpu":  # the CPU provider ran the fp16 graph: compared with torch fp32
        assert manifest["check_min_cosine"] >= MIN_COSINE_FP16
        # and a text alone vs in a padded batch: the same embedding
        assert 0 <= manifest["batch_max_abs_diff"] <= MAX_BATCH_DIFF
    assert orjson.loads((target / "manifest.json").read_bytes()) == manifest
    assert not list(target.glob("fp32.onnx*"))
    assert is_current(tmp_path, FP16)
    model = onnx.load(str(target / "model.onnx"))
    # float32 in/out (keep_io_types), fp16 weights inside
    assert {i.name for i in model.graph.input} == {"input_ids", "attention_mask"}
    (out,) = model.graph.output
    assert out.name == "sentence_embedding" and out.type.tensor_type.elem_type == onnx.TensorProto.FLOAT
    assert any(t.data_type == onnx.TensorProto.FLOAT16 for t in model.graph.initializer)
    assert manifest["size_bytes"] < 60 * 2**20  # about half the fp32 file
    if manifest["check"] == "cpu":
        enc = OnnxEncoder(target, provider="cpu")
        emb = enc.encode(["I was charged twice", "My card got billed two times", "How do I reset my router?"])
        np.testing.assert_allclose(np.linalg.norm(emb, axis=1), 1.0, atol=1e-3)
        assert float(emb[0] @ emb[1]) > float(emb[0] @ emb[2]) + 0.3
