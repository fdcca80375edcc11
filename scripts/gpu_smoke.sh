#!/usr/bin/env bash
# GPU smoke test (< 5 min on one GPU, no network): 5 online dual-play steps of a locally built tiny model
# in bf16 on CUDA with the transformers backend and, when vllm is importable, the vLLM backend; prints
# generation tokens/s, training tokens/s and peak memory per backend.
#   bash scripts/gpu_smoke.sh                 # on a GPU machine
#   bash scripts/gpu_smoke.sh --device cpu    # the same path on CPU (float32)
set -euo pipefail
cd "$(dirname "$0")/.."
PY="${PYTHON:-.venv/bin/python}"
[ -x "$PY" ] || PY=python
export HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 TOKENIZERS_PARALLELISM=false
if [[ " $* " != *" --device cpu "* ]]; then
  if ! "$PY" -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)"; then
    echo "gpu_smoke.sh: no CUDA device visible to torch; run it on a GPU machine (or pass --device cpu)" >&2
    exit 2
  fi
fi
exec timeout 300 "$PY" scripts/gpu_smoke.py "$@"
