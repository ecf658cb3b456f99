"""LDS subsets: fixed-size seeded masks, the first ones for tuning and the rest for reporting."""

from __future__ import annotations

import numpy as np

from ..seeding import numpy_rng

TUNING, REPORTING = "tuning", "reporting"


def make_subsets(n: int, count: int, alpha: float, seed: int) -> np.ndarray:
    """Boolean masks (count, n), each with exactly ⌊α·n⌋ members, subset j keyed by (seed, j)."""
    size = int(np.floor(alpha * n))
    if not 0 < size < n:
        raise ValueError(f"α = {alpha} gives subsets of {size} of {n} examples")
    masks = np.zeros((count, n), dtype=bool)
    for j in range(count):
        masks[j, numpy_rng(seed, "lds-subset", j).choice(n, size, replace=False)] = True
    return masks


def subset_roles(tuning: int, reporting: int) -> np.ndarray:
    """The role of each subset: the first ``tuning`` choose λ, the next ``reporting`` are
    reported (nothing is tuned on them)."""
    return np.array([TUNING] * tuning + [REPORTING] * reporting)
