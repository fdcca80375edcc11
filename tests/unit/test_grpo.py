"""GRPO math with small hand-computed cases (expected values derived in the comments)."""

from __future__ import annotations

import math

import pytest
import torch

from pasodoble.grpo import group_advantages, pack_sequences, policy_loss, selective_logprobs

# --------------------------------------------------------------------------------------------------
# Advantages


def test_group_advantages_hand_computed():
    # Group [1, 0, 0, 0]: mean 0.25; sample std = sqrt((0.75^2 + 3 * 0.25^2) / 3) = sqrt(0.25) = 0.5.
    # A = (r - 0.25) / (0.5 + 1e-4) -> [0.75 / 0.5001, -0.25 / 0.5001 x3].
    # Group [1, 1, 0, 0]: mean 0.5; sample std = sqrt(4 * 0.25 / 3) = 0.57735.
    adv = group_advantages([1, 0, 0, 0, 1, 1, 0, 0], group_size=4)
    s2 = math.sqrt(1 / 3)
    expected = [0.75 / 0.5001, -0.25 / 0.5001, -0.25 / 0.5001, -0.25 / 0.5001]
    expected += [0.5 / (s2 + 1e-4)] * 2 + [-0.5 / (s2 + 1e-4)] * 2
    assert adv.tolist() == pytest.approx(expected, rel=1e-6)


def test_all_equal_rewards_give_zero_advantages():
    adv = group_advantages([0.3, 0.3, 0.3, 1.0, 1.0, 1.0], group_size=3)
    assert adv.tolist() == [0.0] * 6  # exactly: centered values are 0, std 0 -> 0 / eps


def test_batch_and_none_normalization():
    # Groups [1, 0] and [1, 1]: group means 0.5 and 1 -> centered [0.5, -0.5, 0, 0].
    # Batch std of [1, 0, 1, 1]: mean 0.75, squared deviations .0625 + .5625 + .0625 + .0625 = .75,
    # / (4 - 1) = .25 -> std 0.5. So 'batch' gives [0.5, -0.5, 0, 0] / 0.5001.
    r = [1.0, 0.0, 1.0, 1.0]
    assert group_advantages(r, 2, norm="none").tolist() == [0.5, -0.5, 0.0, 0.0]
    assert group_advantages(r, 2, norm="batch").tolist() == pytest.approx([0.5 / 0.5001, -0.5 / 0.5001, 0, 0])
    # 'group': each group of 2 has sample std |a - b| / sqrt(2) -> [1, 0]: 0.7071.
    assert group_advantages(r, 2).tolist() == pytest.approx(
        [0.5 / (0.70711 + 1e-4), -0.5 / (0.70711 + 1e-4), 0, 0], rel=1e-4
    )


def test_advantage_argument_errors():
    with pytest.raises(ValueError, match="groups of 4"):
        group_advantages([1, 0, 1], 4)
    with pytest.raises(ValueError, match="norm"):
        group_advantages([1, 0], 2, norm="rank")


# --------------------------------------------------------------------------------------------------
# Loss types


def _case():
    # B = 2, T = 3. Mask [[1, 1, 0], [1, 0, 0]]; A = [1, -3]; old == new so the ratio is 1 and the
    # per-token loss is -A: row 0 -> [-1, -1, (masked)], row 1 -> [3, (masked), (masked)].
    logp = torch.tensor([[-1.0, -2.0, -5.0], [-0.5, -7.0, -7.0]], requires_grad=True)
    mask = torch.tensor([[1.0, 1.0, 0.0], [1.0, 0.0, 0.0]])
    adv = torch.tensor([1.0, -3.0])
    return logp, mask, adv


def test_three_loss_types_disagree_as_their_formulas_say():
    logp, mask, adv = _case()
    old = logp.detach()
    # grpo: mean per sequence [-1, 3], then mean over the batch -> (-1 + 3) / 2 = 1.
    loss, _ = policy_loss(logp, old, adv, mask, "grpo")
    assert loss.item() == pytest.approx(1.0)
    # dr_grpo: token sum (-1 - 1 + 3 = 1) / (B * constant) = 1 / (2 * 4) = 0.125.
    loss, _ = policy_loss(logp, old, adv, mask, "dr_grpo", loss_constant=4)
    assert loss.item() == pytest.approx(0.125)
    # dr_grpo without a constant uses the padded length T = 3: 1 / 6.
    loss, _ = policy_loss(logp, old, adv, mask, "dr_grpo")
    assert loss.item() == pytest.approx(1 / 6)
    # dapo: token sum / token count = 1 / 3.
    loss, _ = policy_loss(logp, old, adv, mask, "dapo")
    assert loss.item() == pytest.approx(1 / 3)


def test_gradient_at_ratio_one_is_minus_advantage_over_normalizer():
    # d loss / d logp_t = -A * ratio / normalizer (ratio = 1); dapo normalizer = 3 tokens.
    logp, mask, adv = _case()
    loss, _ = policy_loss(logp, logp.detach(), adv, mask, "dapo")
    loss.backward()
    assert logp.grad.flatten().tolist() == pytest.approx([-1 / 3, -1 / 3, 0.0, 1.0, 0.0, 0.0])


def test_all_equal_rewards_give_zero_policy_gradient():
    logp = torch.tensor([[-1.0, -2.0], [-0.3, -4.0], [-2.0, -1.0]], requires_grad=True)
    adv = group_advantages([0.5, 0.5, 0.5], 3)
    for loss_type in ("grpo", "dr_grpo", "dapo"):
        logp.grad = None
        loss, _ = policy_loss(logp, logp.detach(), adv, torch.ones(3, 2), loss_type)
        loss.backward()
        assert loss.item() == 0.0
        assert torch.count_nonzero(logp.grad) == 0


@pytest.mark.parametrize("loss_type", ["grpo", "dr_grpo", "dapo"])
def test_empty_mask_gives_zero_loss_and_gradient(loss_type):
    logp = torch.randn(2, 4, requires_grad=True)
    loss, metrics = policy_loss(
        logp, logp.detach() - 0.3, torch.tensor([1.0, -1.0]), torch.zeros(2, 4), loss_type
    )
    loss.backward()
    assert loss.item() == 0.0 and math.isfinite(loss.item())
    assert torch.count_nonzero(logp.grad) == 0
    assert metrics["tokens"].item() == 0 and metrics["clip_frac"].item() == 0


def test_clipping_active_on_both_sides():
    # One sequence per token so each token has its own advantage; old logp = 0, so ratio = exp(logp).
    #   row 0: ratio 1.5, A = +1 -> clipped high: -min(1.5, 1.2) = -1.2, no gradient
    #   row 1: ratio 0.5, A = -1 -> clipped low:  -min(-0.5, -0.8) = 0.8, no gradient
    #   row 2: ratio 1.5, A = -1 -> unclipped:    -min(-1.5, -1.2) = 1.5, grad = -A * r = 1.5
    #   row 3: ratio 0.5, A = +1 -> unclipped:    -min(0.5, 0.8) = -0.5, grad = -A * r = -0.5
    # dapo over 4 tokens: loss = (-1.2 + 0.8 + 1.5 - 0.5) / 4 = 0.15; grads / 4.
    ratios = torch.tensor([[1.5], [0.5], [1.5], [0.5]])
    logp = ratios.log().requires_grad_(True)
    adv = torch.tensor([1.0, -1.0, -1.0, 1.0])
    loss, m = policy_loss(logp, torch.zeros(4, 1), adv, torch.ones(4, 1), "dapo", eps_low=0.2, eps_high=0.2)
    loss.backward()
    assert loss.item() == pytest.approx(0.15)
    assert logp.grad.flatten().tolist() == pytest.approx([0.0, 0.0, 1.5 / 4, -0.5 / 4])
    assert m["clip_frac_high"].item() == 0.25 and m["clip_frac_low"].item() == 0.25
    assert m["clip_frac"].item() == 0.5
    assert m["ratio_mean"].item() == pytest.approx(1.0)


def test_asymmetric_clip_bounds():
    # eps_high = 0.28 (DAPO's clip-higher): ratio 1.25 with A > 0 is now inside the band.
    logp = torch.tensor([[math.log(1.25)]], requires_grad=True)
    loss, m = policy_loss(logp, torch.zeros(1, 1), torch.tensor([1.0]), torch.ones(1, 1), "dapo", 0.2, 0.28)
    assert loss.item() == pytest.approx(-1.25) and m["clip_frac"].item() == 0.0


def test_k3_kl_penalty():
    # logp = 0 and ref = log 0.5: delta = ref - logp = -0.6931, k3 = e^delta - delta - 1 = 0.5 + 0.6931 - 1
    # = 0.19315. With A = 0 and beta = 0.1, dapo loss = 0.1 * 0.19315.
    logp = torch.zeros(1, 2, requires_grad=True)
    ref = torch.full((1, 2), math.log(0.5))
    loss, m = policy_loss(
        logp, logp.detach(), torch.zeros(1), torch.ones(1, 2), "dapo", beta=0.1, ref_logprobs_BT=ref
    )
    k3 = 0.5 + math.log(2) - 1
    assert loss.item() == pytest.approx(0.1 * k3, rel=1e-5)
    assert m["kl"].item() == pytest.approx(k3, rel=1e-5)
    with pytest.raises(ValueError, match="ref_logprobs"):
        policy_loss(logp, logp.detach(), torch.zeros(1), torch.ones(1, 2), beta=0.1)


def test_mask_truncated_drops_truncated_sequences():
    # Row 1 is truncated: with mask_truncated its tokens vanish; grpo still divides by B = 2:
    # row 0 mean = -1 (A = 1), row 1 contributes 0 -> -0.5. dapo: -2 / 2 tokens = -1.
    logp, mask, adv = _case()
    trunc = torch.tensor([False, True])
    loss, m = policy_loss(logp, logp.detach(), adv, mask, "grpo", truncated_B=trunc, mask_truncated=True)
    assert loss.item() == pytest.approx(-0.5) and m["tokens"].item() == 2
    loss, _ = policy_loss(logp, logp.detach(), adv, mask, "dapo", truncated_B=trunc, mask_truncated=True)
    assert loss.item() == pytest.approx(-1.0)
    loss, _ = policy_loss(logp, logp.detach(), adv, mask, "dapo", truncated_B=trunc, mask_truncated=False)
    assert loss.item() == pytest.approx(1 / 3)


@pytest.mark.parametrize("loss_type", ["grpo", "dr_grpo", "dapo"])
def test_micro_batches_with_global_normalizers_sum_to_full_batch(loss_type):
    g = torch.Generator().manual_seed(0)
    logp = torch.randn(5, 6, generator=g)
    old = logp + 0.1 * torch.randn(5, 6, generator=g)
    adv = torch.randn(5, generator=g)
    mask = (torch.rand(5, 6, generator=g) > 0.3).float()
    full, _ = policy_loss(logp, old, adv, mask, loss_type, loss_constant=8)
    parts = [slice(0, 2), slice(2, 5)]
    summed = sum(
        policy_loss(logp[s], old[s], adv[s], mask[s], loss_type, loss_constant=8,
                    num_sequences=5, num_tokens=mask.sum().item())[0]
        for s in parts
    )  # fmt: skip
    assert summed.item() == pytest.approx(full.item(), rel=1e-6)
    # Without global normalizers, dapo's micro-batch token means do not add up to the batch mean.
    if loss_type == "dapo":
        naive = sum(policy_loss(logp[s], old[s], adv[s], mask[s], loss_type)[0] for s in parts) / 2
        assert naive.item() != pytest.approx(full.item(), rel=1e-3)


# --------------------------------------------------------------------------------------------------
# Log-probabilities and packing


def test_selective_logprobs_equals_log_softmax():
    g = torch.Generator().manual_seed(1)
    logits = torch.randn(5, 3, 11, generator=g)
    targets = torch.randint(0, 11, (5, 3), generator=g)
    lp, ent = selective_logprobs(logits, targets, temperature=0.7, chunk_rows=2, with_entropy=True)
    ref = torch.log_softmax(logits / 0.7, -1)
    assert torch.allclose(lp, ref.gather(-1, targets[..., None]).squeeze(-1), atol=1e-6)
    assert torch.allclose(ent, -(ref.exp() * ref).sum(-1), atol=1e-5)


def test_pack_sequences_layout():
    b = pack_sequences([[5, 6], [7]], [[1, 2, 3], [4]], pad_token_id=0)
    assert b.input_ids_BL.tolist() == [[5, 6, 1, 2, 3], [0, 7, 4, 0, 0]]
    assert b.attention_mask_BL.tolist() == [[1, 1, 1, 1, 1], [0, 1, 1, 0, 0]]
    assert b.position_ids_BL.tolist() == [
        [0, 1, 2, 3, 4],
        [0, 0, 1, 1, 1],
    ]  # right padding: masked, any position
    assert b.completion_mask_BT.tolist() == [[1, 1, 1], [1, 0, 0]]
    same_len = pack_sequences([[5, 6], [7, 8]], [[1], [2, 3]], pad_token_id=0)
    assert same_len.attention_mask_BL is None and same_len.position_ids_BL is None
