"""Test fixtures that need no network: a tiny byte-level tokenizer and a ~1 M-parameter Qwen3 model."""

from pasodoble.testing.tiny import (
    CHATML_TEMPLATE,
    SPECIAL_TOKENS,
    TINY_CORPUS,
    build_tiny_model,
    build_tiny_tokenizer,
    tiny_model_config,
)

__all__ = [
    "CHATML_TEMPLATE",
    "SPECIAL_TOKENS",
    "TINY_CORPUS",
    "build_tiny_model",
    "build_tiny_tokenizer",
    "tiny_model_config",
]
