"""`accelerate launch` (issue 24, item 6): the processes it asks for are honoured, or the command is
refused with the torchrun command that starts them (``pasodoble.launch``).

The environments below are what accelerate 1.x's two launchers set (``accelerate/utils/launch.py``:
``prepare_simple_launcher_cmd_env`` and ``prepare_multi_gpu_env`` + torch's elastic launcher); the
subprocess tests run the real ``accelerate launch``.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from pasodoble.errors import UserError
from pasodoble.launch import check_launcher, requested_processes

ROOT = Path(__file__).resolve().parents[2]
ACCELERATE = str(Path(sys.executable).with_name("accelerate"))
ENV = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "OMP_NUM_THREADS": "1"}

SIMPLE = {  # accelerate launch --cpu --num_processes 2: one process
    "ACCELERATE_USE_CPU": "True",
    "ACCELERATE_MIXED_PRECISION": "no",
    "ACCELERATE_DYNAMO_BACKEND": "NO",
    "MASTER_ADDR": "127.0.0.1",
    "MASTER_PORT": "29500",
}
MULTI = {  # accelerate launch --multi_gpu --num_processes 2: torchrun's workers
    "ACCELERATE_MIXED_PRECISION": "no",
    "ACCELERATE_DYNAMO_BACKEND": "NO",
    "MASTER_ADDR": "127.0.0.1",
    "MASTER_PORT": "29500",
    "RANK": "1",
    "LOCAL_RANK": "1",
    "WORLD_SIZE": "2",
}
LAUNCHER = ["/usr/bin/python", "/venv/bin/accelerate", "launch", "--cpu", "--num_processes", "2", "-m", "x"]
TRAIN = ["train", "configs/toy.yaml", "run.out_dir=runs/a b"]


def test_requested_processes_reads_the_launcher_command_line():
    assert requested_processes(LAUNCHER) == 2
    assert requested_processes(["accelerate", "launch", "--num-processes=4", "x.py"]) == 4
    assert requested_processes(["accelerate", "launch", "x.py"]) is None
    assert requested_processes(None) is None


def test_one_process_where_two_were_asked_is_refused_with_the_torchrun_command():
    with pytest.raises(UserError) as err:
        check_launcher("train", TRAIN, env=SIMPLE, launcher_cmdline=LAUNCHER)
    message = str(err.value)
    assert "asked for 2 processes but started 1" in message
    assert message.endswith(
        "torchrun --nproc_per_node 2 -m pasodoble.cli train configs/toy.yaml 'run.out_dir=runs/a b'"
    )
    # no launcher command line to read: MASTER_ADDR without RANK says more than one was asked for
    with pytest.raises(UserError, match=r"asked for several processes .* torchrun --nproc_per_node N "):
        check_launcher("train", TRAIN, env=SIMPLE, launcher_cmdline=[])
    with pytest.raises(UserError, match=r"pasodoble sft train is launched with torchrun: torchrun "):
        check_launcher("sft", ["sft", "train", "--role", "solver"], env=SIMPLE, launcher_cmdline=LAUNCHER)


def test_processes_that_exist_are_honoured():
    multi = ["accelerate", "launch", "--multi_gpu", "--num_processes", "2", "-m", "pasodoble.cli"]
    check_launcher("train", TRAIN, env=MULTI, launcher_cmdline=multi)
    one = {k: v for k, v in SIMPLE.items() if not k.startswith("MASTER_")}  # --num_processes 1
    check_launcher("train", TRAIN, env=one, launcher_cmdline=["accelerate", "launch", "-m", "x"])
    check_launcher("train", TRAIN, env={}, launcher_cmdline=LAUNCHER)  # not accelerate: nothing to check
    # one-process commands run in one process whatever launched them
    check_launcher("eval", ["eval", "--model", "m"], env=SIMPLE, launcher_cmdline=LAUNCHER)
    check_launcher("sft", ["sft", "build-data", "--teacher", "t"], env=SIMPLE, launcher_cmdline=LAUNCHER)


@pytest.mark.parametrize(
    ("extra", "needle"),
    [
        (
            {"ACCELERATE_MIXED_PRECISION": "bf16"},
            "--mixed_precision bf16 (set the precision with model.dtype",
        ),
        ({"ACCELERATE_USE_FSDP": "true"}, "--use_fsdp (set the sharding with distributed.strategy fsdp2)"),
        ({"ACCELERATE_USE_DEEPSPEED": "true"}, "--use_deepspeed (set the sharding with distributed.strategy"),
        ({"ACCELERATE_DYNAMO_BACKEND": "INDUCTOR"}, "--dynamo_backend INDUCTOR (not supported)"),
    ],
)
def test_accelerate_settings_the_run_would_not_follow_are_refused(extra, needle):
    with pytest.raises(UserError, match="would change the run behind its config") as err:
        check_launcher("train", TRAIN, env={**MULTI, **extra}, launcher_cmdline=[])
    assert needle in str(err.value) and "torchrun --nproc_per_node 2 -m pasodoble.cli train" in str(err.value)


def _run(cmd: list[str], timeout: int = 300) -> subprocess.CompletedProcess:
    return subprocess.run(cmd, env=ENV, capture_output=True, text=True, timeout=timeout, cwd=ROOT)


def _port() -> str:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return str(s.getsockname()[1])


def test_real_accelerate_launch_cpu_two_processes_is_refused(tmp_path):
    for argv in (
        ["train", "configs/tiny.yaml", f"run.out_dir={tmp_path / 'run'}"],
        [
            "sft",
            "train",
            "--role",
            "solver",
            "--data",
            "x.jsonl",
            "--model",
            "tiny",
            "--out",
            str(tmp_path / "s"),
        ],
    ):
        proc = _run([ACCELERATE, "launch", "--cpu", "--num_processes", "2", "-m", "pasodoble.cli", *argv])
        assert proc.returncode != 0
        ours = [line for line in proc.stderr.splitlines() if line.startswith("pasodoble ")]
        assert len(ours) == 1, proc.stderr[-3000:]
        assert "accelerate launch asked for 2 processes but started 1" in ours[0]
        assert ours[0].endswith(f"torchrun --nproc_per_node 2 -m pasodoble.cli {' '.join(argv)}")
        assert not (tmp_path / "run").exists()  # refused before any work


@pytest.mark.slow
def test_real_accelerate_launch_multi_process_is_honoured(tmp_path):
    # the multi-GPU launcher is torch's elastic launcher: on CPU too it starts both processes (gloo)
    out = tmp_path / "run"
    cmd = [ACCELERATE, "launch", "--multi_gpu", "--num_processes", "2", "--main_process_port", _port()]
    cmd += ["-m", "pasodoble.cli", "train", "configs/tiny.yaml", "run.device=cpu", "run.max_steps=1"]
    proc = _run([*cmd, f"run.out_dir={out}", "run.progress=false"])
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "strategy: fsdp2, 2 processes" in proc.stderr
    assert json.loads(proc.stdout.strip().splitlines()[-1])["steps"] == 1
