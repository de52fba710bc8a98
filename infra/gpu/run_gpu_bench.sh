#!/usr/bin/env bash
# On the GPU machine, in the project's root (the `run` tool's working directory), as the LAST of the calls that
# carry .gpub1 .. .gpubN (infra/gpu/README.md): assemble the bundle, install it next to the image's Python (torch,
# tokenizers, numpy), then `python -m bench gpu` (= `slmstream bench gpu`). Everything it measures, and the logs, go to $OUT.
#
# Env: BENCH_ARGS (extra `slmstream bench gpu` options), BENCH_TIMEOUT_S (default 330), PARTS_DIR (/tmp/gpub).
set -uo pipefail
t0=$(date +%s)
out=${OUT:-/tmp/gpu-out}
mkdir -p "$out"
parts=${PARTS_DIR:-/tmp/gpub}
stage=/tmp/slm-gpu
venv=/tmp/slm-venv
log() { echo "[gpu $(($(date +%s) - t0))s] $*" | tee -a "$out/run.log"; }

# 1. the bundle: parts carried by earlier calls (in /tmp/gpub) + the ones this call carries
mkdir -p "$parts"
for d in .gpub[0-9]*; do [ -d "$d" ] && cp -n "$d"/part* "$parts"/ 2>/dev/null; cp "$d/BUNDLE" "$parts/BUNDLE" 2>/dev/null; done
if [ ! -f "$parts/BUNDLE" ]; then log "no BUNDLE file: carry the .gpubN folders (infra/gpu/README.md)"; exit 3; fi
want=$(sed -n 1p "$parts/BUNDLE"); sum=$(sed -n 2p "$parts/BUNDLE")
have=$(ls "$parts"/part* 2>/dev/null | wc -l)
if [ "$have" != "$want" ]; then
  log "have $have of $want parts in $parts: $(ls "$parts" | tr '\n' ' ') — the machine was fresh? redo the carry calls"
  exit 3
fi
if [ ! -d "$stage/wheels" ]; then
  cat "$parts"/part* > /tmp/bundle.tar
  got=$(sha256sum /tmp/bundle.tar | cut -d' ' -f1)
  [ "$got" = "$sum" ] || { log "bundle checksum $got != $sum: a part is damaged; redo the carry calls"; exit 3; }
  mkdir -p "$stage" && tar -C "$stage" -xf /tmp/bundle.tar && rm -f /tmp/bundle.tar
fi
log "bundle ok: $(ls "$stage/wheels" | wc -l) wheels, $(ls "$stage/ort"), models: $(ls "$stage/models")"

# 2. a venv on top of the image's Python (torch, tokenizers, numpy stay the image's)
if [ ! -x "$venv/bin/faust" ]; then
  pip=("$venv/bin/python" -m pip)
  if ! python3 -m venv --system-site-packages "$venv" >> "$out/pip.log" 2>&1; then
    # no ensurepip in the image: a venv without pip, filled by the image's pip
    rm -rf "$venv"
    python3 -m venv --system-site-packages --without-pip "$venv" || { log "python3 -m venv failed"; exit 4; }
    pip=(python3 -m pip --python "$venv/bin/python")
  fi
  "${pip[@]}" install -q --no-index --no-deps "$stage"/wheels/*.whl "$stage"/ort/*.whl \
    >> "$out/pip.log" 2>&1 || { log "pip install failed (pip.log)"; tail -20 "$out/pip.log"; exit 4; }
fi
site=$("$venv/bin/python" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')
pwd > "$site/slmstream-repo.pth"    # the project itself, from this working tree (like an editable install)
# No install metadata, so no `slmstream.commands` entry point: `slmstream` for the model server, `-m bench` for the bench
# the __main__ guard matters: the bench spawns processes, which import the main module again
printf '#!%s\nimport sys\n\nfrom pipeline.cli import main\n\nif __name__ == "__main__":\n    sys.exit(main())\n' \
  "$venv/bin/python" > "$venv/bin/slmstream"
chmod +x "$venv/bin/slmstream"
mkdir -p .cache/models
for m in "$stage"/models/*; do rm -rf ".cache/models/$(basename "$m")"; cp -r "$m" .cache/models/; done
log "venv ready"
"$venv/bin/python" - <<'PY' 2>&1 | tee -a "$out/run.log"
import torch  # first: it loads the CUDA libraries
import onnxruntime as ort
ort.preload_dlls()
print("torch", torch.__version__, "cuda", torch.cuda.is_available(), "onnxruntime", ort.__version__, ort.get_available_providers())
PY
nvidia-smi --query-gpu=name,memory.total,memory.used,utilization.gpu --format=csv > "$out/nvidia-smi.txt" 2>&1

# 3. the bench: bare model, then broker + model server + workers at rising rates (JSON written after each phase)
log "bench: python -m bench gpu ${BENCH_ARGS:-}"
PATH="$venv/bin:$PATH" timeout -s INT "${BENCH_TIMEOUT_S:-330}" "$venv/bin/python" -m bench gpu --no-build \
  --out "$out/gpu-bench.json" --run-root /tmp/slm-run ${BENCH_ARGS:-} 2>&1 | tee "$out/bench.log"
rc=${PIPESTATUS[0]}
log "bench exited $rc"
# the logs of the model server and of the first workers (the bench's run folder)
for f in $(ls -d /tmp/slm-run/gpu-*/ 2>/dev/null | tail -1); do
  mkdir -p "$out/logs"; cp "$f"/model-server.log "$out/logs/" 2>/dev/null
  for w in 0 1; do tail -200 "$f/worker-$w.log" > "$out/logs/worker-$w.log" 2>/dev/null; done
  tail -c 2000000 "$out/logs/model-server.log" > "$out/logs/model-server.tail.log" 2>/dev/null && rm -f "$out/logs/model-server.log"
done
log "done in $(($(date +%s) - t0)) s"
exit "$rc"
