"""Generation backends behind one Protocol (``RolloutBackend``); ``hf`` needs only transformers."""

from pasodoble.rollout.base import Completion, FinishReason, RolloutBackend, SamplingParams

__all__ = ["Completion", "FinishReason", "RolloutBackend", "SamplingParams", "make_backend"]


def make_backend(name: str, model, tokenizer, *, generation_batch_size: int = 64) -> RolloutBackend:
    """Build a backend by config name (``rollout.backend``); only 'hf' lives in this package today."""
    if name == "hf":
        from pasodoble.rollout.hf import HFBackend

        return HFBackend(model, tokenizer, generation_batch_size=generation_batch_size)
    if name == "vllm":
        from pasodoble.rollout.vllm import VLLMBackend  # type: ignore[import-not-found]

        return VLLMBackend(model, tokenizer, generation_batch_size=generation_batch_size)
    raise ValueError(f"unknown rollout backend {name!r}; use 'hf' or 'vllm'")
