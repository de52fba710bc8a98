"""Small generative model on onnxruntime + tokenizers: greedy decoding with a KV cache, batched.

The model folder is what `slmstream models build` writes for a generator (see export_decoder.py):
`model.onnx` (one decoder graph: input_ids, attention_mask, position_ids, past.{i}.key/value →
logits of the last position, present.{i}.key/value), `tokenizer.json` and `manifest.json` (layer count,
KV heads, head dim, stop token ids, the chat template as format strings).

A batch is LEFT-padded (so every row's last token is at the same column and the next tokens append
in step); position ids come from the attention mask, so padding never shifts a row's positions. Rows
that finish (stop token, sentence end, token cap) are dropped from the batch and its KV cache, and
the padding columns no remaining row needs are trimmed away.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort
import orjson
import structlog

from pipeline.model.base import GenerationStats, ModelError
from pipeline.model.catalog import CATALOG, file_sha256, load_tokenizer, model_dir, read_manifest
from pipeline.model.onnx_encoder import choose_providers

log = structlog.get_logger(__name__)

# A token that ends a sentence: its text ends with . ! or ? (optionally followed by closing quotes or
# brackets and whitespace). "1." / "3.5" (a digit right before the period) is not a sentence end.
_SENTENCE_END = re.compile(r"[.!?][\"'”’)\]]*\s*$")
_NUMBERED = re.compile(r"\d\.\s*$")


@dataclass(frozen=True)
class DecoderShape:
    """The decoder graph's cache shape and I/O names. The defaults are the graph export_decoder.py writes;
    a ready export (optimum, onnxruntime-genai) differs in names, position ids, KV dtype or padding."""

    n_layers: int
    kv_heads: int
    head_dim: int
    past: str = "past.{i}.{kv}"
    present: str = "present.{i}.{kv}"
    position_ids: bool = True  # the graph takes position_ids (else it derives positions itself)
    kv_dtype: str = "float32"
    left_padding: bool = True  # False: batches of one prompt only (no padding at all)
    use_cache_branch: bool = False  # optimum's merged decoders: a bool input, True once there is a past

    @classmethod
    def from_manifest(cls, manifest: dict[str, Any]) -> DecoderShape:
        io = manifest.get("io", {})
        return cls(
            manifest["n_layers"],
            manifest["kv_heads"],
            manifest["head_dim"],
            past=io.get("past", cls.past),
            present=io.get("present", cls.present),
            position_ids=io.get("position_ids", True),
            kv_dtype=io.get("kv_dtype", "float32"),
            left_padding=io.get("left_padding", True),
            use_cache_branch=io.get("use_cache_branch", False),
        )

    def past_names(self) -> list[str]:
        return [self.past.format(i=i, kv=kv) for i in range(self.n_layers) for kv in ("key", "value")]

    def output_names(self) -> list[str]:
        return ["logits", *(self.present.format(i=i, kv=kv) for i in range(self.n_layers) for kv in ("key", "value"))]

    def empty_past(self, batch: int) -> dict[str, np.ndarray]:
        empty = np.zeros((batch, self.kv_heads, 0, self.head_dim), dtype=self.kv_dtype)
        return dict.fromkeys(self.past_names(), empty)

    def run(self, session: ort.InferenceSession, feeds: dict[str, np.ndarray]) -> tuple[np.ndarray, list[np.ndarray]]:
        """(next-token logits [batch, vocab] float32, presents) of one call; position ids are dropped for a
        graph that does not take them, and all-position logits [batch, seq, vocab] are cut to the last."""
        if not self.position_ids:
            feeds = {k: v for k, v in feeds.items() if k != "position_ids"}
        if self.use_cache_branch:
            past_len = feeds[self.past.format(i=0, kv="key")].shape[2]
            feeds = {**feeds, "use_cache_branch": np.array([past_len > 0])}
        logits, *presents = session.run(self.output_names(), feeds)
        if logits.ndim == 3:
            logits = logits[:, -1, :]
        return logits.astype(np.float32, copy=False), presents


def greedy_decode(
    session: ort.InferenceSession,
    shape: DecoderShape,
    prompt_ids: Sequence[Sequence[int]],
    *,
    max_new_tokens: int,
    stop_ids: set[int],
    pad_id: int,
    stop: Callable[[list[int]], bool] | None = None,
    stats: GenerationStats | None = None,
) -> list[list[int]]:
    """Greedy continuations (token ids, stop token excluded) of `prompt_ids`, decoded as one batch.

    `stop(tokens)` is asked after each new token of a row; True ends that row (the token is kept).
    """
    n = len(prompt_ids)
    out: list[list[int]] = [[] for _ in range(n)]
    if n == 0 or max_new_tokens <= 0:
        return out
    width = max(len(p) for p in prompt_ids)
    input_ids = np.full((n, width), pad_id, dtype=np.int64)
    mask = np.zeros((n, width), dtype=np.int64)
    for i, ids in enumerate(prompt_ids):
        if ids:
            input_ids[i, width - len(ids) :] = ids
            mask[i, width - len(ids) :] = 1
    position_ids = np.maximum(np.cumsum(mask, axis=1) - 1, 0)
    past_names = shape.past_names()
    feeds = {"input_ids": input_ids, "attention_mask": mask, "position_ids": position_ids}
    feeds.update(shape.empty_past(n))

    t0 = time.perf_counter()
    logits, presents = shape.run(session, feeds)
    t1 = time.perf_counter()
    active = np.arange(n)  # original row of each row still in the batch
    while True:
        next_ids = logits.argmax(axis=-1)
        keep = []
        for r, original in enumerate(active):
            token = int(next_ids[r])
            if token in stop_ids:
                continue
            tokens = out[original]
            tokens.append(token)
            if len(tokens) >= max_new_tokens or (stop is not None and stop(tokens)):
                continue
            keep.append(r)
        if not keep:
            break
        if len(keep) < len(active):
            active, next_ids, mask = active[keep], next_ids[keep], mask[keep]
            presents = [p[keep] for p in presents]
            lead = int(np.argmax(mask.any(axis=0)))  # padding columns no remaining row needs
            if lead:
                mask = mask[:, lead:]
                presents = [p[:, :, lead:] for p in presents]
        positions = mask.sum(axis=1, keepdims=True)  # the new token's position = real tokens before it
        mask = np.concatenate([mask, np.ones((len(active), 1), dtype=np.int64)], axis=1)
        feeds = {"input_ids": next_ids[:, None].astype(np.int64), "attention_mask": mask, "position_ids": positions}
        feeds.update(zip(past_names, presents, strict=True))
        logits, presents = shape.run(session, feeds)
    if stats is not None:
        stats.batches += 1
        stats.prompts += n
        stats.prompt_tokens += sum(len(p) for p in prompt_ids)
        stats.new_tokens += sum(len(o) for o in out)
        stats.prefill_s += t1 - t0
        stats.decode_s += time.perf_counter() - t1
    return out


def render_prompt(template: dict[str, Any], system: str | None, user: str) -> str:
    """One system + user turn in the model's chat format, ending where the assistant's answer starts.

    Template facts (decoder_families.py derives them from a checkpoint's jinja template): `system`, `user`
    and `assistant_prefix` format strings; optional `prefix` (e.g. "<bos>"), `default_system` (the text the
    template puts in when no system message is given), `supports_system` (False: the system text goes in
    front of the user message, joined by `system_separator`) and `strip_content` (messages are trimmed).
    """
    if system is None:
        system = template.get("default_system")
    if template.get("strip_content"):
        user, system = user.strip(), (system.strip() if system is not None else None)
    text = template.get("prefix", "")
    if system is not None:
        if template.get("supports_system", True):
            text += template["system"].format(content=system)
        else:  # e.g. Gemma: no system role; the system text goes in front of the user message
            user = f"{system}{template.get('system_separator', chr(10) * 2)}{user}"
    rendered: str = text + template["user"].format(content=user) + template["assistant_prefix"]
    return rendered


def make_session(model_file: Path, *, threads: int, provider: str = "cpu") -> ort.InferenceSession:
    opts = ort.SessionOptions()
    # Threads explicit, spinning off: spinning pools were up to 3x slower and erratic on small shared CPUs.
    opts.intra_op_num_threads = threads
    opts.inter_op_num_threads = 1
    opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
    opts.add_session_config_entry("session.inter_op.allow_spinning", "0")
    return ort.InferenceSession(str(model_file), opts, providers=choose_providers(provider))


class OnnxGenerator:
    """A `Generator` (base.py) for the generators that `slmstream models build` writes."""

    def __init__(
        self,
        path: Path,
        *,
        threads: int = 2,
        provider: str = "cpu",
        system_prompt: str | None = None,
        max_batch: int = 8,
        max_prompt_tokens: int = 2048,
        min_sentence_tokens: int = 8,
    ) -> None:
        manifest = read_generator_manifest(path)
        self.name: str = manifest["name"]
        self.manifest = manifest
        self.shape = DecoderShape.from_manifest(manifest)
        self.template: dict[str, Any] = manifest["chat_template"]
        self.system_prompt = system_prompt if system_prompt is not None else manifest.get("default_system")
        self.stop_ids: set[int] = set(manifest["stop_token_ids"])
        self.pad_id = int(manifest["pad_token_id"])
        self.max_batch = max_batch if self.shape.left_padding else 1
        self.max_prompt_tokens = min(max_prompt_tokens, int(manifest.get("context_length", max_prompt_tokens)))
        self.min_sentence_tokens = min_sentence_tokens

        model_file = path / manifest.get("model_file", "model.onnx")
        self.content_hash = _verified_hash(model_file, manifest)
        self._tokenizer = load_tokenizer(path)
        self._tokenizer.no_padding()
        self._tokenizer.no_truncation()
        vocab = self._tokenizer.get_vocab_size()
        texts = self._tokenizer.decode_batch([[i] for i in range(vocab)], skip_special_tokens=False)
        self._sentence_end = np.array([bool(_SENTENCE_END.search(t)) for t in texts])
        try:
            self._session = make_session(model_file, threads=threads, provider=provider)
        except ModelError:
            raise
        except Exception as exc:  # onnxruntime raises its own types for bad files
            raise ModelError(f"cannot load {model_file}: {exc}; rebuild with `slmstream models build --force`") from exc
        self.provider = self._session.get_providers()[0]
        log.info("model_loaded", model=self.name, provider=self.provider, threads=threads, hash=self.content_hash)

    def format_prompt(self, user: str, system: str | None = None) -> str:
        return render_prompt(self.template, system if system is not None else self.system_prompt, user)

    def tokenize(self, prompts: Sequence[str], system: str | None = None) -> list[list[int]]:
        """Token ids of the chat prompts for `prompts` (user messages)."""
        texts = [self.format_prompt(p, system) for p in prompts]
        ids = [e.ids for e in self._tokenizer.encode_batch(texts, add_special_tokens=False)]
        for i, row in enumerate(ids):
            if len(row) > self.max_prompt_tokens:
                raise ModelError(
                    f"prompt {i} is {len(row)} tokens; {self.name} takes at most {self.max_prompt_tokens} "
                    "(shorten the window or raise max_prompt_tokens)"
                )
        return ids

    def count_tokens(self, prompt: str) -> int:
        """Tokens of the chat prompt for `prompt` (ModelError when it is longer than the model takes)."""
        return len(self.tokenize([prompt])[0])

    def _stops_at_sentence_end(self, tokens: list[int]) -> bool:
        if len(tokens) < self.min_sentence_tokens or not self._sentence_end[tokens[-1]]:
            return False
        return not _NUMBERED.search(self._tokenizer.decode(tokens[-3:]))

    def generate_ids(
        self,
        prompt_ids: Sequence[Sequence[int]],
        max_new_tokens: int,
        stop_at_sentence_end: bool = True,
        *,
        stats: GenerationStats | None = None,
    ) -> list[list[int]]:
        """Greedy continuations of tokenized prompts: sorted by length, in batches of `max_batch`; what the calls
        did is added to `stats`."""
        order = sorted(range(len(prompt_ids)), key=lambda i: len(prompt_ids[i]))
        out: list[list[int]] = [[] for _ in prompt_ids]
        stop = self._stops_at_sentence_end if stop_at_sentence_end else None
        for start in range(0, len(order), self.max_batch):
            chunk = order[start : start + self.max_batch]
            results = greedy_decode(
                self._session,
                self.shape,
                [prompt_ids[i] for i in chunk],
                max_new_tokens=max_new_tokens,
                stop_ids=self.stop_ids,
                pad_id=self.pad_id,
                stop=stop,
                stats=stats,
            )
            for i, tokens in zip(chunk, results, strict=True):
                out[i] = tokens
        return out

    def generate(
        self,
        prompts: Sequence[str],
        max_new_tokens: int,
        stop_at_sentence_end: bool = True,
        system: str | None = None,
    ) -> tuple[list[str], GenerationStats]:
        """Greedy answers to `prompts` (user messages; `system` defaults to the generator's system prompt), and
        what the call did."""
        t0 = time.perf_counter()
        stats = GenerationStats()
        if not prompts:
            return [], stats
        ids = self.tokenize(prompts, system)
        tokens = self.generate_ids(ids, max_new_tokens, stop_at_sentence_end, stats=stats)
        texts = [t.strip() for t in self._tokenizer.decode_batch(tokens, skip_special_tokens=True)]
        stats.total_s = time.perf_counter() - t0
        return texts, stats


def read_generator_manifest(path: Path) -> dict[str, Any]:
    """The manifest of the generator directory `path` (a catalog build, an import, or a ready ONNX export
    with a manifest written by `slmstream models import-decoder`); ModelError saying what to run if not."""
    if path.parent.name and path.name in CATALOG:
        manifest = read_manifest(path.parent, path.name)  # its errors say how to build it
    else:
        file = path / "manifest.json"
        if not file.exists():
            raise ModelError(
                f"{path} has no manifest.json: run `slmstream models import-decoder {path} --name NAME` "
                "(a Hugging Face checkpoint or an ONNX decoder export with its tokenizer.json)"
            )
        try:
            manifest = orjson.loads(file.read_bytes())
        except orjson.JSONDecodeError as exc:
            raise ModelError(f"{file} is corrupt ({exc}); re-run `slmstream models import-decoder`") from exc
        for f in (manifest.get("model_file", "model.onnx"), "tokenizer.json"):
            if not (path / f).exists():
                raise ModelError(f"{path / f} is missing (named by {file})")
    if manifest.get("kind") != "generator":
        raise ModelError(f"{manifest.get('name', path.name)} is not a generator (kind {manifest.get('kind')!r})")
    missing = [k for k in GENERATOR_MANIFEST_KEYS if k not in manifest]
    if missing:
        raise ModelError(f"{path / 'manifest.json'} lacks {', '.join(missing)}; see `slmstream models import-decoder`")
    return manifest


GENERATOR_MANIFEST_KEYS = (
    "name",
    "n_layers",
    "kv_heads",
    "head_dim",
    "chat_template",
    "stop_token_ids",
    "pad_token_id",
)


def _verified_hash(model_file: Path, manifest: dict[str, Any]) -> str:
    """sha256 of the graph file (for an export with external data: of the graph, not the weights file)."""
    content_hash = "sha256:" + file_sha256(model_file)[:16]
    if manifest.get("sha256") and not content_hash.startswith("sha256:" + manifest["sha256"][:16]):
        raise ModelError(
            f"{model_file} does not match its manifest (corrupt or replaced?); rebuild or re-import the model "
            "(`slmstream models build --force` / `slmstream models import-decoder`)"
        )
    return content_hash


def generator_dir(cache_dir: Path, name_or_path: str | Path) -> Path:
    """Where the generator `name_or_path` lives: a catalog name or an imported name (a folder in the cache), or
    a path to a directory with a manifest.json. The config value (`summaries.generator`) is this one string."""
    text = str(name_or_path)
    if text in CATALOG:
        return model_dir(cache_dir, text)
    in_cache = cache_dir / text
    if "/" not in text and (in_cache / "manifest.json").exists():
        return in_cache
    path = Path(text).expanduser()
    if path.is_dir():
        return path
    catalog = ", ".join(n for n, s in CATALOG.items() if s.kind == "generator")
    raise ModelError(
        f"generator {text!r} is neither a catalog model ({catalog}), a model imported into {cache_dir}, "
        "nor a directory; import one with "
        "`slmstream models import-decoder <dir> --name NAME`"
    )


def load_generator(
    cache_dir: Path, name: str | Path, *, threads: int, provider: str = "cpu", **kwargs: Any
) -> OnnxGenerator:
    """The generator named by a catalog name, an imported model's name, or a model directory path."""
    return OnnxGenerator(generator_dir(cache_dir, name), threads=threads, provider=provider, **kwargs)
