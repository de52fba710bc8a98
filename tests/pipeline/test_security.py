"""Kafka security settings (SSL/SASL) → Faust credentials and aiokafka kwargs; secrets never shown; the web
server's bind address and bearer token.

No broker is needed: the tests check what the Faust app and the aiokafka clients would be given, never a
real SASL/SSL connection. Certificates are made with the `openssl` CLI (skipped without it); the file checks
use plain dummy files.
"""

from __future__ import annotations

import importlib
import json
import shutil
import ssl
import subprocess
import traceback
from pathlib import Path
from types import ModuleType, SimpleNamespace
from typing import Any

import faust
import pytest
import typer
from aiohttp.test_utils import TestClient, TestServer
from faust.transport.drivers.aiokafka import credentials_to_aiokafka_auth
from faust.types.auth import AuthProtocol, SASLMechanism
from pydantic import SecretStr, ValidationError

from pipeline import kafka_client
from pipeline.config import SECRET_MASK, ConfigError, Settings, is_loopback_host, load_settings
from pipeline.dashboard.live import LiveState
from pipeline.kafka_client import client_security_kwargs, ensure_topics
from pipeline.web import bearer_auth_middleware, bearer_token_ok, register_pages

REPO_CONFIG = Path(__file__).resolve().parents[2] / "config" / "slmstream.yaml"
PASSWORD = "hunter2-Sup3r-s3cret-pw"
TOKEN = "tok-4f9c2d7e1b8a6053"


# clean_env (tests/conftest.py) runs for every test: no SLMSTREAM_* of the shell, SLMSTREAM_CONFIG = REPO_CONFIG.


@pytest.fixture
def env(monkeypatch: pytest.MonkeyPatch):
    """env(KAFKA__PROTOCOL="SSL", ...) sets SLMSTREAM_* variables and returns load_settings()."""

    def load(**values: str) -> Settings:
        for key, value in values.items():
            monkeypatch.setenv(f"SLMSTREAM_{key}", value)
        return load_settings()

    return load


def config_error(load, **values: str) -> str:
    with pytest.raises(ConfigError) as info:
        load(**values)
    return str(info.value)


def setting_line(msg: str, key: str) -> str:
    return next(ln for ln in msg.splitlines() if ln.strip().startswith(f"- {key}:"))


@pytest.fixture
def faust_app() -> ModuleType:
    """pipeline.faust_app (importing it builds nothing; the tests call create_app with their settings)."""
    return importlib.import_module("pipeline.faust_app")


def _openssl(*args: str) -> None:
    subprocess.run(["openssl", *args], check=True, capture_output=True, timeout=30)


def _self_signed(d: Path, name: str, cn: str) -> tuple[Path, Path]:
    cert, key = d / f"{name}.pem", d / f"{name}.key"
    _openssl(
        "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
        "-keyout", str(key), "-out", str(cert), "-days", "2", "-subj", f"/CN={cn}",
        "-addext", "basicConstraints=critical,CA:TRUE",
    )  # fmt: skip
    return cert, key


@pytest.fixture(scope="module")
def tls(tmp_path_factory: pytest.TempPathFactory) -> SimpleNamespace:
    """A throwaway CA, a client certificate with its key (plain and encrypted), and a key that matches nothing."""
    if shutil.which("openssl") is None:
        pytest.skip("no openssl CLI to make test certificates")
    d = tmp_path_factory.mktemp("tls")
    ca, _ = _self_signed(d, "ca", "slmstream test CA")
    cert, key = _self_signed(d, "client", "slmstream-client")
    _, other_key = _self_signed(d, "other", "other")
    enc_key = d / "client-enc.key"
    _openssl("pkey", "-in", str(key), "-out", str(enc_key), "-aes256", "-passout", "pass:key-pass-123")
    not_pem = d / "not-a-cert.pem"
    not_pem.write_text("this is not a certificate\n")
    return SimpleNamespace(ca=ca, cert=cert, key=key, enc_key=enc_key, other_key=other_key, not_pem=not_pem)


@pytest.fixture
def dummy(tmp_path: Path) -> SimpleNamespace:
    """Files that exist (contents irrelevant): for the checks that only look at paths."""
    files = {}
    for name in ("ca.pem", "cert.pem", "key.pem"):
        (tmp_path / name).write_text("dummy\n")
        files[name.split(".")[0]] = tmp_path / name
    return SimpleNamespace(**files, dir=tmp_path)


SASL_ENV = {
    "BROKER": "kafka://broker-1.example.com:9093",
    "KAFKA__PROTOCOL": "SASL_PLAINTEXT",
    "KAFKA__SASL_MECHANISM": "SCRAM-SHA-512",
    "KAFKA__SASL_USERNAME": "svc-slm",
    "KAFKA__SASL_PASSWORD": PASSWORD,
}


SASL_KWARGS = {
    "security_protocol": "SASL_PLAINTEXT",
    "sasl_mechanism": "SCRAM-SHA-512",
    "sasl_plain_username": "svc-slm",
    "sasl_plain_password": PASSWORD,
}


# ---- defaults ----------------------------------------------------------------------------------------------
def test_defaults_are_plaintext_and_loopback(env, faust_app: ModuleType) -> None:
    s = env()
    assert s.kafka.protocol == "PLAINTEXT"
    assert s.kafka.sasl_mechanism is None and s.kafka.sasl_password is None
    assert s.kafka.ssl_check_hostname is True
    assert s.web.host == "127.0.0.1" and s.web.token is None
    assert client_security_kwargs(s) == {"security_protocol": "PLAINTEXT"}
    assert faust_app.broker_credentials(s) is None
    app = faust_app.create_app(s)
    assert app.conf.broker_credentials is None
    assert app.conf.web_bind == "127.0.0.1"
    assert not app.conf.web_application_options  # no token: no auth middleware
    assert s.security_warnings() == []  # loopback broker


# ---- kafka: refused combinations ---------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("values", "named", "not_named"),
    [
        (
            {"KAFKA__PROTOCOL": "SASL_SSL"},
            ["kafka.protocol SASL_SSL needs", "kafka.sasl_mechanism", "kafka.sasl_username", "kafka.sasl_password",
             "SLMSTREAM_KAFKA__SASL_PASSWORD"],
            [],
        ),
        (
            {"KAFKA__PROTOCOL": "SASL_PLAINTEXT", "KAFKA__SASL_USERNAME": "u"},
            ["kafka.sasl_mechanism", "kafka.sasl_password"],
            ["kafka.sasl_username"],
        ),
        (
            {"KAFKA__PROTOCOL": "SASL_PLAINTEXT", "KAFKA__SASL_MECHANISM": "PLAIN", "KAFKA__SASL_USERNAME": "u",
             "KAFKA__SASL_PASSWORD": ""},
            ["kafka.sasl_password"],
            [],
        ),
        (
            {"KAFKA__SASL_USERNAME": "u", "KAFKA__SASL_PASSWORD": PASSWORD},
            ["kafka.sasl_username, kafka.sasl_password given but kafka.protocol is PLAINTEXT", "SASL_SSL"],
            [],
        ),
        (
            {"KAFKA__PROTOCOL": "SSL", "KAFKA__SASL_MECHANISM": "PLAIN"},
            ["kafka.sasl_mechanism given but kafka.protocol is SSL"],
            [],
        ),
        (
            {"KAFKA__SSL_CHECK_HOSTNAME": "false"},
            ["kafka.ssl_check_hostname given but kafka.protocol is PLAINTEXT", "SSL or SASL_SSL"],
            [],
        ),
    ],
)  # fmt: skip
def test_inconsistent_kafka_settings_are_refused(
    env, values: dict[str, str], named: list[str], not_named: list[str]
) -> None:
    msg = config_error(env, **values)
    line = setting_line(msg, "kafka")
    for text in named:
        assert text in line
    for text in not_named:
        assert text not in line.split("needs", 1)[-1]
    assert "SLMSTREAM_KAFKA__" in line
    assert PASSWORD not in msg


def test_ssl_files_with_a_non_tls_protocol_are_refused(env, dummy: SimpleNamespace) -> None:
    for protocol in ("PLAINTEXT", "SASL_PLAINTEXT"):
        extra = {} if protocol == "PLAINTEXT" else {k: v for k, v in SASL_ENV.items() if k.startswith("KAFKA__")}
        msg = config_error(env, **{**extra, "KAFKA__PROTOCOL": protocol, "KAFKA__SSL_CAFILE": str(dummy.ca)})
        assert f"kafka.ssl_cafile given but kafka.protocol is {protocol}, which does not use TLS" in msg


@pytest.mark.parametrize(
    ("given", "message"),
    [
        (("cert",), "kafka.ssl_certfile needs its private key: set kafka.ssl_keyfile"),
        (("key",), "kafka.ssl_keyfile needs its certificate: set kafka.ssl_certfile"),
    ],
)
def test_client_certificate_and_key_go_together(
    env, dummy: SimpleNamespace, given: tuple[str, ...], message: str
) -> None:
    values = {"KAFKA__PROTOCOL": "SSL"}
    if "cert" in given:
        values["KAFKA__SSL_CERTFILE"] = str(dummy.cert)
    if "key" in given:
        values["KAFKA__SSL_KEYFILE"] = str(dummy.key)
    assert message in config_error(env, **values)


def test_key_password_without_key_is_refused(env) -> None:
    msg = config_error(env, KAFKA__PROTOCOL="SSL", KAFKA__SSL_KEYFILE_PASSWORD=PASSWORD)
    assert "kafka.ssl_keyfile_password given without kafka.ssl_keyfile" in msg
    assert PASSWORD not in msg


@pytest.mark.parametrize("key", ["ssl_cafile", "ssl_certfile", "ssl_keyfile"])
def test_missing_tls_file_names_the_key_and_the_path(env, tmp_path: Path, key: str) -> None:
    missing = tmp_path / "nope" / "file.pem"
    msg = config_error(env, KAFKA__PROTOCOL="SSL", **{f"KAFKA__{key.upper()}": str(missing)})
    line = setting_line(msg, f"kafka.{key}")
    assert f"{missing} does not exist" in line
    assert f"SLMSTREAM_KAFKA__{key.upper()}" in line


def test_tls_file_that_is_a_directory_is_refused(env, tmp_path: Path) -> None:
    msg = config_error(env, KAFKA__PROTOCOL="SSL", KAFKA__SSL_CAFILE=str(tmp_path))
    assert f"{tmp_path} is not a file" in setting_line(msg, "kafka.ssl_cafile")


@pytest.mark.parametrize(
    ("key", "value", "allowed"),
    [
        ("protocol", "TLS", "'PLAINTEXT', 'SSL', 'SASL_PLAINTEXT' or 'SASL_SSL'"),
        ("sasl_mechanism", "GSSAPI", "'PLAIN', 'SCRAM-SHA-256' or 'SCRAM-SHA-512'"),
    ],
)
def test_unknown_protocol_or_mechanism_lists_what_is_allowed(env, key: str, value: str, allowed: str) -> None:
    msg = config_error(env, **{f"KAFKA__{key.upper()}": value})
    line = setting_line(msg, f"kafka.{key}")
    assert allowed in line
    assert f"SLMSTREAM_KAFKA__{key.upper()}" in line


def test_protocol_and_mechanism_are_case_insensitive(env) -> None:
    s = env(**{**SASL_ENV, "KAFKA__PROTOCOL": "sasl_ssl", "KAFKA__SASL_MECHANISM": "scram-sha-256"})
    assert (s.kafka.protocol, s.kafka.sasl_mechanism) == ("SASL_SSL", "SCRAM-SHA-256")


def test_kafka_settings_from_yaml(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, dummy: SimpleNamespace) -> None:
    import yaml

    doc = yaml.safe_load(REPO_CONFIG.read_text())
    doc["kafka"] = {"protocol": "SSL", "ssl_cafile": str(dummy.ca), "ssl_check_hostname": False}
    path = tmp_path / "cfg.yaml"
    path.write_text(yaml.safe_dump(doc))
    monkeypatch.setenv("SLMSTREAM_CONFIG", str(path))
    s = load_settings()
    assert s.kafka.protocol == "SSL"
    assert s.kafka.ssl_cafile == dummy.ca
    assert s.kafka.ssl_check_hostname is False


# ---- kafka: allowed but warned -----------------------------------------------------------------------------
def test_plaintext_to_a_remote_broker_is_allowed_with_a_warning(env, faust_app: ModuleType, capsys) -> None:
    s = env(BROKER="kafka://kafka:9092", LOG_FORMAT="json")  # what docker-compose uses
    (warning,) = s.security_warnings()
    assert "PLAINTEXT" in warning and "kafka" in warning
    faust_app.create_app(s)
    logged = [json.loads(ln) for ln in capsys.readouterr().err.splitlines() if ln.startswith("{")]
    warned = [r for r in logged if r["event"] == "insecure_setting"]
    assert [r["level"] for r in warned] == ["warning"]
    assert warned[0]["detail"] == warning


@pytest.mark.parametrize("broker", ["kafka://127.0.0.1:9092", "kafka://localhost:9092", "kafka://[::1]:9092"])
def test_plaintext_on_loopback_is_not_warned(env, broker: str) -> None:
    assert env(BROKER=broker).security_warnings() == []


def test_sasl_plain_without_tls_to_a_remote_broker_is_warned(env) -> None:
    s = env(**{**SASL_ENV, "KAFKA__SASL_MECHANISM": "PLAIN"})
    (warning,) = s.security_warnings()
    assert "password unencrypted" in warning
    assert env(**SASL_ENV).security_warnings() == []  # SCRAM: the password never crosses the wire


# ---- kafka: mapping to Faust and aiokafka ------------------------------------------------------------------
def test_sasl_plaintext_maps_to_faust_and_aiokafka(env, faust_app: ModuleType) -> None:
    s = env(**SASL_ENV)
    expected = {
        "security_protocol": "SASL_PLAINTEXT",
        "sasl_mechanism": "SCRAM-SHA-512",
        "sasl_plain_username": "svc-slm",
        "sasl_plain_password": PASSWORD,
    }
    assert client_security_kwargs(s) == expected

    app = faust_app.create_app(s)
    creds = app.conf.broker_credentials
    assert isinstance(creds, faust.SASLCredentials)
    assert creds.protocol is AuthProtocol.SASL_PLAINTEXT
    assert creds.mechanism is SASLMechanism.SCRAM_SHA_512
    assert (creds.username, creds.password, creds.ssl_context) == ("svc-slm", PASSWORD, None)
    # What Faust hands its own aiokafka consumer/producer/admin: the same as our CLI clients get.
    assert credentials_to_aiokafka_auth(creds) == {**expected, "ssl_context": None}


def test_sasl_ssl_maps_to_faust_and_aiokafka(env, faust_app: ModuleType, tls: SimpleNamespace) -> None:
    s = env(
        **{
            **SASL_ENV,
            "KAFKA__PROTOCOL": "SASL_SSL",
            "KAFKA__SASL_MECHANISM": "PLAIN",
            "KAFKA__SSL_CAFILE": str(tls.ca),
        }
    )
    kwargs = client_security_kwargs(s)
    ctx = kwargs.pop("ssl_context")
    assert kwargs == {
        "security_protocol": "SASL_SSL",
        "sasl_mechanism": "PLAIN",
        "sasl_plain_username": "svc-slm",
        "sasl_plain_password": PASSWORD,
    }
    assert isinstance(ctx, ssl.SSLContext)
    assert ctx.verify_mode == ssl.CERT_REQUIRED and ctx.check_hostname
    assert [c["subject"] for c in ctx.get_ca_certs()] == [((("commonName", "slmstream test CA"),),)]

    creds = faust_app.create_app(s).conf.broker_credentials
    assert isinstance(creds, faust.SASLCredentials)
    assert creds.protocol is AuthProtocol.SASL_SSL
    assert creds.mechanism is SASLMechanism.PLAIN
    assert isinstance(creds.ssl_context, ssl.SSLContext) and creds.ssl_context.verify_mode == ssl.CERT_REQUIRED
    auth = credentials_to_aiokafka_auth(creds)
    assert auth["security_protocol"] == "SASL_SSL" and auth["sasl_plain_password"] == PASSWORD


def test_ssl_with_client_certificate_maps_to_ssl_credentials(env, faust_app: ModuleType, tls: SimpleNamespace) -> None:
    s = env(
        KAFKA__PROTOCOL="SSL",
        KAFKA__SSL_CAFILE=str(tls.ca),
        KAFKA__SSL_CERTFILE=str(tls.cert),
        KAFKA__SSL_KEYFILE=str(tls.enc_key),
        KAFKA__SSL_KEYFILE_PASSWORD="key-pass-123",
        KAFKA__SSL_CHECK_HOSTNAME="false",
    )
    kwargs = client_security_kwargs(s)
    assert set(kwargs) == {"security_protocol", "ssl_context"}
    assert kwargs["security_protocol"] == "SSL"
    assert kwargs["ssl_context"].check_hostname is False
    assert kwargs["ssl_context"].verify_mode == ssl.CERT_REQUIRED  # the certificate is still verified
    assert any("ssl_check_hostname" in w for w in s.security_warnings())

    creds = faust_app.create_app(s).conf.broker_credentials
    assert isinstance(creds, faust.SSLCredentials)
    assert creds.protocol is AuthProtocol.SSL
    assert credentials_to_aiokafka_auth(creds)["security_protocol"] == "SSL"


def test_ssl_without_cafile_uses_the_system_cas(env) -> None:
    ctx = client_security_kwargs(env(KAFKA__PROTOCOL="SSL"))["ssl_context"]
    assert ctx.verify_mode == ssl.CERT_REQUIRED and ctx.check_hostname


def test_encrypted_key_without_password_is_a_config_error_not_a_prompt(env, tls: SimpleNamespace) -> None:
    s = env(KAFKA__PROTOCOL="SSL", KAFKA__SSL_CERTFILE=str(tls.cert), KAFKA__SSL_KEYFILE=str(tls.enc_key))
    with pytest.raises(ConfigError, match="is encrypted: set kafka.ssl_keyfile_password"):
        client_security_kwargs(s)


@pytest.mark.parametrize(
    ("values", "message"),
    [
        ({"KAFKA__SSL_CAFILE": "not_pem"}, "kafka.ssl_cafile"),
        ({"KAFKA__SSL_CERTFILE": "cert", "KAFKA__SSL_KEYFILE": "other_key"}, "kafka.ssl_keyfile"),
        (
            {"KAFKA__SSL_CERTFILE": "cert", "KAFKA__SSL_KEYFILE": "enc_key", "KAFKA__SSL_KEYFILE_PASSWORD": PASSWORD},
            "kafka.ssl_keyfile_password",
        ),
        ({"KAFKA__SSL_CERTFILE": "not_pem", "KAFKA__SSL_KEYFILE": "key"}, "kafka.ssl_certfile"),
    ],
)
def test_unusable_tls_files_are_config_errors(
    env, faust_app: ModuleType, tls: SimpleNamespace, values: dict[str, str], message: str
) -> None:
    s = env(
        KAFKA__PROTOCOL="SSL", **{k: v if k.endswith("PASSWORD") else str(getattr(tls, v)) for k, v in values.items()}
    )
    for build in (client_security_kwargs, faust_app.broker_credentials):
        with pytest.raises(ConfigError) as info:
            build(s)
        assert message in str(info.value)
        assert PASSWORD not in str(info.value)


def test_cli_exits_2_on_unusable_tls_files(env, tls: SimpleNamespace, capsys) -> None:
    from pipeline.cli.topics import security_kwargs_or_exit

    s = env(KAFKA__PROTOCOL="SSL", KAFKA__SSL_CAFILE=str(tls.not_pem))
    with pytest.raises(typer.Exit) as info:
        security_kwargs_or_exit(s)
    assert info.value.exit_code == 2
    assert "kafka.ssl_cafile" in capsys.readouterr().err


# ---- the CLI clients get the kwargs ------------------------------------------------------------------------
class _Stop(Exception):
    pass


def _recorder(calls: list[tuple[str, dict[str, Any]]], name: str) -> type:
    class Fake:
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            calls.append((name, kwargs))

        async def start(self) -> None:
            raise _Stop

    return Fake


async def test_ensure_topics_passes_client_kwargs(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[tuple[str, dict[str, Any]]] = []
    monkeypatch.setattr(kafka_client, "AIOKafkaAdminClient", _recorder(calls, "admin"))
    with pytest.raises(_Stop):
        await ensure_topics("h:1", ["t"], 4, **SASL_KWARGS)
    assert calls == [("admin", {"bootstrap_servers": "h:1", **SASL_KWARGS})]


async def test_produce_and_tail_clients_get_the_security_kwargs(monkeypatch: pytest.MonkeyPatch) -> None:
    from pipeline.cli import topics

    calls: list[tuple[str, dict[str, Any]]] = []

    async def fake_ensure(bootstrap: str, names: Any, partitions: int, **kwargs: Any) -> None:
        calls.append(("ensure_topics", kwargs))

    monkeypatch.setattr(topics, "ensure_topics", fake_ensure)
    monkeypatch.setattr(topics, "AIOKafkaProducer", _recorder(calls, "producer"))
    monkeypatch.setattr(topics, "AIOKafkaConsumer", _recorder(calls, "consumer"))
    with pytest.raises(_Stop):
        await topics._produce([b"{}"], "events", 0, "h:1", 4, dict(SASL_KWARGS))  # noqa: SLF001  the command's body, without Typer around it
    with pytest.raises(_Stop):
        await topics._tail("events", 10, False, False, "h:1", dict(SASL_KWARGS))  # noqa: SLF001  the command's body, without Typer around it
    assert [name for name, _ in calls] == ["ensure_topics", "producer", "consumer"]
    for _, kwargs in calls:
        assert {k: kwargs[k] for k in SASL_KWARGS} == SASL_KWARGS


def test_produce_command_builds_kwargs_from_settings(env, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    from pipeline.cli import topics

    env(**SASL_ENV)
    seen: list[Any] = []

    async def fake_produce(*args: Any) -> int:
        seen.append(args[-1])
        return 0

    monkeypatch.setattr(topics, "_produce", fake_produce)
    f = tmp_path / "e.jsonl"
    f.write_text('{"text": "x"}\n')
    topics.produce(f, topic=None, rate=0, repeat=1, broker=None)
    assert seen == [SASL_KWARGS]


async def test_demo_consumer_gets_the_security_kwargs(env, monkeypatch: pytest.MonkeyPatch) -> None:
    from pipeline.cli import demo

    s = env(**SASL_ENV)
    calls: list[tuple[str, dict[str, Any]]] = []
    monkeypatch.setattr(demo, "AIOKafkaConsumer", _recorder(calls, "consumer"))
    with pytest.raises(_Stop):
        await demo._run(s, "h:1", [], [], 0, 1)  # noqa: SLF001  the command's body, without Typer around it
    assert [name for name, _ in calls] == ["consumer"]
    assert {k: calls[0][1][k] for k in SASL_KWARGS} == SASL_KWARGS


# ---- secrets are never shown -------------------------------------------------------------------------------
def test_password_from_env_is_masked_in_repr_and_dumps(env) -> None:
    s = env(**SASL_ENV, WEB__HOST="0.0.0.0", WEB__TOKEN=TOKEN)
    assert s.kafka.sasl_password is not None and s.kafka.sasl_password.get_secret_value() == PASSWORD
    for text in (repr(s), str(s), repr(s.kafka), str(s.model_dump()), s.model_dump_json()):
        assert PASSWORD not in text
        assert TOKEN not in text
        assert SECRET_MASK in text
    dump = s.redacted_dump()
    assert dump["kafka"]["sasl_password"] == SECRET_MASK
    assert dump["web"]["token"] == SECRET_MASK
    assert dump["kafka"]["ssl_keyfile_password"] is None  # unset stays None
    assert dump["kafka"]["sasl_username"] == "svc-slm"
    assert PASSWORD not in json.dumps(dump) and TOKEN not in json.dumps(dump)


def test_redacted_dump_lists_label_names_only(env) -> None:
    s = env()
    dump = s.redacted_dump()
    assert dump["labels"] == list(s.labels)
    assert dump["taxonomy"] == s.taxonomy
    assert "charge, invoice" not in json.dumps(dump)
    assert s.redacted_dump(label_text=True)["labels"]["billing"]["description"].startswith("A question")


@pytest.mark.parametrize(
    "wrong",
    [
        {"BATCHING__BUDGET_MS": "-1"},  # another section
        {"KAFKA__SASL_MECHANISM": "GSSAPI"},  # the same section, another key
        {"KAFKA__PROTOCOL": "PLAINTEXT"},  # a rule across the section's keys (credentials without SASL)
        {"WEB__HOST": "0.0.0.0"},  # web section rule
    ],
)
def test_password_never_in_config_error(env, wrong: dict[str, str]) -> None:
    with pytest.raises(ConfigError) as info:
        env(**{**SASL_ENV, **wrong})
    exc = info.value
    assert PASSWORD not in str(exc)
    # Nor in the traceback: the ValidationError (whose inputs hold the raw section) is not chained.
    assert exc.__cause__ is None and exc.__suppress_context__
    assert PASSWORD not in "".join(traceback.format_exception(exc))


def test_misspelled_secret_key_does_not_echo_its_value(env) -> None:
    msg = config_error(env, KAFKA__SASL_PASWORD=PASSWORD)  # typo: the value must not be shown
    line = setting_line(msg, "kafka.sasl_pasword")
    assert "Extra inputs are not permitted" in line
    assert "SLMSTREAM_KAFKA__SASL_PASWORD" in line
    assert PASSWORD not in msg


def test_bad_web_token_is_not_echoed(env) -> None:
    msg = config_error(env, WEB__TOKEN="short-token")
    line = setting_line(msg, "web.token")
    assert "at least 16 characters" in line
    assert "short-token" not in msg
    assert SECRET_MASK in line


def test_direct_validation_error_text_hides_the_password() -> None:
    with pytest.raises(ValidationError) as info:
        Settings(
            labels={"a": {"description": "x"}, "b": {"description": "y"}},
            kafka={"protocol": "PLAINTEXT", "sasl_username": "u", "sasl_password": PASSWORD},
        )
    assert PASSWORD not in str(info.value)


def test_startup_log_line_is_redacted(env, faust_app: ModuleType, capsys) -> None:
    s = env(**SASL_ENV, LOG_FORMAT="json", WEB__HOST="0.0.0.0", WEB__TOKEN=TOKEN)
    faust_app.create_app(s)
    err = capsys.readouterr().err
    assert PASSWORD not in err and TOKEN not in err
    (line,) = [json.loads(ln) for ln in err.splitlines() if '"effective_config"' in ln]
    assert line["level"] == "info"
    assert line["config"]["kafka"]["sasl_password"] == SECRET_MASK
    assert line["config"]["kafka"]["sasl_username"] == "svc-slm"
    assert line["config"]["web"]["token"] == SECRET_MASK
    assert line["config"]["labels"] == list(s.labels)  # names only, not the descriptions
    assert line["config"]["broker"] == s.broker


# ---- web: bind address and token ---------------------------------------------------------------------------
@pytest.mark.parametrize("host", ["127.0.0.1", "localhost", "::1", "127.0.0.2", "[::1]"])
def test_loopback_hosts(host: str) -> None:
    assert is_loopback_host(host)


@pytest.mark.parametrize("host", ["0.0.0.0", "::", "", "203.0.113.5", "worker", "198.51.100.1"])
def test_non_loopback_web_host_without_token_is_refused(env, host: str) -> None:
    assert not is_loopback_host(host)
    msg = config_error(env, WEB__HOST=host)
    line = setting_line(msg, "web")
    assert f"web.host {host!r} is not a loopback address" in line
    assert "SLMSTREAM_WEB__TOKEN" in line


def test_non_loopback_web_host_with_token_binds_there(env, faust_app: ModuleType) -> None:
    s = env(WEB__HOST="0.0.0.0", WEB__TOKEN=TOKEN)
    app = faust_app.create_app(s)
    assert app.conf.web_bind == "0.0.0.0"
    assert len(app.conf.web_application_options["middlewares"]) == 1


@pytest.mark.parametrize(
    ("token", "message"), [("", "at least 16"), ("a" * 15, "at least 16"), ("a" * 16 + " b", "ASCII")]
)
def test_weak_or_malformed_tokens_are_refused(env, token: str, message: str) -> None:
    assert message in setting_line(config_error(env, WEB__TOKEN=token), "web.token")


def test_web_bind_override_without_token_is_refused_at_server_init(env, faust_app: ModuleType, capsys) -> None:
    app = faust_app.create_app(env())
    app.conf.web_bind = "0.0.0.0"  # what `faust worker --web-bind 0.0.0.0` does
    with pytest.raises(ConfigError, match="without an access token"):
        app.on_webserver_init(None)
    assert "SLMSTREAM_WEB__TOKEN" in capsys.readouterr().err

    tokened = faust_app.create_app(env(WEB__TOKEN=TOKEN))
    tokened.conf.web_bind = "0.0.0.0"
    tokened.on_webserver_init(None)  # allowed


@pytest.mark.parametrize(
    ("header", "ok"),
    [
        (f"Bearer {TOKEN}", True),
        (f"bearer {TOKEN}", True),
        (f"Bearer  {TOKEN} ", True),
        (None, False),
        ("", False),
        ("Bearer", False),
        ("Bearer ", False),
        (f"Basic {TOKEN}", False),
        (TOKEN, False),
        (f"Bearer {TOKEN}x", False),
        (f"Bearer {TOKEN[:-1]}", False),
        ("Bearer tök-☃-\udcff", False),  # non-ASCII never raises
    ],
)
def test_bearer_token_check(header: str | None, ok: bool) -> None:
    assert bearer_token_ok(header, TOKEN) is ok


async def _get(app: faust.App, path: str, headers: dict[str, str] | None = None) -> tuple[int, str, Any]:
    web = app.web
    if not web.blueprints.applied:
        web.init_server()
    async with TestClient(TestServer(web.web_app)) as client:
        resp = await client.get(path, headers=headers or {})
        return resp.status, await resp.text(), resp.headers


async def test_every_page_requires_the_token_when_configured(env, faust_app: ModuleType) -> None:
    app = faust_app.create_app(env(WEB__HOST="0.0.0.0", WEB__TOKEN=TOKEN))
    register_pages(app, lambda: True, LiveState())
    good = {"Authorization": f"Bearer {TOKEN}"}
    # Ours, Faust's own (/router/) and a page that does not exist: all 401 without the token.
    for path in ("/health", "/metrics", "/router/", "/no-such-page"):
        for headers in (None, {"Authorization": "Bearer wrong-token-0000000"}, {"Authorization": f"Basic {TOKEN}"}):
            status, body, resp_headers = await _get(app, path, headers)
            assert status == 401, (path, headers)
            assert resp_headers["WWW-Authenticate"].startswith("Bearer")
            assert TOKEN not in body
    status, body, _ = await _get(app, "/health", good)
    assert (status, json.loads(body)) == (200, {"ready": True})
    status, body, headers = await _get(app, "/metrics", good)
    assert status == 200
    assert headers["Content-Type"].startswith("text/plain")
    assert "slmstream_" in body


async def test_pages_are_open_on_loopback_without_token(env, faust_app: ModuleType) -> None:
    app = faust_app.create_app(env())
    register_pages(app, lambda: False, LiveState())
    assert (await _get(app, "/health"))[:2] == (503, '{"ready":false}')
    assert (await _get(app, "/metrics"))[0] == 200


def test_middleware_is_built_from_a_secret() -> None:
    mw = bearer_auth_middleware(SecretStr(TOKEN))
    assert TOKEN not in repr(mw)
