"""One seed derivation for the whole program: a seed from a tuple of integers.

Every derived seed (a rollout's sampling seed from run seed, step, role and rank; a transformers row
generator's from its prompt seed and sample index; a vLLM request's from its call seed and prompt index)
goes through ``derive_seed``, so the same integers always give the same seed, on every process, run and
resume. The values are pinned by ``tests/unit/test_seeds.py``: changing them changes every rollout.
"""

from __future__ import annotations

import numpy as np

_BITS = (32, 63)


def derive_seed(*parts: int, bits: int = 63) -> int:
    """A seed of ``bits`` bits from ``parts`` (their signs are dropped), by numpy's ``SeedSequence``.

    ``bits=63``: a non-negative int64 (``torch.Generator.manual_seed``, ``np.random.default_rng``, dual-play's
    sampling seeds); ``bits=32``: an unsigned 32-bit seed (what vLLM's per-request ``seed`` takes).
    """
    if bits not in _BITS:
        raise ValueError(f"bits must be one of {_BITS}; got {bits}")
    state = np.random.SeedSequence([abs(int(p)) for p in parts])
    if bits == 32:
        return int(state.generate_state(1, np.uint32)[0])
    return int(state.generate_state(1, np.uint64)[0] >> 1)
