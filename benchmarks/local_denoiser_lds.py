"""The local (patch) empirical denoiser on a finished LDS run, through ``diffattr evaluate``:
scores for every patch size of a grid (the LDS report picks one per step on the tuning
subsets), then the per-step LDS beside the run's own methods — a new method from its code to its
LDS without rerunning the workflow.

    python benchmarks/local_denoiser_lds.py --run results/digits-lds \\
        --configfile config/config.yaml config/digits-lds.yaml [--patches 3 5 7 9 15]
        [--equivariant] [--draws 16]

Prints the rows to read of local_denoiser, optimal_denoiser, pixel_similarity and
journey_trak per step (λ / patch size chosen on the tuning subsets) and the seconds spent.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np


def main() -> None:
    from diffattr.artifacts import Candidates
    from diffattr.evaluate_run import evaluate_scores, write_method_scores
    from diffattr.lds.stats import rows_to_read
    from diffattr.local_denoiser import PatchSchedule, local_denoiser_block
    from diffattr.models import build_scheduler
    from diffattr.results import Run

    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--run", type=Path, required=True)
    ap.add_argument("--configfile", nargs="+", required=True)
    ap.add_argument("--patches", type=int, nargs="+", default=[3, 5, 7, 9, 15])
    ap.add_argument("--default-patch", type=int, default=5)
    ap.add_argument("--equivariant", action="store_true")
    ap.add_argument("--draws", type=int, default=16)
    ap.add_argument(
        "--out", type=Path, help="score file and report folder (default: <run>/evaluate)"
    )
    args = ap.parse_args()
    args.out = args.out or args.run / "evaluate"
    run = Run(args.run)
    cfg = run.check_config(args.configfile)
    targets, data = run.targets, run.data
    alphas = build_scheduler(cfg.diffusion).alphas_cumprod.double().numpy()
    start = time.time()
    grid = []
    for patch in args.patches:
        block = local_denoiser_block(
            data.images,
            targets.x0_hat,
            targets.steps,
            targets.target_ids,
            alphas,
            args.draws,
            cfg.seed,
            PatchSchedule((patch,) * len(targets.steps), args.equivariant),
        )
        grid.append(
            np.stack(
                [block(s, slice(0, targets.n), slice(0, data.n)) for s in range(len(targets.steps))]
            )
        )
        print(f"patch {patch}: {time.time() - start:.0f} s", flush=True)
    seconds = time.time() - start
    name = "local_denoiser" + ("_equivariant" if args.equivariant else "")
    args.out.mkdir(parents=True, exist_ok=True)
    path = args.out / f"{name}.h5"
    default = grid[args.patches.index(args.default_patch)]
    candidates = Candidates("patch", [float(p) for p in args.patches], np.stack(grid))
    write_method_scores(path, args.run, name, default, candidates, args.default_patch)
    table, _ = evaluate_scores(args.run, cfg, [path], args.out)
    shown = rows_to_read(table)
    keep = shown.method.isin([name, "optimal_denoiser", "pixel_similarity", "journey_trak"])
    columns = ["method", "step", "ground_truth", "lds", "ci_low", "ci_high", "ceiling", "lambda"]
    columns += ["margin_over", "margin", "margin_ci_low", "margin_ci_high"]
    print(shown[keep][columns].to_string(index=False, float_format=lambda v: f"{v:.3f}"))
    per = seconds / (targets.n * len(targets.steps) * len(args.patches))
    sizes = len(args.patches)
    print(f"{name}: {seconds:.0f} s, {sizes} patch sizes ({per:.2f} s per target, step, size)")


if __name__ == "__main__":
    main()
