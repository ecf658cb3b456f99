"""Seeds as pure functions of named keys, so that shards, reruns and machines agree.

Every random draw in diffattr comes from a generator seeded by ``derive_seed(*keys)``, where the
keys name what the draw is for (global seed, purpose, model, example id, draw index, ...). A draw
therefore never depends on batch size, sharding or the order in which work is done.
"""

from __future__ import annotations

import hashlib
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    import torch

Key = int | str


def _as_word(key: Key) -> int:
    if isinstance(key, bool) or not isinstance(key, int | str):
        raise TypeError(f"seed keys must be int or str, got {type(key).__name__}: {key!r}")
    if isinstance(key, str):
        return int.from_bytes(hashlib.sha256(key.encode()).digest()[:4], "little")
    if key < 0:
        raise ValueError(f"seed keys must be non-negative, got {key}")
    return key


def derive_seed(*keys: Key) -> int:
    """A 63-bit seed determined by ``keys`` alone (numpy SeedSequence over the key words)."""
    words = [_as_word(k) for k in keys]
    state = np.random.SeedSequence(words).generate_state(2, dtype=np.uint32)
    return (int(state[0]) << 31) ^ int(state[1])


def generator(*keys: Key, device: str | torch.device = "cpu") -> torch.Generator:
    """A torch generator seeded by ``derive_seed(*keys)``."""
    import torch  # here, so that jobs that never draw with torch do not import it (≈ 3 s)

    gen = torch.Generator(device=device)
    gen.manual_seed(derive_seed(*keys))
    return gen


def numpy_rng(*keys: Key) -> np.random.Generator:
    """A numpy generator seeded by ``derive_seed(*keys)``."""
    return np.random.default_rng(derive_seed(*keys))
