"""Choose attribution by unlearning's hyper-parameters on the LDS tuning subsets of a finished LDS
run; the reporting subsets are never read.

    python benchmarks/tune_unlearning.py --config config/digits-lds.yaml [--targets 8]
        [--members 3] [--candidates '{}' '{"lr": 0.1}' …]

Each candidate is a set of ``attribution.unlearning`` overrides of the config. For each, the
first ``--members`` ensemble members unlearn the first ``--targets`` targets at every attribution
step (``unlearning``) and once on the final image (``unlearning_final``); their scores are
averaged and the LDS is measured on the tuning subsets only (per step, and the final image's loss
for ``unlearning_final``). Printed per candidate: the tuning LDS per column, its mean over the
step columns with a 95 % interval of the paired difference to the first candidate (bootstrap over
targets and tuning subsets, the same resamples for every candidate) and the seconds spent. The
last line names the candidate with the highest mean tuning LDS: put its overrides in the config,
and the workflow scores every target with it and reports on the reporting subsets.

A proxy, said plainly: fewer members and targets than the report, so the chosen setting is the
best for this budget's noise level, not necessarily for the full ensemble.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import time

import numpy as np
import torch


def main() -> None:
    from diffattr import layout
    from diffattr.artifacts import read_data, read_ground_truth, read_subsets, read_targets
    from diffattr.config import load
    from diffattr.draws import ModelDraws, TargetSet
    from diffattr.lds.stats import bootstrap_lds, lds, percentile_interval, predictions
    from diffattr.lds.subsets import TUNING
    from diffattr.methods.unlearning import settings as unlearning_settings
    from diffattr.models import load_model, resolve_device
    from diffattr.unlearning import unlearning_scores

    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--config", required=True, help="the LDS run config")
    ap.add_argument("--targets", type=int, default=8, help="the first n targets")
    ap.add_argument("--members", type=int, default=3, help="the first m full models")
    ap.add_argument("--bootstrap", type=int, default=1000)
    ap.add_argument("--threads", type=int, default=1, help="torch threads (a job's default: 1)")
    ap.add_argument(
        "--candidates",
        nargs="+",
        default=[
            "{}",
            '{"lr": 0.1}',
            '{"steps": 4}',
            '{"window": 50}',
            '{"window": 1000}',
            '{"eval_draws": 60}',
        ],
        help="JSON objects of attribution.unlearning overrides; the first is the baseline",
    )
    args = ap.parse_args()
    torch.set_num_threads(args.threads)

    cfg = load([args.config])
    paths = layout.Paths(f"results/{cfg.run}")
    data, stored = read_data(paths.data), read_targets(paths.targets)
    split = read_subsets(paths.subsets)
    tuning = np.flatnonzero(split.role == TUNING)
    truths = [read_ground_truth(paths.ground_truth(int(j))) for j in tuning]
    n_t = min(args.targets, stored.n)
    f_t = np.stack([t.f_t.mean(0) for t in truths])[:, :, :n_t]  # (subsets, steps, targets)
    final_loss = np.stack([t.final_loss.mean(0) for t in truths])[:, :n_t]
    masks = split.masks[tuning]
    device = resolve_device(cfg.device)
    models = []
    for i in range(args.members):
        net, scheduler = load_model(layout.checkpoint(paths.model(i)), device, cfg.model)
        models.append((i, net, scheduler))

    columns = [f"t={t}" for t in stored.steps] + ["final"]
    baseline_draws = None
    print(f"{n_t} targets, {len(models)} members, {len(tuning)} tuning subsets; LDS per column")
    results = []
    for text in args.candidates:
        overrides = json.loads(text)
        known = {f.name for f in dataclasses.fields(cfg.attribution.unlearning)}
        unknown = [k for k in overrides if k not in known]
        if unknown:
            raise SystemExit(f"only attribution.unlearning keys can be tuned, not {unknown}")
        tuned = dataclasses.replace(cfg.attribution.unlearning, **overrides)
        a = dataclasses.replace(cfg.attribution, unlearning=tuned)
        start = time.time()
        per_step, final = [], []
        for index, net, scheduler in models:
            common = dict(
                draws=ModelDraws(
                    net,
                    scheduler.alphas_cumprod,
                    data.images,
                    data.ids,
                    cfg.seed,
                    index,
                    a.batch_size,
                ),
                targets=TargetSet(stored.x0_hat[:, :n_t], stored.steps, stored.target_ids[:n_t]),
                settings=unlearning_settings(dataclasses.replace(cfg, attribution=a)),
            )
            per_step.append(unlearning_scores(**common))
            final.append(unlearning_scores(**common, final=stored.final[:n_t])[0])
        seconds = time.time() - start
        tau, tau_final = np.mean(per_step, 0), np.mean(final, 0)
        pairs = [(predictions(tau[s], masks), f_t[:, s].T) for s in range(len(stored.steps))]
        pairs.append((predictions(tau_final, masks), final_loss.T))
        values = [lds(pred, truth) for pred, truth in pairs]
        draws = np.mean(
            [bootstrap_lds(p, t, args.bootstrap, cfg.seed) for p, t in pairs[:-1]], axis=0
        )
        baseline_draws = draws if baseline_draws is None else baseline_draws
        lo, hi = percentile_interval(draws - baseline_draws)
        mean = float(np.mean(values[:-1]))
        results.append((mean, values[-1], text))
        cells = "  ".join(f"{c} {v:+.3f}" for c, v in zip(columns, values, strict=True))
        print(
            f"{text:32s} {cells}  mean(steps) {mean:+.3f}  vs first [{lo:+.3f}, {hi:+.3f}]"
            f"  {seconds:.0f} s",
            flush=True,
        )
    steps, _, text = max(results)
    print(f"unlearning: chosen on the tuning subsets {text} (mean LDS over steps {steps:+.3f})")
    _, final, text = max(results, key=lambda r: r[1])
    print(f"unlearning_final: chosen on the tuning subsets {text} (final-image LDS {final:+.3f})")


if __name__ == "__main__":
    main()
