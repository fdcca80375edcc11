"""Generation backends, each a ``GenerationBackend`` (``base.py``: the lifecycle); ``hf`` and ``hf_batched``
need only transformers, ``vllm`` the vllm extra."""

from pasodoble.rollout.base import (
    Completion,
    FinishReason,
    GenerationBackend,
    RolloutBackend,
    SamplingParams,
)

__all__ = [
    "Completion",
    "FinishReason",
    "GenerationBackend",
    "RolloutBackend",
    "SamplingParams",
    "make_backend",
]


def make_backend(
    name: str,
    model,
    tokenizer,
    *,
    generation_batch_size: int = 64,
    compute_dtype=None,
    role: str = "policy",
    vllm_cfg=None,
    engine_dtype: str = "bfloat16",
    seed: int = 0,
    max_model_len: int = 8192,
) -> GenerationBackend:
    """Build a backend by config name (``rollout.backend``: hf, hf_batched or vllm).

    ``compute_dtype`` (a ``torch.dtype`` or None) is the transformers backends' decode dtype (see
    ``HFBackend``). The vllm backend takes the ``vllm`` section (``vllm_cfg``, a ``VLLMConfig``; its
    defaults when None), ``role`` ('proposer' / 'solver': picks the server URL), the engine's dtype, seed
    and context length.
    """
    if name == "hf":
        from pasodoble.rollout.hf import HFBackend

        return HFBackend(
            model, tokenizer, generation_batch_size=generation_batch_size, compute_dtype=compute_dtype
        )
    if name == "hf_batched":
        from pasodoble.rollout.hf_batched import HFBatchedBackend

        return HFBatchedBackend(
            model, tokenizer, generation_batch_size=generation_batch_size, compute_dtype=compute_dtype
        )
    if name == "vllm":
        from pasodoble.rollout.vllm import VLLMBackend

        return VLLMBackend(
            model,
            tokenizer,
            role=role,
            vllm_cfg=vllm_cfg,
            dtype=engine_dtype,
            seed=seed,
            max_model_len=max_model_len,
            generation_batch_size=generation_batch_size,
        )
    raise ValueError(f"unknown rollout backend {name!r}; use 'hf', 'hf_batched' or 'vllm'")
