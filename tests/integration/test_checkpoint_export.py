"""Every training checkpoint is usable: `pasodoble eval --model RUN/checkpoints/step_N --role R` and
`pasodoble export CKPT --role R --out DIR`, for the single-process, FSDP2 and DeepSpeed layouts.

The runs are tiny dual-play runs with the scripted backend (``workers/run_scripted.py``: 4 online steps, a
checkpoint every 2, so ``step_00000002`` is an intermediate checkpoint and ``step_00000004`` the last,
whose weights are those of ``R_final``). Exported weights are compared bit for bit with what the
checkpoint holds, read another way: ``R.pt``'s ``"model"``; DCP's own ``dcp_to_torch_save`` for FSDP2;
the run's final model for the last checkpoint of every layout.
"""

from __future__ import annotations

import importlib.util
import json
import os
import pickle
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from pasodoble.checkpoint import save_checkpoint, sha256_file
from pasodoble.cli import main

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = "tests.integration.workers.run_scripted"  # run with -m from ROOT
ENV = {
    **os.environ,
    "HF_HUB_OFFLINE": "1",
    "HF_DATASETS_OFFLINE": "1",
    "OMP_NUM_THREADS": "1",
    "DS_ACCELERATOR": "cpu",
    "CUDA_VISIBLE_DEVICES": "",
}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _make_run(out: Path, steps: int, every: int, *overrides: str, processes: int = 1) -> Path:
    args = ["-m", SCRIPT, str(out), "online", str(steps), str(every), *overrides]
    if processes > 1:
        launcher = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", str(processes)]
        args = [*launcher, "--master_addr", "127.0.0.1", "--master_port", str(_free_port()), *args]
    else:
        args = [sys.executable, *args]
    proc = subprocess.run(args, capture_output=True, text=True, env=ENV, timeout=600, cwd=ROOT)
    assert proc.returncode == 0, proc.stderr[-4000:]
    return out


@pytest.fixture(scope="module")
def single_run(tmp_path_factory) -> Path:
    return _make_run(tmp_path_factory.mktemp("single") / "run", 4, 2)


@pytest.fixture(scope="module")
def fsdp_run(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("fsdp") / "run"
    return _make_run(out, 4, 2, "distributed.strategy=fsdp2", "run.device=cpu", processes=2)


def _bench(path: Path) -> Path:
    rows = [{"id": f"q{i}", "problem": f"What is {i} + {i + 2}?", "answer": str(2 * i + 2)} for i in range(3)]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def _eval_args(model: str, bench: Path, out: Path, *extra: str) -> list[str]:
    return [
        "eval", "--model", model, *extra, "--benchmarks", str(bench), "--samples", "2",
        "--max-new-tokens", "6", "--grader-workers", "0", "--no-progress", "--out", str(out),
    ]  # fmt: skip


def _weights(directory: Path) -> dict[str, torch.Tensor]:
    from transformers import AutoModelForCausalLM

    return AutoModelForCausalLM.from_pretrained(directory).state_dict()


def _assert_equal(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> None:
    assert set(b) <= set(a), sorted(set(b) - set(a))
    for k in b:
        assert a[k].dtype == b[k].dtype and torch.equal(a[k], b[k]), f"{k} differs"


def _responses(out: Path) -> list[str]:
    return [json.loads(x)["response"] for x in (out / "samples.jsonl").read_text().splitlines()]


def _one_line_error(capsys, argv: list[str], *needles: str) -> str:
    code = main(argv)
    err = capsys.readouterr().err.strip()
    assert code != 0 and "Traceback" not in err and err.count("\n") == 0, err
    for needle in needles:
        assert needle in err, err
    return err


# --------------------------------------------------------------------------------------------------
# One process


def test_eval_on_an_intermediate_checkpoint_is_one_command(single_run, tmp_path):
    ckpt = single_run / "checkpoints" / "step_00000002"
    bench = _bench(tmp_path / "bench.jsonl")
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "pasodoble.cli",
            *_eval_args(str(ckpt), bench, tmp_path / "e1", "--role", "solver"),
        ],
        capture_output=True,
        text=True,
        env=ENV,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    results = json.loads((tmp_path / "e1" / "results.json").read_text())
    assert results["model"] == f"{ckpt}/solver" and results["benchmarks"]["bench"]["n"] == 3
    # The run's config.yaml is the default --train-config: its eval.extract is recorded
    assert results["config"]["extract"] == "strict"
    # The same samples as the exported step-2 Solver evaluated with the run's prompt: the checkpoint's
    # weights are what was evaluated (exported weights == solver.pt's, next test).
    exported = tmp_path / "solver2"
    assert main(["export", str(ckpt), "--role", "solver", "--out", str(exported)]) == 0
    extra = ["--train-config", str(single_run / "config.yaml")]
    assert main(_eval_args(str(exported), bench, tmp_path / "e2", *extra)) == 0
    assert _responses(tmp_path / "e1") == _responses(tmp_path / "e2")
    # The role may also be named in the path (what `analyze memorization --model` accepts)
    assert main(_eval_args(f"{ckpt}/proposer", bench, tmp_path / "e3")) == 0
    assert json.loads((tmp_path / "e3" / "results.json").read_text())["model"] == f"{ckpt}/proposer"
    # Resuming into the same --out with the other spelling of the same checkpoint reuses the samples
    assert main(_eval_args(f"{ckpt}/solver", bench, tmp_path / "e1")) == 0
    assert json.loads((tmp_path / "e1" / "results.json").read_text())["reused_problems"] == 3


def test_export_of_the_single_process_layout_loads_with_from_pretrained(single_run, tmp_path):
    ckpt = single_run / "checkpoints" / "step_00000002"
    out = tmp_path / "proposer2"
    proc = subprocess.run(
        [sys.executable, "-m", "pasodoble.cli", "export", str(ckpt), "--role", "proposer", "--out", str(out)],
        capture_output=True,
        text=True,
        env=ENV,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert f"wrote {out}" in proc.stdout and "step 2, none layout" in proc.stdout
    stored = torch.load(ckpt / "proposer.pt", map_location="cpu", weights_only=True)["model"]
    exported = _weights(out)
    _assert_equal(exported, stored)
    assert set(exported) == set(stored)
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(out)
    assert tok.decode(tok("What is 2 + 3?")["input_ids"]) == "What is 2 + 3?"
    info = json.loads((out / "pasodoble_export.json").read_text())
    assert info["role"] == "proposer" and info["step"] == 2 and info["layout"] == "none"
    # The last checkpoint holds the run's final weights; the intermediate one differs (training moved them)
    last = tmp_path / "solver4"
    assert (
        main(
            [
                "export",
                str(single_run / "checkpoints" / "step_00000004"),
                "--role",
                "solver",
                "--out",
                str(last),
            ]
        )
        == 0
    )
    final = load_file(single_run / "solver_final" / "model.safetensors")
    _assert_equal(_weights(last), final)
    first = torch.load(ckpt / "solver.pt", map_location="cpu", weights_only=True)["model"]
    assert any(not torch.equal(first[k], final[k]) for k in final)
    # bfloat16 export: the same weights rounded
    half = tmp_path / "solver4-bf16"
    assert main(["export", str(single_run / "checkpoints" / "step_00000004"), "--role", "solver", "--out", str(half), "--dtype", "bfloat16"]) == 0  # fmt: skip
    w = _weights(half)
    assert all(w[k].dtype == torch.bfloat16 and torch.equal(w[k], final[k].bfloat16()) for k in final)


def test_bad_checkpoints_give_one_line_errors(single_run, tmp_path, capsys):
    run = tmp_path / "run"
    shutil.copytree(single_run, run)
    ckpt = run / "checkpoints" / "step_00000002"
    bench = _bench(tmp_path / "bench.jsonl")
    out = str(tmp_path / "out")
    _one_line_error(
        capsys, ["export", str(run), "--role", "solver", "--out", out], "is a run directory", "step_00000004"
    )
    _one_line_error(capsys, _eval_args(str(run), bench, tmp_path / "e"), "is a run directory")
    _one_line_error(
        capsys, _eval_args(str(ckpt), bench, tmp_path / "e"), "pass --role solver or --role proposer"
    )
    _one_line_error(
        capsys, _eval_args("tiny", bench, tmp_path / "e", "--role", "solver"), "--role applies to"
    )
    _one_line_error(
        capsys, ["export", str(ckpt), "--role", "solver", "--out", str(ckpt / "x")], "inside the checkpoint"
    )
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "notes.txt").write_text("keep")
    _one_line_error(
        capsys, ["export", str(ckpt), "--role", "solver", "--out", str(tmp_path / "full")], "not an empty"
    )
    # A changed byte in the Solver's file is caught by its sha256 before anything is read ...
    data = bytearray((ckpt / "solver.pt").read_bytes())
    data[len(data) // 2] ^= 1
    (ckpt / "solver.pt").write_bytes(bytes(data))
    _one_line_error(capsys, ["export", str(ckpt), "--role", "solver", "--out", out], "solver.pt", "sha256")
    _one_line_error(
        capsys, _eval_args(str(ckpt), bench, tmp_path / "e", "--role", "solver"), "solver.pt", "sha256"
    )
    assert not Path(out).exists()
    # ... while the Proposer's files are intact and still export
    assert main(["export", str(ckpt), "--role", "proposer", "--out", out]) == 0
    capsys.readouterr()
    # Without the run's config.yaml the model is unknown: the error names --train-config
    (run / "config.yaml").rename(tmp_path / "config.yaml")
    _one_line_error(capsys, ["export", str(ckpt), "--role", "proposer", "--out", out + "2"], "--train-config")
    cfg = str(tmp_path / "config.yaml")
    assert main(["export", str(ckpt), "--role", "proposer", "--out", out + "2", "--train-config", cfg]) == 0


def test_a_deepspeed_checkpoint_without_deepspeed_is_a_one_line_error(tmp_path, capsys, monkeypatch):
    run = tmp_path / "run"
    run.mkdir()
    shutil.copy(ROOT / "configs" / "tiny.yaml", run / "config.yaml")
    payload = {"format": 2, "layout": "deepspeed_zero2", "role": "solver", "step": 1, "scheduler": {}}
    ckpt = save_checkpoint(run, 1, tensors={"solver": payload}, state={}, keep=1)
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda n, *a: None if n == "deepspeed" else real(n, *a))
    _one_line_error(
        capsys, ["export", str(ckpt), "--role", "solver", "--out", str(tmp_path / "o")], "deepspeed extra"
    )


# --------------------------------------------------------------------------------------------------
# FSDP2 (2 processes, CPU)


@pytest.mark.slow
def test_fsdp2_checkpoints_evaluate_and_export(fsdp_run, tmp_path, capsys):
    from torch.distributed.checkpoint.format_utils import dcp_to_torch_save

    ckpt = fsdp_run / "checkpoints" / "step_00000002"
    assert (ckpt / "solver.dcp" / ".metadata").is_file()
    out = tmp_path / "solver2"
    assert main(["export", str(ckpt), "--role", "solver", "--out", str(out)]) == 0
    assert "fsdp2 layout" in capsys.readouterr().out
    # DCP's own converter reads the sharded directory into one torch.save file
    dcp_to_torch_save(ckpt / "solver.dcp", tmp_path / "solver.pt")
    converted = torch.load(tmp_path / "solver.pt", map_location="cpu", weights_only=True)["model"]
    exported = _weights(out)
    _assert_equal(exported, converted)
    assert set(exported) == set(converted)
    last = tmp_path / "solver4"
    assert (
        main(
            [
                "export",
                str(fsdp_run / "checkpoints" / "step_00000004"),
                "--role",
                "solver",
                "--out",
                str(last),
            ]
        )
        == 0
    )
    final = load_file(fsdp_run / "solver_final" / "model.safetensors")
    _assert_equal(_weights(last), final)
    assert any(not torch.equal(exported[k], final[k]) for k in final)
    bench = _bench(tmp_path / "bench.jsonl")
    assert main(_eval_args(str(ckpt), bench, tmp_path / "e1", "--role", "proposer")) == 0


@pytest.mark.slow
def test_a_dcp_metadata_file_that_would_run_code_is_refused(fsdp_run, tmp_path, capsys):
    run = tmp_path / "run"
    shutil.copytree(fsdp_run, run)
    ckpt = run / "checkpoints" / "step_00000002"
    marker = tmp_path / "code-ran"

    class Payload:
        def __reduce__(self):
            return (os.system, (f"touch {marker}",))

    metadata = ckpt / "proposer.dcp" / ".metadata"
    metadata.write_bytes(pickle.dumps(Payload()))
    state = json.loads((ckpt / "state.json").read_text())  # as its author would: hashes that match
    state["files"]["proposer.dcp/.metadata"] = sha256_file(metadata)
    (ckpt / "state.json").write_text(json.dumps(state))
    _one_line_error(
        capsys, ["export", str(ckpt), "--role", "proposer", "--out", str(tmp_path / "o")], "refused", "system"
    )
    assert not marker.exists()


# --------------------------------------------------------------------------------------------------
# DeepSpeed ZeRO-2 (2 processes, CPU; optional extra)


@pytest.mark.slow
@pytest.mark.skipif(importlib.util.find_spec("deepspeed") is None, reason="deepspeed is not installed")
def test_deepspeed_checkpoints_evaluate_and_export(tmp_path, capsys):
    run = _make_run(
        tmp_path / "run", 2, 1, "distributed.strategy=deepspeed_zero2", "run.device=cpu", processes=2
    )
    last, first = run / "checkpoints" / "step_00000002", run / "checkpoints" / "step_00000001"
    assert (last / "proposer.deepspeed").is_dir()
    out = tmp_path / "proposer2"
    assert main(["export", str(last), "--role", "proposer", "--out", str(out)]) == 0
    assert "deepspeed_zero2 layout" in capsys.readouterr().out
    final = load_file(run / "proposer_final" / "model.safetensors")
    exported = _weights(out)
    _assert_equal(exported, final)
    assert main(["export", str(first), "--role", "proposer", "--out", str(tmp_path / "proposer1")]) == 0
    earlier = _weights(tmp_path / "proposer1")
    assert any(not torch.equal(earlier[k], final[k]) for k in final)
    bench = _bench(tmp_path / "bench.jsonl")
    assert main(_eval_args(str(first), bench, tmp_path / "e1", "--role", "solver")) == 0
