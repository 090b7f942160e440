#!/usr/bin/env bash
# `make gpu-bench`: on a GPU host, every figure of the GPU path against its target
# (rtvol bench gpu: parity, compile at export, time to ready, model batch 1 / 1024,
# perf_analyzer unary and streaming against the sidecar and bare echoes, feature ingest on both devices, issue 12's pipeline and
# gateway benches with the sidecar on the GPU). Run where python3 has torch with CUDA and Triton.
#   WHEELS=DIR          first install these wheels (the project's other dependencies, py-spy)
#                       into a private folder: for a host without a package index
#   HOST_BIN=DIR        programs and shared libraries the host lacks (redis-server and its
#                       liblzf/libjemalloc; libb64 and libcudart.so.12 for perf_analyzer):
#                       put first on PATH and LD_LIBRARY_PATH
#   MODELS=DIR          model repository with rtvol_cnn (default: models/ from `make demo`,
#                       else a random-weight rtvol_cnn in a temporary folder)
#   PERF_ANALYZER=PATH  default build/perf_analyzer/perf_analyzer (`make perf-analyzer`), else
#                       the one on PATH (tritonclient's wheel installs one)
#   OUT=DIR             logs, py-spy profiles and bench-gpu.json (default bench-gpu)
#   RTVOL_PIPELINE_INFLIGHT=K  the gateways' pipeline batches out at once (default: the gateway's,
#                       1); the step pipeline_50k_inflight2 runs 2 beside pipeline_50k
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-python3}
if [ -n "${WHEELS:-}" ]; then
  site=$(mktemp -d)
  "$PY" -m pip install -q --no-index --no-deps --no-compile --target "$site" "$WHEELS"/*.whl
  export PYTHONPATH="$site:${PYTHONPATH:-}" PATH="$site/bin:$PATH"
fi
if [ -n "${HOST_BIN:-}" ]; then
  HOST_BIN=$(cd "$HOST_BIN" && pwd)
  export PATH="$HOST_BIN:$PATH" LD_LIBRARY_PATH="$HOST_BIN:${LD_LIBRARY_PATH:-}"
fi
export PYTHONPATH="$PWD:${PYTHONPATH:-}"
models=${MODELS:-models}
if [ ! -d "$models/rtvol_cnn" ]; then
  models=$(mktemp -d)
  PYTHONPATH="$PWD/tests:$PYTHONPATH" "$PY" -c 'import sys, pathlib, helpers.random_model as m
m.export_random(pathlib.Path(sys.argv[1]), seed=0)' "$models"
  echo "no MODELS: benchmarking a random-weight rtvol_cnn in $models"
fi
spy=$(command -v py-spy || true)
pa=${PERF_ANALYZER:-build/perf_analyzer/perf_analyzer}
[ -x "$pa" ] || pa=$(command -v perf_analyzer || echo "$pa")
exec "$PY" -m rtvol.cli bench gpu --repo "$models" \
  --perf-analyzer "$pa" ${spy:+--py-spy "$spy"} \
  --out "${OUT:-bench-gpu}" "$@"
