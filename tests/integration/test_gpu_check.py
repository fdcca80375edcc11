"""``scripts/gpu_check.sh --device cpu --tiny``: the prepared GPU check at toy sizes on CPU.

On a GPU (``bash scripts/gpu_check.sh``) the same code measures the issue-14 goals at the Qwen3-1.7B shape;
here the figures only show that each check runs end to end in its own process, that the two correctness
assertions hold (float32 masters move under bf16 compute where bf16-held weights mostly do not; a
one-process FSDP2 run resumed from a checkpoint ends bitwise equal), and that the run cannot be lost: a
check made to hang (``PASODOBLE_GPU_CHECK_HANG``) is killed at its cap, one made to crash is recorded as
failed, a signal to the script or a spent budget leaves the JSON naming what did not run.
"""

from __future__ import annotations

import importlib.util
import json
import os
import signal
import subprocess
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "scripts" / "gpu_check.sh"
ALL = ["environment", "precision", "logprobs", "learner", "decode", "fsdp2_resume", "toy_true_answer"]

pytestmark = pytest.mark.slow


def _env(tmp_path: Path, **extra: str) -> dict[str, str]:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    env["PASODOBLE_CACHE"] = os.environ.get("PASODOBLE_CACHE", str(tmp_path / "cache"))
    for name in ("PASODOBLE_GPU_CHECK_HANG", "PASODOBLE_GPU_CHECK_CRASH"):
        env.pop(name, None)
    return {**env, **extra}


def _module():
    spec = importlib.util.spec_from_file_location("gpu_check", ROOT / "scripts" / "gpu_check.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_every_check_runs_and_a_hung_one_is_killed_at_its_cap(tmp_path):
    out = tmp_path / "gpu_check.json"
    cmd = ["bash", str(SCRIPT), "--device", "cpu", "--tiny", "--out", str(out), "--cap", "learner=3"]
    env = _env(tmp_path, PASODOBLE_GPU_CHECK_HANG="learner")
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=600, cwd=tmp_path)
    assert proc.returncode == 1, proc.stdout[-3000:] + proc.stderr[-3000:]  # one check did not pass
    report = json.loads(out.read_text())
    assert json.loads(proc.stdout) == report  # the one JSON object on stdout, the same as the file
    checks = report["checks"]
    assert list(checks) == ALL
    hung = checks["learner"]
    assert hung["status"] == "timed_out" and "3 s cap" in hung["error"]
    assert 3 <= hung["seconds"] < 30
    assert "sleeping until killed" in hung["log_tail"] and "run_child" in hung["log_tail"]  # its stacks
    others = [n for n in ALL if n != "learner"]
    assert {n: checks[n]["status"] for n in others} == dict.fromkeys(others, "ok"), {
        n: checks[n].get("error") for n in others
    }
    summary = report["summary"]
    assert summary["finished"] and summary["timed_out"] == ["learner"] and summary["ok"] == others
    assert summary["failed"] == [] and summary["not_run"] == []
    for name, c in checks.items():
        assert 0 < c["seconds"] <= c["cap_s"] + 15, name

    p = checks["precision"]["result"]
    assert p["weights_dtype"] == {"fp32_masters": "float32", "bf16_held": "bfloat16"}
    assert p["share_moved_fp32_masters"] > 0.9  # float32 masters under bf16 compute
    assert 0 < p["share_moved_bf16_held"] < 0.1  # the contrast: weights held in bf16 mostly do not move
    assert p["met"] and p["ratio_fp32_to_bf16_held"] > 10
    f = checks["fsdp2_resume"]["result"]
    assert f["met"] and f["bitwise_equal_after_resume"] and f["max_abs_diff"] == 0.0
    assert f["updates_after_resume"] > 0
    assert f["updates_after_resume"] == f["updates_uninterrupted_after_step"]  # not cumulative
    assert f["resumed_from_step"] == 2 and f["checkpoint_layout"] == {"strategy": "fsdp2", "processes": 1}
    for name in ("hf", "hf_batched"):
        assert checks["logprobs"]["result"][name]["tokens"] > 0
        assert checks["logprobs"]["result"][name]["max_abs_diff"] < 0.05  # bf16 compute against bf16 compute
        assert checks["decode"]["result"][name]["decode_ms_per_step"] > 0
    env_result = checks["environment"]["result"]
    assert env_result["pasodoble_from"] == str(ROOT / "src" / "pasodoble")  # from src/, not installed
    assert env_result["peak_bf16_dense_tflops_datasheet"] is None  # CPU
    toy = checks["toy_true_answer"]["result"]
    assert (
        toy["steps"] == 2 and 0 <= toy["heldout_pass@1_before"] <= 1 and 0 <= toy["heldout_pass@1_after"] <= 1
    )


def test_a_crash_a_missing_wheel_a_spent_budget_and_a_signal_are_recorded(tmp_path):
    elsewhere = tmp_path / "elsewhere"
    (elsewhere / "empty-wheels").mkdir(parents=True)
    # relative --out and --wheels, from another directory; precision dies by SIGSEGV, learner runs
    proc = subprocess.run(
        [
            "bash",
            str(SCRIPT),
            "--device",
            "cpu",
            "--tiny",
            "--out",
            "rel/out.json",
            "--wheels",
            "empty-wheels",
        ]
        + ["--only", "precision", "learner"],
        capture_output=True,
        text=True,
        env=_env(tmp_path, PASODOBLE_GPU_CHECK_CRASH="precision"),
        timeout=300,
        cwd=elsewhere,
    )
    assert proc.returncode == 1, proc.stderr[-3000:]
    report = json.loads((elsewhere / "rel" / "out.json").read_text())
    assert "holds no .whl file" in report["setup"]["error"] and "holds no .whl file" in proc.stderr
    assert list(report["checks"]) == ["precision", "learner"]
    crashed = report["checks"]["precision"]
    assert crashed["status"] == "failed" and "SIGSEGV" in crashed["error"] and "\n" not in crashed["error"]
    learner = report["checks"]["learner"]
    assert learner["status"] == "ok", learner.get("error")
    r = learner["result"]
    assert r["model_flops_per_token"] == 6 * r["matmul_parameters"] + r["attention_flops_per_token"]
    assert r["achieved_tflops"] >= 0 and r["mfu"] is None and r["peak_tflops"] is None  # CPU: no peak

    # a spent budget: the check is named as not run
    proc = subprocess.run(
        [
            "bash",
            str(SCRIPT),
            "--device",
            "cpu",
            "--tiny",
            "--out",
            "b.json",
            "--budget",
            "0",
            "--only",
            "decode",
        ],
        capture_output=True,
        text=True,
        env=_env(tmp_path),
        timeout=120,
        cwd=elsewhere,
    )
    report = json.loads((elsewhere / "b.json").read_text())
    assert proc.returncode == 1 and report["checks"]["decode"]["status"] == "not_run"
    assert "budget" in report["checks"]["decode"]["reason"] and report["summary"]["not_run"] == ["decode"]

    # SIGTERM to the script while a check runs: that check is recorded, the rest named as not run
    out = elsewhere / "s.json"
    running = subprocess.Popen(
        [
            "bash",
            str(SCRIPT),
            "--device",
            "cpu",
            "--tiny",
            "--out",
            str(out),
            "--only",
            "decode",
            "fsdp2_resume",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
        env=_env(tmp_path, PASODOBLE_GPU_CHECK_HANG="decode"),
        cwd=elsewhere,
    )
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if out.is_file() and json.loads(out.read_text())["checks"]["decode"]["status"] == "running":
                break
            time.sleep(0.2)
        time.sleep(1.0)
        running.send_signal(signal.SIGTERM)
        stdout, _ = running.communicate(timeout=60)
    finally:
        running.kill()
    report = json.loads(out.read_text())
    assert json.loads(stdout) == report and running.returncode == 1
    assert (
        report["checks"]["decode"]["status"] == "timed_out"
        and "SIGTERM" in report["checks"]["decode"]["error"]
    )
    assert report["checks"]["fsdp2_resume"]["status"] == "not_run"
    assert not report["summary"]["finished"] and report["summary"]["not_run"] == ["fsdp2_resume"]


def test_caps_fit_the_budget_and_the_peak_is_looked_up_by_name():
    gpu_check = _module()  # the orchestrator's module imports no torch
    assert list(gpu_check.CAPS) == ALL
    assert sum(gpu_check.CAPS.values()) <= gpu_check.DEFAULT_BUDGET <= 8 * 60
    peak = gpu_check.datasheet_peak_tflops
    assert peak("NVIDIA H200") == 989.0 and peak("NVIDIA H100 80GB HBM3") == 989.0
    assert peak("NVIDIA H100 PCIe") == 756.0 and peak("NVIDIA H100 NVL") == 835.0
    assert peak("NVIDIA A100-SXM4-80GB") == 312.0 and peak("Tesla T4") is None and peak(None) is None
