"""A custom Solver reward and a step callback, plugged in by import path.

    python examples/custom_reward.py

The reward (``brevity_reward`` below) keeps the paper's correctness reward and takes a little off long
right answers; the callback prints one line per step. The config names both as ``module:function``
(``rewards.solver_reward`` and ``run.callbacks``); here the module is this script itself, made importable
by putting its folder on ``sys.path``. In a project they would live in your own package. Trains the
shipped toy models for 2 online steps on the CPU (about 20-40 s on 2 cores). Reference: docs/plugins.md.
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

import pasodoble as pd

HERE = Path(__file__).resolve().parent
CONFIG = HERE.parent / "configs" / "toy.yaml"
TOY_MODELS = Path(pd.__file__).resolve().parent / "assets" / "toy"
CALLS = {"reward": 0, "steps": 0}


def brevity_reward(*, correct, responses, question, rng):
    """1 for a right answer, minus up to 0.2 for its length (a response of 400+ characters loses 0.2); 0
    for a wrong one. Deterministic given its inputs, as every plug-in must be (bitwise resume)."""
    CALLS["reward"] += 1
    return [
        (1.0 - 0.2 * min(len(r), 400) / 400) if c else 0.0 for c, r in zip(correct, responses, strict=True)
    ]


def print_step(event):
    """A step callback: observes, never changes the run."""
    if event.kind == "step":
        CALLS["steps"] += 1
        print(f"step {event.step}: solver pass rate {event.metrics.get('solver/pass_rate')}")


def main() -> None:
    sys.path.insert(0, str(HERE))  # so that "custom_reward:brevity_reward" imports this file
    with tempfile.TemporaryDirectory() as tmp:
        cfg = pd.load_config(
            CONFIG,
            overrides=[
                "run.max_steps=2",
                "run.device=cpu",
                "run.progress=false",
                f"run.out_dir={Path(tmp) / 'run'}",
                f"model.name_or_path={TOY_MODELS / 'solver_cold_start'}",
                f"proposer.model_path={TOY_MODELS / 'proposer_cold_start'}",
                f"solver.model_path={TOY_MODELS / 'solver_cold_start'}",
                "rewards.solver_reward=custom_reward:brevity_reward",
                "run.callbacks=[custom_reward:print_step]",
            ],
        )
        result = pd.train(cfg)
        print(result)
        # the module imported by path is this file under its own name: read its counters there
        plugin = sys.modules["custom_reward"]
        assert plugin.CALLS["steps"] == 2, plugin.CALLS
        assert plugin.CALLS["reward"] > 0, "the toy Proposer writes valid questions: the reward was used"
        assert result.updates > 0


if __name__ == "__main__":
    main()
