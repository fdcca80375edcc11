"""Generation backends behind one Protocol (``RolloutBackend``); ``hf`` and ``hf_batched`` need only
transformers, ``vllm`` the vllm extra."""

from pasodoble.rollout.base import Completion, FinishReason, RolloutBackend, SamplingParams

__all__ = ["Completion", "FinishReason", "RolloutBackend", "SamplingParams", "make_backend"]


def make_backend(
    name: str,
    model,
    tokenizer,
    *,
    generation_batch_size: int = 64,
    role: str | None = None,
    config=None,
    compute_dtype=None,
) -> RolloutBackend:
    """Build a backend by config name (``rollout.backend``: hf, hf_batched or vllm).

    ``role`` ('proposer' / 'solver') and ``config`` (the run's ``Config``) are used by the vllm backend:
    its mode, server URL, memory share and timeouts come from ``config.vllm``. ``compute_dtype`` (a
    ``torch.dtype`` or None) is the transformers backends' decode dtype (see ``HFBackend``).
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
        from pasodoble.errors import UserError

        try:
            from pasodoble.rollout.vllm import VLLMBackend
        except ImportError as exc:
            raise UserError(
                "rollout.backend=vllm could not be loaded: install the vllm extra "
                f"(pip install 'pasodoble[vllm]') on a CUDA machine ({exc})"
            ) from None
        if role is None or config is None:
            raise UserError(
                "rollout.backend=vllm needs make_backend(..., role=, config=) so that vllm.* (mode, URLs, "
                "memory share, timeouts) apply; the caller did not pass them"
            )
        return VLLMBackend(
            model, tokenizer, generation_batch_size=generation_batch_size, role=role, config=config
        )
    raise ValueError(f"unknown rollout backend {name!r}; use 'hf', 'hf_batched' or 'vllm'")
