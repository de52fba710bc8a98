"""Typed settings: env vars `SLMSTREAM_*` over one YAML file, validated once at start.

The YAML path comes from `SLMSTREAM_CONFIG` (default `config/slmstream.yaml`). Nested keys are set from
the environment with a double underscore: `SLMSTREAM_BATCHING__BUDGET_MS=150`.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import Any, Literal
from urllib.parse import urlparse

import orjson
import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    YamlConfigSettingsSource,
)

DEFAULT_CONFIG = Path("config/slmstream.yaml")
LOOPBACK_HOSTS = {"127.0.0.1", "localhost", "::1"}


class _Section(BaseModel):
    # A typo in a key is an error, not a silently ignored setting.
    model_config = ConfigDict(extra="forbid")


class TopicsSettings(_Section):
    partitions: int = Field(4, ge=1, le=1024)
    replicas: int = Field(1, ge=1)
    events: str = "events"
    enriched: str = "events.enriched"
    dlq: str = "events.dlq"
    deferred: str = "events.deferred"


class InputSettings(_Section):
    max_text_chars: int = Field(4000, ge=1)
    max_event_bytes: int = Field(65536, ge=64)
    max_depth: int = Field(16, ge=2, le=256)


class BatchingSettings(_Section):
    budget_ms: float = Field(250.0, gt=0, description="deadline = event time + budget")
    max_batch: int = Field(32, ge=1, le=4096)
    max_wait_ms: float = Field(25.0, ge=0)
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
    provider: Literal["auto", "cpu", "cuda"] = "auto"


class ClassifierSettings(_Section):
    min_confidence: float = Field(0.35, ge=0.0, le=1.0)
    temperature: float = Field(0.05, gt=0.0, le=10.0)


class Label(_Section):
    description: str = Field(min_length=1)
    examples: list[str] = Field(default_factory=list)


class WebSettings(_Section):
    host: str = "127.0.0.1"
    port: int = Field(6066, ge=0, le=65535)


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix="SLMSTREAM_",
        env_nested_delimiter="__",
        extra="forbid",
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
        return self.web.host in LOOPBACK_HOSTS


class ConfigError(Exception):
    """A setting is wrong; the message names it and says what is allowed."""


def config_path() -> Path:
    return Path(os.environ.get("SLMSTREAM_CONFIG", str(DEFAULT_CONFIG)))


def _explain(exc: ValidationError) -> str:
    lines = []
    for err in exc.errors():
        loc = ".".join(str(p) for p in err["loc"]) or "(root)"
        env = "SLMSTREAM_" + "__".join(str(p) for p in err["loc"]).upper()
        given = err.get("input")
        shown = "" if isinstance(given, dict | list) else f" (got {given!r})"
        lines.append(f"  - {loc}: {err['msg']}{shown}  [YAML key `{loc}` or env {env}]")
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
        raise ConfigError(
            f"invalid slmstream settings (from {path} and SLMSTREAM_* env vars):\n{_explain(exc)}"
        ) from exc
