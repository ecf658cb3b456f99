"""Verdicts that survive a second seed: one benchmark's LDS reports under several master seeds
(other training images, subsets, models and targets each), and the wins called only where every
seed agrees.

Per ground truth and step, from each seed's ``lds.csv`` (the rows to read) and ``lds.json``:

- **best**: the method with the highest LDS, called only when it is the same method under every
  seed and its paired margin over the runner-up has ``margin_ci_low > 0`` under every seed;
- **model vs gradient-free** (``lds.json``'s ``model_vs_gradient_free``): ``model`` when the
  best model-reading method beats the best gradient-free baseline (interval above 0) under every
  seed, ``gradient_free`` when the interval is below 0 under every seed, else not separable.

The bootstrap intervals of one report resample targets and subsets, not the seed that drew the
models and targets; the seed-to-seed spread (``spread``: the largest |difference| of a method's
LDS between seeds at a step) shows the variation they leave out.

    diffattr verdicts --reports results/fontdigits-lds/reports/lds.csv \\
        results/fontdigits-lds-seed1/reports/lds.csv --out verdicts.csv
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import pandas as pd

from .errors import ArtifactError
from .lds.stats import rows_to_read
from .storage import atomic_path, read_json

NOT_CALLED = "—"


def read_report(csv: Path) -> tuple[pd.DataFrame, list[dict]]:
    """One seed's rows to read and its model-vs-gradient-free contrast (lds.json beside the CSV;
    [] when it has none)."""
    if not csv.is_file():
        raise ArtifactError(f"{csv}: no LDS report there (name a run's reports/lds.csv)")
    details = csv.with_suffix(".json")
    contrast = read_json(details).get("model_vs_gradient_free", []) if details.exists() else []
    return rows_to_read(pd.read_csv(csv)), contrast


def best_verdict(tables: Sequence[pd.DataFrame]) -> dict:
    """The leader under each seed and the one called (or ``NOT_CALLED``) at one step."""
    leaders = [t.loc[t["lds"].idxmax()] for t in tables]
    names = [row["method"] for row in leaders]
    separated = all(row["margin_ci_low"] > 0 for row in leaders)
    called = names[0] if len(set(names)) == 1 and separated else NOT_CALLED
    return {
        "leaders": " / ".join(
            f"{r['method']} {r['lds']:.2f} (+{r['margin']:.2f} [{r['margin_ci_low']:.2f}, "
            f"{r['margin_ci_high']:.2f}])"
            for r in leaders
        ),
        "best_called": called,
    }


def contrast_verdict(rows: Sequence[dict | None]) -> dict:
    """Model-reading vs gradient-free at one step under each seed and the side called."""
    if any(r is None for r in rows):
        return {"model_vs_gradient_free": "", "contrast_called": NOT_CALLED}
    text = " / ".join(
        f"{r['model']} − {r['gradient_free']} {r['margin']:+.2f} "
        f"[{r['margin_ci_low']:.2f}, {r['margin_ci_high']:.2f}]"
        for r in rows
    )
    if all(r["margin_ci_low"] > 0 for r in rows):
        called = "model"
    elif all(r["margin_ci_high"] < 0 for r in rows):
        called = "gradient_free"
    else:
        called = NOT_CALLED
    return {"model_vs_gradient_free": text, "contrast_called": called}


def seed_verdicts(reports: Sequence[Path]) -> pd.DataFrame:
    """One row per (ground truth, step) present in every report: each seed's leader with its
    margin, the best method called, the contrast called, the seeds' ceilings and the largest
    seed-to-seed LDS difference of any method there (``spread``, and ``spread_method``)."""
    if len(reports) < 2:
        raise ArtifactError("name the reports of ≥ 2 master seeds of one benchmark (--reports)")
    read = [read_report(Path(p)) for p in reports]
    tables = [t for t, _ in read]
    contrasts = [{(c["ground_truth"], c["step"]): c for c in cs} for _, cs in read]
    keys = set.intersection(*(set(zip(t.ground_truth, t.step, strict=True)) for t in tables))
    if not keys:
        raise ArtifactError("the reports share no (ground truth, step): not one benchmark")
    rows = []
    for truth, step in sorted(keys, key=lambda k: (k[0] != "f_t", -k[1])):
        at = [t[(t.ground_truth == truth) & (t.step == step)] for t in tables]
        lds = pd.concat([a.set_index("method")["lds"] for a in at], axis=1, join="inner")
        spread = lds.max(axis=1) - lds.min(axis=1)
        rows.append(
            {
                "ground_truth": truth,
                "step": int(step),
                "ceiling": " / ".join(f"{a['ceiling'].iloc[0]:.2f}" for a in at),
                **best_verdict(at),
                **contrast_verdict([c.get((truth, int(step))) for c in contrasts]),
                "spread": float(spread.max()),
                "spread_method": spread.idxmax(),
            }
        )
    return pd.DataFrame(rows)


def verdicts_command(*, reports: list[Path], out: Path | None = None) -> None:
    """Verdicts that survive a second seed: per step each master seed's best method and
    model-vs-gradient-free margin (reports/lds.csv, lds.json beside it), called only where every
    seed agrees with intervals above 0; the largest seed-to-seed LDS difference beside them."""
    table = seed_verdicts(reports)
    with pd.option_context("display.max_colwidth", None, "display.width", 250):
        print(table.to_string(index=False, float_format=lambda v: f"{v:.2f}"))
    print(f"{NOT_CALLED}: not called (the seeds disagree, or an interval includes 0)")
    if out is not None:
        with atomic_path(out) as tmp:
            table.to_csv(tmp, index=False)
