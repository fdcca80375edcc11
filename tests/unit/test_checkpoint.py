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
    with pytest.raises(UserError, match=r"solver\.pt is unreadable or corrupt"):
        load_checkpoint(path)
    (path / "state.json").write_text("{not json")
    with pytest.raises(UserError, match=r"state\.json is unreadable or corrupt"):
        load_checkpoint(path)
    (path / "state.json").write_text(json.dumps({"format": 99}))
    with pytest.raises(UserError, match="format 99"):
        load_checkpoint(path)
    (path / "COMPLETE").unlink()
    with pytest.raises(UserError, match="incomplete"):
        load_checkpoint(path)


def test_rng_state_round_trip():
    state = rng_state()
    a = (random.random(), np.random.rand(), torch.rand(1).item())
    set_rng_state(state)
    assert (random.random(), np.random.rand(), torch.rand(1).item()) == a


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
