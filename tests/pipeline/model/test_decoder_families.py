"""pipeline/model/decoder_families.py: families, context limits, stop ids and the I/O facts of ready ONNX
exports (graphs built here with onnx.helper; no model runs). Template derivation against real jinja
templates is in test_byo_decoders.py (it needs transformers)."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
from onnx import TensorProto, helper

from pipeline.model.base import ModelError
from pipeline.model.decoder_families import (
    CHAT_PRESETS,
    context_length,
    family_of,
    inspect_onnx_io,
    sliding_windows,
    stop_token_ids,
)


def graph(inputs: list[str], outputs: list[str], *, ops: tuple[str, ...] = (), kv=TensorProto.FLOAT, heads=2, dim=8):
    def value(name: str):
        if "past" in name or "present" in name:
            return helper.make_tensor_value_info(name, kv, ["batch", heads, "past", dim])
        elem = TensorProto.BOOL if name == "use_cache_branch" else TensorProto.INT64
        return helper.make_tensor_value_info(name, TensorProto.FLOAT if name == "logits" else elem, None)

    nodes = [helper.make_node(op, [], [], domain="com.microsoft") for op in ops]
    return helper.make_model(helper.make_graph(nodes, "g", [value(n) for n in inputs], [value(n) for n in outputs]))


KV_IN = [f"past_key_values.{i}.{kv}" for i in range(3) for kv in ("key", "value")]
KV_OUT = [f"present.{i}.{kv}" for i in range(3) for kv in ("key", "value")]


def test_onnxruntime_genai_layout_runs_one_prompt_at_a_time() -> None:
    facts = inspect_onnx_io(
        graph(["input_ids", "attention_mask", *KV_IN], ["logits", *KV_OUT], ops=("GroupQueryAttention",),
              kv=TensorProto.FLOAT16, heads=4, dim=96)
    )  # fmt: skip
    assert (facts["n_layers"], facts["kv_heads"], facts["head_dim"]) == (3, 4, 96)
    io = facts["io"]
    assert io["past"] == "past_key_values.{i}.{kv}" and io["present"] == "present.{i}.{kv}"
    assert io["position_ids"] is False and io["kv_dtype"] == "float16"
    assert io["left_padding"] is False  # GroupQueryAttention assumes right padding: batches of one


def test_optimum_merged_layout() -> None:
    inputs = ["input_ids", "attention_mask", "position_ids", *KV_IN, "use_cache_branch"]
    io = inspect_onnx_io(graph(inputs, ["logits", *KV_OUT]))["io"]
    assert io["position_ids"] and io["use_cache_branch"] and io["left_padding"] and io["kv_dtype"] == "float32"


@pytest.mark.parametrize(
    ("inputs", "outputs", "message"),
    [
        (["input_ids", "attention_mask"], ["logits"], "not a decoder with a KV cache"),
        (["input_ids", *KV_IN], ["logits", *KV_OUT], "no 'attention_mask'"),
        (["input_ids", "attention_mask", "token_type_ids", *KV_IN], ["logits", *KV_OUT], "token_type_ids"),
    ],
)
def test_graphs_that_are_not_decoders_are_refused(inputs: list[str], outputs: list[str], message: str) -> None:
    with pytest.raises(ModelError, match=message):
        inspect_onnx_io(graph(inputs, outputs))


def test_dynamic_heads_are_refused() -> None:
    model = graph(["input_ids", "attention_mask", *KV_IN], ["logits", *KV_OUT])
    model.graph.input[2].type.tensor_type.shape.dim[1].dim_param = "heads"
    with pytest.raises(ModelError, match="fixed heads"):
        inspect_onnx_io(model)


def test_families_and_their_masks() -> None:
    assert family_of(SimpleNamespace(model_type="phi3")).name == "phi3"
    assert family_of(SimpleNamespace(model_type="gemma3_text")).name == "gemma3"
    with pytest.raises(ModelError, match="multimodal Gemma 3"):
        family_of(SimpleNamespace(model_type="gemma3"))
    with pytest.raises(ModelError, match="supported: llama"):
        family_of(SimpleNamespace(model_type="mamba"))
    phi3 = SimpleNamespace(model_type="phi3", sliding_window=2047)
    assert sliding_windows(phi3) == {"": 2047}
    llama = SimpleNamespace(model_type="llama", sliding_window=4096)  # a window llama does not use
    assert sliding_windows(llama) == {"": None}
    gemma2 = SimpleNamespace(
        model_type="gemma2", sliding_window=4096, layer_types=["sliding_attention", "full_attention"]
    )
    assert sliding_windows(gemma2) == {"full_attention": None, "sliding_attention": 4096}


def test_context_length_is_the_original_one_for_longrope() -> None:
    plain = SimpleNamespace(max_position_embeddings=4096, rope_parameters={"rope_type": "default"})
    assert context_length(plain) == 4096
    longrope = SimpleNamespace(
        max_position_embeddings=131072,
        rope_parameters={"rope_type": "longrope", "original_max_position_embeddings": 4096},
    )
    assert context_length(longrope) == 4096
    per_type = SimpleNamespace(
        max_position_embeddings=32768,
        rope_parameters={"full_attention": {"rope_type": "linear"}, "sliding_attention": {"rope_type": "default"}},
    )
    assert context_length(per_type) == 32768


def test_stop_ids_are_eos_and_the_end_of_turn_tokens() -> None:
    specials = {"<|endoftext|>": 32000, "<|assistant|>": 32001, "<|end|>": 32007, "<|user|>": 32010, "<s>": 1}
    stops = stop_token_ids([32000], CHAT_PRESETS["phi3"], specials)
    assert stops == [32000, 32001, 32007]  # eos, the next turn's head, the end of turn; not <s> nor <|user|>
