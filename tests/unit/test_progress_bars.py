"""run.progress=false silences transformers' bars too ("Loading weights" while a model loads), and
restores them afterwards."""

from __future__ import annotations

from pathlib import Path

from transformers.utils import logging as hf_logging

from pasodoble.config import ModelConfig
from pasodoble.models import load_model_and_tokenizer

TOY = Path(__file__).resolve().parents[2] / "src" / "pasodoble" / "assets" / "toy" / "solver_cold_start"


def test_loading_bars_follow_progress(capfd):
    load_model_and_tokenizer(str(TOY), ModelConfig(), dtype="float32", progress=False)
    assert "Loading weights" not in capfd.readouterr().err
    assert hf_logging.is_progress_bar_enabled()  # restored
    load_model_and_tokenizer(str(TOY), ModelConfig(), dtype="float32", progress=True)
    assert "Loading weights" in capfd.readouterr().err  # the check above can fail
