"""Test fixtures only: the scripted rollout backend (``pasodoble.testing.scripted``) and the tiny
model's toy task (``pasodoble.testing.tiny``).

The tiny model family (``model.name_or_path: tiny``) is product code in ``pasodoble.tiny``; its names
are re-exported here so that code importing them from ``pasodoble.testing`` keeps working.
"""

from pasodoble.tiny import (
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
