"""`python -m bench ...`: the bench commands from a source tree that has no install metadata, so no
`slmstream.commands` entry point (infra/gpu/run_gpu_bench.sh's venv, tests). Installed: `slmstream bench ...`."""

from bench.cli import app

if __name__ == "__main__":  # the bench spawns processes, which import the main module again
    app(prog_name="slmstream bench")
