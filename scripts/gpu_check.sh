#!/usr/bin/env bash
# The one prepared GPU check (issue 14): prints one JSON object (see scripts/gpu_check.py for the checks
# and their goals). <= 8 minutes on one H200, no network, no vLLM, no downloaded weights.
#   bash scripts/gpu_check.sh                                   # on a GPU machine
#   bash scripts/gpu_check.sh --wheels .whl --out $OUT/gpu_check.json
#   bash scripts/gpu_check.sh --device cpu --tiny               # the same code at toy sizes (CI)
# The Python used is $PYTHON, else .venv/bin/python, else python3; it needs torch, transformers and
# accelerate. Where PasoDoble is not importable it is installed with pip install --no-deps; other pure-Python
# requirements (math-verify, latex2sympy2_extended, antlr4-python3-runtime, ...) come from --wheels DIR.
set -euo pipefail
cd "$(dirname "$0")/.."
PY="${PYTHON:-}"
if [ -z "$PY" ]; then
  if [ -x .venv/bin/python ]; then PY=.venv/bin/python; else PY=python3; fi
fi
args=()
wheels=""
while [ $# -gt 0 ]; do
  case "$1" in
    --wheels) wheels="$2"; shift 2 ;;
    *) args+=("$1"); shift ;;
  esac
done
export HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 TOKENIZERS_PARALLELISM=false PYTHONUNBUFFERED=1
if [ -n "$wheels" ]; then
  site="${TMPDIR:-/tmp}/pasodoble-gpu-check-site"
  "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target "$site" "$wheels"/*.whl
  export PYTHONPATH="$site${PYTHONPATH:+:$PYTHONPATH}"
fi
if ! "$PY" -c "import pasodoble" 2>/dev/null; then
  "$PY" -m pip install -q --no-deps --no-build-isolation -e . 2>/dev/null || export PYTHONPATH="$PWD/src${PYTHONPATH:+:$PYTHONPATH}"
fi
exec timeout 570 "$PY" scripts/gpu_check.py "${args[@]}"
