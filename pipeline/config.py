"""Typed settings: env vars `SLMSTREAM_*` over one YAML file, validated once at start.

The YAML path comes from `SLMSTREAM_CONFIG` (default `config/slmstream.yaml`, else the copy shipped in the
package: `config_path()`). Nested keys are set from the environment with a double underscore:
`SLMSTREAM_BATCHING__BUDGET_MS=150`.
"""

from __future__ import annotations

import hashlib
import ipaddress
import os
from importlib.resources import files
from pathlib import Path
from typing import Annotated, Any, Literal
from urllib.parse import urlparse

import orjson
import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SecretStr,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    YamlConfigSettingsSource,
)

DEFAULT_CONFIG = Path("config/slmstream.yaml")
LOOPBACK_HOSTS = {"127.0.0.1", "localhost", "::1"}
# What a secret looks like in repr(), model_dump(), redacted_dump() and error messages.
SECRET_MASK = "**********"
# Setting names whose values are never shown (also when misspelled keys are reported, see _explain).
SECRET_KEYS = frozenset({"sasl_password", "ssl_keyfile_password", "token"})

SASL_PROTOCOLS = ("SASL_PLAINTEXT", "SASL_SSL")
TLS_PROTOCOLS = ("SSL", "SASL_SSL")

# Taxonomy limits: every description and example is encoded at start and scored against every event.
MAX_LABELS = 256
MAX_DESCRIPTION_CHARS = 1000
MAX_EXAMPLES = 64
MAX_EXAMPLE_CHARS = 1000
MIN_WEB_TOKEN_CHARS = 16
MAX_SOCKET_PATH_BYTES = 107  # a Unix socket address holds 108 bytes with the final NUL (Linux)


def is_loopback_host(host: str) -> bool:
    """True for `localhost` and loopback addresses (127.0.0.0/8, ::1); False for 0.0.0.0, '' and the rest."""
    h = host.strip().strip("[]").lower()
    if h == "localhost":
        return True
    try:
        return ipaddress.ip_address(h).is_loopback
    except ValueError:
        return False


class _Section(BaseModel):
    # A typo in a key is an error, not a silently ignored setting.
    model_config = ConfigDict(extra="forbid")


class TopicsSettings(_Section):
    partitions: int = Field(4, ge=1, le=1024)
    replicas: int = Field(1, ge=1)
    events: str = "events"
    enriched: str = "events.enriched"
    # Enriched records again, keyed by their window key (summaries.key): each key's windows in one worker.
    enriched_by_key: str = "events.enriched.by-key"
    dlq: str = "events.dlq"
    deferred: str = "events.deferred"
    summaries: str = "events.summaries"
    stats: str = "events.stats"
    # Per-partition partial counts of each window, all under one key: one worker merges every window.
    stats_partials: str = "events.stats.partials"
    alerts: str = "events.alerts"
    # Analysts' label corrections (schemas/feedback.schema.json), and the compacted store of what they taught:
    # training examples, labels added through feedback and the trained head (pipeline/learning).
    feedback: str = "events.feedback"
    learning: str = "events.learning"


class InputSettings(_Section):
    max_text_chars: int = Field(4000, ge=1)
    max_event_bytes: int = Field(65536, ge=64)
    max_depth: int = Field(16, ge=2, le=256)


class BatchingSettings(_Section):
    budget_ms: float = Field(250.0, gt=0, description="deadline = event time + budget")
    max_batch: int = Field(32, ge=1, le=4096)
    # 0: a batch starts as soon as the model is free, and what arrives meanwhile forms the next one (measured
    # best on CPU: lower latency at every rate and higher saturation than holding 25 ms; README Performance).
    # Raise it where a model call has a large fixed cost (a GPU with small batches).
    max_wait_ms: float = Field(0.0, ge=0)
    late_policy: Literal["process", "degrade", "defer"] = "defer"
    queue_limit: int = Field(2048, ge=1)
    # Time reserved after the model for producing and acking the result.
    delivery_margin_ms: float = Field(15.0, ge=0)

    @model_validator(mode="after")
    def _queue_holds_a_batch(self) -> BatchingSettings:
        if self.queue_limit < self.max_batch:
            raise ValueError(f"queue_limit ({self.queue_limit}) must be >= max_batch ({self.max_batch})")
        return self


class ModelSettings(_Section):
    encoder: str = "minilm-l6-int8"
    fallback: str = "minilm-l3"
    cache_dir: Path = Path(".cache/models")
    threads: int = Field(2, ge=1, le=256)
    max_tokens: int = Field(128, ge=8, le=512)
    # Texts sorted by length run in sub-batches of this size, each padded only to its own longest text.
    sub_batch: int = Field(8, ge=1, le=4096)
    # The same on a GPU provider (CUDA, TensorRT): a GPU wants big sub-batches (launch cost per call).
    gpu_sub_batch: int = Field(256, ge=1, le=4096)
    # auto: CUDA when onnxruntime-gpu sees a GPU, else CPU. cuda / tensorrt: that or a clear error at start.
    provider: Literal["auto", "cpu", "cuda", "tensorrt"] = "auto"
    # Unix socket of `slmstream model-server`: this host's workers share its one model. None: the model in-process.
    server_socket: Path | None = None
    # How long a call waits for the model server (at start, across a server restart) before it fails.
    server_wait_s: float = Field(30.0, gt=0, le=3600)
    # Languages (README "Languages"): each event's language is identified (fastText lid.176) and recorded;
    # events in a language `encoder` was not trained on go to this multilingual encoder, when it is built
    # ("": off, every event to `encoder`). Not with server_socket (the model server serves one encoder).
    multilingual: str = "use-m-v3-int8"
    language_id: bool = True

    @field_validator("server_socket", mode="before")
    @classmethod
    def _empty_socket_is_in_process(cls, v: Any) -> Any:
        return None if isinstance(v, str) and not v.strip() else v

    @field_validator("server_socket")
    @classmethod
    def _usable_socket_path(cls, v: Path | None) -> Path | None:
        if v is None:
            return v
        v = v.expanduser()
        if len(os.fsencode(str(v))) > MAX_SOCKET_PATH_BYTES:
            raise ValueError(
                f"{len(os.fsencode(str(v)))} bytes; a Unix socket path has at most {MAX_SOCKET_PATH_BYTES}: use a "
                "shorter one, e.g. $XDG_RUNTIME_DIR/slmstream/model.sock"
            )
        if v.is_dir():
            raise ValueError(f"{v} is a directory; give the socket file's path, e.g. {v / 'model.sock'}")
        return v


class SummariesSettings(_Section):
    """Per-key window summaries (pipeline/analytics): off unless enabled (it loads the generator)."""

    enabled: bool = False
    # What groups events: `key`, `source`, or `attrs.<dotted.path>`; events without it share the key "".
    key: str = Field("key", min_length=1)
    window_s: float = Field(60.0, gt=0, le=86400, description="tumbling window length (event time)")
    grace_s: float = Field(5.0, ge=0, le=3600, description="a window closes this long after its end")
    max_events: int = Field(0, ge=0, description="close a window early at this many events (0: off)")
    max_events_per_window: int = Field(5000, ge=1, description="memory bound: a fuller window closes early")
    max_open_windows: int = Field(10000, ge=1)
    max_held: int = Field(20000, ge=2, description="records held unacked before the agent stops pulling")
    min_events_abstractive: int = Field(3, ge=1, description="smaller windows get an extractive summary")
    budget_s: float = Field(10.0, gt=0, le=3600, description="a summary is due this long after its window closes")
    max_new_tokens: int = Field(40, ge=4, le=512)
    prompt_events: int = Field(10, ge=1, le=100, description="messages per generator prompt")
    generator_languages: list[str] | None = Field(
        None,
        description="languages the generator writes (lid.176 codes); a window in another is summarized "
        "extractively. Default: the catalog's (smollm2-135m-int8: en); any for an imported decoder",
    )
    generator: str = Field(
        "smollm2-135m-int8",
        min_length=1,
        description="generator: a catalog or imported name (slmstream models list), or a model directory path",
    )
    threads: int = Field(1, ge=1, le=256, description="generator's onnxruntime threads")
    nice: int = Field(10, ge=0, le=19, description="generator thread's lower CPU priority (0: same as the rest)")
    max_batch: int = Field(8, ge=1, le=256, description="prompts per generator call")
    extractive_k: int = Field(2, ge=1, le=20, description="texts in an extractive summary")
    grounding_check: bool = Field(
        True, description="a generated text naming what neither the messages nor their facts hold goes extractive"
    )
    extractive_max_texts: int = Field(64, ge=1, le=4096, description="texts encoded per extractive summary")
    stats_wait_s: float = Field(
        60.0, gt=0, le=86400, description="a window's stats wait this long after its close for every partition's part"
    )

    @field_validator("key")
    @classmethod
    def _key_spec(cls, v: str) -> str:
        if v in ("key", "source") or (v.startswith("attrs.") and all(v.split(".")[1:])):
            return v
        raise ValueError("use `key`, `source` or `attrs.<path>` (e.g. attrs.ticket_id, attrs.conversation.id)")

    @model_validator(mode="after")
    def _bounds(self) -> SummariesSettings:
        if self.max_events and self.max_events > self.max_events_per_window:
            raise ValueError(
                f"max_events ({self.max_events}) must be <= max_events_per_window ({self.max_events_per_window})"
            )
        if self.max_held < 2 * self.max_events_per_window:
            raise ValueError(
                f"max_held ({self.max_held}) must be >= 2 x max_events_per_window ({self.max_events_per_window}): "
                "a full window must fit while the previous one awaits its summary"
            )
        return self


class AlertsSettings(_Section):
    """Spike alerts per label over global windows of summaries.window_s (pipeline/analytics/alerts.py)."""

    enabled: bool = False
    baseline_windows: int = Field(10, ge=1, le=10000, description="rolling baseline: the last K windows")
    min_baseline_windows: int = Field(3, ge=1, le=10000, description="no alert before this many windows")
    min_count: int = Field(5, ge=1)
    ratio: float | None = Field(3.0, gt=1.0, description="alert when count >= ratio x max(mean, 1)")
    z: float | None = Field(3.0, gt=0, description="alert when (count - mean) / std >= z")

    @field_validator("ratio", "z", mode="before")
    @classmethod
    def _off(cls, v: Any) -> Any:
        # From an env var a rule is switched off with "off" (or "none", "null", "").
        return None if isinstance(v, str) and v.strip().lower() in ("", "off", "none", "null") else v

    @model_validator(mode="after")
    def _a_rule(self) -> AlertsSettings:
        if self.ratio is None and self.z is None:
            raise ValueError("set alerts.ratio, alerts.z or both: with neither no alert could fire")
        if self.min_baseline_windows > self.baseline_windows:
            raise ValueError(
                f"min_baseline_windows ({self.min_baseline_windows}) must be <= baseline_windows "
                f"({self.baseline_windows})"
            )
        return self


class FactsSettings(_Section):
    """Reference facts joined to events (pipeline/facts): a compacted topic read whole by every worker."""

    enabled: bool = False
    topic: str = Field("reference.facts", min_length=1, description="compacted; key: entity id, value: JSON object")
    # Which event field names the entity: `key`, `source`, `id` or `attrs.<dotted.path>`.
    join_field: str = Field("key", min_length=1)
    max_entries: int = Field(100_000, ge=1, le=10_000_000, description="table bound; the oldest updated go first")
    max_value_bytes: int = Field(4096, ge=16, le=1_048_576, description="a larger fact is rejected")
    load_timeout_s: float = Field(30.0, gt=0, le=3600, description="start waits this long to read the table whole")
    # 0: only the counts over the window's entities ("4 of the 5 customers have plan Business"): what SmolLM2-135M
    # used best (README "Facts"); a larger generator may read each entity's own line too.
    prompt_entities: int = Field(0, ge=0, le=50, description="entities whose own facts go into one prompt")
    prompt_fact_chars: int = Field(160, ge=16, le=2000, description="characters of one entity's facts in a prompt")
    # What the entities are, in the prompt: "Facts about the customers", "which customers have it".
    entity_noun: str = Field("customers", min_length=1, max_length=40, pattern=r"^[\w -]+$")

    @field_validator("join_field")
    @classmethod
    def _field_spec(cls, v: str) -> str:
        if v in ("key", "source", "id") or (v.startswith("attrs.") and all(v.split(".")[1:])):
            return v
        raise ValueError("use `key`, `source`, `id` or `attrs.<path>` (e.g. attrs.customer_id)")


class ClassifierSettings(_Section):
    min_confidence: float = Field(0.35, ge=0.0, le=1.0)
    temperature: float = Field(0.05, gt=0.0, le=10.0)


class LearningSettings(_Section):
    """Learning from analysts' feedback (pipeline/learning): a head trained on the encoder's embeddings."""

    enabled: bool = True
    # Recent event id -> text, filled per delivered batch: feedback by id is resolved from it (by any worker).
    recent_events: int = Field(100_000, ge=0, le=10_000_000)
    recent_chars: int = Field(50_000_000, ge=0, description="memory bound of the recent events: characters of text")
    # Feedback by an id no worker knows goes to the DLQ (`unknown_id`) after this long.
    resolve_timeout_s: float = Field(10.0, gt=0, le=3600)
    # Retraining waits until feedback has been quiet this long, and never longer than retrain_max_delay_s.
    retrain_quiet_s: float = Field(1.0, ge=0, le=600)
    retrain_max_delay_s: float = Field(5.0, gt=0, le=3600)
    max_examples: int = Field(100_000, ge=1, le=10_000_000)
    # How long a starting worker reads the store back before it classifies (then it goes on with what it has).
    restore_timeout_s: float = Field(15.0, gt=0, le=600)


class Label(_Section):
    description: str = Field(min_length=1, max_length=MAX_DESCRIPTION_CHARS)
    examples: list[Annotated[str, Field(min_length=1, max_length=MAX_EXAMPLE_CHARS)]] = Field(
        default_factory=list, max_length=MAX_EXAMPLES
    )


def _env(section: str, key: str) -> str:
    return f"{section}.{key} (env SLMSTREAM_{section.upper()}__{key.upper()})"


class KafkaSettings(_Section):
    """How every Kafka client (the worker, the CLI tools) authenticates and encrypts: checked at start."""

    # The section holds secrets: a ValidationError's text never shows the input.
    model_config = ConfigDict(extra="forbid", hide_input_in_errors=True)

    protocol: Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"] = "PLAINTEXT"
    sasl_mechanism: Literal["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"] | None = None
    sasl_username: str | None = Field(None, min_length=1)
    sasl_password: SecretStr | None = None
    ssl_cafile: Path | None = None  # CA bundle that signed the brokers' certificates (else the system CAs)
    ssl_certfile: Path | None = None  # client certificate (mutual TLS), PEM; needs ssl_keyfile
    ssl_keyfile: Path | None = None
    ssl_keyfile_password: SecretStr | None = None
    ssl_check_hostname: bool = True

    @field_validator("protocol", "sasl_mechanism", mode="before")
    @classmethod
    def _upper(cls, v: Any) -> Any:
        return v.strip().upper() if isinstance(v, str) else v

    @field_validator("ssl_cafile", "ssl_certfile", "ssl_keyfile")
    @classmethod
    def _readable_file(cls, v: Path | None) -> Path | None:
        if v is None:
            return v
        v = v.expanduser()
        if not v.exists():
            raise ValueError(f"{v} does not exist")
        if not v.is_file():
            raise ValueError(f"{v} is not a file")
        if not os.access(v, os.R_OK):
            raise ValueError(f"{v} is not readable by this user")
        return v

    @model_validator(mode="after")
    def _consistent(self) -> KafkaSettings:
        problems = []
        sasl_given = [
            n for n in ("sasl_mechanism", "sasl_username", "sasl_password") if getattr(self, n) not in (None, "")
        ]
        if self.protocol in SASL_PROTOCOLS:
            password = self.sasl_password.get_secret_value() if self.sasl_password is not None else ""
            missing = [
                _env("kafka", n)
                for n in ("sasl_mechanism", "sasl_username", "sasl_password")
                if n not in sasl_given or (n == "sasl_password" and not password)
            ]
            if missing:
                problems.append(f"kafka.protocol {self.protocol} needs " + ", ".join(missing))
        elif sasl_given:
            problems.append(
                ", ".join(f"kafka.{n}" for n in sasl_given)
                + f" given but kafka.protocol is {self.protocol}: set kafka.protocol to SASL_PLAINTEXT or SASL_SSL"
                " (env SLMSTREAM_KAFKA__PROTOCOL), or remove them"
            )
        if self.protocol not in TLS_PROTOCOLS:
            tls_given = [
                f"kafka.{n}"
                for n in ("ssl_cafile", "ssl_certfile", "ssl_keyfile", "ssl_keyfile_password")
                if getattr(self, n) is not None
            ]
            if not self.ssl_check_hostname:
                tls_given.append("kafka.ssl_check_hostname")
            if tls_given:
                problems.append(
                    ", ".join(tls_given) + f" given but kafka.protocol is {self.protocol}, which does not use TLS:"
                    " set kafka.protocol to SSL or SASL_SSL (env SLMSTREAM_KAFKA__PROTOCOL), or remove them"
                )
        if self.ssl_certfile is not None and self.ssl_keyfile is None:
            problems.append(f"kafka.ssl_certfile needs its private key: set {_env('kafka', 'ssl_keyfile')}")
        if self.ssl_keyfile is not None and self.ssl_certfile is None:
            problems.append(f"kafka.ssl_keyfile needs its certificate: set {_env('kafka', 'ssl_certfile')}")
        if self.ssl_keyfile_password is not None and self.ssl_keyfile is None:
            problems.append(f"kafka.ssl_keyfile_password given without {_env('kafka', 'ssl_keyfile')}")
        if problems:
            raise ValueError("; ".join(problems))
        return self


class WebSettings(_Section):
    """The worker's web server (/metrics, /health): loopback by default; anywhere else needs a token."""

    model_config = ConfigDict(extra="forbid", hide_input_in_errors=True)

    host: str = "127.0.0.1"
    port: int = Field(6066, ge=1, le=65535)
    # When set, every page requires `Authorization: Bearer <token>`.
    token: SecretStr | None = None

    @field_validator("token")
    @classmethod
    def _usable_token(cls, v: SecretStr | None) -> SecretStr | None:
        if v is None:
            return v
        raw = v.get_secret_value()
        if len(raw) < MIN_WEB_TOKEN_CHARS:
            raise ValueError(
                f"must be at least {MIN_WEB_TOKEN_CHARS} characters; make one with "
                "`python -c 'import secrets; print(secrets.token_urlsafe(32))'`"
            )
        if not all(33 <= ord(c) < 127 for c in raw):
            raise ValueError("must be printable ASCII without spaces (it is sent in an HTTP header)")
        return v

    @model_validator(mode="after")
    def _token_off_loopback(self) -> WebSettings:
        if self.token is None and not is_loopback_host(self.host):
            raise ValueError(
                f"web.host {self.host!r} is not a loopback address: anyone who can reach it could read the "
                f"pages, so set an access token with {_env('web', 'token')} (clients then send "
                "'Authorization: Bearer <token>'), or keep web.host 127.0.0.1"
            )
        return self


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix="SLMSTREAM_",
        env_nested_delimiter="__",
        extra="forbid",
        hide_input_in_errors=True,  # secrets: load_settings explains errors itself, without them
    )

    app_id: str = "slmstream"
    broker: str = "kafka://127.0.0.1:9092"
    # Tansu answers a waiting fetch only when this expires: keep it low for latency.
    fetch_max_wait_ms: int = Field(20, ge=1, le=10000)
    log_format: Literal["auto", "json", "console"] = "auto"
    log_level: Literal["debug", "info", "warning", "error"] = "info"
    topics: TopicsSettings = TopicsSettings()
    input: InputSettings = InputSettings()
    batching: BatchingSettings = BatchingSettings()
    model: ModelSettings = ModelSettings()
    classifier: ClassifierSettings = ClassifierSettings()
    web: WebSettings = WebSettings()
    kafka: KafkaSettings = KafkaSettings()
    summaries: SummariesSettings = SummariesSettings()
    alerts: AlertsSettings = AlertsSettings()
    facts: FactsSettings = FactsSettings()
    learning: LearningSettings = LearningSettings()
    labels: dict[str, Label] = Field(min_length=2)
    taxonomy_version: str | None = None

    @field_validator("broker")
    @classmethod
    def _broker_url(cls, v: str) -> str:
        for url in v.split(";"):
            parsed = urlparse(url if "://" in url else f"kafka://{url}")
            if parsed.scheme not in ("kafka", "aiokafka"):
                raise ValueError(f"scheme must be kafka://, got {parsed.scheme!r} in {v!r}")
            if not parsed.hostname or not parsed.port:
                raise ValueError(f"needs host:port, e.g. kafka://127.0.0.1:9092 (got {v!r})")
        return v

    @field_validator("labels")
    @classmethod
    def _label_names(cls, v: dict[str, Label]) -> dict[str, Label]:
        if len(v) > MAX_LABELS:
            raise ValueError(f"{len(v)} labels; at most {MAX_LABELS} are allowed (each is scored against every event)")
        for name in v:
            if name == "unknown":
                raise ValueError("'unknown' is reserved for low-confidence results; rename that label")
            if not name.replace("_", "").replace("-", "").isalnum():
                raise ValueError(f"label name {name!r}: use letters, digits, '_' or '-'")
        return v

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        yaml_file = config_path()
        return (
            init_settings,
            env_settings,
            YamlConfigSettingsSource(settings_cls, yaml_file=yaml_file if yaml_file.exists() else None),
        )

    @property
    def taxonomy(self) -> str:
        """The configured version, else a content hash: it changes whenever labels change."""
        if self.taxonomy_version:
            return self.taxonomy_version
        blob = orjson.dumps({k: v.model_dump() for k, v in self.labels.items()}, option=orjson.OPT_SORT_KEYS)
        return "sha256:" + hashlib.sha256(blob).hexdigest()[:12]

    @property
    def web_is_loopback(self) -> bool:
        return is_loopback_host(self.web.host)

    @property
    def broker_hosts(self) -> list[str]:
        hosts = []
        for url in self.broker.split(";"):
            parsed = urlparse(url if "://" in url else f"kafka://{url}")
            hosts.append(parsed.hostname or "")
        return hosts

    def redacted_dump(self, *, label_text: bool = False) -> dict[str, Any]:
        """The settings as JSON-ready data that is safe to log: every secret reads `**********`.

        `labels` is the list of label names unless `label_text` (descriptions and examples are long).
        """
        doc: dict[str, Any] = _mask(self.model_dump(mode="json"))
        if not label_text:
            doc["labels"] = list(self.labels)
        doc["taxonomy"] = self.taxonomy
        return doc

    def security_warnings(self) -> list[str]:
        """Allowed but risky choices, logged at start (the compose file's broker is kafka:9092, PLAINTEXT)."""
        remote = [h for h in self.broker_hosts if not is_loopback_host(h)]
        k = self.kafka
        out = []
        if remote and k.protocol == "PLAINTEXT":
            out.append(
                f"kafka.protocol is PLAINTEXT and broker host {', '.join(remote)} is not loopback: Kafka traffic is "
                "neither encrypted nor authenticated; use SSL or SASL_SSL on a network you do not control"
            )
        if remote and k.protocol == "SASL_PLAINTEXT" and k.sasl_mechanism == "PLAIN":
            out.append(
                f"kafka.protocol SASL_PLAINTEXT with mechanism PLAIN sends the password unencrypted to "
                f"{', '.join(remote)}; use SASL_SSL or a SCRAM mechanism"
            )
        if k.protocol in TLS_PROTOCOLS and not k.ssl_check_hostname:
            out.append("kafka.ssl_check_hostname is false: a broker certificate for another host name is accepted")
        return out


def _mask(value: Any) -> Any:
    """Replace the value of every secret key (anywhere in nested data) by SECRET_MASK."""
    if isinstance(value, dict):
        return {k: (SECRET_MASK if k in SECRET_KEYS and v is not None else _mask(v)) for k, v in value.items()}
    if isinstance(value, list):
        return [_mask(v) for v in value]
    return value


class ConfigError(Exception):
    """A setting is wrong; the message names it and says what is allowed."""


def config_path() -> Path:
    """SLMSTREAM_CONFIG; else config/slmstream.yaml in the working directory; else the defaults that ship in the
    package (pipeline/default_config.yaml, a link to config/slmstream.yaml in the source tree, its copy in a
    wheel), so `slmstream` works from any folder."""
    if "SLMSTREAM_CONFIG" in os.environ:
        return Path(os.environ["SLMSTREAM_CONFIG"])
    if DEFAULT_CONFIG.exists():
        return DEFAULT_CONFIG
    return Path(str(files("pipeline") / "default_config.yaml"))  # an installed package is plain files


def _shown_input(err: Any) -> str:
    """The rejected value, when it helps and is not (or might not be) a secret."""
    given = err.get("input")
    if isinstance(given, dict | list) or err["type"] == "extra_forbidden":
        return ""  # a misspelled key's value could be a password (`sasl_pasword: ...`)
    if any(str(p) in SECRET_KEYS for p in err["loc"]) or isinstance(given, SecretStr):
        return f" (got {SECRET_MASK})"
    text = repr(given)
    return f" (got {text if len(text) <= 80 else text[:77] + '...'})"


def _explain(exc: ValidationError) -> str:
    lines = []
    for err in exc.errors():
        loc = ".".join(str(p) for p in err["loc"]) or "(root)"
        env = "SLMSTREAM_" + "__".join(str(p) for p in err["loc"]).upper()
        field = Settings.model_fields.get(str(err["loc"][0])) if len(err["loc"]) == 1 else None
        if field is not None and isinstance(field.annotation, type) and issubclass(field.annotation, BaseModel):
            where = f"YAML section `{loc}` or env {env}__<KEY>"  # a rule across the keys of a section
        else:
            where = f"YAML key `{loc}` or env {env}"
        lines.append(f"  - {loc}: {err['msg']}{_shown_input(err)}  [{where}]")
    return "\n".join(lines)


def _check_yaml(path: Path) -> None:
    """Surface a broken file with its name, before pydantic-settings reads it."""
    if path.is_dir():
        raise ConfigError(f"SLMSTREAM_CONFIG points to {path}, which is a directory; give the YAML file")
    try:
        doc = yaml.safe_load(path.read_text(encoding="utf-8"))
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{path} is not UTF-8 text ({exc.reason} at byte {exc.start})") from exc
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path} is not valid YAML: {exc}") from exc
    if doc is not None and not isinstance(doc, dict):
        raise ConfigError(f"{path} must be a mapping of settings (key: value), not a {type(doc).__name__}")


def _check_env_names() -> None:
    """pydantic-settings ignores unknown env vars; a typo must not silently fall back to a default."""
    known = set(Settings.model_fields) | {"config"}
    for name in os.environ:
        if name.startswith("SLMSTREAM_"):
            field = name[len("SLMSTREAM_") :].split("__", 1)[0].lower()
            if field not in known:
                raise ConfigError(
                    f"unknown setting {name}; known: SLMSTREAM_" + ", SLMSTREAM_".join(sorted(known)).upper()
                )


def load_settings(**overrides: Any) -> Settings:
    """Read and validate the settings; raise ConfigError with a readable message."""
    path = config_path()
    if "SLMSTREAM_CONFIG" in os.environ and not path.exists():
        raise ConfigError(f"SLMSTREAM_CONFIG points to {path}, which does not exist")
    if path.exists():
        _check_yaml(path)
    _check_env_names()
    try:
        return Settings(**overrides)
    except ValidationError as exc:
        # `from None`: the ValidationError's inputs (a section's raw values) may hold a password.
        raise ConfigError(
            f"invalid slmstream settings (from {path} and SLMSTREAM_* env vars):\n{_explain(exc)}"
        ) from None
