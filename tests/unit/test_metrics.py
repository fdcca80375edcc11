"""Run logs: completion cutting, tracker selection and errors, and trackers that resume (TensorBoard's
purge step, wandb's run id), through accelerate's tracker classes."""

from __future__ import annotations

import json
import time

import pytest

from pasodoble.errors import UserError
from pasodoble.metrics import RunLogger, cut_middle, flat_config, tracker_names


def test_cut_middle_keeps_both_ends():
    assert cut_middle("abcdefghij", 4) == "ab[... 6 characters cut ...]ij"
    # an odd cut: the tail keeps the extra character
    assert cut_middle("abcdefghij", 5) == "ab[... 5 characters cut ...]hij"
    assert cut_middle("abcdefghij", 10) == "abcdefghij"
    assert cut_middle("abcdefghij", 0) == "abcdefghij"  # 0 keeps everything
    assert cut_middle("", 3) == ""


def test_flat_config_has_only_scalars():
    flat = flat_config({"run": {"seed": 3, "log_with": ["wandb"], "name": None}, "x": 1.5})
    assert flat == {"run.seed": 3, "run.log_with": '["wandb"]', "run.name": "null", "x": 1.5}


def test_tracker_names_from_the_shortcuts():
    assert tracker_names([]) == []
    assert tracker_names(["wandb", "wandb"], tensorboard=True, wandb_project="p") == ["wandb", "tensorboard"]
    assert tracker_names(["tensorboard"], tensorboard=True) == ["tensorboard"]


def test_unknown_or_missing_tracker_is_a_one_line_error(tmp_path, monkeypatch):
    with pytest.raises(UserError, match="run.log_with: unknown tracker 'nope'"):
        RunLogger(tmp_path / "a", trackers=["nope"])
    import accelerate.utils

    monkeypatch.setattr(accelerate.utils, "is_wandb_available", lambda: False)
    with pytest.raises(UserError, match=r"--log-with includes wandb, but its package is not installed"):
        RunLogger(tmp_path / "b", trackers=["wandb"], field="--log-with")


def test_jsonl_logs_truncate_to_the_checkpoint_and_keep_the_next_step(tmp_path):
    logger = RunLogger(tmp_path)
    for step in range(3):
        logger.log_metrics(step, {"x": float(step)})
        logger.log_rollouts([{"step": step, "problem": "p"}])
        if step == 1:
            state = logger.state()
    logger.close()
    assert state["step"] == 2
    resumed = RunLogger(tmp_path, resume=True)
    resumed.restore(state)
    resumed.log_metrics(2, {"x": 2.0})
    resumed.close()
    assert [json.loads(x)["step"] for x in (tmp_path / "metrics.jsonl").read_text().splitlines()] == [0, 1, 2]
    assert len((tmp_path / "rollouts.jsonl").read_text().splitlines()) == 2
    # a state without sizes (an SFT run restores only the step) truncates nothing
    again = RunLogger(tmp_path, resume=True)
    again.restore({"step": 3})
    again.close()
    assert len((tmp_path / "metrics.jsonl").read_text().splitlines()) == 3


def _events(path):
    from tensorboard.backend.event_processing.event_file_loader import EventFileLoader

    return list(EventFileLoader(str(path)).Load())


def test_tensorboard_resume_purges_from_the_checkpoint_step(tmp_path):
    pytest.importorskip("tensorboard")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    logger = RunLogger(tmp_path, tensorboard=True, config={"run": {"seed": 1}})
    for step in range(5):
        logger.log_metrics(step, {"loss": float(step), "phase": "online"})
        logger.log_rollouts([{"step": step, "problem": f"p{step}", "proposer_completion": "a|b\nc"}])
        if step == 2:
            state = logger.state()
    logger.close()  # as if killed after step 4: steps 3 and 4 are past the checkpoint
    # A real resume is a later process, so its event file's name carries a later second. TensorBoard reads
    # files in name order; within one second the process-wide writer counter decides, and ".10" sorts
    # before ".9", which would read the resumed file first and undo the purge (seen once in CI).
    started = int(time.time())
    while int(time.time()) == started:
        time.sleep(0.02)
    resumed = RunLogger(tmp_path, tensorboard=True, resume=True)
    resumed.restore(state)
    for step in range(3, 5):
        resumed.log_metrics(step, {"loss": 10.0 + step})
    resumed.close()

    # events.out.tfevents.<time>.<host>.<pid>.<writer counter>: in the order the writers were made (the
    # counter is process-wide, so ".10" sorts before ".9" by name in a long test session)
    files = sorted(
        (tmp_path / "tensorboard").glob("events.out.tfevents.*"),
        key=lambda p: (int(p.name.split(".")[3]), int(p.name.rsplit(".", 1)[1])),
    )
    assert len(files) == 2
    starts = [e for e in _events(files[1]) if e.HasField("session_log")]
    assert [(e.step, e.session_log.status) for e in starts] == [(3, 1)]  # SessionLog.START at step 3
    acc = EventAccumulator(str(tmp_path / "tensorboard"))
    acc.Reload()
    assert [(s.step, s.value) for s in acc.Scalars("loss")] == [(0, 0), (1, 1), (2, 2), (3, 13), (4, 14)]
    # the sample table: one text summary per step, markdown with '|' escaped and newlines as <br>
    texts = acc.Tensors("rollouts/text_summary")
    assert [t.step for t in texts][:3] == [0, 1, 2]
    table = texts[0].tensor_proto.string_val[0].decode()
    assert "| step | problem | proposer_completion |" in table and "a\\|b<br>c" in table


def test_wandb_offline_resume_continues_the_same_run(tmp_path, monkeypatch):
    pytest.importorskip("wandb")
    for var in ("WANDB_CONFIG_DIR", "WANDB_CACHE_DIR", "WANDB_DATA_DIR", "WANDB_ARTIFACT_DIR"):
        monkeypatch.setenv(var, str(tmp_path / "wandb_home"))
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SILENT", "true")
    run = tmp_path / "my-run"
    logger = RunLogger(run, wandb_project="proj", config={"run": {"seed": 1}})
    logger.log_metrics(0, {"loss": 1.0})
    logger.log_rollouts([{"step": 0, "problem": "p", "solver_answers": [{"pred": "1", "response": "r"}]}])
    state = logger.state()
    first = logger.trackers[0].run
    assert (first.name, first.project) == ("my-run", "proj")
    logger.close()
    run_id = json.loads((run / "trackers.json").read_text())["wandb"]
    assert run_id == first.id

    resumed = RunLogger(run, wandb_project="proj", resume=True)
    assert resumed.trackers == []  # started by restore(), once the checkpoint is known
    resumed.restore(state)
    assert resumed.trackers[0].run.id == run_id
    resumed.log_metrics(1, {"loss": 0.5})
    resumed.close()
    offline = sorted(p.name for p in (run / "wandb").glob("offline-run-*"))
    # offline-run-<time>-<id>, and -<id>-1 when both started within one second
    assert len(offline) == 2 and all(f"-{run_id}" in name for name in offline)
    assert list((run / "wandb").glob(f"offline-run-*-{run_id}/files/media/table/rollouts_0_*.table.json"))
