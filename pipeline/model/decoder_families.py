"""The decoder families a user may bring (Llama-style, Phi-3, Gemma 1/2/3), and the facts a generator's
manifest needs that differ between checkpoints: family, attention masks per layer, chat template, stop ids.

Build time only (export_decoder.py and `slmstream models import-decoder` use it); the runtime reads the facts
from manifest.json. What each family changes in the export (all inside transformers' own modules, except the
masks and the attention function that export_decoder.py supplies):

    llama    SmolLM2, Llama 2/3, TinyLlama: full causal attention, grouped KV heads.
    phi3     fused qkv_proj / gate_up_proj (inside the module), optional `sliding_window` on every layer.
    gemma    embeddings scaled by sqrt(hidden) (inside the module), tied LM head, head_dim != hidden / heads.
    gemma2   as gemma + attention logit soft-capping (the attention function applies it), final logit
             soft-capping (inside the module), alternating sliding-window / full layers (`layer_types`).
    gemma3   (text: model_type gemma3_text) as gemma2 without soft-capping + q/k RMS norms and a rope base per
             layer type (inside the module).
    qwen2    Qwen2 / Qwen2.5: Llama-style with q/k/v biases (inside the module); sliding-window layers from
             `max_window_layers` on when `use_sliding_window` is set (`layer_types`).

Sliding windows are exact: the graph builds a windowed mask for the layers that have one and keeps the whole
cache (a sliding layer's cache is not trimmed; the mask hides what is out of its window).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from pipeline.model.base import ModelError


@dataclass(frozen=True)
class Family:
    name: str
    # "single": one [b, 1, q, kv] mask for every layer (windowed when config.sliding_window is set);
    # "per_layer_type": a {layer_type: mask} dict, one per `config.layer_types` entry
    masks: str
    sliding_from_config: bool  # a non-null config.sliding_window windows every layer ("single" masks)


FAMILIES: dict[str, Family] = {
    "llama": Family("llama", "single", sliding_from_config=False),
    "phi3": Family("phi3", "single", sliding_from_config=True),
    "gemma": Family("gemma", "single", sliding_from_config=False),
    "gemma2": Family("gemma2", "per_layer_type", sliding_from_config=False),
    "gemma3_text": Family("gemma3", "per_layer_type", sliding_from_config=False),
    "qwen2": Family("qwen2", "per_layer_type", sliding_from_config=False),
}


def family_of(config) -> Family:
    """The family of a transformers config (ModelError naming the supported ones if it is not one)."""
    model_type = getattr(config, "model_type", None)
    if model_type == "gemma3":  # the multimodal Gemma 3 (4B and up): its text model is what we export
        raise ModelError(
            "this is a multimodal Gemma 3 checkpoint (model_type gemma3); export its text decoder: save "
            "Gemma3ForCausalLM (model_type gemma3_text) first, or use a text-only Gemma 3 (1B)"
        )
    if model_type not in FAMILIES:
        known = ", ".join(f"{f.name} ({t})" for t, f in FAMILIES.items())
        raise ModelError(f"model_type {model_type!r} is not a supported decoder family; supported: {known}")
    return FAMILIES[model_type]


def sliding_windows(config) -> dict[str, int | None]:
    """The attention window of each mask the model takes: {"": window} for single-mask families, else
    {layer_type: window} (None = full attention)."""
    family = family_of(config)
    window = getattr(config, "sliding_window", None)
    if family.masks == "single":
        return {"": window if family.sliding_from_config else None}
    types = sorted(set(config.layer_types))
    return {t: (window if t == "sliding_attention" else None) for t in types}


def context_length(config) -> int:
    """The longest prompt + answer the exported graph computes exactly: max_position_embeddings, or the original
    context for longrope / dynamic rope (their long-context frequencies are not in the graph: export_decoder.py)."""
    limit = int(getattr(config, "max_position_embeddings", None) or 2048)
    rope = getattr(config, "rope_parameters", None) or {}
    for params in [rope] if "rope_type" in rope else [p for p in rope.values() if isinstance(p, dict)]:
        kind = params.get("rope_type", "default")
        if kind == "longrope" or "dynamic" in kind:
            original = params.get("original_max_position_embeddings") or getattr(
                config, "original_max_position_embeddings", None
            )
            limit = min(limit, int(original or limit))
    return limit


# ---- chat templates -------------------------------------------------------------------------------------
# Templates are stored as format strings (the runtime has no jinja). They are DERIVED from the checkpoint's
# own jinja template by rendering it around sentinels, then checked to render exactly like it.
_S = "\ue000SYSTEM\ue000"  # private-use characters: no real template emits them
_U = "\ue001USER\ue001"
_CHECK_TURNS = [
    (None, "What is the capital of France?"),
    ("You are a concise assistant.", "Summarize: the app crashes on start."),
    ("Be brief.", "Line one.\nLine two {with braces}."),
]

# For a checkpoint without a chat template (or one the derivation cannot read): `--chat-template NAME`.
CHAT_PRESETS: dict[str, dict] = {
    "chatml": {
        "format": "chatml",
        "system": "<|im_start|>system\n{content}<|im_end|>\n",
        "user": "<|im_start|>user\n{content}<|im_end|>\n",
        "assistant_prefix": "<|im_start|>assistant\n",
        "supports_system": True,
    },
    "phi3": {
        "format": "phi3",
        "system": "<|system|>\n{content}<|end|>\n",
        "user": "<|user|>\n{content}<|end|>\n",
        "assistant_prefix": "<|assistant|>\n",
        "supports_system": True,
    },
    "gemma": {
        "format": "gemma",
        "prefix": "<bos>",
        "system": "",
        "user": "<start_of_turn>user\n{content}<end_of_turn>\n",
        "assistant_prefix": "<start_of_turn>model\n",
        "supports_system": False,
        "system_separator": "\n\n",
    },
    "llama3": {
        "format": "llama3",
        "prefix": "<|begin_of_text|>",
        "system": "<|start_header_id|>system<|end_header_id|>\n\n{content}<|eot_id|>",
        "user": "<|start_header_id|>user<|end_header_id|>\n\n{content}<|eot_id|>",
        "assistant_prefix": "<|start_header_id|>assistant<|end_header_id|>\n\n",
        "supports_system": True,
    },
}

Render = Callable[[list[dict], bool], str]  # (messages, add_generation_prompt) → text


def _fmt(text: str, *sentinels: str) -> str:
    """Literal text → a str.format pattern with {content} where a sentinel was."""
    text = text.replace("{", "{{").replace("}", "}}")
    for s in sentinels:
        text = text.replace(s, "{content}")
    return text


def same_prefix(a: Sequence, b: Sequence) -> int:
    """How many leading items (characters, token ids) `a` and `b` share."""
    n = 0
    for x, y in zip(a, b, strict=False):
        if x != y:
            break
        n += 1
    return n


def _try_render(render: Render, messages: list[dict]) -> str | None:
    try:
        return render(messages, True)
    except Exception:  # templates reject a system role with raise_exception (Gemma 1/2)
        return None


def derive_chat_template(render: Render) -> dict:
    """The template facts for `render_prompt` (onnx_generator.py) from a jinja template, checked to render
    exactly as `render` does for a few system + user turns. ModelError when it cannot be derived."""
    user_only = render([{"role": "user", "content": _U}], True)
    if user_only.count(_U) != 1:
        raise ModelError("the chat template does not render the user message exactly once")
    pre_u, post = user_only.split(_U)
    facts: dict = {"format": "derived", "assistant_prefix": _fmt(post), "supports_system": True}
    padded = render([{"role": "user", "content": " x "}], True)
    if " x " not in padded and "x" in padded:
        facts["strip_content"] = True  # e.g. Gemma 3 trims each message
    with_system = _try_render(render, [{"role": "system", "content": _S}, {"role": "user", "content": _U}])
    if with_system is None or _S not in with_system:
        # no system role: the system text goes in front of the user message (what Gemma 3's template does)
        facts.update(user=_fmt(pre_u) + "{content}", system="", supports_system=False, system_separator="\n\n")
    elif with_system.startswith(pre_u + _S) and with_system.endswith(_U + post):
        sep = with_system[len(pre_u + _S) : len(with_system) - len(_U + post)]
        facts.update(user=_fmt(pre_u) + "{content}", system="", supports_system=False, system_separator=sep)
    elif with_system.endswith(_U + post):
        rest = with_system[: -len(_U + post)]  # prefix + system turn + user head
        facts.update(_split_system(rest, pre_u, user_only, post))
    else:
        raise ModelError("cannot read the chat template's system and user turns; pass --chat-template")
    check_template(facts, render)
    return facts


def _split_system(rest: str, pre_u: str, user_only: str, post: str) -> dict:
    """Split `rest` (what precedes the user message when a system message is given) into prefix, system turn
    and user head, such that pre_u (no system message) = prefix + user head."""
    for k in range(len(pre_u) + 1):
        prefix, head = pre_u[:k], pre_u[k:]
        if rest.startswith(prefix) and rest.endswith(head) and len(prefix) + len(head) <= len(rest):
            system = rest[len(prefix) : len(rest) - len(head)]
            if system.count(_S) == 1:
                return {"prefix": _fmt(prefix), "system": _fmt(system, _S), "user": _fmt(head) + "{content}"}
    # The template puts a default system message in when none is given (SmolLM2, Llama 3.1): the system
    # turn and the user head cannot be told apart, so render the default system text when none is given.
    start = same_prefix(rest, pre_u)
    end = same_prefix(rest[::-1], pre_u[::-1])
    if rest[start : len(rest) - end] == _S and start + end <= len(pre_u):
        default = pre_u[start : len(pre_u) - end]
        return {"prefix": "", "system": _fmt(rest, _S), "user": "{content}", "default_system": default}
    raise ModelError("cannot read the chat template's system turn; pass --chat-template")


def check_template(facts: dict, render: Render) -> None:
    from pipeline.model.onnx_generator import render_prompt

    for system, user in _CHECK_TURNS:
        ours = render_prompt(facts, system, user)
        if system is not None and not facts["supports_system"]:
            messages = [{"role": "user", "content": f"{system}{facts['system_separator']}{user}"}]
        else:
            messages = [{"role": "system", "content": system}] if system is not None else []
            messages.append({"role": "user", "content": user})
        theirs = render(messages, True)
        if ours != theirs:
            raise ModelError(f"derived chat template renders {ours!r}, the model's template {theirs!r}")


# ---- stop and pad ids -----------------------------------------------------------------------------------
_TURN_END_TOKENS = ("<|im_end|>", "<end_of_turn>", "<|end|>", "<|eot_id|>", "<|endoftext|>")


def stop_token_ids(eos_ids: list[int], template: dict, special_ids: dict[str, int]) -> list[int]:
    """eos ids + the special tokens in the text that follows a user message (end of turn, next turn's head):
    a model that emits one of them has finished its answer."""
    stops = set(eos_ids)
    after_user = template["assistant_prefix"] + template["user"].split("{content}", 1)[-1]
    for token, token_id in special_ids.items():
        if token in after_user or token in _TURN_END_TOKENS:
            stops.add(token_id)
    return sorted(stops)


def as_id_list(value) -> list[int]:
    if value is None:
        return []
    if isinstance(value, (list, tuple)):
        return [int(v) for v in value]
    return [int(value)]


# ---- ready ONNX exports (optimum, onnxruntime-genai) ----------------------------------------------------
_PAST = re.compile(r"^(?P<stem>past_key_values|past)\.(?P<i>\d+)\.(?P<kv>key|value)$")
_PRESENT = re.compile(r"^(?P<stem>present|present_key_values)\.(?P<i>\d+)\.(?P<kv>key|value)$")
_DTYPES = {1: "float32", 10: "float16"}


def inspect_onnx_io(model) -> dict:
    """The I/O facts of a decoder graph (an onnx ModelProto, weights not needed): layer count, KV heads, head
    dim, input/output names, whether it takes position ids, and whether left padding is safe."""
    inputs = {v.name: v for v in model.graph.input}
    outputs = {v.name for v in model.graph.output}
    past = {m.group("i"): m for m in (_PAST.match(n) for n in inputs) if m}
    present = [m for m in (_PRESENT.match(n) for n in outputs) if m]
    for required in ("input_ids", "attention_mask"):
        if required not in inputs:
            raise ModelError(f"the ONNX graph has no {required!r} input (inputs: {', '.join(inputs)})")
    if not past or not present or "logits" not in outputs:
        raise ModelError(
            "the ONNX graph is not a decoder with a KV cache: it needs inputs past.{i}.key/value (or "
            "past_key_values.{i}.key/value) and outputs logits + present.{i}.key/value; got inputs "
            f"{', '.join(inputs)}"
        )
    n_layers = len(past)
    shapes = set()
    for name in (n for n in inputs if _PAST.match(n)):
        dims = [d.dim_value if d.HasField("dim_value") else None for d in inputs[name].type.tensor_type.shape.dim]
        if len(dims) != 4 or dims[1] is None or dims[3] is None:
            raise ModelError(f"{name} shape {dims} is not [batch, kv_heads, past, head_dim] with fixed heads and dim")
        shapes.add((dims[1], dims[3], inputs[name].type.tensor_type.elem_type))
    if len(shapes) != 1:
        raise ModelError(f"the past key/value inputs differ in heads, head dim or type: {sorted(shapes)}")
    ((kv_heads, head_dim, elem),) = shapes
    if elem not in _DTYPES:
        raise ModelError(f"KV cache element type {elem} is not float32 or float16")
    known = {"input_ids", "attention_mask", "position_ids", "use_cache_branch"}
    unknown = [n for n in inputs if n not in known and not _PAST.match(n)]
    if unknown:
        raise ModelError(f"the ONNX graph takes inputs this runtime does not feed: {', '.join(unknown)}")
    ops = {node.op_type for node in model.graph.node}
    return {
        "n_layers": n_layers,
        "kv_heads": int(kv_heads),
        "head_dim": int(head_dim),
        "io": {
            "past": f"{next(iter(past.values())).group('stem')}.{{i}}.{{kv}}",
            "present": f"{present[0].group('stem')}.{{i}}.{{kv}}",
            "position_ids": "position_ids" in inputs,
            "use_cache_branch": "use_cache_branch" in inputs,
            "kv_dtype": _DTYPES[elem],
            # onnxruntime-genai's GroupQueryAttention reads sequence lengths from the mask as if padding were
            # on the right: left-padded batches gave garbage (models.md), so such a graph runs one prompt at a time
            "left_padding": "GroupQueryAttention" not in ops,
        },
    }
