"""torchrun worker: tiny online dual-play on 2 processes; each rank dumps what it decided per step.

torchrun --nproc_per_node 2 -m tests.integration.workers.ddp_dual_play OUT_DIR STEPS
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from pasodoble import distributed as dist
from pasodoble.config import load_config
from pasodoble.dual_play import DualPlay
from pasodoble.testing.scripted import scripted_factory
from pasodoble.train import run_training

CONFIG = Path(__file__).resolve().parents[3] / "configs" / "tiny.yaml"


def main() -> None:
    out, steps = Path(sys.argv[1]), int(sys.argv[2])
    records: list[dict] = []
    original = DualPlay.online_step

    def recording(self, step):
        result = original(self, step)
        records.append(
            {
                "step": step,
                "skipped": result.skipped,
                "trained": result.trained,
                "rewards": [r["proposer_reward"] for r in result.rollouts],
                "advantages": [r["proposer_advantage"] for r in result.rollouts],
                "solver_trained": [r["solver_trained"] for r in result.rollouts],
            }
        )
        return result

    DualPlay.online_step = recording
    cfg = load_config(
        CONFIG,
        [
            f"run.out_dir={out / 'run'}",
            f"run.max_steps={steps}",
            "run.progress=false",
            "run.seed=5",
            "run.checkpoint_every=0",
        ],
    )
    run_training(cfg, backend_factory=scripted_factory)
    (out / f"rank{dist.rank()}.json").write_text(json.dumps({"world": dist.world_size(), "records": records}))


if __name__ == "__main__":
    main()
