"""The one place that turns `model.*` settings and an encoder name into a loaded encoder: used by the worker
(pipeline/runtime.py) and by the shared model server (pipeline/cli/model_server.py), so both load alike."""

from __future__ import annotations

from pipeline.config import ModelSettings
from pipeline.model.base import Encoder
from pipeline.model.identity import IDENTITY, IdentityEncoder


def open_encoder(m: ModelSettings, name: str) -> Encoder:
    """The encoder `name` from the cache (or the identity model, which has no files); ModelError if missing."""
    if name == IDENTITY:  # no inference: measures the pipeline itself (pipeline/model/identity.py)
        return IdentityEncoder()
    from pipeline.model.catalog import model_dir, read_manifest

    if read_manifest(m.cache_dir, name).get("input") == "text":  # tokenized inside its graph: the multilingual one
        from pipeline.model.onnx_text_encoder import OnnxTextEncoder

        return OnnxTextEncoder(model_dir(m.cache_dir, name), threads=m.threads)
    from pipeline.model.onnx_encoder import load_encoder  # onnxruntime: imported only when a real model is asked for

    return load_encoder(
        m.cache_dir,
        name,
        threads=m.threads,
        max_tokens=m.max_tokens,
        provider=m.provider,
        sub_batch=m.sub_batch,
        gpu_sub_batch=m.gpu_sub_batch,
    )
