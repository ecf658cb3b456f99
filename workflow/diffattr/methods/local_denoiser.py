"""``local_denoiser``: the exact leave-one-out effect on f_t under the local (p×p patch)
empirical denoiser of the training set (numerics: ``diffattr.local_denoiser``); gradient-free.
Its patch size per step is ``attribution.local_denoiser.patch``; with a ``grid``, the score file
also holds the scores at every patch size of the grid (its candidates), and the LDS report
chooses one per step on the tuning subsets like a λ (the tuned file is scored with those)."""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np

from ..errors import ConfigError
from ..local_denoiser import PatchSchedule, local_denoiser_block
from ..scoring import BlockFn
from .base import Method, ScoringContext


def _sizes(settings: Any, steps: int) -> tuple[int, ...]:
    sizes = tuple(int(p) for p in settings.patch)
    if len(sizes) == 1:
        sizes *= steps
    if len(sizes) != steps:
        raise ConfigError(
            f"attribution.local_denoiser.patch has {len(sizes)} sizes for {steps} attribution "
            "steps: give one, or one per step"
        )
    return sizes


class LocalDenoiser(Method):
    name = "local_denoiser"
    description = "leave-one-out effect on f_t under the local (patch) empirical denoiser"
    family = "gradient_free"
    score_section = "local_denoiser"
    candidate_setting = "patch"  # with attribution.local_denoiser.grid: chosen per step

    def candidate_value(self, cfg: Any) -> float | None:
        """The configured patch size when one serves every step (else per step: None)."""
        patch = cfg.attribution.local_denoiser.patch
        return float(patch[0]) if len(patch) == 1 else None

    def with_tuned(self, settings: Any, tuned: list[float]) -> Any:
        """The settings with the patch size the LDS report chose at each step."""
        return dataclasses.replace(settings, patch=tuple(int(v) for v in tuned))

    def _blocks(self, ctx: ScoringContext, sizes: tuple[int, ...]) -> BlockFn:
        return local_denoiser_block(
            ctx.train_images,
            ctx.x0_hat,
            ctx.steps,
            ctx.target_ids,
            ctx.alphas_cumprod,
            ctx.draws,
            ctx.seed,
            PatchSchedule(sizes, ctx.settings.equivariant),
        )

    def scorer(self, ctx: ScoringContext) -> BlockFn:
        return self._blocks(ctx, _sizes(ctx.settings, len(ctx.steps)))

    def candidates(self, ctx: ScoringContext) -> Any:
        """The scores (values, steps, targets, n) at every patch size of the grid, one size at
        every step (None without a grid)."""
        from ..artifacts import Candidates

        grid = sorted({int(p) for p in ctx.settings.grid})
        if not grid:
            return None
        _sizes(ctx.settings, len(ctx.steps))
        targets, n = len(ctx.target_ids), len(ctx.train_images)
        scores = np.empty((len(grid), len(ctx.steps), targets, n), dtype=np.float32)
        for v, size in enumerate(grid):
            blocks = self._blocks(ctx, (size,) * len(ctx.steps))
            for s in range(len(ctx.steps)):
                scores[v, s] = blocks(s, slice(0, targets), slice(0, n))
        return Candidates(self.candidate_setting, [float(p) for p in grid], scores)
