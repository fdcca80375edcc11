"""GRPO math as pure functions: group advantages, per-token log-probabilities, the policy loss.

Tensor names carry their shapes: ``B`` sequences, ``T`` completion tokens (padded), ``L`` prompt +
completion length, ``V`` vocabulary. Everything here is deterministic and free of global state; the
``Learner`` (learner.py) wires it to a model and an optimizer. Formulas are written out in
``docs/learner.md``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch

LOSS_TYPES = ("dr_grpo", "grpo", "dapo")
ENTROPY_POSITIONS = 512  # positions per softmax of the entropy metric (two fp32 [512, V] buffers)
ADVANTAGE_NORMS = ("group", "batch", "none")


# --------------------------------------------------------------------------------------------------
# Advantages


def group_advantages(
    rewards: Sequence[float] | torch.Tensor, group_size: int, norm: str = "group", eps: float = 1e-4
) -> torch.Tensor:
    """GRPO advantages of rewards laid out as consecutive groups of ``group_size``.

    ``A_i = (r_i - mean(group(i))) / (std + eps)`` where std is the *sample* (unbiased, n - 1)
    standard deviation -- ``torch.std``'s default, as in the reference GRPO implementations -- of
    the group (``norm='group'``) or of the whole batch (``norm='batch'``); ``norm='none'`` only
    centers. A group whose rewards are all equal gets advantages exactly 0.

    Returns a float32 tensor of shape ``[len(rewards)]``.
    """
    if norm not in ADVANTAGE_NORMS:
        raise ValueError(f"norm must be one of {ADVANTAGE_NORMS}; got {norm!r}")
    if group_size < 2:
        raise ValueError(f"group_size must be >= 2; got {group_size}")
    r = torch.as_tensor(rewards, dtype=torch.float32).flatten()
    if r.numel() % group_size != 0:
        raise ValueError(f"{r.numel()} rewards do not split into groups of {group_size}")
    r_GN = r.view(-1, group_size)
    centered_GN = r_GN - r_GN.mean(dim=1, keepdim=True)
    if norm == "group":
        centered_GN = centered_GN / (r_GN.std(dim=1, keepdim=True) + eps)
    elif norm == "batch":
        centered_GN = centered_GN / (r.std() + eps)
    return centered_GN.flatten()


# --------------------------------------------------------------------------------------------------
# Packing prompt + completion token ids into model inputs


@dataclass
class PackedBatch:
    """Prompts left-padded to a common length ``P``, completions right-padded to ``T``; ``L = P + T``.

    ``position_ids_BL`` start at 0 at each sequence's first real token (left padding does not
    shift positions), exactly as in the rollout backend. ``attention_mask_BL`` / ``position_ids_BL``
    are None when no prompt is padded: right padding alone never influences real tokens under
    causal attention, so the cheaper unmasked path gives the same log-probabilities.
    """

    input_ids_BL: torch.Tensor
    attention_mask_BL: torch.Tensor | None
    position_ids_BL: torch.Tensor | None
    completion_ids_BT: torch.Tensor
    completion_mask_BT: torch.Tensor

    def to(self, device: torch.device | str) -> PackedBatch:
        move = lambda x: None if x is None else x.to(device)  # noqa: E731
        return PackedBatch(*(move(getattr(self, f)) for f in self.__dataclass_fields__))


def pack_sequences(
    prompts: Sequence[Sequence[int]], completions: Sequence[Sequence[int]], pad_token_id: int
) -> PackedBatch:
    """Lay out (prompt, completion) token-id pairs for one forward pass (see ``PackedBatch``)."""
    if len(prompts) != len(completions) or not prompts:
        raise ValueError("need the same, non-zero number of prompts and completions")
    B = len(prompts)
    P = max(len(p) for p in prompts)
    T = max(1, max(len(c) for c in completions))
    input_ids_BL = torch.full((B, P + T), pad_token_id, dtype=torch.long)
    mask_BL = torch.zeros((B, P + T), dtype=torch.long)
    comp_BT = torch.full((B, T), pad_token_id, dtype=torch.long)
    comp_mask_BT = torch.zeros((B, T), dtype=torch.float32)
    for i, (p, c) in enumerate(zip(prompts, completions, strict=True)):
        if not p:
            raise ValueError("every prompt needs at least one token")
        input_ids_BL[i, P - len(p) : P] = torch.as_tensor(list(p), dtype=torch.long)
        mask_BL[i, P - len(p) : P + len(c)] = 1
        if c:
            c_t = torch.as_tensor(list(c), dtype=torch.long)
            input_ids_BL[i, P : P + len(c)] = c_t
            comp_BT[i, : len(c)] = c_t
            comp_mask_BT[i, : len(c)] = 1.0
    left_padded = any(len(p) < P for p in prompts)
    if left_padded:
        positions_BL = (mask_BL.cumsum(-1) - 1).clamp(min=0)
        return PackedBatch(input_ids_BL, mask_BL, positions_BL, comp_BT, comp_mask_BT)
    return PackedBatch(input_ids_BL, None, None, comp_BT, comp_mask_BT)


# --------------------------------------------------------------------------------------------------
# Per-token log-probabilities


def selective_logprobs(
    logits_BTV: torch.Tensor,
    targets_BT: torch.Tensor,
    temperature: float = 1.0,
    *,
    chunk_rows: int = 4,
    with_entropy: bool = False,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """``log_softmax(logits / temperature)`` at ``targets``, in fp32, a few rows at a time.

    Computed as ``gathered logit - logsumexp(logits)`` per chunk of ``chunk_rows`` sequences, so no
    full-vocabulary softmax of the whole batch is ever materialized. ``with_entropy`` also returns
    the per-token entropy of the same distribution (no gradient), ``ENTROPY_POSITIONS`` positions of
    one sequence at a time: its two float32 buffers (the softmax and its product with the logits) are
    at most ``[ENTROPY_POSITIONS, V]``, whatever the batch and the completion length.
    """
    logps, ents = [], []
    for start in range(0, logits_BTV.shape[0], chunk_rows):
        chunk_BTV = logits_BTV[start : start + chunk_rows].float() / temperature
        tgt_BT = targets_BT[start : start + chunk_rows]
        lse_BT = torch.logsumexp(chunk_BTV, dim=-1)
        logps.append(chunk_BTV.gather(-1, tgt_BT.unsqueeze(-1)).squeeze(-1) - lse_BT)
        if with_entropy:
            with torch.no_grad():
                for row_TV, lse_T in zip(chunk_BTV.detach(), lse_BT.detach(), strict=True):
                    parts = []
                    for t in range(0, row_TV.shape[0], ENTROPY_POSITIONS):
                        x_tV = row_TV[t : t + ENTROPY_POSITIONS]
                        p_tV = torch.softmax(x_tV, dim=-1)
                        parts.append(lse_T[t : t + ENTROPY_POSITIONS] - (p_tV * x_tV).sum(-1))
                    ents.append(torch.cat(parts).unsqueeze(0))
    return torch.cat(logps), (torch.cat(ents) if with_entropy else None)


def completion_logprobs(
    model: torch.nn.Module,
    batch: PackedBatch,
    temperature: float = 1.0,
    *,
    chunk_rows: int = 4,
    with_entropy: bool = False,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Log-probabilities ``[B, T]`` of the completion tokens of ``batch`` under ``model``.

    The model is called through its own ``forward`` (so DDP/FSDP wrappers see the call) with
    ``logits_to_keep = T + 1``: only the completion positions' logits are computed. Logits are
    divided by ``temperature`` exactly as the rollout backend does before sampling. Padded entries
    are 0 (use ``batch.completion_mask_BT``).
    """
    T = batch.completion_ids_BT.shape[1]
    kwargs = {}
    if batch.attention_mask_BL is not None:
        kwargs = {"attention_mask": batch.attention_mask_BL, "position_ids": batch.position_ids_BL}
    out = model(input_ids=batch.input_ids_BL, use_cache=False, logits_to_keep=T + 1, **kwargs)
    logits_BTV = out.logits[:, -(T + 1) : -1]
    logps_BT, ent_BT = selective_logprobs(
        logits_BTV, batch.completion_ids_BT, temperature, chunk_rows=chunk_rows, with_entropy=with_entropy
    )
    logps_BT = logps_BT * batch.completion_mask_BT
    return logps_BT, ent_BT


# --------------------------------------------------------------------------------------------------
# The policy loss


def policy_loss(
    logprobs_BT: torch.Tensor,
    old_logprobs_BT: torch.Tensor,
    advantages_B: torch.Tensor,
    mask_BT: torch.Tensor,
    loss_type: str = "dr_grpo",
    eps_low: float = 0.2,
    eps_high: float = 0.2,
    beta: float = 0.0,
    ref_logprobs_BT: torch.Tensor | None = None,
    loss_constant: float | None = None,
    truncated_B: torch.Tensor | None = None,
    mask_truncated: bool = False,
    *,
    entropy_BT: torch.Tensor | None = None,
    num_sequences: float | None = None,
    num_tokens: float | None = None,
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """PPO-clipped GRPO loss with token masks; returns ``(loss, metrics)``.

    Per token: ``r = exp(logp - old_logp)``,
    ``l = -min(r * A, clip(r, 1 - eps_low, 1 + eps_high) * A) + beta * k3``,
    ``k3 = exp(ref - logp) - (ref - logp) - 1`` (only when ``beta > 0``). With ``m`` the mask:

    - ``grpo``:    ``sum_i [ sum_t m l / max(1, sum_t m) ] / num_sequences``
    - ``dr_grpo``: ``sum_{i,t} m l / (num_sequences * loss_constant)``
    - ``dapo``:    ``sum_{i,t} m l / max(1, num_tokens)``

    ``num_sequences`` and ``num_tokens`` default to this batch's sequence count and mask sum. Under
    gradient accumulation or data parallelism pass the *logical batch's* values (all micro-batches,
    all ranks): the micro-batch losses then sum to the full-batch loss and accumulation reproduces
    the full-batch gradient exactly. ``loss_constant`` defaults to ``T`` (padded length).
    ``mask_truncated`` zeroes the mask of sequences with ``truncated_B`` True (they still count in
    ``num_sequences``; ``num_tokens`` must then be computed from the truncation-masked mask).

    Metrics (detached, token means over this batch's mask): ``clip_frac_low`` (ratio below
    ``1 - eps_low`` with A < 0, i.e. the clip is active), ``clip_frac_high`` (above ``1 + eps_high``
    with A > 0), ``clip_frac`` (either), ``ratio_mean``, ``kl`` (when a reference is given),
    ``entropy`` (when ``entropy_BT`` is given), and ``tokens`` (mask sum, the weight for averaging).
    """
    if loss_type not in LOSS_TYPES:
        raise ValueError(f"loss_type must be one of {LOSS_TYPES}; got {loss_type!r}")
    mask_BT = mask_BT.to(logprobs_BT.dtype)
    if mask_truncated and truncated_B is not None:
        mask_BT = mask_BT * (~truncated_B.bool()).to(mask_BT.dtype).unsqueeze(1)
    B, T = logprobs_BT.shape
    A_B1 = advantages_B.to(logprobs_BT.dtype).unsqueeze(1)

    ratio_BT = torch.exp(logprobs_BT - old_logprobs_BT)
    clipped_BT = torch.clamp(ratio_BT, 1.0 - eps_low, 1.0 + eps_high)
    per_token_BT = -torch.min(ratio_BT * A_B1, clipped_BT * A_B1)
    kl_BT = None
    if ref_logprobs_BT is not None:
        delta_BT = ref_logprobs_BT - logprobs_BT
        kl_BT = torch.exp(delta_BT) - delta_BT - 1.0
        if beta > 0:
            per_token_BT = per_token_BT + beta * kl_BT
    elif beta > 0:
        raise ValueError("beta > 0 needs ref_logprobs_BT")

    masked_sum = (per_token_BT * mask_BT).sum()
    n_seq = float(B if num_sequences is None else num_sequences)
    if loss_type == "grpo":
        per_seq_B = (per_token_BT * mask_BT).sum(-1) / mask_BT.sum(-1).clamp(min=1.0)
        loss = per_seq_B.sum() / n_seq
    elif loss_type == "dr_grpo":
        constant = float(T if loss_constant is None else loss_constant)
        loss = masked_sum / (n_seq * constant)
    else:
        n_tok = mask_BT.sum() if num_tokens is None else torch.as_tensor(float(num_tokens))
        loss = masked_sum / torch.clamp(n_tok, min=1.0)

    with torch.no_grad():
        tokens = mask_BT.sum()
        denom = tokens.clamp(min=1.0)
        low_BT = ((ratio_BT < 1.0 - eps_low) & (A_B1 < 0)).to(mask_BT.dtype)
        high_BT = ((ratio_BT > 1.0 + eps_high) & (A_B1 > 0)).to(mask_BT.dtype)
        metrics = {
            "clip_frac_low": (low_BT * mask_BT).sum() / denom,
            "clip_frac_high": (high_BT * mask_BT).sum() / denom,
            "clip_frac": ((low_BT + high_BT) * mask_BT).sum() / denom,
            "ratio_mean": (ratio_BT * mask_BT).sum() / denom,
            "tokens": tokens,
        }
        if kl_BT is not None:
            metrics["kl"] = (kl_BT * mask_BT).sum() / denom
        if entropy_BT is not None:
            metrics["entropy"] = (entropy_BT * mask_BT).sum() / denom
    return loss, metrics
