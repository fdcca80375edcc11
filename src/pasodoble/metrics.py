"""Run logs: ``metrics.jsonl`` (one line per step), ``rollouts.jsonl`` (one line per proposed question),
optional TensorBoard and wandb.

Both JSONL files are appended and flushed line by line. Their byte sizes are part of every checkpoint
(``state()``), and ``restore()`` truncates them back to those sizes, so a resumed run writes exactly the
lines an uninterrupted run would have written after the checkpoint, with no duplicates.
Keys are namespaced: ``proposer/…``, ``solver/…``, ``buffer/…``, ``time/…`` (see docs/metrics.md).
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path
from typing import Any


def _jsonable(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if hasattr(value, "item") and callable(value.item):
        return _jsonable(value.item())
    return value


class RunLogger:
    """Writes the run's JSONL logs on the main process; other ranks hold a disabled logger."""

    def __init__(
        self,
        run_dir: str | Path,
        *,
        enabled: bool = True,
        tensorboard: bool = False,
        wandb_project: str | None = None,
        config: dict[str, Any] | None = None,
    ) -> None:
        self.run_dir = Path(run_dir)
        self.enabled = enabled
        self.metrics_path = self.run_dir / "metrics.jsonl"
        self.rollouts_path = self.run_dir / "rollouts.jsonl"
        self._metrics = None
        self._rollouts = None
        self._tb = None
        self._wandb = None
        if not enabled:
            return
        self.run_dir.mkdir(parents=True, exist_ok=True)
        self._metrics = open(self.metrics_path, "a", encoding="utf-8")
        self._rollouts = open(self.rollouts_path, "a", encoding="utf-8")
        if tensorboard:
            try:
                from torch.utils.tensorboard import SummaryWriter
            except ImportError as exc:  # pragma: no cover - depends on the optional extra
                from pasodoble.errors import UserError

                raise UserError(
                    "run.tensorboard=true needs the tensorboard extra: pip install -e '.[tensorboard]'"
                ) from exc
            self._tb = SummaryWriter(str(self.run_dir / "tensorboard"))
        if wandb_project:
            try:
                import wandb
            except ImportError as exc:  # pragma: no cover - depends on the optional extra
                from pasodoble.errors import UserError

                raise UserError("run.wandb_project needs the wandb extra: pip install -e '.[wandb]'") from exc
            self._wandb = wandb.init(
                project=wandb_project, dir=str(self.run_dir), config=config, resume="allow"
            )

    def log_metrics(self, step: int, metrics: dict[str, Any]) -> None:
        if not self.enabled:
            return
        line = {"step": step, **{k: _jsonable(v) for k, v in metrics.items()}}
        self._metrics.write(json.dumps(line) + "\n")
        self._metrics.flush()
        numeric = {k: v for k, v in line.items() if isinstance(v, (int, float)) and not isinstance(v, bool)}
        if self._tb is not None:
            for k, v in numeric.items():
                if k != "step":
                    self._tb.add_scalar(k, v, step)
        if self._wandb is not None:
            self._wandb.log(numeric, step=step)

    def log_rollouts(self, records: list[dict[str, Any]]) -> None:
        if not self.enabled or not records:
            return
        for rec in records:
            self._rollouts.write(json.dumps(rec, ensure_ascii=False) + "\n")
        self._rollouts.flush()

    def state(self) -> dict[str, int]:
        """Byte sizes of the logs, recorded in checkpoints."""
        if not self.enabled:
            return {}
        for fh in (self._metrics, self._rollouts):
            fh.flush()
            os.fsync(fh.fileno())
        return {
            "metrics_bytes": self.metrics_path.stat().st_size,
            "rollouts_bytes": self.rollouts_path.stat().st_size,
        }

    def restore(self, state: dict[str, int]) -> None:
        """Truncate the logs to a checkpoint's sizes: lines written after it are rewritten by the resumed run."""
        if not self.enabled or not state:
            return
        for fh, path, key in (
            (self._metrics, self.metrics_path, "metrics_bytes"),
            (self._rollouts, self.rollouts_path, "rollouts_bytes"),
        ):
            fh.flush()
            size = min(state.get(key, 0), path.stat().st_size)
            fh.truncate(size)
            fh.seek(size)

    def close(self) -> None:
        for fh in (self._metrics, self._rollouts):
            if fh is not None:
                fh.close()
        if self._tb is not None:
            self._tb.close()
        if self._wandb is not None:
            self._wandb.finish()
