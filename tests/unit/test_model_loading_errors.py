"""Model loading: a bad model directory is a one-line UserError naming the directory or file and the
config field it came from, never a library traceback (issue 16, item 9)."""

from __future__ import annotations

import pytest

from pasodoble.config import ModelConfig
from pasodoble.errors import UserError
from pasodoble.models import load_model_and_tokenizer


@pytest.fixture
def model_dir(tmp_path, tiny_model, tiny_tokenizer):
    path = tmp_path / "model"
    tiny_model.save_pretrained(path)
    tiny_tokenizer.save_pretrained(path)
    return path


def _error(path, **kwargs) -> str:
    with pytest.raises(UserError) as info:
        load_model_and_tokenizer(str(path), ModelConfig(), **kwargs)
    message = str(info.value)
    assert "\n" not in message
    return message


def test_a_saved_directory_loads(model_dir):
    model, tok = load_model_and_tokenizer(str(model_dir), ModelConfig())
    assert model.config.model_type == "qwen3" and tok.padding_side == "left"


def test_empty_directory_names_the_directory_and_the_field(tmp_path):
    (tmp_path / "empty").mkdir()
    message = _error(tmp_path / "empty", field="solver.model_path")
    assert str(tmp_path / "empty") in message
    assert "no config.json" in message and "(solver.model_path)" in message
    assert "model.name_or_path" not in message


def test_truncated_safetensors_names_the_file(model_dir):
    weights = model_dir / "model.safetensors"
    data = weights.read_bytes()
    weights.write_bytes(data[: len(data) // 2])
    message = _error(model_dir, field="proposer.model_path")
    assert f"model file {weights} (proposer.model_path) is corrupt or truncated" in message


def test_missing_directory_names_the_field_it_came_from(tmp_path):
    message = _error(tmp_path / "nope", field="proposer.model_path")
    assert message == f"model directory {tmp_path / 'nope'} (proposer.model_path) does not exist"
    # without a field the message names no field (it may come from a role's model_path)
    assert _error(tmp_path / "nope") == f"model directory {tmp_path / 'nope'} does not exist"


def test_corrupt_config_is_one_line(model_dir):
    (model_dir / "config.json").write_text("{not json")
    message = _error(model_dir, field="model.name_or_path")
    assert message.startswith(f"cannot load model directory {model_dir} (model.name_or_path): ")


def test_corrupt_tokenizer_is_one_line(model_dir):
    (model_dir / "tokenizer.json").write_text("{not json")
    assert "cannot load tokenizer" in _error(model_dir)
