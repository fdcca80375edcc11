"""Run tiny dual-play with the scripted backend; optionally SIGKILL itself when a step begins.

python -m tests.integration.workers.run_scripted OUT_DIR MODE TOTAL_STEPS CHECKPOINT_EVERY
    [--kill-at-step S] [--resume] [key=value ...]

from the repository root; also under ``torchrun ... -m tests.integration.workers.run_scripted`` (e.g. with
``distributed.strategy=fsdp2 run.device=cpu``).
"""

from __future__ import annotations

import argparse
import os
import signal
from pathlib import Path

from pasodoble.config import load_config
from pasodoble.dual_play import DualPlay
from pasodoble.testing.scripted import scripted_factory
from pasodoble.train import resume_training, run_training

CONFIG = Path(__file__).resolve().parents[3] / "configs" / "tiny.yaml"


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("out")
    ap.add_argument("mode")
    ap.add_argument("steps", type=int)
    ap.add_argument("every", type=int)
    ap.add_argument("--kill-at-step", type=int)
    ap.add_argument("--resume", action="store_true")
    ap.add_argument("overrides", nargs="*", help="extra key=value overrides of a new run")
    args = ap.parse_intermixed_args()
    if args.kill_at_step is not None:
        for name in ("online_step", "proposer_phase_step", "solver_phase_step"):
            original = getattr(DualPlay, name)

            def wrapped(self, step, _original=original):
                if step == args.kill_at_step:
                    os.kill(os.getpid(), signal.SIGKILL)
                return _original(self, step)

            setattr(DualPlay, name, wrapped)
    overrides = [
        f"run.out_dir={args.out}",
        f"run.mode={args.mode}",
        f"run.max_steps={args.steps}",
        f"run.checkpoint_every={args.every}",
        "run.progress=false",
        "run.seed=3",
        *args.overrides,
    ]
    if args.resume:
        resume_training(args.out, backend_factory=scripted_factory)
    else:
        run_training(load_config(CONFIG, overrides), backend_factory=scripted_factory)


if __name__ == "__main__":
    main()
