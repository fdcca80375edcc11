"""Server mode with two training processes (torchrun, gloo, CPU): the main process sends one generation
request per round holding every process's prompts and scatters the results back; it alone pushes the
weights, at start (step 0) and after the update, each push checked against the server's weights hash."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from pasodoble.rollout.vllm import make_server
from tests.fakes.engine import FakeEngine

ROOT = Path(__file__).resolve().parents[2]
WORKER = "tests.integration.workers.vllm_gather_worker"  # run with -m from ROOT


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow
def test_one_request_per_round_from_the_main_process(tmp_path):
    fake = FakeEngine(eos=2)
    srv = make_server(fake, "127.0.0.1", 0)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    url = f"http://127.0.0.1:{srv.server_address[1]}"
    cmd = [
        sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2",
        "--master_addr", "127.0.0.1", "--master_port", str(_free_port()),
        "-m", WORKER, url, str(tmp_path),
    ]  # fmt: skip
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    try:
        proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=240, cwd=ROOT)
    finally:
        srv.shutdown()
        srv.server_close()
    assert proc.returncode == 0, f"{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
    ranks = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in (0, 1)]
    # one engine call per round, with every process's requests (3, then 1 while rank 0 had none)
    assert fake.calls == [3, 1]
    # each process got the completions of its own prompts (the fake echoes a prompt's last token)
    assert [g[0][1] for g in ranks[0]["first"]] == [10, 11] and ranks[0]["second"] == []
    assert [g[0][1] for g in ranks[1]["first"]] == [20] and [g[0][1] for g in ranks[1]["second"]] == [30]
    # only the main process holds a client; two pushes (step 0 and the update), both hash-checked
    assert [r["has_client"] for r in ranks] == [True, False]
    assert fake.events.count("reset") == 2
