#!/usr/bin/env bash
# The one prepared GPU check: one process per check, each under its own time cap, the JSON file rewritten
# after every check (scripts/gpu_check.py documents the checks, their goals and the JSON; docs/scaling.md
# the carried-wheels route). No network, no vLLM, no downloaded weights; nothing installed into the
# machine's environment: the project runs from src/ on PYTHONPATH, carried wheels go to a temporary
# pip --target directory.
#   bash scripts/gpu_check.sh --wheels .whl --out "$OUT/gpu_check.json"   # on a GPU machine
#   bash scripts/gpu_check.sh --device cpu --tiny                        # the same code at toy sizes (CI)
# Other options: --only NAME ..., --cap NAME=SECONDS, --budget SECONDS (default 480), --peak-tflops T.
# The Python is $PYTHON, else the repository's .venv/bin/python, else python3; it needs torch,
# transformers, accelerate, safetensors, pyyaml and tokenizers (the GPU image has them) and math-verify
# (carried: --wheels DIR with math-verify 0.9.0, latex2sympy2_extended 1.11.0, antlr4-python3-runtime 4.13.2).
#
# Time per check on one H200, by estimate (not measured: no GPU was lent to this work), and its cap.
# Each estimate counts ~8 s to start the check's process (import torch and transformers, CUDA context).
#   check            estimate  cap   basis
#   environment        ~8 s    30 s  start-up; 20 bf16 8192^3 matrix products (~1.4 ms each at ~790 TFLOP/s)
#   precision         ~40 s    70 s  2 trainer builds, each two random-init 1.7B models on the GPU (~2 s each)
#                                    and a grader pool (~3 s); 1-2 scripted steps of <= 20 sequences of
#                                    <= 100 tokens each (issue 14: 110k tokens updated in 5.0 s); a 6.9 GB
#                                    weight snapshot to the host and back (~2 s)
#   logprobs          ~20 s    45 s  1.7B init; hf: 64 decode steps at ~21 ms (issue 14's 20.9 ms at batch 64);
#                                    hf_batched: one graph capture (~1-2 s); the learner's log-probabilities
#   learner           ~25 s    60 s  1.7B init; a warm-up update and the timed one of 48 x 2,304 tokens
#                                    (issue 14 on an H200: 5.0 s each)
#   decode            ~25 s    45 s  1.7B init; hf: 64 x 256 tokens in 5.35 s (issue 14) + warm-up; hf_batched:
#                                    the same with two graph captures (~2-4 s)
#   fsdp2_resume      ~45 s    90 s  two trainer launches (~12 s start each: imports, NCCL, grader pool);
#                                    6 scripted steps (< 1 s each); 3 checkpoints of ~0.8 GB with sha256
#                                    (~1 s each) and final models (a 2-layer model, ~33 M parameters a role)
#   toy_true_answer  ~100 s   140 s  the toy demo on CUDA: 93 s for 20 steps with both 500 x 4 evaluations,
#                                    measured on an H200 (shared/docs/platform-notes.md)
#   whole            ~263 s   480 s  the caps add up to the default --budget: no run takes longer than 8 min
# The CPU form (--device cpu --tiny) took 102 s on 2 cores shared with other work (load 6-7); CI runs it
# (tests/integration/test_gpu_check.py).
set -uo pipefail # no -e: a failing step is reported, and the checks still run

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd -P)"
root="$(dirname "$here")"
abspath() { case "$1" in /*) printf '%s\n' "$1" ;; *) printf '%s\n' "$PWD/$1" ;; esac; }

PY="${PYTHON:-}"
if [ -z "$PY" ]; then
  if [ -x "$root/.venv/bin/python" ]; then PY="$root/.venv/bin/python"; else PY=python3; fi
fi

args=()
wheels=""
out="$PWD/gpu_check.json"
while [ $# -gt 0 ]; do
  case "$1" in
    --wheels) wheels="$(abspath "${2:?--wheels needs a directory}")"; shift 2 ;;
    --wheels=*) wheels="$(abspath "${1#--wheels=}")"; shift ;;
    --out) out="$(abspath "${2:?--out needs a file path}")"; shift 2 ;;
    --out=*) out="$(abspath "${1#--out=}")"; shift ;;
    *) args+=("$1"); shift ;;
  esac
done

export HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 TOKENIZERS_PARALLELISM=false PYTHONUNBUFFERED=1
export PYTHONPATH="$root/src${PYTHONPATH:+:$PYTHONPATH}"
setup_error=""
if [ -n "$wheels" ]; then
  export PASODOBLE_GPU_CHECK_WHEELS="$wheels"
  shopt -s nullglob
  found=("$wheels"/*.whl)
  shopt -u nullglob
  if [ ${#found[@]} -eq 0 ]; then
    setup_error="--wheels $wheels holds no .whl file"
  else
    site="$(mktemp -d "${TMPDIR:-/tmp}/pasodoble-gpu-check-site.XXXXXX")"
    echo "gpu_check.sh: pip install --target $site ${found[*]##*/}" >&2
    if "$PY" -m pip install --no-index --no-deps --no-compile --no-cache-dir --disable-pip-version-check \
        --target "$site" "${found[@]}" >&2; then
      export PYTHONPATH="$site:$PYTHONPATH"
    else
      setup_error="pip install --target of the wheels in $wheels failed (exit $?; its output is above)"
    fi
  fi
  if [ -n "$setup_error" ]; then echo "gpu_check.sh: $setup_error; the checks run without them" >&2; fi
fi
export PASODOBLE_GPU_CHECK_SETUP_ERROR="$setup_error" PASODOBLE_GPU_CHECK_SITE="${site:-}"
echo "gpu_check.sh: $PY, PYTHONPATH=$PYTHONPATH, JSON to $out" >&2
# exec: a signal sent to this script reaches the orchestrator, which records it (it also removes $site)
exec "$PY" "$root/scripts/gpu_check.py" --out "$out" "${args[@]+"${args[@]}"}"
