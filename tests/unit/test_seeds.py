"""Derived seeds are part of every run's numerics: these values were recorded by hand from the helpers
as they were before issue 25 merged them (dual_play._seed, rollout.hf._row_generator, the vLLM backend's
per-prompt seed). A change here changes every sampled rollout."""

from pasodoble.dual_play import _seed
from pasodoble.rollout.hf import _row_generator
from pasodoble.rollout.vllm.common import derive_seed


def test_63_bit_seeds_of_dual_play_are_pinned():
    assert _seed(0, 0, 1, 0) == 4324601099084218337  # (run seed, step, role, rank): a rollout's seed
    assert _seed(3, 5, 2, 1) == 6113718104754760344
    assert _seed(3, 5, 7) == 8051511506806774937  # (run seed, step, 7): the step's sampling rng
    assert _seed(-4, 11) == 6744339789808056733  # signs are dropped


def test_63_bit_row_seeds_of_the_transformers_backend_are_pinned():
    assert _row_generator(0, 0, "cpu").initial_seed() == 7896617691693857887
    assert _row_generator(9, 2, "cpu").initial_seed() == 2977775202416621515
    assert _row_generator(-9, 2, "cpu").initial_seed() == 2977775202416621515


def test_32_bit_engine_seeds_of_vllm_are_pinned():
    assert derive_seed(0, 0) == 2968811710
    assert derive_seed(3, 1) == 457190280
    assert derive_seed(-7, 5) == 1002604896
    assert derive_seed(12345, 63) == 3672174925
