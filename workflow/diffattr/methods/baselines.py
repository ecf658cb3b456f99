"""Gradient-free baselines: ``pixel_similarity`` (cosine of x̂_0^t with each training image),
``optimal_denoiser`` (leave-one-out effect on f_t under the training set's empirical optimal
denoiser) and ``random`` (the floor)."""

from __future__ import annotations

from ..scoring import BlockFn, optimal_denoiser_block, pixel_similarity_block, random_block
from .base import Method, ScoringContext


class PixelSimilarity(Method):
    name = "pixel_similarity"
    description = "cosine similarity of x̂_0^t to x_i"
    family = "gradient_free"
    default = True
    patches = True

    def scorer(self, ctx: ScoringContext) -> BlockFn:
        return pixel_similarity_block(ctx.train_images, ctx.x0_hat)


class OptimalDenoiser(Method):
    name = "optimal_denoiser"
    description = "leave-one-out effect on f_t under the empirical optimal denoiser"
    family = "gradient_free"
    default = True

    def scorer(self, ctx: ScoringContext) -> BlockFn:
        return optimal_denoiser_block(
            ctx.train_images,
            ctx.x0_hat,
            ctx.steps,
            ctx.target_ids,
            ctx.alphas_cumprod,
            ctx.draws,
            ctx.seed,
        )


class RandomScores(Method):
    name = "random"
    description = "seeded Gaussian scores (the floor)"
    family = "floor"
    default = True

    def scorer(self, ctx: ScoringContext) -> BlockFn:
        return random_block(ctx.seed, ctx.steps, ctx.target_ids, len(ctx.train_images))
