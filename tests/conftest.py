"""Shared test setup: no hub access, and the tiny model/tokenizer fixtures (built in < 1 s, no network)."""

from __future__ import annotations

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import pytest  # noqa: E402
import torch  # noqa: E402

from pasodoble.testing.tiny import build_tiny_model, build_tiny_tokenizer  # noqa: E402


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
