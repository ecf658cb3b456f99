"""``local_denoiser``: the exact leave-one-out effect on f_t under the local (p×p patch)
empirical denoiser of the training set (numerics: ``diffattr.local_denoiser``); gradient-free.
Its patch size per step is ``attribution.local_denoiser.patch`` (choose it on the LDS tuning
subsets: ``benchmarks/local_denoiser_lds.py`` scores a grid through ``diffattr evaluate``)."""

from __future__ import annotations

from ..errors import ConfigError
from ..local_denoiser import PatchSchedule, local_denoiser_block
from ..scoring import BlockFn
from .base import Method, ScoringContext


class LocalDenoiser(Method):
    name = "local_denoiser"
    description = "leave-one-out effect on f_t under the local (patch) empirical denoiser"
    score_section = "local_denoiser"

    def scorer(self, ctx: ScoringContext) -> BlockFn:
        sizes = tuple(ctx.settings.patch)
        if len(sizes) == 1:
            sizes *= len(ctx.steps)
        if len(sizes) != len(ctx.steps):
            raise ConfigError(
                f"attribution.local_denoiser.patch has {len(sizes)} sizes for "
                f"{len(ctx.steps)} attribution steps: give one, or one per step"
            )
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
