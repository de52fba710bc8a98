"""`slmstream models import-decoder`: bring your own small generator.

Two kinds of source directory:
- a Hugging Face checkpoint (config.json + *.safetensors + tokenizer.json [+ tokenizer_config.json with the
  chat template]) of a supported family (decoder_families.py) → exported with export_decoder.py's graph,
  checked against torch, int8 (or fp32) → a model directory `<cache_dir>/<name>/`, built atomically;
- a ready ONNX decoder export with its tokenizer.json (optimum or onnxruntime-genai layout) → a manifest.json
  written next to it, after one test run; the pipeline is then pointed at that directory.

Build time only: needs the `build` extra (torch, transformers, onnx) for checkpoints, and transformers for
reading a chat template from tokenizer_config.json.
"""

from __future__ import annotations

import shutil
import tempfile
import time
from pathlib import Path

import numpy as np
import orjson
import structlog

from pipeline.model.base import ModelError
from pipeline.model.catalog import CATALOG, file_sha256
from pipeline.model.decoder_families import (
    CHAT_PRESETS,
    as_id_list,
    check_template,
    context_length,
    derive_chat_template,
    family_of,
    inspect_onnx_io,
    sliding_windows,
    stop_token_ids,
)
from pipeline.model.onnx_generator import DecoderShape, make_session, render_prompt

log = structlog.get_logger(__name__)

QUANTIZE = ("int8", "none")
# first-step logits, ONNX vs torch fp32 (eager): fp32 exports agree to rounding (a missing soft-cap or window
# scores < 0.99 on the test models); int8 as `slmstream models build` accepts (SmolLM2 int8: > 0.99)
MIN_COSINE = {"none": 0.9999, "int8": 0.95}
IMPORT_VERSION = 1


def import_decoder(
    source: Path,
    cache_dir: Path,
    name: str,
    *,
    quantize: str = "int8",
    chat_template: str | None = None,
    threads: int = 2,
) -> tuple[Path, dict]:
    """Import `source` (an HF checkpoint dir or an ONNX export dir); return (model directory, manifest)."""
    source = source.expanduser().resolve()
    if not source.is_dir():
        raise ModelError(f"{source} is not a directory")
    if quantize not in QUANTIZE:
        raise ModelError(f"--quantize {quantize!r}: use one of {', '.join(QUANTIZE)}")
    if (source / "config.json").exists() and any(source.glob("*.safetensors")):
        return import_checkpoint(source, cache_dir, name, quantize=quantize, chat_template=chat_template), _read(
            cache_dir / name
        )
    if any(source.glob("*.onnx")):
        return source, describe_onnx_export(source, name, chat_template=chat_template, threads=threads)
    raise ModelError(
        f"{source} holds neither a Hugging Face checkpoint (config.json + *.safetensors) nor an ONNX export (*.onnx)"
    )


def _read(path: Path) -> dict:
    return orjson.loads((path / "manifest.json").read_bytes())


def _check_name(name: str) -> None:
    if name in CATALOG:
        raise ModelError(f"--name {name!r} is a catalog model; choose another name")
    if not name or "/" in name or name.startswith("."):
        raise ModelError(f"--name {name!r}: use a plain folder name (letters, digits, - and _)")


# ---- chat template, stop and pad ids from a source directory --------------------------------------------
def _hf_tokenizer(source: Path):
    try:
        from transformers import AutoTokenizer
    except ImportError as exc:
        raise ModelError(
            f"reading a checkpoint's tokenizer needs the build extra: pip install '.[build]' ({exc})"
        ) from exc
    try:
        return AutoTokenizer.from_pretrained(str(source), local_files_only=True)
    except Exception as exc:  # transformers raises many types for a bad tokenizer folder
        raise ModelError(f"cannot load the tokenizer in {source}: {exc}") from exc


def chat_template_facts(hf_tokenizer, override: str | None) -> dict:
    """The template facts: a preset name / a JSON file of facts when given, else derived from the jinja template
    of `hf_tokenizer` (None: the source has no jinja template; an override is then required)."""

    def render(messages: list[dict], add_generation_prompt: bool) -> str:
        return hf_tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=add_generation_prompt)

    has_jinja = bool(getattr(hf_tokenizer, "chat_template", None))
    if override is None:
        if not has_jinja:
            raise ModelError(
                f"the tokenizer has no chat template; pass --chat-template ({', '.join(CHAT_PRESETS)} or a JSON file)"
            )
        return derive_chat_template(render)
    if override in CHAT_PRESETS:
        facts = dict(CHAT_PRESETS[override])
    else:
        path = Path(override)
        if not path.is_file():
            raise ModelError(f"--chat-template {override!r}: not a preset ({', '.join(CHAT_PRESETS)}) nor a file")
        facts = orjson.loads(path.read_bytes())
        missing = {"system", "user", "assistant_prefix"} - set(facts)
        if missing:
            raise ModelError(f"{path} lacks {', '.join(sorted(missing))} (format strings with {{content}})")
    if has_jinja:
        check_template(facts, render)  # an override must still render like the model's own template
    return facts


def _special_ids(tokenizer) -> dict[str, int]:
    return {t.content: i for i, t in tokenizer.get_added_tokens_decoder().items() if t.special}


def _json(path: Path) -> dict:
    return orjson.loads(path.read_bytes()) if path.exists() else {}


# ---- a Hugging Face checkpoint ------------------------------------------------------------------------
def import_checkpoint(
    source: Path, cache_dir: Path, name: str, *, quantize: str = "int8", chat_template: str | None = None
) -> Path:
    """Export the checkpoint in `source` into `<cache_dir>/<name>/` (replacing it only once all checks pass)."""
    _check_name(name)
    cache_dir.mkdir(parents=True, exist_ok=True)
    target = cache_dir / name
    t0 = time.perf_counter()
    work = Path(tempfile.mkdtemp(dir=cache_dir, prefix=f".{name}-"))
    try:
        facts = export_checkpoint(source, work, quantize=quantize, chat_template=chat_template)
        manifest = {
            "name": name,
            "kind": "generator",
            "description": f"{facts['family']} decoder imported from {source.name}",
            "source": str(source),
            "import_version": IMPORT_VERSION,
            "sha256": file_sha256(work / "model.onnx"),  # the graph (weights may be in model.onnx.data)
            "size_bytes": sum(f.stat().st_size for f in work.glob("model.onnx*")),
            "built_at": int(time.time()),
            **facts,
        }
        (work / "manifest.json").write_bytes(orjson.dumps(manifest, option=orjson.OPT_INDENT_2))
        if target.exists():
            shutil.rmtree(target)
        work.rename(target)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    log.info("decoder_imported", model=name, family=facts["family"], seconds=round(time.perf_counter() - t0, 1))
    return target


def export_checkpoint(source: Path, work: Path, *, quantize: str = "int8", chat_template: str | None = None) -> dict:
    """HF checkpoint → `work/model.onnx` + `work/tokenizer.json`, checked against torch fp32; the manifest facts."""
    from pipeline.model.export_decoder import CHECK_PROMPTS, CHECK_SYSTEM, checked_prompt_ids, export_and_check

    try:
        import torch
        from transformers import AutoConfig, AutoModelForCausalLM, GenerationConfig
    except ImportError as exc:
        raise ModelError(f"importing a checkpoint needs the build extra: pip install '.[build]' ({exc})") from exc
    try:
        config = AutoConfig.from_pretrained(str(source), local_files_only=True)
    except Exception as exc:
        raise ModelError(f"cannot read {source / 'config.json'}: {exc}") from exc
    family = family_of(config)
    if not (source / "tokenizer.json").exists():
        raise ModelError(f"{source} has no tokenizer.json (a fast tokenizer is needed at run time)")
    hf_tokenizer = _hf_tokenizer(source)
    template = chat_template_facts(hf_tokenizer, chat_template)
    shutil.copy(source / "tokenizer.json", work / "tokenizer.json")
    from tokenizers import Tokenizer

    tokenizer = Tokenizer.from_file(str(work / "tokenizer.json"))
    try:
        generation = GenerationConfig.from_pretrained(str(source), local_files_only=True).to_dict()
    except Exception:  # no generation_config.json: the config's ids are all there is
        generation = {}
    eos_ids = as_id_list(generation.get("eos_token_id")) + as_id_list(getattr(config, "eos_token_id", None))
    eos_ids += as_id_list(hf_tokenizer.eos_token_id)
    stop_ids = stop_token_ids(eos_ids, template, _special_ids(tokenizer))
    if not stop_ids:
        raise ModelError("no stop token: the checkpoint names no eos_token_id and its template no end-of-turn token")
    pad_id = next(
        (int(v) for v in (hf_tokenizer.pad_token_id, getattr(config, "pad_token_id", None)) if v is not None),
        stop_ids[0],
    )

    prompts = [render_prompt(template, CHECK_SYSTEM, p) for p in CHECK_PROMPTS]
    prompt_ids = checked_prompt_ids(tokenizer, hf_tokenizer, prompts)
    try:
        model = AutoModelForCausalLM.from_pretrained(
            # eager: the reference semantics (sdpa skips Gemma 2's attention soft-capping)
            str(source),
            dtype=torch.float32,
            local_files_only=True,
            attn_implementation="eager",
        ).eval()
    except Exception as exc:
        raise ModelError(f"cannot load the checkpoint in {source}: {exc}") from exc
    head_dim = getattr(config, "head_dim", None) or config.hidden_size // config.num_attention_heads
    shape = DecoderShape(config.num_hidden_layers, config.num_key_value_heads, head_dim)
    checks = export_and_check(
        model,
        work,
        shape,
        prompt_ids,
        stop_ids=stop_ids,
        pad_id=pad_id,
        decode=tokenizer.decode,
        int8=quantize == "int8",
    )
    windows = sliding_windows(config)
    min_cosine = min(c["first_logits_cosine"] for c in checks)
    if min_cosine < MIN_COSINE[quantize]:
        raise ModelError(
            f"the exported {family.name} model's first-step logits differ from torch fp32 (cosine {min_cosine:.5f} < "
            f"{MIN_COSINE[quantize]}): an unsupported variant of the family?"
        )
    return {
        "family": family.name,
        "model_type": config.model_type,
        "n_layers": shape.n_layers,
        "kv_heads": shape.kv_heads,
        "head_dim": shape.head_dim,
        "vocab_size": int(config.vocab_size),
        "context_length": context_length(config),
        "sliding_windows": {k or "all": v for k, v in windows.items()},
        "bos_token_id": hf_tokenizer.bos_token_id,
        "eos_token_id": eos_ids[0] if eos_ids else None,
        "pad_token_id": pad_id,
        "stop_token_ids": stop_ids,
        "chat_template": template,
        "default_system": template.get("default_system"),
        "padding": "left",
        "quantization": "int8 weights: MatMulNBits bits=8 block 32 symmetric accuracy_level 4 (incl. LM head); "
        "embeddings int8 per row"
        if quantize == "int8"
        else "none (fp32)",
        "check_forced_top1": float(np.mean([c["forced_top1"] for c in checks])),
        "check_min_cosine": min_cosine,
        "checks": checks,
    }


# ---- a ready ONNX export ------------------------------------------------------------------------------
def describe_onnx_export(
    source: Path, name: str, *, chat_template: str | None = None, model_file: str | None = None, threads: int = 2
) -> dict:
    """Write `source/manifest.json` for a ready ONNX decoder export (optimum or onnxruntime-genai layout) after
    one test run of its graph; the pipeline then takes `source` as its generator."""
    import onnx

    _check_name(name)
    graphs = [model_file] if model_file else sorted(p.name for p in source.glob("*.onnx"))
    if len(graphs) != 1:
        raise ModelError(f"{source} holds {len(graphs)} .onnx files ({', '.join(graphs)}); keep only the decoder")
    graph_file = source / graphs[0]
    if not (source / "tokenizer.json").exists():
        raise ModelError(f"{source} has no tokenizer.json: copy the model's tokenizer.json next to {graph_file.name}")
    facts = inspect_onnx_io(onnx.load(str(graph_file), load_external_data=False))
    from tokenizers import Tokenizer

    tokenizer = Tokenizer.from_file(str(source / "tokenizer.json"))
    template = chat_template_facts(_hf_tokenizer(source) if _has_jinja(source) else None, chat_template)
    genai = _json(source / "genai_config.json").get("model", {})
    config = _json(source / "config.json")
    tok_config = _json(source / "tokenizer_config.json")
    eos_ids = as_id_list(genai.get("eos_token_id")) + as_id_list(
        _json(source / "generation_config.json").get("eos_token_id")
    )
    eos_ids += as_id_list(config.get("eos_token_id"))
    eos_token = tok_config.get("eos_token")
    eos_token = eos_token.get("content") if isinstance(eos_token, dict) else eos_token
    eos_token_id = tokenizer.token_to_id(eos_token) if eos_token else None
    if eos_token_id is not None:
        eos_ids.append(eos_token_id)
    stop_ids = stop_token_ids(eos_ids, template, _special_ids(tokenizer))
    if not stop_ids:
        raise ModelError("no stop token found (genai_config.json / generation_config.json / config.json eos_token_id)")
    pad_id = next(
        (int(v) for v in (genai.get("pad_token_id"), config.get("pad_token_id")) if v is not None), stop_ids[0]
    )
    manifest = {
        "name": name,
        "kind": "generator",
        "description": f"ONNX decoder export in {source}",
        "source": str(source),
        "model_file": graph_file.name,
        "import_version": IMPORT_VERSION,
        "sha256": file_sha256(graph_file),
        "n_layers": facts["n_layers"],
        "kv_heads": facts["kv_heads"],
        "head_dim": facts["head_dim"],
        "io": facts["io"],
        "vocab_size": tokenizer.get_vocab_size(),
        "context_length": int(genai.get("context_length") or config.get("max_position_embeddings") or 2048),
        "pad_token_id": pad_id,
        "stop_token_ids": stop_ids,
        "chat_template": template,
        "default_system": template.get("default_system"),
        "padding": "left" if facts["io"]["left_padding"] else "none (one prompt per batch)",
        "built_at": int(time.time()),
    }
    _smoke_test(graph_file, manifest, tokenizer, threads)
    try:
        (source / "manifest.json").write_bytes(orjson.dumps(manifest, option=orjson.OPT_INDENT_2))
    except OSError as exc:
        raise ModelError(f"cannot write {source / 'manifest.json'}: {exc}") from exc
    return manifest


def _has_jinja(source: Path) -> bool:
    return (
        bool(_json(source / "tokenizer_config.json").get("chat_template")) or (source / "chat_template.jinja").exists()
    )


def _smoke_test(graph_file: Path, manifest: dict, tokenizer, threads: int) -> None:
    """One prefill and one decode step, so a graph that does not fit the manifest fails here, not in the worker."""
    from pipeline.model.onnx_generator import greedy_decode

    try:
        session = make_session(graph_file, threads=threads)
        shape = DecoderShape.from_manifest(manifest)
        prompts = [
            render_prompt(manifest["chat_template"], None, "Say hello."),
            render_prompt(manifest["chat_template"], None, "Hi"),
        ]
        ids = [tokenizer.encode(p, add_special_tokens=False).ids for p in prompts]
        batch = ids if shape.left_padding else ids[:1]
        out = greedy_decode(
            session,
            shape,
            batch,
            max_new_tokens=2,
            stop_ids=set(manifest["stop_token_ids"]),
            pad_id=manifest["pad_token_id"],
        )
    except ModelError:
        raise
    except Exception as exc:  # onnxruntime's own errors: wrong names, shapes or types
        raise ModelError(
            f"{graph_file} does not run as a decoder with the detected I/O ({manifest['io']}): {exc}"
        ) from exc
    if len(out) != len(batch):
        raise ModelError(f"{graph_file}: the test run returned {len(out)} rows for {len(batch)} prompts")
