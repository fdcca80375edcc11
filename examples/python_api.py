"""The Python API in one script: load a config, change it in Python, train, read the result.

    python examples/python_api.py

Trains the shipped toy models (1.8 M parameters, src/pasodoble/assets/toy) for 2 online dual-play steps
on the CPU (about 15-30 s on 2 cores) in a temporary directory, then prints the result and the first
step's metrics. Reference: docs/python-api.md.
"""

from __future__ import annotations

import json
import tempfile
from pathlib import Path

import pasodoble as pd

CONFIG = Path(__file__).resolve().parent.parent / "configs" / "toy.yaml"
TOY_MODELS = Path(pd.__file__).resolve().parent / "assets" / "toy"  # shipped with the package


def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        cfg = pd.load_config(CONFIG, overrides=["run.max_steps=2", "run.device=cpu"])
        # a Config is plain dataclasses: change it in Python; pd.train validates it before anything loads
        cfg.model.name_or_path = str(TOY_MODELS / "solver_cold_start")
        cfg.proposer.model_path = str(TOY_MODELS / "proposer_cold_start")
        cfg.solver.model_path = str(TOY_MODELS / "solver_cold_start")
        cfg.run.out_dir = str(Path(tmp) / "run")
        cfg.run.progress = False

        result = pd.train(cfg)
        print(result)
        assert result.steps == 2 and not result.interrupted
        assert result.updates > 0, "the toy models should train on at least one of the two steps"

        first = json.loads((result.run_dir / "metrics.jsonl").read_text().splitlines()[0])
        print(
            {k: first[k] for k in ("proposer/valid_rate", "solver/pass_rate", "step/skipped") if k in first}
        )
        assert (result.run_dir / "solver_final" / "config.json").is_file()  # a Hugging Face model directory


if __name__ == "__main__":
    main()
