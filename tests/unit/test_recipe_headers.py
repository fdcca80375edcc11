"""The recipe headers state no memory or time figures (they went stale: 40.4 GiB stood where the topology
tool says 34.0); they name the command that computes them from the recipe as it stands."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
RECIPES = sorted((ROOT / "configs" / "recipes").glob("*.yaml"))


@pytest.mark.parametrize("recipe", RECIPES, ids=[p.stem for p in RECIPES])
def test_a_recipe_header_names_the_tool_instead_of_its_figures(recipe):
    header = recipe.read_text().split("\nmodel:")[0]
    assert not re.search(r"\d\s*GiB", header), "a memory figure in the header"
    assert not re.search(r"\d+ s\b|\d+ h\b", header), "a time figure in the header"
    command = f"python -m pasodoble.topology configs/recipes/{recipe.name} --gpus 8 --gpu-memory-gib 80"
    assert header.count(command) >= 1


def test_the_named_command_prints_the_figures(capsys):
    from pasodoble.topology import main

    recipe = ROOT / "configs" / "recipes" / "qwen3-1.7b-online.yaml"
    main([str(recipe), "--gpus", "8", "--gpu-memory-gib", "80"])
    out = capsys.readouterr().out
    assert re.search(r"learner GPU \(training\): \d+\.\d GiB", out), out
    assert re.search(r"h100 mean completion 1500: step \d+ s, run \d+\.\d h", out), out
