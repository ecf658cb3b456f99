"""Attribution in process (the ``TRAKer`` of this project): featurize training data, featurize
targets, build kernels and score, for use from the workflow's stages, benchmarks and notebooks.

    attributor = Attributor(model, scheduler, Member(0, "final"), AttributionConfig(), seed=0)
    phi = attributor.featurize_train(FeatureKind("loss"), data, np.arange(data.n))  # (n, k)
    psi = attributor.featurize_targets(get_method("journey_trak"), targets)  # (steps, q, k)
    kernel = attributor.kernel(store)               # store: Φ readable in blocks (FeatureStore)
    block = scorer(get_method("journey_trak"), data, targets, 0, [(store, kernel, psi)])

A member's projector is seeded by (seed, "projector", model index, checkpoint), so every job
that featurizes one member (training shards, targets) projects with the same matrices.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

import numpy as np
import torch
from diffusers import DDPMScheduler
from torch import nn

from .artifacts import Targets
from .config import PATCH_METHODS, AttributionConfig
from .data import PreparedData
from .draws import FeatureDraws, ModelDraws, TargetDraws
from .errors import ConfigError
from .features import featurize_targets, featurize_training, residual_weights
from .layout import Member
from .methods import FeatureKind, GradientMethod, Method, ScoringContext
from .patches import Patches, groups
from .projection import Projector, make_projector
from .scoring import BlockFn, Kernel, RowBlocks, kernel


class Attributor:
    """One ensemble member's features and kernel under the configured projection and draws."""

    def __init__(
        self,
        model: nn.Module,
        scheduler: DDPMScheduler,
        member: Member,
        settings: AttributionConfig,
        seed: int,
    ):
        self.model, self.scheduler, self.member = model, scheduler, member
        self.settings, self.seed = settings, seed
        self.projector: Projector = make_projector(
            settings.projection, model, seed, "projector", member.index, member.checkpoint
        )

    def featurize_train(
        self,
        kind: FeatureKind,
        data: PreparedData,
        positions: np.ndarray,
        flip: bool = False,
        progress: bool = False,
    ) -> np.ndarray:
        """φ_i = Pᵀ∇θ Σ_k output(x_i, t_k, ε_k) (unit per draw for normalised kinds) for the
        examples at ``positions`` (whole batches)."""
        member = self.member_draws(data)
        spec = FeatureDraws(
            kind.output,
            self.settings.K,
            self.settings.precision,
            flip,
            kind.uniform,
            kind.normalize,
            self.window(kind),
        )
        conditions = data.extra.get("caption_embeddings")
        return featurize_training(member, self.projector, spec, positions, conditions, progress)

    def member_draws(self, data: PreparedData) -> ModelDraws:
        """This member's model, schedule, seed and batch size with the training data."""
        return ModelDraws(
            self.model,
            self.scheduler.alphas_cumprod,
            data.images,
            data.ids,
            self.seed,
            self.member.index,
            self.settings.batch_size,
        )

    def window(self, kind: FeatureKind) -> tuple[int, int] | None:
        """Timesteps lo…hi of a step-local kind: ``local_window`` wide around its step, inside
        0…T−1 (None: all timesteps)."""
        if kind.near is None:
            return None
        half, T = self.settings.local_window // 2, len(self.scheduler.alphas_cumprod)
        return max(0, kind.near - half), min(T - 1, kind.near + half)

    def residual_weights(self, data: PreparedData, positions: np.ndarray) -> np.ndarray:
        """DAS's residual weights (len(positions),) on ``attribution.residual_timesteps``."""
        captions = data.extra.get("caption_embeddings")
        return residual_weights(
            self.member_draws(data), positions, self.settings.residual_timesteps, captions
        )

    def target_spec(self, method: GradientMethod, timesteps: Sequence[int]) -> FeatureDraws:
        """What a method's target features differentiate (one draw per timestep)."""
        return FeatureDraws(
            method.target_output,
            len(timesteps),
            self.settings.precision,
            normalize=method.target_normalized,
        )

    def featurize_targets(self, method: GradientMethod, targets: Targets) -> np.ndarray:
        """ψ (steps, targets, k): the method's target output at every attribution step."""
        s = self.settings
        T = len(self.scheduler.alphas_cumprod)
        cond = None if targets.cond is None else torch.from_numpy(targets.cond).float()
        out = np.empty((len(targets.steps), targets.n, self.projector.dim), dtype=np.float32)
        for query in method.target_queries(
            targets.x0_hat, targets.final, targets.steps, s.K, s.R, T
        ):
            out[query.step_indices] = featurize_targets(
                self.model,
                self.projector,
                self.scheduler.alphas_cumprod,
                self.target_spec(method, query.timesteps),
                TargetDraws(
                    torch.from_numpy(query.images),
                    targets.target_ids.tolist(),
                    query.timesteps,
                    cond,
                ),
                self.seed,
                s.batch_size,
            )
        return out

    def featurize_patch_targets(
        self, method: GradientMethod, targets: Targets, patches: Patches
    ) -> np.ndarray:
        """ψ (steps, targets, patches, k): the method's per-step target output restricted to each
        patch (targets sharing a box are featurized together, with the whole image's draws)."""
        if method.target_image != "x0_hat":
            raise ConfigError(
                f"{method.name} has no per-step target output to restrict to a patch; patch "
                f"methods: {', '.join(PATCH_METHODS)}"
            )
        s = self.settings
        T = len(self.scheduler.alphas_cumprod)
        cond = None if targets.cond is None else torch.from_numpy(targets.cond).float()
        shape = (len(targets.steps), targets.n, patches.n, self.projector.dim)
        out = np.empty(shape, dtype=np.float32)
        ids = targets.target_ids
        for query in method.target_queries(
            targets.x0_hat, targets.final, targets.steps, s.K, s.R, T
        ):
            for p in range(patches.n):
                for box, pos in groups(patches.grid_boxes[:, p]):
                    psi = featurize_targets(
                        self.model,
                        self.projector,
                        self.scheduler.alphas_cumprod,
                        self.target_spec(method, query.timesteps),
                        TargetDraws(
                            torch.from_numpy(query.images[pos]),
                            ids[pos].tolist(),
                            query.timesteps,
                            None if cond is None else cond[pos],
                        ),
                        self.seed,
                        s.batch_size,
                        box,
                    )
                    for step in query.step_indices:
                        out[step, pos, p] = psi
        return out

    def kernel(self, features: RowBlocks) -> Kernel:
        """(ΦᵀΦ + λ_abs I)⁻¹ (or its dual) with the configured scale-free λ."""
        return kernel(features, self.settings.lambda_, self.settings.block_size)


def scorer(
    method: Method,
    data: PreparedData,
    targets: Targets,
    seed: int,
    members: Sequence[tuple[RowBlocks, Kernel, np.ndarray]] = (),
) -> BlockFn:
    """Blocks of the method's scores for the targets (``Method.blocks``)."""
    ctx = ScoringContext(data.images, targets.steps, targets.target_ids, targets.x0_hat, seed)
    return method.blocks(dataclasses.replace(ctx, members=members))
