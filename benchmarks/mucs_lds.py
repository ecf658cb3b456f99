"""MUCS (and its step-specific variant) on a finished LDS run, through ``diffattr evaluate``:
each of the first ``--members`` ensemble models unlearns every target (its final image:
``mucs``; x̂₀ᵗ at each attribution step t: ``mucs_step``), the skew scores are averaged over the
members, and the per-step LDS is printed beside the run's own methods.

    python benchmarks/mucs_lds.py --run results/digits-lds \\
        --configfile config/config.yaml config/digits-lds.yaml [--members 2] [--step-specific]
        [--noises 100] [--max-steps 200]

MUCS's defaults (``diffattr.mucs.MucsSettings``) but for the learning rate, a tenth of the run's
training lr as MUCS sets it. Prints the rows to read and the CPU seconds per target and member.
"""

from __future__ import annotations

import argparse
import dataclasses
import time
from pathlib import Path

import numpy as np
import torch


def member_scores(cfg, run, index: int, settings, step_specific: bool) -> np.ndarray:
    """One member's skew scores (steps, targets, n)."""
    from diffattr import layout, mucs
    from diffattr.diffusion import init_seeded
    from diffattr.models import build_unet, load_model
    from diffattr.seeding import derive_seed, generator

    model, scheduler = load_model(layout.checkpoint(run.paths.model(index)), "cpu", cfg.model)
    alphas = scheduler.alphas_cumprod
    images = torch.from_numpy(run.data.images)
    seed = derive_seed(cfg.seed, layout.full_model_seed(index))
    untrained = init_seeded(lambda: build_unet(cfg.model, run.data.shape), seed, "init").eval()
    limit = mucs.null_loss(untrained, alphas, images, settings, generator(seed, "mucs-null"))
    targets, T = run.targets, len(alphas)
    steps = targets.steps if step_specific else [None]
    out = np.empty((len(targets.steps), targets.n, len(images)))
    for s, step in enumerate(steps):
        t = mucs.inference_timesteps(T, settings.noises, settings.infer_fraction, step)
        eps = torch.randn(
            (settings.noises, *images.shape[1:]), generator=generator(seed, "mucs-eps", s)
        )
        original = mucs.inference_losses(model, alphas, images, t, eps)
        for j, target in enumerate(targets.target_ids):
            image = targets.final[j] if step is None else targets.x0_hat[s, j]
            gen = generator(
                seed, "mucs-unlearn", int(target), "final" if step is None else int(step)
            )
            unlearned, taken = mucs.unlearn(
                model, alphas, images, torch.from_numpy(image), step, limit, settings, gen
            )
            u = mucs.inference_losses(unlearned, alphas, images, t, eps)
            out[s, j] = mucs.skew_scores(u, original, settings.eps)
            print(f"member {index} step {step} target {target}: {taken} steps", flush=True)
    return out if step_specific else np.repeat(out[:1], len(targets.steps), 0)


def main() -> None:
    from diffattr.evaluate import evaluate_scores, write_method_scores
    from diffattr.lds.stats import rows_to_read
    from diffattr.mucs import MucsSettings
    from diffattr.results import Run

    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--run", type=Path, required=True)
    ap.add_argument("--configfile", nargs="+", required=True)
    ap.add_argument("--members", type=int, default=2)
    ap.add_argument("--step-specific", action="store_true")
    ap.add_argument("--noises", type=int, default=100)
    ap.add_argument("--max-steps", type=int, default=200)
    ap.add_argument("--out", type=Path, default=Path("/tmp/mucs"))
    args = ap.parse_args()
    torch.set_num_threads(1)
    run = Run(args.run)
    cfg = run.check_config(args.configfile)
    settings = dataclasses.replace(
        MucsSettings(), lr=cfg.train.lr / 10, noises=args.noises, max_steps=args.max_steps
    )
    start = time.process_time()
    scores = np.mean(
        [member_scores(cfg, run, m, settings, args.step_specific) for m in range(args.members)], 0
    )
    seconds = time.process_time() - start
    name = "mucs_step" if args.step_specific else "mucs"
    args.out.mkdir(parents=True, exist_ok=True)
    write_method_scores(args.out / f"{name}.h5", args.run, name, scores.astype(np.float32))
    table, _ = evaluate_scores(args.run, cfg, [args.out / f"{name}.h5"], args.out)
    shown = rows_to_read(table)
    keep = shown.method.isin(
        [name, "journey_trak", "optimal_denoiser", "unlearning", "dtrak", "das"]
    )
    columns = ["method", "step", "ground_truth", "lds", "ci_low", "ci_high", "ceiling"]
    columns += ["margin_over", "margin", "margin_ci_low", "margin_ci_high"]
    print(shown[keep][columns].to_string(index=False, float_format=lambda v: f"{v:.3f}"))
    per = seconds / (args.members * run.targets.n)
    print(f"{name}: {seconds:.0f} CPU-s, {per:.1f} CPU-s per target and member")


if __name__ == "__main__":
    main()
