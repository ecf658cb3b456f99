"""``unlearning`` and ``unlearning_final``: attribution by unlearning (AbU; numerics:
``diffattr.unlearning``), the latter trajectory-free; each member scored in pieces (blocks of
the targets × shards of the training examples, ``attribution.unlearning.(train_)shards``)."""

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

SETTINGS = (  # what a score file records of attribution.unlearning (as unlearning_<key>)
    "lr",
    "steps",
    "window",
    "draws",
    "eval_draws",
    "fisher_draws",
    "shards",
    "train_shards",
)


def recorded_settings(cfg: Any) -> dict[str, Any]:
    """The settings a member score file records (the flat names earlier versions wrote)."""
    u = cfg.attribution.unlearning
    return {"batch_size": cfg.attribution.batch_size} | {
        f"unlearning_{k}": getattr(u, k) for k in SETTINGS
    }


def target_block(stored: Any, shard: int, shards: int) -> Any:
    """Block ``shard`` of ``shards`` contiguous blocks of the targets (numpy's array_split)."""
    if not 0 <= shard < shards:
        raise ConfigError(f"target shard {shard} out of range for {shards} shards")
    if shards > stored.n:
        raise ConfigError(
            f"attribution.unlearning.shards ({shards}) exceeds the {stored.n} targets; lower it"
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

    u = cfg.attribution.unlearning
    return UnlearningSettings(u.lr, u.steps, u.window, u.draws, u.eval_draws, u.fisher_draws)


class Unlearning(PerMemberMethod):
    name = "unlearning"
    description = "attribution by unlearning (AbU), step-specific objective"
    scored_in_pieces = True  # attribution.unlearning.(train_)shards
    slice = "unlearning_member"

    def pieces(self, cfg: Any) -> tuple[int, int]:
        """(blocks of the targets, shards of the training examples) per member."""
        u = cfg.attribution.unlearning
        return u.shards, u.train_shards

    def member_job(self, job: MemberJob) -> MemberResult:
        from ..unlearning import loss_examples, unlearning_scores

        cfg, d, u = job.cfg, job.draws, job.cfg.attribution.unlearning
        final = self.target_image == "final"
        stored = target_block(job.targets, job.part, u.shards)
        examples = loss_examples(len(d.ids), d.batch_size, u.train_shards, job.shard)
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
        attrs["K"] = u.eval_draws
        attrs["settings"] = recorded_settings(cfg)
        cases = stored.n * (1 if final else stored.x0_hat.shape[0])
        attrs["seconds_per_unlearning"] = seconds / max(1, cases)
        log.info("unlearning scores of %s in %.1f s", job.member, seconds)
        return MemberResult(stored, d.ids[examples], scores, attrs)


class UnlearningFinal(Unlearning):
    name = "unlearning_final"
    description = "attribution by unlearning (AbU), final image on the uniform grid"
    target_image = "final"
