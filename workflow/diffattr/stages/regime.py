"""The regime diagnostics of the LDS report: two models of complementary halves (subset 0's
model and its complement's) at every attribution step (``lds.regime``)."""

from __future__ import annotations

import logging
import time
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm

from .. import layout
from ..artifacts import read_data, read_subsets, read_targets
from ..config import RunConfig
from ..lds import regime
from ..models import load_model, resolve_device
from ..seeding import numpy_rng
from ..storage import write_json

log = logging.getLogger("diffattr")


def regime_diagnostics(
    cfg: RunConfig,
    *,
    data: Path,
    subsets: Path,
    models: list[Path],
    targets: Path,
    out: Path,
    progress: bool = True,
) -> None:
    """Measure agreement, near copies and the loss gap at every attribution step (regime.json).

    ``models``: subset 0's model and its complement's (``lds/regime/complement``). From each
    target's x_t both regenerate with the same sampler noise; each regeneration is checked
    against its own half's images; each model's loss at t on its half vs the other half.
    """
    start = time.time()
    device = resolve_device(cfg.device)
    images = torch.from_numpy(read_data(data).images)
    mask = read_subsets(subsets).masks[layout.REGIME_SUBSET]
    halves = [np.flatnonzero(mask), np.flatnonzero(~mask)]
    stored = read_targets(targets)
    loaded = [load_model(layout.checkpoint(m), device, cfg.model) for m in models]
    nets, scheduler = [m for m, _ in loaded], loaded[0][1]
    alphas = scheduler.alphas_cumprod
    size = min(cfg.lds.regime_loss_images, *map(len, halves))
    loss_rows = [
        h[numpy_rng(cfg.seed, "regime-loss", k).permutation(len(h))[:size]]
        for k, h in enumerate(halves)
    ]
    ids = stored.target_ids.tolist()
    steps: dict[str, dict] = {}
    for s, t in enumerate(tqdm(stored.steps, desc="regime", disable=not progress)):
        x_t = torch.from_numpy(stored.x_t[s]).to(device)
        a, b = regime.regenerate(
            nets,
            scheduler,
            x_t,
            t,
            cfg.targets.sampling_steps,
            lambda j, t=t: (cfg.seed, "regime-regen", t, ids[j]),
        )
        copies = [
            float(regime.near_copy(x, images[h].numpy()).mean())
            for x, h in zip((a, b), halves, strict=True)
        ]
        losses = np.array(
            [
                [
                    regime.denoising_loss(
                        net, alphas, images[r].to(device), t, 2, (cfg.seed, "regime-loss", t, k)
                    )
                    for k, r in enumerate(loss_rows)
                ]
                for net in nets
            ]
        )  # [model, half]: each model's own half on the diagonal
        train_loss = float(np.mean(np.diag(losses)))
        held_loss = float(np.mean(losses[[0, 1], [1, 0]]))
        agree = regime.agreement(a, b)
        steps[str(t)] = {
            "agreement": float(agree.mean()),
            "agreement_per_target": agree.tolist(),
            "near_copies": float(np.mean(copies)),
            "near_copies_per_model": copies,
            "loss_train": train_loss,
            "loss_held": held_loss,
            "loss_gap": regime.relative_gap(train_loss, held_loss),
        }
    write_json(
        out,
        {
            "steps": steps,
            "models": [str(m) for m in models],
            "half_sizes": [len(h) for h in halves],
            "loss_images": size,
            "targets": len(ids),
            "sampling_steps": cfg.targets.sampling_steps,
            "seconds": time.time() - start,
        },
    )
    log.info(
        "regime diagnostics:\n%s",
        "\n".join(
            f"  t={t}: agreement {d['agreement']:.3f}, near copies {d['near_copies']:.0%}, "
            f"loss gap {d['loss_gap']:+.1%}"
            for t, d in steps.items()
        ),
    )
