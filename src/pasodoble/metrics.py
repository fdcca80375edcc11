"""Run logs: ``metrics.jsonl`` (one line per step), ``rollouts.jsonl`` (one line per proposed question),
and experiment trackers (TensorBoard, wandb, MLflow, trackio, ...) through accelerate's tracker classes.

Both JSONL files are appended and flushed line by line. Their byte sizes are part of every checkpoint
(``state()``), and ``restore()`` truncates them back to those sizes, so a resumed run writes exactly the
lines an uninterrupted run would have written after the checkpoint, with no duplicates.
Keys are namespaced: ``proposer/…``, ``solver/…``, ``buffer/…``, ``time/…`` (see docs/metrics.md).

Trackers are accelerate's (``accelerate.tracking``), built by name as ``Accelerator.init_trackers``
builds them, on the main process only. They get the numeric metrics of every logged step; wandb and
TensorBoard also get a table of that step's rollout records. Resuming continues the same tracker run:

- the wandb (and MLflow) run id is written to ``RUN/trackers.json`` when the run starts, and passed
  back on resume, so the resumed run logs into the same wandb run;
- TensorBoard gets ``purge_step`` = the first step after the checkpoint, so events a killed run wrote
  past its last checkpoint are discarded and no step appears twice.

A logger created with ``resume=True`` starts its trackers in ``restore()``, when the checkpoint's step
is known (or at the first log call, if nothing is restored).
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from pasodoble.errors import UserError

TRACKER_IDS = "trackers.json"
# Columns of the rollout table sent to wandb and TensorBoard, in this order, when records have them.
SAMPLE_COLUMNS = (
    "step",
    "phase",
    "index",
    "buffer_id",
    "snippet_id",
    "valid",
    "invalid_reason",
    "pass_rate",
    "proposer_reward",
    "problem",
    "answer",
    "proposer_completion",
    "solver_response",
)


def _jsonable(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if hasattr(value, "item") and callable(value.item):
        return _jsonable(value.item())
    return value


def cut_middle(text: str, max_chars: int) -> str:
    """``text`` with at most ``max_chars`` of its characters: the first and last halves around a marker
    saying how many were cut. Unchanged when short enough or when ``max_chars`` is 0.

    The middle goes because both ends matter: a completion's start shows how it began, its end holds
    the problem, the answer, or where generation was cut off.
    """
    if max_chars <= 0 or len(text) <= max_chars:
        return text
    head = max_chars // 2
    tail = max_chars - head
    return f"{text[:head]}[... {len(text) - max_chars} characters cut ...]{text[len(text) - tail :]}"


def flat_config(config: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """A nested config as ``{"section.field": value}`` with scalar values (lists become JSON text):
    what every tracker's hyperparameter table accepts (TensorBoard's takes no lists or dicts)."""
    flat: dict[str, Any] = {}
    for key, value in config.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            flat.update(flat_config(value, f"{name}."))
        elif isinstance(value, (list, tuple)):
            flat[name] = json.dumps(value)
        elif value is None or isinstance(value, (bool, int, float, str)):
            flat[name] = "null" if value is None else value
        else:
            flat[name] = str(value)
    return flat


def tracker_names(trackers: Sequence[str], *, tensorboard: bool = False, wandb_project: str | None = None):
    """The trackers to start: ``trackers`` plus those the shortcut settings turn on, without repeats."""
    names = list(dict.fromkeys(trackers))
    if tensorboard and "tensorboard" not in names:
        names.append("tensorboard")
    if wandb_project and "wandb" not in names:
        names.append("wandb")
    return names


def _markdown_table(columns: list[str], rows: list[list[Any]]) -> str:
    def cell(value: Any) -> str:
        text = "" if value is None else str(value)
        return text.replace("|", "\\|").replace("\r", "").replace("\n", "<br>")

    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join(cell(v) for v in row) + " |" for row in rows]
    return "\n".join(lines)


class RunLogger:
    """Writes the run's JSONL logs and feeds its trackers on the main process; other ranks hold a
    disabled logger.

    Args:
        run_dir: the run directory (``metrics.jsonl``, ``rollouts.jsonl``, ``trackers.json``, and the
            trackers' local files: ``tensorboard/``, ``wandb/``, ``trackers/``).
        enabled: False on every process but the main one.
        trackers: accelerate tracker names (``run.log_with``).
        tensorboard, wandb_project: the shortcut settings ``run.tensorboard`` / ``run.wandb_project``.
        project: the project (experiment) name in the trackers (wandb_project wins for wandb).
        run_name: the run's name in the trackers (default: the run directory's name).
        config: the run's configuration, stored as the trackers' hyperparameters on a fresh start.
        resume: the run continues from a checkpoint: trackers start in ``restore()``.
        rollouts: also keep ``rollouts.jsonl`` (the SFT trainer keeps only metrics).
        field: the setting that names the trackers, for error messages.
    """

    def __init__(
        self,
        run_dir: str | Path,
        *,
        enabled: bool = True,
        trackers: Sequence[str] = (),
        tensorboard: bool = False,
        wandb_project: str | None = None,
        project: str = "pasodoble",
        run_name: str | None = None,
        config: dict[str, Any] | None = None,
        resume: bool = False,
        rollouts: bool = True,
        field: str = "run.log_with",
    ) -> None:
        self.run_dir = Path(run_dir)
        self.enabled = enabled
        self.metrics_path = self.run_dir / "metrics.jsonl"
        self.rollouts_path = self.run_dir / "rollouts.jsonl"
        self.tracker_names = tracker_names(trackers, tensorboard=tensorboard, wandb_project=wandb_project)
        self.project = project
        self.wandb_project = wandb_project
        self.run_name = run_name or self.run_dir.resolve().name
        self.config = config
        self.field = field
        self.trackers: list[Any] = []
        self._trackers_started = False
        self._resume = resume
        self._next_step = 0  # one past the last step logged: where a resumed TensorBoard purges from
        self._metrics = None
        self._rollouts = None
        _check_available(self.tracker_names, field)  # on every rank: they all stop, none waits alone
        if not enabled:
            return
        self.run_dir.mkdir(parents=True, exist_ok=True)
        self._metrics = open(self.metrics_path, "a", encoding="utf-8")
        if rollouts:
            self._rollouts = open(self.rollouts_path, "a", encoding="utf-8")
        if not resume:
            self._start_trackers(purge_step=None)

    # ------------------------------------------------------------------ trackers

    def _start_trackers(self, purge_step: int | None) -> None:
        self._trackers_started = True
        if not self.enabled or not self.tracker_names:
            return
        ids_path = self.run_dir / TRACKER_IDS
        ids = json.loads(ids_path.read_text()) if ids_path.is_file() else {}
        for name in self.tracker_names:
            tracker = self._make_tracker(name, ids.get(name), purge_step)
            try:
                tracker.start()
            except Exception as exc:  # a tracker's own setup: login, server, files
                message = " ".join(str(exc).split())[:300]
                raise UserError(
                    f"{self.field}: {name} could not start ({type(exc).__name__}: {message})"
                ) from None
            self.trackers.append(tracker)
        if self.config is not None and not self._resume:
            values = flat_config(self.config)
            for tracker in self.trackers:
                tracker.store_init_configuration(values)
        new_ids = dict(ids)
        for tracker in self.trackers:
            run_id = _run_id(tracker)
            if run_id is not None:
                new_ids[tracker.name] = run_id
        if new_ids != ids:
            tmp = ids_path.with_suffix(".json.tmp")
            tmp.write_text(json.dumps(new_ids, indent=1) + "\n")
            os.replace(tmp, ids_path)

    def _make_tracker(self, name: str, run_id: str | None, purge_step: int | None):
        """One of accelerate's tracker classes, with this run's names, directories and resume ids."""
        from accelerate.tracking import LOGGER_TYPE_TO_CLASS

        cls = LOGGER_TYPE_TO_CLASS[name]
        local = self.run_dir / "trackers"
        if name == "tensorboard":  # events in RUN/tensorboard
            kwargs = {} if purge_step is None else {"purge_step": purge_step}
            return cls("tensorboard", str(self.run_dir), **kwargs)
        if name == "wandb":  # files in RUN/wandb; the same run id on resume
            kwargs = {"name": self.run_name, "dir": str(self.run_dir), "resume": "allow"}
            if run_id is not None:
                kwargs["id"] = run_id
            return cls(self.wandb_project or self.project, **kwargs)
        if name == "mlflow":
            return cls(experiment_name=self.project, run_name=self.run_name, run_id=run_id)
        if name == "aim":
            local.mkdir(parents=True, exist_ok=True)
            return cls(self.run_name, str(local))
        if name == "clearml":
            return cls(self.project, task_name=self.run_name)
        if name == "dvclive":
            return cls(None, dir=str(local / "dvclive"))
        return cls(self.project)  # trackio, comet_ml, swanlab: the project is their first argument

    def _ensure_trackers(self) -> None:
        if not self._trackers_started:
            self._start_trackers(purge_step=None)

    # ------------------------------------------------------------------ logging

    def log_metrics(self, step: int, metrics: dict[str, Any], *, trackers_only: bool = False) -> None:
        """One ``metrics.jsonl`` line (unless ``trackers_only``) and the numeric values to the trackers."""
        if not self.enabled:
            return
        line = {"step": step, **{k: _jsonable(v) for k, v in metrics.items()}}
        if not trackers_only:
            self._metrics.write(json.dumps(line) + "\n")
            self._metrics.flush()
        self._next_step = max(self._next_step, step + 1)
        self._ensure_trackers()
        numeric = {
            k: v
            for k, v in line.items()
            if k != "step" and isinstance(v, (int, float)) and not isinstance(v, bool)
        }
        for tracker in self.trackers:
            tracker.log(numeric, step=step)

    def log_rollouts(self, records: list[dict[str, Any]]) -> None:
        """Append rollout records; when their step's metrics were just logged, send the trackers a table."""
        if not self.enabled or not records or self._rollouts is None:
            return
        for rec in records:
            self._rollouts.write(json.dumps(rec, ensure_ascii=False) + "\n")
        self._rollouts.flush()
        step = records[0].get("step")
        if self.trackers and isinstance(step, int) and step + 1 == self._next_step:
            self.log_samples(step, records)

    def log_samples(self, step: int, records: list[dict[str, Any]], name: str = "rollouts") -> None:
        """A table of ``records`` (the columns of ``SAMPLE_COLUMNS`` they have) to wandb and TensorBoard."""
        if not self.enabled:
            return
        self._ensure_trackers()
        rows_in = [_sample_row(r) for r in records]
        columns = [c for c in SAMPLE_COLUMNS if any(c in r for r in rows_in)]
        rows = [[_table_value(r.get(c)) for c in columns] for r in rows_in]
        for tracker in self.trackers:
            if tracker.name == "wandb":
                tracker.log_table(name, columns=columns, data=rows, step=step)
            elif tracker.name == "tensorboard":
                tracker.log({name: _markdown_table(columns, rows)}, step=step)

    # ------------------------------------------------------------------ checkpoints

    def state(self) -> dict[str, int]:
        """Byte sizes of the logs and the next step to log, recorded in checkpoints."""
        if not self.enabled:
            return {}
        state = {"step": self._next_step}
        for key, fh, path in (
            ("metrics_bytes", self._metrics, self.metrics_path),
            ("rollouts_bytes", self._rollouts, self.rollouts_path),
        ):
            if fh is not None:
                fh.flush()
                os.fsync(fh.fileno())
                state[key] = path.stat().st_size
        return state

    def restore(self, state: dict[str, int]) -> None:
        """Continue from a checkpoint's ``state()``: truncate the logs to its sizes (lines written after
        it are rewritten by the resumed run) and start the trackers, TensorBoard purging from its step."""
        if not self.enabled:
            return
        state = state or {}
        for fh, path, key in (
            (self._metrics, self.metrics_path, "metrics_bytes"),
            (self._rollouts, self.rollouts_path, "rollouts_bytes"),
        ):
            if fh is None or key not in state:
                continue
            fh.flush()
            size = min(state[key], path.stat().st_size)
            fh.truncate(size)
            fh.seek(size)
        if "step" in state:
            self._next_step = int(state["step"])
        if not self._trackers_started:
            self._start_trackers(purge_step=state.get("step"))

    def close(self) -> None:
        for fh in (self._metrics, self._rollouts):
            if fh is not None:
                fh.close()
        for tracker in self.trackers:
            tracker.finish()
        self.trackers = []


def _check_available(names: list[str], field: str) -> None:
    """Each tracker's package must be importable: a one-line error naming the package otherwise."""
    import importlib

    from pasodoble.config import TRACKERS
    from pasodoble.errors import EXTRAS, missing_extra

    for name in names:
        if name not in TRACKERS:
            raise UserError(f"{field}: unknown tracker {name!r}; use any of {', '.join(TRACKERS)}")
        available = getattr(importlib.import_module("accelerate.utils"), f"is_{name}_available")
        if not available():
            what = f"{field} includes {name}, but its package is not installed"
            if name in EXTRAS:  # wandb, tensorboard
                raise missing_extra(name, what)
            raise UserError(f"{what}: pip install {name}")


def _run_id(tracker: Any) -> str | None:
    """The id that resumes this tracker's run (wandb, MLflow), or None."""
    if tracker.name == "wandb":
        return tracker.run.id
    if tracker.name == "mlflow":
        return tracker.active_run.info.run_id
    return None


def _sample_row(record: dict[str, Any]) -> dict[str, Any]:
    row = dict(record)
    answers = record.get("solver_answers") or []
    if answers and "response" in answers[0]:
        row["solver_response"] = answers[0]["response"]
    return row


def _table_value(value: Any) -> Any:
    if isinstance(value, (dict, list)):
        return json.dumps(value, ensure_ascii=False)
    return _jsonable(value)
