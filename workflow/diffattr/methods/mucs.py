"""``mucs`` and ``mucs_step``: bounded unlearning with a skew score (MUCS, Serrà et al. 2026;
numerics: ``diffattr.mucs``), the first unlearning each target's final image (trajectory-free),
the second x̂₀ᵗ at each attribution step t; one job per ensemble member
(``attribution.mucs``)."""

from __future__ import annotations

import dataclasses
import logging
import time
from typing import Any

from ..draws import TargetSet
from .base import MemberJob, MemberResult, PerMemberMethod

log = logging.getLogger("diffattr")


def settings(cfg: Any) -> Any:
    """MUCS's settings from ``attribution.mucs`` (lr: the training lr / ``lr_factor``)."""
    from ..mucs import MucsSettings

    m = cfg.attribution.mucs
    return MucsSettings(
        lr=cfg.train.lr / m.lr_factor,
        forget_weight=m.forget_weight,
        tolerance=m.tolerance,
        max_steps=m.max_steps,
        noises=m.noises,
        infer_fraction=m.infer_fraction,
    )


class MucsStep(PerMemberMethod):
    name = "mucs_step"
    description = "MUCS bounded unlearning of x̂₀ᵗ at step t, skew score"
    slice = "mucs_member"

    def member_job(self, job: MemberJob) -> MemberResult:
        from ..diffusion import init_seeded
        from ..models import build_unet
        from ..mucs import mucs_scores

        cfg, d, stored = job.cfg, job.draws, job.targets
        shape = tuple(d.images.shape[1:])
        untrained = init_seeded(lambda: build_unet(cfg.model, shape), d.seed, "mucs-null")
        start = time.time()
        scores = mucs_scores(
            d,
            TargetSet(stored.x0_hat, stored.steps, stored.target_ids),
            settings(cfg),
            untrained.eval(),
            stored.final if self.target_image == "final" else None,
        )
        seconds = time.time() - start
        recorded = dataclasses.asdict(settings(cfg))
        attrs = {"method": self.name, "member": job.member, "seed": cfg.seed, "seconds": seconds}
        log.info("%s scores of %s in %.1f s", self.name, job.member, seconds)
        return MemberResult(stored, d.ids, scores, attrs | {"settings": recorded})


class Mucs(MucsStep):
    name = "mucs"
    description = "MUCS bounded unlearning of the final image, skew score"
    target_image = "final"
