"""Bring your own generator (import_decoder.py, decoder_families.py, export_decoder.py, onnx_generator.py):
tiny RANDOM-WEIGHT checkpoints of each supported family are built here (no downloads), imported through
`import_decoder` like a user's checkpoint, loaded with `load_generator`, and compared with torch: greedy
tokens of a left-padded batch of prompts of 3 lengths == torch's one-by-one greedy tokens, and the batch's
next-token logits close to torch's. Needs the build extra (torch, transformers); skipped without it."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import orjson
import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

from pipeline.model import export_decoder  # noqa: E402
from pipeline.model.base import GenerationStats, ModelError  # noqa: E402
from pipeline.model.decoder_families import derive_chat_template, inspect_onnx_io  # noqa: E402
from pipeline.model.export_decoder import prefill_logits, torch_greedy  # noqa: E402
from pipeline.model.import_decoder import describe_onnx_export, import_decoder  # noqa: E402
from pipeline.model.onnx_generator import OnnxGenerator, load_generator, render_prompt  # noqa: E402

SPECIALS = [
    "<pad>", "<bos>", "<eos>", "<|im_start|>", "<|im_end|>", "<|system|>", "<|user|>", "<|assistant|>", "<|end|>",
    "<start_of_turn>", "<end_of_turn>",
]  # fmt: skip
CORPUS = [
    "The checkout page times out and payments fail with error 502.",
    "My package was due on Monday and it still has not arrived.",
    "Where is my order? The tracking page has not changed for five days.",
    "Summarize in one sentence what the customers say about the app.",
    "You are a concise assistant. Answer in one sentence.",
    "What is the capital of France? Give one tip for writing clear emails.",
]
# The templates these families' real checkpoints ship (SmolLM2's chatml with a default system message,
# Phi-3's, Gemma 1/2's which rejects a system role, Gemma 3's which puts it in front of the first user turn).
TEMPLATES = {
    "chatml_default_system": (
        "{% for message in messages %}{% if loop.first and messages[0]['role'] != 'system' %}"
        "{{ '<|im_start|>system\\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face<|im_end|>\\n' }}"
        "{% endif %}{{'<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>' + '\\n'}}"
        "{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}"
    ),
    "phi3": (
        "{% for message in messages %}{% if message['role'] == 'system' %}"
        "{{'<|system|>\\n' + message['content'] + '<|end|>\\n'}}{% elif message['role'] == 'user' %}"
        "{{'<|user|>\\n' + message['content'] + '<|end|>\\n'}}{% elif message['role'] == 'assistant' %}"
        "{{'<|assistant|>\\n' + message['content'] + '<|end|>\\n'}}{% endif %}{% endfor %}"
        "{% if add_generation_prompt %}{{ '<|assistant|>\\n' }}{% else %}{{ eos_token }}{% endif %}"
    ),
    "gemma": (
        "{{ bos_token }}{% if messages[0]['role'] == 'system' %}{{ raise_exception('System role not supported') }}"
        "{% endif %}{% for message in messages %}{% if (message['role'] == 'assistant') %}{% set role = 'model' %}"
        "{% else %}{% set role = message['role'] %}{% endif %}"
        "{{ '<start_of_turn>' + role + '\\n' + message['content'] | trim + '<end_of_turn>\\n' }}{% endfor %}"
        "{% if add_generation_prompt %}{{'<start_of_turn>model\\n'}}{% endif %}"
    ),
    "gemma3": (
        "{{ bos_token }}{%- if messages[0]['role'] == 'system' -%}"
        "{%- set first_user_prefix = messages[0]['content'] + '\\n\\n' -%}{%- set loop_messages = messages[1:] -%}"
        "{%- else -%}{%- set first_user_prefix = '' -%}{%- set loop_messages = messages -%}{%- endif -%}"
        "{%- for message in loop_messages -%}{%- if (message['role'] == 'assistant') -%}{%- set role = 'model' -%}"
        "{%- else -%}{%- set role = message['role'] -%}{%- endif -%}"
        "{{ '<start_of_turn>' + role + '\\n' + (first_user_prefix if loop.first else '') }}"
        "{{ message['content'] | trim }}{{ '<end_of_turn>\\n' }}{%- endfor -%}"
        "{%- if add_generation_prompt -%}{{'<start_of_turn>model\\n'}}{%- endif -%}"
    ),
}
# 2 layers, hidden 64, grouped KV heads where the family has them; Gemma's head_dim != hidden / heads; short
# sliding windows (6-8 tokens, prompts are 40+) so the windowed masks are exercised, not just declared.
COMMON = {"hidden_size": 64, "intermediate_size": 128, "num_hidden_layers": 2, "max_position_embeddings": 512}
FAMILIES = {
    "llama": ("LlamaConfig", "chatml_default_system", {"num_attention_heads": 4, "num_key_value_heads": 2,
                                                       "tie_word_embeddings": True}),
    "phi3": ("Phi3Config", "phi3", {"num_attention_heads": 4, "num_key_value_heads": 2, "sliding_window": 8}),
    "gemma": ("GemmaConfig", "gemma", {"num_attention_heads": 4, "num_key_value_heads": 1, "head_dim": 32}),
    "gemma2": ("Gemma2Config", "gemma", {"num_attention_heads": 4, "num_key_value_heads": 2, "head_dim": 24,
                                         "sliding_window": 6, "query_pre_attn_scalar": 24,
                                         "attn_logit_softcapping": 5.0, "final_logit_softcapping": 3.0}),
    "qwen2": ("Qwen2Config", "chatml_default_system", {"num_attention_heads": 4, "num_key_value_heads": 2,
                                                       "use_sliding_window": True, "sliding_window": 6,
                                                       "max_window_layers": 1}),
    "gemma3": ("Gemma3TextConfig", "gemma3", {"num_attention_heads": 4, "num_key_value_heads": 2, "head_dim": 32,
                                              "sliding_window": 6, "query_pre_attn_scalar": 32,
                                              "layer_types": ["sliding_attention", "full_attention"]}),
}  # fmt: skip
EXTERNAL_DATA = {"phi3"}
PROMPTS = [
    "Hi",
    "Where is my order? The tracking page has not changed.",
    "The checkout page times out and payments fail with error 502. My package was due on Monday.",
]
NEW_TOKENS = 12


@pytest.fixture(scope="module")
def tokenizer_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A byte-level BPE tokenizer trained here on a few sentences, with every family's special tokens."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=400, special_tokens=SPECIALS, initial_alphabet=pre_tokenizers.ByteLevel.alphabet()
    )
    tok.train_from_iterator(CORPUS, trainer=trainer)
    path = tmp_path_factory.mktemp("tokenizer") / "tokenizer.json"
    tok.save(str(path))
    return path


def make_checkpoint(family: str, folder: Path, tokenizer_file: Path, **overrides) -> Path:
    """Save a random-weight checkpoint of `family` with its tokenizer and chat template, as a user has one."""
    from tokenizers import Tokenizer
    from transformers import AutoModelForCausalLM, PreTrainedTokenizerFast

    config_class, template, extra = FAMILIES[family]
    vocab = Tokenizer.from_file(str(tokenizer_file)).get_vocab_size()
    ids = {t: i for i, t in enumerate(SPECIALS)}
    eos = (
        ids["<|im_end|>"]
        if family in ("llama", "qwen2")
        else ids["<end_of_turn>"]
        if "gemma" in family
        else ids["<|end|>"]
    )
    config = getattr(transformers, config_class)(
        vocab_size=vocab,
        bos_token_id=ids["<bos>"],
        eos_token_id=eos,
        pad_token_id=ids["<pad>"],
        initializer_range=0.2,  # larger than the 0.02 default: distinct logits, no greedy near-ties
        **COMMON,
        **{**extra, **overrides},
    )
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_config(config).eval()
    folder.mkdir(parents=True)
    model.save_pretrained(str(folder))
    hf_tok = PreTrainedTokenizerFast(
        tokenizer_file=str(tokenizer_file),
        bos_token="<bos>",
        eos_token="<eos>",
        pad_token="<pad>",
        chat_template=TEMPLATES[template],
    )
    hf_tok.save_pretrained(str(folder))
    return folder


class Imported:
    def __init__(self, family: str, checkpoint: Path, cache: Path, quantize: str) -> None:
        self.family = family
        self.checkpoint = checkpoint
        with pytest.MonkeyPatch.context() as patch:
            if family in EXTERNAL_DATA:  # as a model over 1.5 GiB (Phi-3-mini) is saved: weights in model.onnx.data
                patch.setattr(export_decoder, "EXTERNAL_DATA_BYTES", 0)
            self.path, self.manifest = import_decoder(checkpoint, cache, f"tiny-{family}", quantize=quantize)
        self.generator = load_generator(cache, f"tiny-{family}", threads=1, max_batch=8)
        # eager: the reference semantics (sdpa skips Gemma 2's attention soft-capping: 0.67 off in the logits)
        self.torch = transformers.AutoModelForCausalLM.from_pretrained(
            str(checkpoint), dtype=torch.float32, attn_implementation="eager"
        ).eval()


@pytest.fixture(scope="module")
def workdir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("byo")


_imported: dict[str, Imported] = {}


def imported(family: str, workdir: Path, tokenizer_file: Path) -> Imported:
    if family not in _imported:
        checkpoint = make_checkpoint(family, workdir / "hf" / family, tokenizer_file)
        _imported[family] = Imported(family, checkpoint, workdir / "cache", quantize="none")
    return _imported[family]


@pytest.mark.parametrize("family", list(FAMILIES))
def test_onnx_greedy_batch_equals_torch_greedy(family: str, workdir: Path, tokenizer_file: Path) -> None:
    m = imported(family, workdir, tokenizer_file)
    gen = m.generator
    assert m.manifest["family"] == family and m.manifest["n_layers"] == 2
    assert m.manifest["head_dim"] == FAMILIES[family][2].get("head_dim", 16)
    assert m.manifest["check_forced_top1"] == 1.0  # the import's own check: fp32 ONNX == torch, teacher-forced
    assert (m.path / "model.onnx.data").exists() == (family in EXTERNAL_DATA)
    window = FAMILIES[family][2].get("sliding_window")
    assert set(m.manifest["sliding_windows"].values()) >= ({window} if window else {None})  # in the graph
    assert not list(m.path.glob("fp32*"))
    ids = gen.tokenize(PROMPTS)
    assert len({len(i) for i in ids}) == 3 and max(len(i) for i in ids) > 2 * 8  # longer than the windows
    stats = GenerationStats()
    batched = gen.generate_ids(ids, NEW_TOKENS, stop_at_sentence_end=False, stats=stats)
    assert stats.batches == 1  # one left-padded batch of 3 lengths
    for prompt, got in zip(ids, batched, strict=True):
        want, _ = torch_greedy(m.torch, prompt, NEW_TOKENS, sorted(gen.stop_ids))
        if want and want[-1] in gen.stop_ids:  # torch keeps the stop token; the generator drops it
            want = want[:-1]
        assert got == want, (family, prompt)
    assert sum(len(t) for t in batched) > len(PROMPTS)  # not trivially empty answers


@pytest.mark.parametrize("family", list(FAMILIES))
def test_batched_logits_close_to_torch(family: str, workdir: Path, tokenizer_file: Path) -> None:
    m = imported(family, workdir, tokenizer_file)
    ids = m.generator.tokenize(PROMPTS)
    onnx_logits = prefill_logits(m.generator._session, m.generator.shape, ids, m.generator.pad_id)  # noqa: SLF001  compare the ONNX session's logits directly
    for row, prompt in enumerate(ids):
        with torch.no_grad():
            want = m.torch(torch.tensor([prompt])).logits[0, -1].numpy()
        np.testing.assert_allclose(onnx_logits[row], want, atol=2e-4 * max(1.0, np.abs(want).max()), rtol=1e-3)


def test_phi3_longrope_exports_within_its_original_context(workdir: Path, tokenizer_file: Path) -> None:
    """Phi-3 128k / Phi-3.5 switch rope factors past the original context (a branch torch.export cannot trace):
    the export pins the short factors, exact up to the original context, which the manifest reports."""
    rope = {"rope_type": "longrope", "short_factor": [1.0] * 8, "long_factor": [3.0] * 8, "rope_theta": 10000.0}
    checkpoint = make_checkpoint(
        "phi3",
        workdir / "hf" / "phi3-longrope",
        tokenizer_file,
        rope_parameters=rope,
        original_max_position_embeddings=256,
    )
    path, manifest = import_decoder(checkpoint, workdir / "cache", "tiny-phi3-longrope", quantize="none")
    assert manifest["context_length"] == 256  # not max_position_embeddings (512)
    gen = load_generator(workdir / "cache", "tiny-phi3-longrope", threads=1)
    reference = transformers.AutoModelForCausalLM.from_pretrained(str(checkpoint), attn_implementation="eager").eval()
    ids = gen.tokenize(PROMPTS)
    onnx_logits = prefill_logits(gen._session, gen.shape, ids, gen.pad_id)  # noqa: SLF001  compare the ONNX session's logits directly
    for row, prompt in enumerate(ids):
        with torch.no_grad():
            want = reference(torch.tensor([prompt])).logits[0, -1].numpy()
        np.testing.assert_allclose(onnx_logits[row], want, atol=1e-4 * max(1.0, np.abs(want).max()), rtol=1e-3)


def test_manifest_and_template_from_the_checkpoint(workdir: Path, tokenizer_file: Path) -> None:
    m = imported("gemma2", workdir, tokenizer_file)
    manifest = m.manifest
    assert manifest["sliding_windows"] == {"full_attention": None, "sliding_attention": 6}
    assert manifest["chat_template"]["supports_system"] is False  # Gemma's template rejects a system role
    assert manifest["chat_template"]["strip_content"] is True  # it trims messages; so does render_prompt
    end_of_turn = SPECIALS.index("<end_of_turn>")
    assert end_of_turn in manifest["stop_token_ids"] and manifest["pad_token_id"] == SPECIALS.index("<pad>")
    text = m.generator.format_prompt("Hello", system="Be brief.")
    assert text == "<bos><start_of_turn>user\nBe brief.\n\nHello<end_of_turn>\n<start_of_turn>model\n"
    assert manifest["context_length"] == 512 and manifest["kind"] == "generator"
    # the same model directory also loads by its path (the one string `summaries.generator` holds)
    again = load_generator(workdir / "elsewhere", str(m.path), threads=1)
    assert again.name == "tiny-gemma2" and again.shape == m.generator.shape


def test_summaries_generator_setting_takes_the_directory(
    workdir: Path, tokenizer_file: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from pipeline.config import Settings
    from pipeline.model.onnx_generator import generator_dir, read_generator_manifest

    m = imported("gemma", workdir, tokenizer_file)
    monkeypatch.setenv("SLMSTREAM_SUMMARIES__GENERATOR", str(m.path))
    settings = Settings()
    path = generator_dir(settings.model.cache_dir, settings.summaries.generator)
    assert path == m.path and read_generator_manifest(path)["family"] == "gemma"


def test_llama_default_system_template_is_exact(workdir: Path, tokenizer_file: Path) -> None:
    m = imported("llama", workdir, tokenizer_file)
    hf_tok = transformers.AutoTokenizer.from_pretrained(str(m.checkpoint))
    for system in (None, "Be brief."):
        messages = ([{"role": "system", "content": system}] if system else []) + [{"role": "user", "content": "Hi"}]
        want = hf_tok.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
        assert render_prompt(m.manifest["chat_template"], system, "Hi") == want
    assert m.manifest["default_system"].startswith("You are a helpful AI assistant named SmolLM")
    assert SPECIALS.index("<|im_end|>") in m.manifest["stop_token_ids"]


def test_cli_int8_import_runs_and_stays_close(
    workdir: Path, tokenizer_file: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from typer.testing import CliRunner

    from pipeline import logs
    from pipeline.cli import app

    # the command points structlog at the runner's stderr, which is closed afterwards: later logs would fail
    monkeypatch.setattr(logs, "configure", lambda *args, **kwargs: None)

    checkpoint = imported("llama", workdir, tokenizer_file).checkpoint
    cache = workdir / "cache"
    args = ["models", "import-decoder", str(checkpoint), "--name", "tiny-llama-int8", "--cache-dir", str(cache)]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    assert "summaries.generator: tiny-llama-int8" in result.output
    path = cache / "tiny-llama-int8"
    manifest = orjson.loads((path / "manifest.json").read_bytes())
    assert manifest["quantization"].startswith("int8") and manifest["check_min_cosine"] > 0.99
    listed = CliRunner().invoke(app, ["models", "list", "--cache-dir", str(cache)])
    assert "tiny-llama-int8" in listed.output and "imported" in listed.output
    fp32_size = (workdir / "cache" / "tiny-llama" / "model.onnx").stat().st_size
    assert (path / "model.onnx").stat().st_size < fp32_size
    gen = load_generator(workdir / "cache", "tiny-llama-int8", threads=1)
    texts, stats = gen.generate(PROMPTS, 4, stop_at_sentence_end=False)
    assert len(texts) == len(PROMPTS) and all(isinstance(t, str) for t in texts) and stats.prompts == len(PROMPTS)


def test_ready_onnx_export_with_optimum_names(workdir: Path, tokenizer_file: Path) -> None:
    """A ready export (past_key_values.* inputs, logits for every position) gets a manifest written next to it
    and then runs by path, with the same greedy tokens as the export it was made from."""
    import onnx

    m = imported("llama", workdir, tokenizer_file)
    ready = workdir / "ready-onnx"
    ready.mkdir()
    model = onnx.load(str(m.path / "model.onnx"))
    renames = {}
    for value in model.graph.input:
        if value.name.startswith("past."):
            renames[value.name] = value.name.replace("past.", "past_key_values.", 1)
            value.name = renames[value.name]
    for node in model.graph.node:
        node.input[:] = [renames.get(n, n) for n in node.input]
    # logits [batch, vocab] → [batch, 1, vocab], as optimum's graphs return every position
    logits = next(o for o in model.graph.output if o.name == "logits")
    for node in model.graph.node:
        node.output[:] = ["logits_last" if n == "logits" else n for n in node.output]
    axes = onnx.helper.make_tensor("unsqueeze_axes", onnx.TensorProto.INT64, [1], [1])
    model.graph.initializer.append(axes)
    model.graph.node.append(onnx.helper.make_node("Unsqueeze", ["logits_last", "unsqueeze_axes"], ["logits"]))
    dims = logits.type.tensor_type.shape.dim
    dims.insert(1, onnx.TensorShapeProto.Dimension(dim_value=1))
    onnx.save(model, str(ready / "decoder_model_merged.onnx"))
    for f in m.checkpoint.iterdir():  # tokenizer, chat template, configs: all but the weights
        if f.suffix != ".safetensors":
            shutil.copy(f, ready / f.name)
    assert inspect_onnx_io(model)["io"]["past"] == "past_key_values.{i}.{kv}"

    manifest = describe_onnx_export(ready, "my-ready-export")
    assert orjson.loads((ready / "manifest.json").read_bytes())["model_file"] == "decoder_model_merged.onnx"
    assert manifest["io"]["left_padding"] is True and manifest["n_layers"] == 2
    gen = load_generator(workdir / "cache", str(ready), threads=1)
    ids = gen.tokenize(PROMPTS)
    want = m.generator.generate_ids(ids, NEW_TOKENS, False)
    stats = GenerationStats()
    assert gen.generate_ids(ids, NEW_TOKENS, False, stats=stats) == want and stats.batches == 1
    # a graph that cannot take left padding (onnxruntime-genai's GroupQueryAttention) runs prompts one by one
    manifest["io"]["left_padding"] = False
    (ready / "manifest.json").write_bytes(orjson.dumps(manifest))
    one_by_one = load_generator(workdir / "cache", str(ready), threads=1, max_batch=8)
    assert one_by_one.max_batch == 1
    stats = GenerationStats()
    assert one_by_one.generate_ids(ids, NEW_TOKENS, False, stats=stats) == want and stats.batches == 3


# ---- errors and template derivation without a model ------------------------------------------------------
def test_unsupported_family_is_named(workdir: Path) -> None:
    src = workdir / "gpt2"
    src.mkdir()
    (src / "config.json").write_text('{"model_type": "gpt2", "architectures": ["GPT2LMHeadModel"]}')
    (src / "model.safetensors").write_bytes(b"")
    with pytest.raises(ModelError, match="not a supported decoder family.*phi3.*gemma3"):
        import_decoder(src, workdir / "cache", "gpt2")


def test_bad_sources_and_names(workdir: Path) -> None:
    with pytest.raises(ModelError, match="not a directory"):
        import_decoder(workdir / "nope", workdir / "cache", "x")
    empty = workdir / "empty"
    empty.mkdir()
    with pytest.raises(ModelError, match="neither a Hugging Face checkpoint"):
        import_decoder(empty, workdir / "cache", "x")
    with pytest.raises(ModelError, match="int8, none"):
        import_decoder(empty, workdir / "cache", "x", quantize="int4")
    with pytest.raises(ModelError, match="neither a catalog model"):
        load_generator(workdir / "cache", "no-such-model", threads=1)
    with pytest.raises(ModelError, match="no manifest.json.*import-decoder"):
        OnnxGenerator(empty)


def _jinja(template: str):
    from transformers.utils.chat_template_utils import render_jinja_template

    def render(messages: list[dict], add_generation_prompt: bool) -> str:
        rendered, _ = render_jinja_template(
            conversations=[messages],
            chat_template=template,
            add_generation_prompt=add_generation_prompt,
            bos_token="<bos>",
            eos_token="<eos>",
        )
        return rendered[0]

    return render


@pytest.mark.parametrize("name", list(TEMPLATES))
def test_derived_templates_render_like_jinja(name: str) -> None:
    render = _jinja(TEMPLATES[name])
    facts = derive_chat_template(render)
    for system, user in [(None, "a"), ("sys {x}", " padded user ")]:
        if system is not None and not facts["supports_system"]:
            messages = [{"role": "user", "content": f"{system}{facts['system_separator']}{user.strip()}"}]
        else:
            messages = ([{"role": "system", "content": system}] if system else []) + [{"role": "user", "content": user}]
        assert render_prompt(facts, system, user) == render(messages, True)


def test_llama3_template_with_a_dated_default_system() -> None:
    template = (
        "{{ '<|begin_of_text|>' }}{% if messages[0]['role'] == 'system' %}{% set sys = messages[0]['content'] %}"
        "{% set messages = messages[1:] %}{% else %}{% set sys = '' %}{% endif %}"
        "{{ '<|start_header_id|>system<|end_header_id|>\\n\\nToday Date: 26 Jul 2024\\n\\n' + sys + '<|eot_id|>' }}"
        "{% for m in messages %}{{ '<|start_header_id|>' + m['role'] + '<|end_header_id|>\\n\\n' + m['content'] + "
        "'<|eot_id|>' }}{% endfor %}{% if add_generation_prompt %}"
        "{{ '<|start_header_id|>assistant<|end_header_id|>\\n\\n' }}{% endif %}"
    )
    facts = derive_chat_template(_jinja(template))
    assert facts["prefix"].startswith("<|begin_of_text|>") and facts["system"] == "{content}"
