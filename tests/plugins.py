"""Plug-ins the tests name by import path (``tests.plugins:...``; the repository root on PYTHONPATH).

Each one records its calls in the file named by the environment variable ``PLUGIN_LOG`` (when set), so
a test run in another process can show that the plug-in was used.
"""

from __future__ import annotations

import json
import os


def _log(record: dict) -> None:
    path = os.environ.get("PLUGIN_LOG")
    if path:
        with open(path, "a", encoding="utf-8") as fh:
            fh.write(json.dumps(record) + "\n")


def my_reward(*, correct, responses, question, rng):
    """1 for a right answer, and half a point for a wrong one that is short (a length-shaped reward)."""
    out = [1.0 if c else (0.5 if len(r) < 40 else 0.0) for c, r in zip(correct, responses, strict=True)]
    _log({"plugin": "solver_reward", "problem": question.problem, "rewards": out})
    return out


def flat_proposer_reward(*, p_tilde, diversity, question, cfg):
    """0.5 for every valid question the Solver sometimes solves, else 0."""
    reward = 0.5 if cfg.tau_low < p_tilde < 1.0 else 0.0
    _log({"plugin": "proposer_reward", "p_tilde": p_tilde, "reward": reward})
    return reward


def record_step(event):
    """A step callback: one line per step and per checkpoint."""
    _log(
        {
            "plugin": "callback",
            "kind": event.kind,
            "step": event.step,
            "path": str(event.path) if event.path else None,
            "metrics": sorted(event.metrics)[:3],
            "rollouts": len(event.rollouts),
        }
    )


not_callable = 42
