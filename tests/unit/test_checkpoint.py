"""Atomic checkpoints, keep-last-K, corruption errors, RNG round trip, log truncation on resume."""

from __future__ import annotations

import json
import random

import numpy as np
import pytest
import torch

from pasodoble.checkpoint import (
    latest_checkpoint,
    list_checkpoints,
    load_checkpoint,
    rng_state,
    save_checkpoint,
    set_rng_state,
)
from pasodoble.errors import UserError
from pasodoble.metrics import RunLogger


def test_save_load_round_trip_and_keep_last_k(tmp_path):
    for step in (1, 2, 3):
        save_checkpoint(
            tmp_path, step, tensors={"w": {"x": torch.arange(step)}}, state={"step": step}, keep=2
        )
    names = [p.name for p in list_checkpoints(tmp_path)]
    assert names == ["step_00000002", "step_00000003"]
    tensors, state = load_checkpoint(latest_checkpoint(tmp_path))
    assert state == {"step": 3}
    assert torch.equal(tensors["w"]["x"], torch.arange(3))


def test_interrupted_write_is_not_a_checkpoint(tmp_path):
    save_checkpoint(tmp_path, 1, tensors={}, state={"a": 1}, keep=3)
    # A crash mid-write leaves only a .tmp directory: it is ignored and cleaned by the next save.
    partial = tmp_path / "checkpoints" / "step_00000002.tmp"
    partial.mkdir()
    (partial / "state.json").write_text("{")
    assert latest_checkpoint(tmp_path).name == "step_00000001"
    save_checkpoint(tmp_path, 3, tensors={}, state={}, keep=3)
    assert not partial.exists()


def test_corrupt_checkpoint_names_the_file(tmp_path):
    path = save_checkpoint(tmp_path, 1, tensors={"solver": {"w": torch.ones(2)}}, state={}, keep=1)
    (path / "solver.pt").write_bytes(b"garbage")
    with pytest.raises(UserError, match=r"solver\.pt does not match the sha256"):
        load_checkpoint(path)
    with pytest.raises(UserError, match=r"solver\.pt is unreadable or corrupt"):
        load_checkpoint(path, verify=False)
    (path / "state.json").write_text("{not json")
    with pytest.raises(UserError, match=r"state\.json is unreadable or corrupt"):
        load_checkpoint(path)
    (path / "state.json").write_text(json.dumps({"format": 99}))
    with pytest.raises(UserError, match="format 99"):
        load_checkpoint(path)
    (path / "COMPLETE").unlink()
    with pytest.raises(UserError, match="incomplete"):
        load_checkpoint(path)


def test_bytes_changed_inside_tensor_data_are_caught_and_the_previous_checkpoint_named(tmp_path):
    """Issue 16.5: overwriting a weight's bytes (here with 3.4e38) used to resume silently."""
    for step in (1, 2):
        save_checkpoint(tmp_path, step, tensors={"solver": {"w": torch.zeros(64)}}, state={}, keep=3)
    path = latest_checkpoint(tmp_path)
    data = bytearray((path / "solver.pt").read_bytes())
    at = data.find(bytes(4 * 16))  # inside the zeros of the tensor's storage
    data[at : at + 4] = np.float32(3.4e38).tobytes()
    (path / "solver.pt").write_bytes(bytes(data))
    # the damaged file still unpickles (this is what resumed silently before) ...
    assert torch.load(path / "solver.pt", weights_only=True)["w"].max() == pytest.approx(3.4e38, rel=1e-3)
    # ... but the recorded hash refuses it and names the fallback
    with pytest.raises(UserError, match=r"step_00000002/solver\.pt does not match .*step_00000001"):
        load_checkpoint(path)
    (path / "solver.pt").unlink()
    with pytest.raises(UserError, match=r"solver\.pt is missing.*step_00000001"):
        load_checkpoint(path)


def test_checkpoints_never_execute_pickled_code(tmp_path):
    """Issue 16.4: a crafted rng.pt created a file on --resume (torch.load with weights_only=False)."""

    class Payload:
        def __reduce__(self):
            return (open, (str(tmp_path / "pwned"), "w"))

    path = save_checkpoint(tmp_path, 1, tensors={"rng": rng_state()}, state={}, keep=1)
    with open(path / "rng.pt", "wb") as fh:
        torch.save({"x": Payload()}, fh)
    with pytest.raises(UserError, match="unreadable or corrupt"):
        load_checkpoint(path, verify=False)  # even past the hash check, nothing runs
    assert not (tmp_path / "pwned").exists()


def test_rng_state_round_trip_through_a_weights_only_file(tmp_path):
    np.random.randn()  # leave a cached Gaussian in numpy's state
    random.gauss(0, 1)
    torch.save(rng_state(), tmp_path / "rng.pt")
    a = (random.random(), random.gauss(0, 1), np.random.rand(), np.random.randn(), torch.rand(1).item())
    set_rng_state(torch.load(tmp_path / "rng.pt", weights_only=True))
    assert (
        random.random(),
        random.gauss(0, 1),
        np.random.rand(),
        np.random.randn(),
        torch.rand(1).item(),
    ) == a


def test_logger_restore_truncates_to_checkpoint(tmp_path):
    log = RunLogger(tmp_path)
    log.log_metrics(1, {"solver/loss": 1.0})
    log.log_rollouts([{"step": 1, "problem": "p"}])
    saved = log.state()
    log.log_metrics(2, {"solver/loss": float("nan")})
    log.log_rollouts([{"step": 2}])
    log.close()
    log = RunLogger(tmp_path)
    log.restore(saved)
    log.log_metrics(2, {"solver/loss": 0.5})
    log.close()
    lines = [json.loads(x) for x in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert lines == [{"step": 1, "solver/loss": 1.0}, {"step": 2, "solver/loss": 0.5}]
    assert (tmp_path / "rollouts.jsonl").read_text().splitlines() == ['{"step": 1, "problem": "p"}']
