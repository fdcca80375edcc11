#!/usr/bin/env bash
# Create .venv inside the repository and install PasoDoble into it.
#   bash scripts/install.sh          core install
#   bash scripts/install.sh dev      core + test/lint/benchmark tools
# torch is installed first so that no later requirement pulls a different (multi-GB CUDA) build.
# Set PASODOBLE_TORCH to another requirement (e.g. "torch==2.8.0") on GPU machines.
set -euo pipefail
cd "$(dirname "$0")/.."
extras="${1:-}"
python="${PYTHON:-python3}"
[ -x .venv/bin/python ] || "$python" -m venv .venv
.venv/bin/python -m pip install --quiet --disable-pip-version-check --upgrade "pip>=24" 2>/dev/null || true
if ! .venv/bin/python -c "import torch" 2>/dev/null; then
  .venv/bin/python -m pip install --quiet --disable-pip-version-check "${PASODOBLE_TORCH:-torch==2.13.0}"
fi
spec="."
[ -n "$extras" ] && spec=".[$extras]"
.venv/bin/python -m pip install --quiet --disable-pip-version-check -e "$spec"
