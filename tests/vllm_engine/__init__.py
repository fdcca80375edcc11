"""Real-engine tests: vLLM's CPU build, run in ``.venv-vllm``
(``.venv-vllm/bin/python -m pytest -q tests/vllm_engine``)."""
