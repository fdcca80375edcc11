"""run.threads / eval --threads: auto picks one thread for small CPU models."""

from __future__ import annotations

import torch

from pasodoble.models import set_cpu_threads


def test_auto_threads_pick_one_for_small_models_and_explicit_values_win(tiny_model):
    before = torch.get_num_threads()
    try:
        torch.set_num_threads(2)
        set_cpu_threads(tiny_model, None)  # 0.9 M parameters < 50 M: one thread
        assert torch.get_num_threads() == 1
        set_cpu_threads(tiny_model, 3)
        assert torch.get_num_threads() == 3
    finally:
        torch.set_num_threads(before)
