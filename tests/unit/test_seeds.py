"""Derived seeds are part of every run's numerics: these values were recorded by hand from the helpers
as they were before issue 25 merged them into ``pasodoble.seeds.derive_seed`` (dual_play._seed,
rollout.hf._row_generator, the vLLM backend's per-prompt seed). A change here changes every sampled
rollout."""

import pytest

from pasodoble.rollout.hf import _row_generator
from pasodoble.seeds import derive_seed


def test_63_bit_seeds_of_dual_play_are_pinned():
    assert derive_seed(0, 0, 1, 0) == 4324601099084218337  # (run seed, step, role, rank): a rollout's seed
    assert derive_seed(3, 5, 2, 1) == 6113718104754760344
    assert derive_seed(3, 5, 7) == 8051511506806774937  # (run seed, step, 7): the step's sampling rng
    assert derive_seed(-4, 11) == 6744339789808056733  # signs are dropped


def test_63_bit_row_seeds_of_the_transformers_backend_are_pinned():
    assert _row_generator(0, 0, "cpu").initial_seed() == 7896617691693857887
    assert _row_generator(9, 2, "cpu").initial_seed() == 2977775202416621515
    assert _row_generator(-9, 2, "cpu").initial_seed() == 2977775202416621515


def test_32_bit_engine_seeds_of_vllm_are_pinned():
    assert derive_seed(0, 0, bits=32) == 2968811710
    assert derive_seed(3, 1, bits=32) == 457190280
    assert derive_seed(-7, 5, bits=32) == 1002604896
    assert derive_seed(12345, 63, bits=32) == 3672174925


def test_other_widths_are_refused():
    with pytest.raises(ValueError, match="bits must be one of"):
        derive_seed(1, bits=64)
