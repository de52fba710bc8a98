"""`pip install .` (not editable) into a fresh venv, then `slmstream` run from an empty folder: the wheel carries
the sample events and the default config, `slmstream bench` is found through its entry point, and the demo runs
end to end on the installed copy, not on this source tree.

Offline and fast: the new venv gets no dependencies of its own; a .pth file puts this venv's site-packages
after its own (a .pth line adds a path, it does not run that folder's .pth files: this venv's editable
install of the project stays out). Console scripts of the dependencies do not come with it, so the test
writes `faust`'s, which the demo's worker needs.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest

from bench.machine import free_port

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

REPO = Path(__file__).resolve().parents[1]
MODELS = REPO / ".cache" / "models"


def copy_source(dst: Path) -> None:
    """The files git tracks or would track (no build/, no .venv): what a fresh clone has."""
    try:
        listed = subprocess.run(
            ["git", "ls-files", "-co", "--exclude-standard", "-z"], cwd=REPO, capture_output=True, check=True
        ).stdout
    except (OSError, subprocess.CalledProcessError):
        pytest.skip("not a git checkout: cannot tell the source files from build outputs")
    for name in filter(None, listed.decode().split("\0")):
        src = REPO / name
        if not src.exists() and not src.is_symlink():
            continue  # deleted in the working tree
        target = dst / name
        target.parent.mkdir(parents=True, exist_ok=True)
        if src.is_symlink():
            target.symlink_to(os.readlink(src))
        elif src.is_file():
            shutil.copy2(src, target)


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A venv with the project installed from a copy of this tree; its bin folder."""
    root = tmp_path_factory.mktemp("install")
    src = root / "src"
    copy_source(src)
    venv = root / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    python = venv / "bin" / "python"
    site = subprocess.run(
        [str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    Path(site, "dependencies.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    pip = [str(python), "-m", "pip", "install", "-q", "--no-deps", "--no-build-isolation", "--no-index", str(src)]
    proc = subprocess.run(pip, capture_output=True, text=True, env=clean_env(), timeout=240)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    faust = venv / "bin" / "faust"
    faust.write_text(f"#!{python}\nimport sys\nfrom faust.cli.faust import cli\nsys.exit(cli())\n")
    faust.chmod(0o755)
    shutil.rmtree(src)  # nothing may come from the copy once it is installed
    return venv / "bin"


def clean_env(**extra: str) -> dict[str, str]:
    """No PYTHONPATH (it would put a source tree first) and no SLMSTREAM_* of the developer."""
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH" and not k.startswith("SLMSTREAM_")}
    return {**env, **extra}


def run(bin_dir: Path, cwd: Path, *args: str, timeout: float = 60, **env: str) -> subprocess.CompletedProcess[str]:
    full_env = clean_env(PATH=f"{bin_dir}{os.pathsep}{os.environ.get('PATH', '')}", **env)
    return subprocess.run(list(args), cwd=cwd, env=full_env, capture_output=True, text=True, timeout=timeout)


def test_the_installed_copy_is_imported_with_its_data(installed: Path, tmp_path: Path) -> None:
    code = (
        "import bench, pipeline, pipeline.config as c, pipeline.samples as s\n"
        "print(pipeline.__file__); print(bench.__file__)\n"
        "print(len(s.sample_lines(s.SAMPLE_EVENTS))); print(c.config_path()); print(len(c.load_settings().labels))"
    )
    proc = run(installed, tmp_path, str(installed / "python"), "-c", code)
    assert proc.returncode == 0, proc.stderr
    pipeline_file, bench_file, samples, config, labels = proc.stdout.split("\n")[:5]
    venv = installed.parent
    for path in (pipeline_file, bench_file, config):
        assert Path(path).is_relative_to(venv), path
        assert not Path(path).is_relative_to(REPO), path
    assert int(samples) == 420
    assert config.endswith("default_config.yaml") and int(labels) >= 2  # no config/ here: the shipped defaults


def test_the_bench_commands_come_from_the_entry_point(installed: Path, tmp_path: Path) -> None:
    top = run(installed, tmp_path, str(installed / "slmstream"), "--help", COLUMNS="200")
    assert top.returncode == 0, top.stderr
    assert "bench" in top.stdout
    bench = run(installed, tmp_path, str(installed / "slmstream"), "bench", "--help", COLUMNS="200")
    assert bench.returncode == 0, bench.stderr
    for command in ("classify", "compare", "identity", "summarize", "model-server", "gpu"):
        assert command in bench.stdout


@pytest.mark.skipif(not (MODELS / "minilm-l6-int8" / "manifest.json").exists(), reason="models not built")
def test_the_demo_runs_from_an_empty_folder(installed: Path, tmp_path: Path) -> None:
    work = tmp_path / "elsewhere"
    work.mkdir()
    cmd = [str(installed / "slmstream"), "demo", "--port", str(free_port()), "--web-port", str(free_port())]
    proc = run(installed, work, *cmd, timeout=400, SLMSTREAM_MODEL__CACHE_DIR=str(MODELS), COLUMNS="200")
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out[-4000:]
    samples = REPO / "pipeline" / "samples"
    valid = sum(1 for f in ("sample_events.jsonl", "spike_events.jsonl") for ln in (samples / f).open() if ln.strip())
    bad = sum(1 for ln in (samples / "malformed_events.txt").open() if ln.strip())
    assert f"enriched {valid}/{valid}, dlq {bad}/{bad}" in out, out[-4000:]  # every shipped event went through
    assert "stopped: no process left behind" in out
    assert (work / ".run" / "demo" / "worker.log").exists()
