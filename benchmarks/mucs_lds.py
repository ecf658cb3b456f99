"""MUCS (and its step-specific variant) on a finished LDS run, through ``diffattr evaluate``:
each of the first ``--members`` ensemble models unlearns every target (its final image:
``mucs``; x̂₀ᵗ at each attribution step t: ``mucs_step``), the skew scores are averaged over the
members, and the per-step LDS is printed beside the run's own methods.

    python benchmarks/mucs_lds.py --run results/digits-lds \\
        --configfile config/config.yaml config/digits-lds.yaml [--members 2] [--step-specific]
        [--noises 100] [--max-steps 200]

The workflow's member job (``methods.mucs``) with the run's ``attribution.mucs`` settings but
``--noises`` and ``--max-steps``. Prints the rows to read and the CPU seconds per target and member.
"""

from __future__ import annotations

import argparse
import dataclasses
import time
from pathlib import Path

import numpy as np
import torch


def member_scores(cfg, run, index: int, step_specific: bool) -> np.ndarray:
    """One member's scores (steps, targets, n), as the workflow's member job computes them."""
    from diffattr import layout
    from diffattr.draws import ModelDraws
    from diffattr.methods.mucs import Mucs, MucsStep
    from diffattr.models import load_model

    model, scheduler = load_model(layout.checkpoint(run.paths.model(index)), "cpu", cfg.model)
    d = ModelDraws(model, scheduler.alphas_cumprod, run.data.images, run.data.ids, cfg.seed, index)
    method = MucsStep() if step_specific else Mucs()
    job = type("Job", (), {"cfg": cfg, "draws": d, "targets": run.targets, "member": f"m{index}"})
    return method.member_job(job).scores


def main() -> None:
    from diffattr.evaluate_run import evaluate_scores, write_method_scores
    from diffattr.lds.stats import rows_to_read
    from diffattr.results import Run

    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--run", type=Path, required=True)
    ap.add_argument("--configfile", nargs="+", required=True)
    ap.add_argument("--members", type=int, default=2)
    ap.add_argument("--step-specific", action="store_true")
    ap.add_argument("--noises", type=int, default=100)
    ap.add_argument("--max-steps", type=int, default=200)
    ap.add_argument(
        "--out", type=Path, help="score file and report folder (default: <run>/evaluate)"
    )
    args = ap.parse_args()
    args.out = args.out or args.run / "evaluate"
    torch.set_num_threads(1)
    run = Run(args.run)
    cfg = run.check_config(args.configfile)
    mucs = {"noises": args.noises, "max_steps": args.max_steps}
    cfg = dataclasses.replace(
        cfg,
        attribution=dataclasses.replace(
            cfg.attribution, mucs=dataclasses.replace(cfg.attribution.mucs, **mucs)
        ),
    )
    start = time.process_time()
    scores = np.mean(
        [member_scores(cfg, run, m, args.step_specific) for m in range(args.members)], 0
    )
    seconds = time.process_time() - start
    name = "mucs_step" if args.step_specific else "mucs"
    name += "_rerun" * (name in cfg.attribution.methods)  # the run scored it already
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
