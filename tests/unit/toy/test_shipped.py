"""The shipped toy models are the default build (`pasodoble toy build` with `BuildSettings()`)."""

import json
from dataclasses import asdict

from pasodoble.toy.build import ASSETS, MODEL_DIRS, BuildSettings


def test_the_shipped_build_is_the_default_build():
    # `toy build --export` ships only the default build; a default changed without a new export
    # would leave the package's models and `build.json` describing another build than the code's
    manifest = json.loads((ASSETS / "build.json").read_text())
    assert manifest["settings"] == asdict(BuildSettings())
    for name in MODEL_DIRS:
        assert (ASSETS / name / "model.safetensors").is_file(), name
    curve = [json.loads(line) for line in (ASSETS / "solver_cold_start_curve.jsonl").open()]
    evaluated = [r["step"] for r in curve if "val_accuracy" in r]
    assert evaluated == [r["step"] for r in manifest["solver_validation_accuracy"]]
    assert evaluated[-1] == curve[-1]["step"] and len(evaluated) >= 2
