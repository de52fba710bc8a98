"""Sentence encoder on onnxruntime + tokenizers: CPU, or CUDA (or TensorRT) when onnxruntime-gpu sees a GPU.

On a GPU provider the encoder runs bigger length-sorted sub-batches (`gpu_sub_batch`) with IO binding: each
sub-batch's inputs are copied to the device once, its output stays there until all sub-batches ran, then
each comes back in one copy. On the CPU provider nothing of that applies: plain `session.run`.
"""

from __future__ import annotations

import contextlib
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort
import structlog

from pipeline.model.base import ModelError
from pipeline.model.catalog import load_tokenizer, model_dir, read_manifest, verified_hash

log = structlog.get_logger(__name__)


PROVIDERS = ("auto", "cpu", "cuda", "tensorrt")
GPU_PROVIDERS = ("CUDAExecutionProvider", "TensorrtExecutionProvider")
_GPU_LIBS_LOADED = False


def preload_gpu_libraries() -> None:
    """Load the CUDA libraries before a CUDA session is made: torch's (when torch is installed: it brings
    cuDNN and cuBLAS), then onnxruntime's own `preload_dlls` (onnxruntime-gpu >= 1.21). Only called when
    onnxruntime offers a GPU provider; failures are left to the session, which names them."""
    global _GPU_LIBS_LOADED
    if _GPU_LIBS_LOADED:
        return
    _GPU_LIBS_LOADED = True
    # no torch, or a torch without CUDA: onnxruntime looks for the libraries itself
    with contextlib.suppress(Exception):
        import torch  # noqa: F401
    preload = getattr(ort, "preload_dlls", None)
    if preload is not None:
        try:
            preload()
        except Exception as exc:
            log.warning("onnxruntime_preload_dlls_failed", error=repr(exc))


def choose_providers(preference: str) -> list[str]:
    """The onnxruntime providers for `model.provider` (auto | cpu | cuda | tensorrt), best first.

    auto: CUDA when onnxruntime-gpu sees a GPU, else CPU. cuda / tensorrt: that provider or a ModelError
    saying what is missing (the worker stops at start instead of running on the CPU unnoticed)."""
    if preference not in PROVIDERS:
        raise ModelError(f"model.provider={preference!r}: choose one of {', '.join(PROVIDERS)}")
    available = ort.get_available_providers()
    wanted = {"cuda": "CUDAExecutionProvider", "tensorrt": "TensorrtExecutionProvider"}.get(preference)
    if wanted is not None and wanted not in available:
        raise ModelError(
            f"model.provider={preference} but onnxruntime has no {wanted} here "
            f"(available: {', '.join(available)}); install the `gpu` extra (onnxruntime-gpu) on a GPU host, "
            "or use provider=auto"
        )
    if preference == "tensorrt":
        preload_gpu_libraries()
        return ["TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider"]
    if preference in ("auto", "cuda") and "CUDAExecutionProvider" in available:
        preload_gpu_libraries()
        return ["CUDAExecutionProvider", "CPUExecutionProvider"]
    return ["CPUExecutionProvider"]


class OnnxEncoder:
    """An `Encoder` (base.py) for the encoders that `slmstream models build` writes."""

    def __init__(
        self,
        path: Path,
        *,
        threads: int = 2,
        max_tokens: int = 128,
        provider: str = "auto",
        sub_batch: int = 8,
        gpu_sub_batch: int = 256,
        io_binding: bool | None = None,
    ) -> None:
        manifest = read_manifest(path.parent, path.name)
        self.name: str = manifest["name"]
        self.dim: int = manifest["dim"]
        self._output: str = manifest["output"]
        self._pooled: bool = manifest["pooled"]
        model_file = path / "model.onnx"
        self.content_hash = verified_hash(path, manifest)

        self._tokenizer = load_tokenizer(path)
        self._tokenizer.enable_truncation(max_length=max_tokens)
        self._tokenizer.no_padding()  # we pad per sub-batch (see encode)
        self._pad_id = int(manifest.get("pad_id", 0))
        self.sub_batch = sub_batch

        opts = ort.SessionOptions()
        # Threads set explicitly; spinning off: on small shared CPUs spinning threads steal the cores
        # the tokenizer and the event loop need (measured up to 3x slower here).
        opts.intra_op_num_threads = threads
        opts.inter_op_num_threads = 1
        opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
        opts.add_session_config_entry("session.inter_op.allow_spinning", "0")
        try:
            self._session = ort.InferenceSession(
                str(model_file), opts, providers=_with_options(choose_providers(provider), path)
            )
        except Exception as exc:  # onnxruntime raises its own types for bad files
            raise ModelError(f"cannot load {model_file}: {exc}; rebuild with `slmstream models build --force`") from exc
        self.provider = self._session.get_providers()[0]
        if provider in ("cuda", "tensorrt") and self.provider not in GPU_PROVIDERS:
            raise ModelError(
                f"model.provider={provider} but onnxruntime could not start it and fell back to {self.provider} "
                "(its warning above says why: CUDA or cuDNN libraries not found?); on the GPU host import torch "
                "first or install the CUDA 12/13 runtime, or use provider=auto"
            )
        self.on_gpu = self.provider in GPU_PROVIDERS
        if self.on_gpu:
            self.sub_batch = gpu_sub_batch
        # IO binding by default on a GPU only: the CPU path stays plain session.run
        self.io_binding: bool = self.on_gpu if io_binding is None else io_binding
        self._device = "cuda" if self.on_gpu else "cpu"
        self._inputs = {i.name for i in self._session.get_inputs()}
        log.info(
            "model_loaded",
            model=self.name,
            provider=self.provider,
            threads=threads,
            sub_batch=self.sub_batch,
            io_binding=self.io_binding,
            hash=self.content_hash,
        )

    def tokenize(self, texts: Sequence[str]) -> dict[str, np.ndarray]:
        """Token ids and mask for `texts`, padded to the longest of them."""
        return self._pad([e.ids for e in self._tokenizer.encode_batch(list(texts))])

    def _pad(self, ids: list[list[int]]) -> dict[str, np.ndarray]:
        width = max(len(row) for row in ids)
        input_ids = np.full((len(ids), width), self._pad_id, dtype=np.int64)
        mask = np.zeros((len(ids), width), dtype=np.int64)
        for i, row in enumerate(ids):
            input_ids[i, : len(row)] = row
            mask[i, : len(row)] = 1
        feeds = {"input_ids": input_ids, "attention_mask": mask}
        if "token_type_ids" in self._inputs:
            feeds["token_type_ids"] = np.zeros_like(input_ids)
        return feeds

    def encode(self, texts: Sequence[str]) -> np.ndarray:
        """Embeddings in the order of `texts`.

        Texts are sorted by token count and run in sub-batches of `sub_batch`, each padded to its own
        longest text: a batch padded to its longest text computed 2.4x the real tokens on the sample
        events (8 to 70 tokens), and sorted sub-batches of 8 ran 1.6x faster than one padded batch of 32.
        """
        if not texts:
            return np.zeros((0, self.dim), dtype=np.float32)
        ids = [e.ids for e in self._tokenizer.encode_batch(list(texts))]
        order = sorted(range(len(ids)), key=lambda i: len(ids[i]))
        out = np.empty((len(ids), self.dim), dtype=np.float32)
        if self.io_binding:
            self._run_bound(ids, order, out)
            return _unit_rows(out)
        for start in range(0, len(order), self.sub_batch):
            chunk = order[start : start + self.sub_batch]
            out[chunk] = self._run(self._pad([ids[i] for i in chunk]))
        return _unit_rows(out)

    def _run(self, feeds: dict[str, np.ndarray]) -> np.ndarray:
        out: np.ndarray
        (out,) = self._session.run([self._output], feeds)
        if not self._pooled:  # token states → mean over real tokens
            mask = feeds["attention_mask"][..., None].astype(np.float32)
            out = (out * mask).sum(axis=1) / np.maximum(mask.sum(axis=1), 1e-9)
        return out

    def _run_bound(self, ids: list[list[int]], order: list[int], out: np.ndarray) -> None:
        """The sorted sub-batches with IO binding: inputs copied to the device once each, outputs left on the
        device until every sub-batch ran, then one copy back each (the runs are not held up by copies)."""
        pending: list[tuple[list[int], Any, np.ndarray]] = []  # Any: onnxruntime's IOBinding (untyped)
        for start in range(0, len(order), self.sub_batch):
            chunk = order[start : start + self.sub_batch]
            feeds = self._pad([ids[i] for i in chunk])
            binding = self._session.io_binding()
            for name, arr in feeds.items():
                binding.bind_ortvalue_input(name, ort.OrtValue.ortvalue_from_numpy(arr, self._device, 0))
            binding.bind_output(self._output, self._device)
            self._session.run_with_iobinding(binding)
            pending.append((chunk, binding, feeds["attention_mask"]))
        for chunk, binding, mask in pending:
            (value,) = binding.get_outputs()
            rows = value.numpy()
            if not self._pooled:
                m = mask[..., None].astype(np.float32)
                rows = (rows * m).sum(axis=1) / np.maximum(m.sum(axis=1), 1e-9)
            out[chunk] = rows


def _unit_rows(rows: np.ndarray) -> np.ndarray:
    """Each row scaled to length 1 (a zero row stays zero)."""
    unit: np.ndarray = rows / np.maximum(np.linalg.norm(rows, axis=1, keepdims=True), 1e-12)
    return unit


def _with_options(providers: list[str], path: Path) -> Sequence[str | tuple[str, dict[str, Any]]]:
    """TensorRT gets fp16 and an engine cache next to the model (an engine takes a while to build per shape)."""
    if providers[0] != "TensorrtExecutionProvider":
        return providers
    trt = {
        "trt_fp16_enable": True,
        "trt_engine_cache_enable": True,
        "trt_engine_cache_path": str(path / "trt-cache"),
    }
    return [("TensorrtExecutionProvider", trt), *providers[1:]]


def load_encoder(
    cache_dir: Path,
    name: str,
    *,
    threads: int,
    max_tokens: int,
    provider: str,
    sub_batch: int = 8,
    gpu_sub_batch: int = 256,
    io_binding: bool | None = None,
) -> OnnxEncoder:
    return OnnxEncoder(
        model_dir(cache_dir, name),
        threads=threads,
        max_tokens=max_tokens,
        provider=provider,
        sub_batch=sub_batch,
        gpu_sub_batch=gpu_sub_batch,
        io_binding=io_binding,
    )
