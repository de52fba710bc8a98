"""pipeline/cli/models.py: `slmstream models import-decoder` errors (the successful imports run in
tests/pipeline/model/test_byo_decoders.py, which builds the checkpoints)."""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from pipeline import logs
from pipeline.cli import app


@pytest.fixture(autouse=True)
def keep_logging(monkeypatch: pytest.MonkeyPatch) -> None:
    """The command points structlog at the runner's stderr, which is closed afterwards: later logs would fail."""
    monkeypatch.setattr(logs, "configure", lambda *args, **kwargs: None)


def test_import_decoder_rejects_a_folder_without_a_model(tmp_path: Path) -> None:
    source = tmp_path / "src"
    source.mkdir()
    (source / "notes.txt").write_text("no model here")
    args = ["models", "import-decoder", str(source), "--name", "mine", "--cache-dir", str(tmp_path / "cache")]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 1
    assert "neither a Hugging Face checkpoint" in result.output
    assert not (tmp_path / "cache" / "mine").exists()


def test_import_decoder_refuses_a_catalog_name(tmp_path: Path) -> None:
    source = tmp_path / "src"
    source.mkdir()
    (source / "model.onnx").write_bytes(b"x")
    args = ["models", "import-decoder", str(source), "--name", "smollm2-135m-int8", "--cache-dir", str(tmp_path)]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 1 and "catalog model" in result.output


def test_import_decoder_rejects_an_unknown_quantization(tmp_path: Path) -> None:
    args = ["models", "import-decoder", str(tmp_path), "--name", "mine", "--quantize", "int4"]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 1 and "int8, none" in result.output
