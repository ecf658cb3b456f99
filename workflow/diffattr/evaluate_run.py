"""Evaluate new score files on a finished LDS run, without rerunning the workflow.

The run is the benchmark: its subsets (the tuning/reporting split), its ground truth, its
memorization reference and regime diagnostics, and its own methods' score files (the reference
rows; gradient methods with their features, so their λ is tuned as in the run). New score files
join them as more methods of the same report (``stages.lds.lds_report``): per-step LDS with
bootstrap intervals, the null band, the ceiling, reliability and paired margins; λ (or any
setting) chosen on the tuning subsets when a file carries candidate scores. With no new file the
report is the run's own ``reports/lds.csv``, bit for bit.

    diffattr evaluate --run results/digits-lds --configfile config/config.yaml \\
        config/digits-lds.yaml --scores my_method.h5

(The same on an LDS kit, without the run: ``kit``.)
"""

from __future__ import annotations

import tempfile
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from .artifacts import Candidates, Scores, read_scores, read_subsets, write_scores
from .config import RunConfig
from .errors import ArtifactError
from .layout import Paths, members
from .lds.stats import rows_to_read
from .methods import get_method
from .results import Run
from .storage import read_json
from .topk import dense_required


def report_inputs(run: Path, cfg: RunConfig) -> dict:
    """The files the run's ``lds_report`` read (workflow/rules/common.smk: lds_report_inputs)."""
    paths, steps = Paths(str(run)), cfg.attribution_steps()
    methods = list(cfg.attribution.methods)
    gradient = [m for m in methods if get_method(m).uses_gradients]
    kinds = sorted({k.key for m in gradient for k in get_method(m).kinds(steps)})
    ensemble = [str(m) for m in members(cfg.train.ensemble, cfg.attribution.checkpoints)]
    shards = range(cfg.attribution.shards)
    candidates = [
        m for m in methods if get_method(m).candidate_setting and get_method(m).uses_member_scores
    ]
    regime = Path(paths.regime)
    return {
        "subsets": Path(paths.subsets),
        "ground_truth": [Path(paths.ground_truth(j)) for j in range(cfg.lds.n_subsets)],
        "scores": [Path(paths.scores(m)) for m in methods],
        "train_features": [
            Path(paths.train_features(o, m, s)) for o in kinds for m in ensemble for s in shards
        ],
        "target_features": [Path(paths.target_features(g, m)) for g in gradient for m in ensemble],
        "member_scores": [Path(paths.member_scores(m, e)) for m in candidates for e in ensemble],
        "memorization": Path(paths.memorization) if cfg.lds.memorization_reference else None,
        "regime": regime if cfg.regime_diagnostics and regime.exists() else None,
    }


def check_scores(
    path: Path, reference: Scores, train_ids: np.ndarray, taken: set[str], where: str = "the run"
) -> None:
    """A new score file covers the steps, targets and training examples of ``where`` (the run,
    a kit) in its shape; its method name is new; its values are finite. One line naming the
    file and what differs."""
    new = read_scores(path)
    if new.method in taken:
        raise ArtifactError(
            f"{path} is scored by {new.method!r}, a method {where} already has: give it another "
            "name (the score file's attribute method)"
        )
    if new.steps != reference.steps or not np.array_equal(new.target_ids, reference.target_ids):
        raise ArtifactError(
            f"{path} covers steps {new.steps} and targets {new.target_ids.tolist()}, {where} "
            f"{reference.steps} and {reference.target_ids.tolist()}: score {where}'s targets"
        )
    if not np.array_equal(new.train_ids, train_ids):
        raise ArtifactError(
            f"{path} scores {len(new.train_ids)} training examples, not {where}'s "
            f"{len(train_ids)} (in the order of data.h5's ids)"
        )
    expected = (len(reference.steps), len(reference.target_ids), len(train_ids))
    grid = new.candidates
    if new.scores.shape != expected or (grid is not None and grid.scores.shape[1:] != expected):
        shapes = [new.scores.shape] + ([] if grid is None else [grid.scores.shape[1:]])
        raise ArtifactError(
            f"{path} holds scores of shape {' and '.join(map(str, shapes))}, not (steps, "
            f"targets, training examples) = {expected}"
        )
    if not np.isfinite(new.scores).all():
        raise ArtifactError(f"{path} holds non-finite scores")


def evaluate_scores(
    run: str | Path,
    config: RunConfig | Sequence[str | Path],
    scores: Sequence[str | Path] = (),
    out: str | Path | None = None,
) -> tuple[pd.DataFrame, dict]:
    """The LDS table (every row, ``stages.lds`` columns) and lds.json's details of the run's
    methods and the new ``scores`` files; written to ``out`` (lds.csv, lds.json) when given."""
    from .stages.lds import lds_report

    run, scores = Path(run), [Path(s) for s in scores]
    cfg = Run(run).check_config(config)
    if cfg.attribution.top_k is not None:
        raise ArtifactError(dense_required(f"{run} (attribution.top_k: {cfg.attribution.top_k})"))
    inputs = report_inputs(run, cfg)
    missing = [p for p in [inputs["subsets"], *inputs["scores"]] if not p.exists()]
    if missing:
        raise ArtifactError(f"{run} is not a finished LDS run: {missing[0]} does not exist")
    reference = read_scores(inputs["scores"][0])
    train_ids = read_subsets(inputs["subsets"]).train_ids
    for path in scores:
        check_scores(path, reference, train_ids, set(cfg.attribution.methods))
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(out) if out is not None else Path(tmp)
        csv, details = folder / "lds.csv", folder / "lds.json"
        inputs["scores"] = inputs["scores"] + scores
        lds_report(cfg, **inputs, out_csv=csv, out_json=details)
        return pd.read_csv(csv), read_json(details)


def write_method_scores(
    path: str | Path,
    run: str | Path,
    method: str,
    scores: np.ndarray,
    candidates: Candidates | None = None,
    setting: float | None = None,
) -> None:
    """Write ``scores`` (steps, targets, n) of a new method for the run's targets as a score
    file ``diffattr evaluate`` reads; optionally the ``candidates`` of a setting the report
    tunes on the tuning subsets, ``scores`` being those at its value ``setting`` (the table's
    ``lambda`` column, ``config`` rows)."""
    targets, data = Run(run).targets, Run(run).data
    expected = (len(targets.steps), targets.n, data.n)
    if scores.shape != expected:
        raise ArtifactError(f"scores of shape {scores.shape}, expected {expected}")

    def block(s: int, rows: slice, columns: slice) -> np.ndarray:
        return scores[s, rows, columns]

    write_scores(
        path,
        targets.steps,
        targets.target_ids,
        data.ids,
        block,
        {"method": method, **({} if setting is None else {"lambda": setting})},
        candidates=candidates,
    )


def show_table(table: pd.DataFrame, new: set[str]) -> None:
    """Print the rows to read (λ tuned on the tuning subsets where it was), new methods starred."""
    shown = rows_to_read(table)
    columns = ["method", "step", "ground_truth", "lds", "ci_low", "ci_high", "null_high"]
    columns += ["ceiling", "lambda", "margin_over", "margin", "margin_ci_low", "margin_ci_high"]
    shown = shown.assign(method=[f"{m} *" if m in new else m for m in shown.method])
    print(shown[columns].to_string(index=False, float_format=lambda v: f"{v:.3f}"))
    print("* new; rows to read: λ tuned on the tuning subsets where it was, reporting subsets only")
