"""``ekfac``: EK-FAC influence functions through kronfluence (numerics: ``diffattr.ekfac``), one
score file per ensemble member with the scores of every damping scale the LDS tunes over."""

from __future__ import annotations

import logging
import time
from typing import Any

from ..draws import TargetSet
from .base import MemberJob, MemberResult, PerMemberMethod

log = logging.getLogger("diffattr")


def ekfac_dampings(cfg: Any) -> list[float]:
    """The damping scales an ekfac member scores: the config's, and with an LDS its grid."""
    grid = cfg.lds.ekfac_dampings if cfg.lds.enabled else ()
    return sorted({float(cfg.attribution.ekfac.damping), *map(float, grid)})


class Ekfac(PerMemberMethod):
    name = "ekfac"
    description = "EK-FAC influence functions (kronfluence), per step"
    candidate_setting = "ekfac_damping"  # λ_l = damping × mean eigenvalue of layer l
    default = True
    slice = "ekfac_member"
    cluster_resources = {"gpu": 1, "mem_mb": 64000, "runtime": 1440}  # noqa: RUF012

    def candidate_value(self, cfg: Any) -> float:
        """The configured value of its candidate setting (the score job's λ)."""
        return cfg.attribution.ekfac.damping

    def member_job(self, job: MemberJob) -> MemberResult:
        from ..artifacts import Candidates
        from ..ekfac import ekfac_scores  # (kronfluence: only this job needs it)

        cfg, d, stored = job.cfg, job.draws, job.targets
        s = cfg.attribution
        dampings = ekfac_dampings(cfg)
        start = time.time()
        grid = ekfac_scores(
            d,
            TargetSet(stored.x0_hat, stored.steps, stored.target_ids),
            s.K,
            s.R,
            dampings,
            s.ekfac.fisher,
            cfg.dataset.flip,
        )
        seconds = time.time() - start
        attrs = {
            "method": "ekfac",
            "member": job.member,
            "K": s.K,
            "R": s.R,
            "damping": s.ekfac.damping,
            "damping_meaning": "λ_l = damping × mean EK-FAC eigenvalue of layer l",
            "fisher": s.ekfac.fisher,
            "seed": cfg.seed,
            "seconds": seconds,
        }
        candidates = Candidates("ekfac_damping", dampings, grid) if len(dampings) > 1 else None
        scores = grid[dampings.index(float(s.ekfac.damping))]
        log.info(
            "EK-FAC scores of %s: %d examples × %d draws, dampings %s, in %.1f s",
            job.member,
            len(d.ids),
            s.K,
            dampings,
            seconds,
        )
        return MemberResult(stored, d.ids, scores, attrs, candidates)
