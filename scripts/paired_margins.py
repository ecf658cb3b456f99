"""Paired LDS margins between named methods on a finished LDS run, with the report's own
resamples (same subsets × targets bootstrap, same seed), so differences are paired as in
``lds.csv``'s margin columns but for any pair.

    python scripts/paired_margins.py RUN_FOLDER --config config/digits-lds.yaml \\
        --methods ekfac pixel_similarity optimal_denoiser journey_trak

The first method is compared with each other one. Scores: ``scores/tuned/<method>.h5`` where it
exists (λ tuned per step on the tuning subsets, as the report's tuned rows), else
``scores/<method>.h5``. The final-image column uses the last step's scores against the final
image's loss (with the last step's λ; the report tunes a λ for that column of its own, so a
gradient method's final-image number can differ slightly from lds.csv's). Prints LDS [95 % CI]
per method and column, then first − other [95 % CI].
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
from diffattr import layout
from diffattr.artifacts import read_ground_truth, read_scores, read_subsets
from diffattr.config import load
from diffattr.lds.stats import bootstrap_lds, lds, percentile_interval, predictions
from diffattr.lds.subsets import REPORTING

BASE_CONFIG = Path(__file__).resolve().parents[1] / "config" / "config.yaml"  # Snakemake's default


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("run", type=Path)
    parser.add_argument("--config", nargs="+", default=["config/digits-lds.yaml"])
    parser.add_argument("--methods", nargs="+", required=True)
    args = parser.parse_args()
    cfg = load([BASE_CONFIG, *args.config])
    split = read_subsets(args.run / "lds" / "subsets.h5")
    report = split.role == REPORTING
    paths = sorted((args.run / "lds" / "ground_truth").glob("s*.h5"), key=layout.parse_ground_truth)
    truths = [read_ground_truth(p) for p in paths]
    f_t = np.stack([t.f_t for t in truths]).mean(1)  # (subsets, steps, targets)
    final = np.stack([t.final_loss for t in truths]).mean(1)  # (subsets, targets)
    steps = truths[0].steps
    columns = [*map(str, steps), "final image"]
    truth = [f_t[:, s].T for s in range(len(steps))] + [final.T]  # (targets, subsets) each
    samples, values = {}, {}
    for method in args.methods:
        tuned = args.run / "scores" / "tuned" / f"{method}.h5"
        scores = read_scores(tuned if tuned.exists() else args.run / "scores" / f"{method}.h5")
        pred = predictions(scores.scores, split.masks)  # (steps, targets, subsets)
        pred = np.concatenate([pred, pred[-1:]])
        for c, column in enumerate(columns):
            p, t = pred[c][:, report], truth[c][:, report]
            values[method, column] = lds(p, t)
            samples[method, column] = bootstrap_lds(p, t, cfg.lds.bootstrap, cfg.seed)
        source = "tuned" if tuned.exists() else "stored"
        print(f"{method} ({source} scores)")
    first, others = args.methods[0], args.methods[1:]
    for column in columns:
        cells = []
        for method in args.methods:
            lo, hi = percentile_interval(samples[method, column])
            cells.append(f"{method} {values[method, column]:.2f} [{lo:.2f}, {hi:.2f}]")
        for other in others:
            diff = values[first, column] - values[other, column]
            lo, hi = percentile_interval(samples[first, column] - samples[other, column])
            cells.append(f"{first} − {other} {diff:+.2f} [{lo:+.2f}, {hi:+.2f}]")
        print(f"{column}: " + "; ".join(cells))


if __name__ == "__main__":
    main()
