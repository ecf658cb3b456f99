"""``unlearning`` and ``unlearning_final``: attribution by unlearning (AbU; numerics:
``diffattr.unlearning``), the latter trajectory-free; each member scored in pieces (blocks of
the targets × shards of the training examples, ``attribution.unlearning_(train_)shards``)."""

from __future__ import annotations

import dataclasses
import logging
import time
from typing import Any

import numpy as np

from ..draws import TargetSet
from ..errors import ConfigError
from .base import MemberJob, MemberResult, PerMemberMethod

log = logging.getLogger("diffattr")

SETTINGS = (  # what a score file records of the config (its member job's slice)
    "batch_size",
    "unlearning_lr",
    "unlearning_steps",
    "unlearning_window",
    "unlearning_draws",
    "unlearning_eval_draws",
    "unlearning_fisher_draws",
    "unlearning_shards",
    "unlearning_train_shards",
)


def target_block(stored: Any, shard: int, shards: int) -> Any:
    """Block ``shard`` of ``shards`` contiguous blocks of the targets (numpy's array_split)."""
    if not 0 <= shard < shards:
        raise ConfigError(f"target shard {shard} out of range for {shards} shards")
    if shards > stored.n:
        raise ConfigError(
            f"attribution.unlearning_shards ({shards}) exceeds the {stored.n} targets; lower it"
        )
    keep = np.array_split(np.arange(stored.n), shards)[shard]
    cond = None if stored.cond is None else stored.cond[keep]
    prompts = None if stored.prompts is None else [stored.prompts[i] for i in keep]
    return dataclasses.replace(
        stored,
        final=stored.final[keep],
        x_t=stored.x_t[:, keep],
        x0_hat=stored.x0_hat[:, keep],
        target_ids=stored.target_ids[keep],
        cond=cond,
        prompts=prompts,
    )


def settings(cfg: Any) -> Any:
    """AbU's settings from the config (``unlearning.UnlearningSettings``)."""
    from ..unlearning import UnlearningSettings

    s = cfg.attribution
    return UnlearningSettings(
        s.unlearning_lr,
        s.unlearning_steps,
        s.unlearning_window,
        s.unlearning_draws,
        s.unlearning_eval_draws,
        s.unlearning_fisher_draws,
    )


class Unlearning(PerMemberMethod):
    name = "unlearning"
    description = "attribution by unlearning (AbU), step-specific objective"
    scored_in_pieces = True  # attribution.unlearning_(train_)shards
    slice = "unlearning_member"

    def pieces(self, cfg: Any) -> tuple[int, int]:
        """(blocks of the targets, shards of the training examples) per member."""
        s = cfg.attribution
        return s.unlearning_shards, s.unlearning_train_shards

    def member_job(self, job: MemberJob) -> MemberResult:
        from ..unlearning import loss_examples, unlearning_scores

        cfg, d, s = job.cfg, job.draws, job.cfg.attribution
        final = self.target_image == "final"
        stored = target_block(job.targets, job.part, s.unlearning_shards)
        examples = loss_examples(len(d.ids), s.batch_size, s.unlearning_train_shards, job.shard)
        start = time.time()
        scores = unlearning_scores(
            d,
            TargetSet(stored.x0_hat, stored.steps, stored.target_ids),
            settings(cfg),
            progress=True,
            final=stored.final if final else None,
            examples=examples,
        )
        seconds = time.time() - start
        attrs = {"method": self.name, "member": job.member, "seed": cfg.seed, "seconds": seconds}
        attrs["K"] = s.unlearning_eval_draws
        attrs["settings"] = {k: getattr(s, k) for k in SETTINGS}
        cases = stored.n * (1 if final else stored.x0_hat.shape[0])
        attrs["seconds_per_unlearning"] = seconds / max(1, cases)
        log.info("unlearning scores of %s in %.1f s", job.member, seconds)
        return MemberResult(stored, d.ids[examples], scores, attrs)


class UnlearningFinal(Unlearning):
    name = "unlearning_final"
    description = "attribution by unlearning (AbU), final image on the uniform grid"
    target_image = "final"
