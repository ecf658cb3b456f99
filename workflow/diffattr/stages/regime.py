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


def model_fidelity(net, alphas, x_t, t: int, train: np.ndarray, patches) -> dict[str, float]:
    """r² between the model's x̂₀ of every target's x_t (clipped like the sampler) and the
    x̂₀ of the empirical denoisers of its training half: the whole image (``optimal_denoiser``)
    and the local one at each patch size (``local_<p>``, locality only)."""
    from ..local_denoiser import local_estimate
    from ..outputs import predict_noise

    abar = float(alphas[t])
    with torch.no_grad():
        eps = predict_noise(net, x_t, torch.full((len(x_t),), t, device=x_t.device))
    model = ((x_t - (1 - abar) ** 0.5 * eps) / abar**0.5).clamp(-1, 1).double().cpu().numpy()
    noisy = x_t.double().cpu().numpy()
    whole = 2 * max(train.shape[-2:]) - 1
    out = {}
    for name, patch in [("optimal_denoiser", whole), *((f"local_{p}", p) for p in patches)]:
        estimate = np.stack([local_estimate(train, x, abar, patch) for x in noisy])
        out[name] = regime.r_squared(model, estimate)
    return out


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
        loss_sets = [images[r].to(device) for r in loss_rows]
        train_loss, held_loss = regime.pair_losses(nets, alphas, loss_sets, t, cfg.seed)
        agree = regime.agreement(a, b)
        fidelity = model_fidelity(
            nets[0], alphas, x_t, t, images[halves[0]].numpy(), cfg.lds.fidelity_patches
        )
        steps[str(t)] = {
            "agreement": float(agree.mean()),
            "agreement_per_target": agree.tolist(),
            "near_copies": float(np.mean(copies)),
            "near_copies_per_model": copies,
            "loss_train": train_loss,
            "loss_held": held_loss,
            "loss_gap": regime.relative_gap(train_loss, held_loss),
            "fidelity": fidelity,
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
        "regime diagnostics (fidelity: r² of subset 0's model's x̂₀ explained):\n%s",
        "\n".join(
            f"  t={t}: agreement {d['agreement']:.3f}, near copies {d['near_copies']:.0%}, "
            f"loss gap {d['loss_gap']:+.1%}, fidelity "
            + ", ".join(f"{k} {v:.2f}" for k, v in d["fidelity"].items())
            for t, d in steps.items()
        ),
    )
