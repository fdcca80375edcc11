"""Helpers of the real-engine tests: server processes on 127.0.0.1 stopped by PID, the toy models' paths."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
TOY = ROOT / "src" / "pasodoble" / "assets" / "toy"

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ["VLLM_ENABLE_V1_MULTIPROCESSING"] = "0"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    """A server process on 127.0.0.1, stopped by PID (its whole process group) at teardown."""

    def __init__(self, cmd: list[str], port: int, log: Path, env: dict[str, str] | None = None) -> None:
        self.url = f"http://127.0.0.1:{port}"
        self.log = log
        self.proc = subprocess.Popen(
            cmd,
            stdout=log.open("w"),
            stderr=subprocess.STDOUT,
            env={**os.environ, **(env or {})},
            start_new_session=True,
            cwd=ROOT,
        )

    def wait(self, timeout_s: float = 240.0) -> None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"server exited {self.proc.returncode}:\n{self.log.read_text()[-3000:]}")
            try:
                with urllib.request.urlopen(f"{self.url}/health", timeout=5):
                    return
            except OSError:
                time.sleep(0.5)
        raise RuntimeError(f"server not healthy in {timeout_s} s:\n{self.log.read_text()[-3000:]}")

    def stop(self) -> None:
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, 15)
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, 9)
                self.proc.wait()


PYTHON = sys.executable


def engine_server_cmd(model_dir: Path, port: int) -> list[str]:
    """Our engine server (python -m pasodoble.rollout.vllm serve) for a toy model on CPU, float32, with a
    small KV cache."""
    return [
        PYTHON, "-m", "pasodoble.rollout.vllm", "serve", "--model", str(model_dir), "--port", str(port),
        "--dtype", "float32", "--max-model-len", "512", "--gpu-memory-utilization", "0.05",
        "--kv-cache-gib", "0.25",
    ]  # fmt: skip
