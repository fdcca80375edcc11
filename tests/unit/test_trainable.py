"""The training layer (``pasodoble.trainable``) in one process: a step is plain AdamW on the accumulated
gradient, clipping reports the norm before clipping, and save/load resumes bit for bit."""

from __future__ import annotations

import copy

import pytest
import torch

from pasodoble.testing.tiny import build_tiny_model
from pasodoble.trainable import Trainable, same_layout


def _loss(model, ids_BL: torch.Tensor) -> torch.Tensor:
    return model(input_ids=ids_BL, labels=ids_BL, use_cache=False).loss


def _batches(n: int) -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    return [torch.randint(3, 200, (2, 9), generator=g) for _ in range(n)]


def test_accumulated_micro_batches_step_like_one_adamw_step(tiny_tokenizer):
    """Two micro-batches (each loss halved) through micro_batch/backward/clip_and_step move the weights
    exactly as torch's AdamW does on the mean of the two losses, computed by hand."""
    model = build_tiny_model(tiny_tokenizer, seed=1)
    reference = copy.deepcopy(model)
    trainable = Trainable(model, lr=1e-2, weight_decay=0.1, max_grad_norm=0.0)
    micro = _batches(2)
    for j, ids in enumerate(micro):
        with trainable.micro_batch(last=j == len(micro) - 1):
            with trainable.autocast():
                trainable.backward(_loss(trainable.model, ids) * 0.5)
    norm = trainable.clip_and_step()

    optimizer = torch.optim.AdamW(reference.parameters(), lr=1e-2, weight_decay=0.1)
    for ids in micro:
        (_loss(reference, ids) * 0.5).backward()
    expected_norm = torch.nn.utils.clip_grad_norm_(reference.parameters(), float("inf"))
    optimizer.step()

    assert norm == pytest.approx(float(expected_norm), rel=1e-6)
    for (name, a), b in zip(
        trainable.unwrapped_model.named_parameters(), reference.parameters(), strict=True
    ):
        assert torch.equal(a, b), name
    assert all(p.grad is None for p in trainable.unwrapped_model.parameters())  # zeroed after the step


def test_save_and_load_continue_bit_for_bit(tiny_tokenizer, tmp_path):
    def build():
        return Trainable(
            build_tiny_model(tiny_tokenizer, seed=2),
            lr=1e-2,
            lr_schedule="cosine",
            warmup_steps=1,
            total_steps=4,
        )

    def step(t: Trainable, ids: torch.Tensor) -> None:
        with t.micro_batch(last=True):
            t.backward(_loss(t.model, ids))
        t.clip_and_step()

    batches = _batches(3)
    straight = build()
    for ids in batches:
        step(straight, ids)

    first = build()
    step(first, batches[0])
    first.save(tmp_path, "m", {"step": 1})
    resumed = build()
    assert resumed.load(tmp_path, "m")["step"] == 1
    assert resumed.lr == first.lr
    for ids in batches[1:]:
        step(resumed, ids)
    for a, b in zip(straight.unwrapped_model.parameters(), resumed.unwrapped_model.parameters(), strict=True):
        assert torch.equal(a, b)


def test_layouts_that_share_a_state():
    assert same_layout("none", "ddp") and same_layout("ddp", "none") and same_layout("fsdp2", "fsdp2")
    assert not same_layout("fsdp2", "none") and not same_layout("deepspeed_zero2", "ddp")


def test_a_checkpoint_of_another_layout_is_refused(tiny_tokenizer, tmp_path):
    trainable = Trainable(build_tiny_model(tiny_tokenizer), lr=1e-3)
    trainable.save(tmp_path, "m")
    payload = torch.load(tmp_path / "m.pt", weights_only=True)
    torch.save({**payload, "layout": "fsdp2"}, tmp_path / "m.pt")
    with pytest.raises(ValueError, match="written with distributed.strategy=fsdp2 and this run uses none"):
        trainable.load(tmp_path, "m")


def test_the_cosine_schedule_needs_its_length(tiny_tokenizer):
    with pytest.raises(ValueError, match="cosine schedule needs total_steps"):
        Trainable(build_tiny_model(tiny_tokenizer), lr=1e-3, lr_schedule="cosine", label="solver")
