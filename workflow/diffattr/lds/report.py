"""The LDS report: per (method, step) on the reporting subsets, λ tuned on the tuning subsets.

Rows come in two variants per method: ``tuned`` (gradient methods: λ from ``lds.lambdas`` chosen
on the tuning subsets, per step or shared, for the whole ensemble) and ``config`` (the stored
scores, computed with ``attribution.lambda``). The final image's loss (the trajectory-free ground
truth) is tuned and reported like one more step, on the last attribution step's scores.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from ..config import LdsConfig
from ..errors import ArtifactError
from ..ridge import ridge_predictions
from ..scoring import RowBlocks
from .stats import (
    bootstrap_interval,
    bootstrap_lds,
    family_contrast,
    lds,
    paired_margins,
    pairwise_margins,
    percentile_interval,
    predictions,
    shared_null,
    split_half_reliability,
    variance_components,
)
from .subsets import REPORTING, TUNING

if TYPE_CHECKING:  # the codec sits above this module; only its type is used here
    from ..artifacts import Scores

log = logging.getLogger(__name__)

COLUMNS = [
    "method",
    "step",
    "ground_truth",
    "lds",
    "ci_low",
    "ci_high",
    "null_low",
    "null_high",
    "ceiling",
    "reliability",
    "flagged",
    "n_targets",
    "n_subsets",
    "n_seeds",
    "lambda",
    "lambda_source",
    "margin_over",
    "margin",
    "margin_ci_low",
    "margin_ci_high",
]
FINAL = "final_loss"


@dataclass(frozen=True)
class LdsInputs:
    """Everything the report reads.

    ``f_t`` (subsets, seeds, steps, targets) and ``final_loss`` (subsets, seeds, targets): the
    ground truth; ``members[method]``: per ensemble member of a gradient method (in the order of
    its score file's ``members``), its training features Φ per step (the same store at every step
    but for step-local methods), target features ψ (steps, targets, k) and the method's
    per-example score weights (n,) or None (DAS's residual weights);
    ``memorization`` (steps, targets, subsets) or None; ``member_candidates[method]``: per
    member of a method whose score file holds candidate scores, its own (values, steps,
    targets, n) (without them λ is tuned on the ensemble mean only); ``grids[method]``: in place
    of both, the whole ensemble's :class:`Grid` (what an LDS kit ships instead of the features:
    λ is then tuned for the whole ensemble only, the one size lds.json's ``ensemble_size`` has).
    """

    masks: np.ndarray
    role: np.ndarray
    f_t: np.ndarray
    final_loss: np.ndarray | None  # None: no trajectory-free column (patch LDS)
    steps: list[int]
    scores: dict[str, Scores]
    members: dict[str, list[tuple[list[RowBlocks], np.ndarray, np.ndarray | None]]] = field(
        default_factory=dict
    )
    memorization: np.ndarray | None = None
    member_candidates: dict[str, list[np.ndarray]] = field(default_factory=dict)
    grids: dict[str, Grid] = field(default_factory=dict)

    @classmethod
    def of(
        cls,
        split: Any,
        truths: Sequence[Any],
        scores: dict[str, Scores],
        memorization: np.ndarray | None = None,
        source: object = "the memorization reference",
        **rest: Any,
    ) -> LdsInputs:
        """From the subsets, the ground truth of every subset (in subset order), the score files
        and the memorization reference's losses (steps, targets, subsets) read from ``source``,
        checked against the ground truth's shape; ``rest``: the other fields."""
        expected = (len(truths[0].steps), len(truths[0].target_ids), len(split.masks))
        if memorization is not None and memorization.shape != expected:
            raise ArtifactError(f"{source} has shape {memorization.shape}, expected {expected}")
        return cls(
            masks=split.masks,
            role=split.role,
            f_t=np.stack([t.f_t for t in truths]),  # (subsets, seeds, steps, targets)
            final_loss=np.stack([t.final_loss for t in truths]),  # (subsets, seeds, targets)
            steps=truths[0].steps,
            scores=scores,
            memorization=memorization,
            **rest,
        )


@dataclass(frozen=True)
class Grid:
    """A method's LDS predictions −M τ_v at every value v of the setting the report tunes (the
    ridge λ, ekfac's damping), for its first ``size`` ensemble members: ``predictions``
    (values, steps, targets, subsets)."""

    values: list[float]
    size: int
    predictions: np.ndarray


@dataclass(frozen=True)
class Truth:
    """The ground truth per column (each step, then the final image's loss): the seed average
    (columns, targets, subsets), per seed, and the null/ceiling context of each column."""

    columns: list[str]
    values: np.ndarray
    per_seed: list[np.ndarray]  # per column: (seeds, targets, subsets)
    context: list[dict[str, float]]


@dataclass(frozen=True)
class Tuning:
    """λ chosen on the tuning subsets: index into the grid per column, the tuning LDS
    (lambdas, columns), the reporting LDS per column, and the chosen predictions
    (columns, targets, subsets)."""

    best: np.ndarray
    tuning_lds: np.ndarray
    reporting_lds: list[float]
    chosen: np.ndarray


@dataclass(frozen=True)
class Variant:
    """One way of scoring a method: its λ per column and predictions (columns, targets, subsets)."""

    source: str  # "tuned" or "config"
    lambdas: list[float | None]
    predictions: np.ndarray


def lds_table(
    inputs: LdsInputs, cfg: LdsConfig, seed: int, families: Mapping[str, str] | None = None
) -> tuple[pd.DataFrame, dict[str, Any]]:
    """The LDS table (``COLUMNS``) and the details for ``lds.json``; ``families`` (method →
    ``Method.family``) adds the model-vs-gradient-free contrast per step."""
    tune, report = inputs.role == TUNING, inputs.role == REPORTING
    truth = measure_truth(inputs, report, cfg.null_draws, seed)
    details: dict[str, Any] = {
        "methods": {},
        "n_tuning": int(tune.sum()),
        "n_reporting": int(report.sum()),
        # Diagnostics over all subsets (nothing is tuned on them): where the ground-truth noise is.
        "ground_truth_variance": {
            c: variance_components(s) for c, s in zip(truth.columns, truth.per_seed, strict=True)
        },
    }
    if inputs.memorization is not None:
        details["memorization_reference"] = memorization_reference(
            inputs, truth, report, cfg.bootstrap, seed
        )
    lambdas = [float(v) for v in cfg.lambdas]
    rows: list[dict[str, Any]] = []
    resamples: list[np.ndarray] = []
    final = inputs.final_loss is not None
    for method, result in sorted(inputs.scores.items()):
        stored = predictions(result.scores, inputs.masks)
        variants = [
            Variant(*stored_lambdas(result.attrs, truth.columns, final), with_final(stored, final))
        ]
        grid, by_size = tuning_grid(inputs, method, result, lambdas, truth, tune, report, cfg)
        if by_size:
            tuned = by_size[-1][1]  # the whole ensemble is the one reported
            chosen = [grid[b] for b in tuned.best]
            variants.insert(0, Variant("tuned", chosen, tuned.chosen))
            edges = warn_at_grid_edge(method, grid, tuned.best, truth.columns)
            details["methods"][method] = {
                "lambda_at_grid_edge": edges,
                "lambdas": grid,
                "lambda_means": result.attrs.get("lambda_means", "ridge λ"),
                "lambda_per_step": cfg.lambda_per_step,
                "tuning_lds": {
                    c: tuned.tuning_lds[:, i].tolist() for i, c in enumerate(truth.columns)
                },
                "selected_lambda": dict(zip(truth.columns, chosen, strict=True)),
                "ensemble_size": {
                    str(size): {
                        "lambda": {c: grid[b] for c, b in zip(truth.columns, t.best, strict=True)},
                        "reporting_lds": dict(zip(truth.columns, t.reporting_lds, strict=True)),
                    }
                    for size, t in by_size
                },
            }
        for variant in variants:
            for i, column in enumerate(truth.columns):
                pred, values = variant.predictions[i][:, report], truth.values[i][:, report]
                samples = bootstrap_lds(pred, values, cfg.bootstrap, seed)
                lo, hi = percentile_interval(samples)
                lam = variant.lambdas[i]
                rows.append(
                    {
                        "method": method,
                        "step": inputs.steps[-1] if column == FINAL else int(column),
                        "ground_truth": FINAL if column == FINAL else "f_t",
                        "lds": lds(pred, values),
                        "ci_low": lo,
                        "ci_high": hi,
                        **truth.context[i],
                        "n_targets": values.shape[0],
                        "n_subsets": values.shape[1],
                        "lambda": np.nan if lam is None else float(lam),
                        "lambda_source": variant.source if lam is not None else "none",
                    }
                )
                resamples.append(samples)
    table = pd.DataFrame(rows)
    paired_margins(table, resamples)
    if families is not None:
        details["model_vs_gradient_free"] = family_contrast(table, resamples, dict(families))
    details["pairwise_margins"] = pairwise_margins(table, resamples)
    table["n_seeds"] = inputs.f_t.shape[1]
    table["flagged"] = ~(table["reliability"] >= 0.5)
    return table[COLUMNS], details


def tuning_grid(
    inputs: LdsInputs,
    method: str,
    result: Scores,
    lambdas: list[float],
    truth: Truth,
    tune: np.ndarray,
    report: np.ndarray,
    cfg: LdsConfig,
) -> tuple[list[float], list[tuple[int, Tuning]]]:
    """A method's grid of values and its tuning by ensemble size (``grids_by_size``; [] when it
    has nothing to tune or fewer than ``LdsConfig.MIN_TUNING`` tuning subsets)."""
    final, per_step = inputs.final_loss is not None, cfg.lambda_per_step
    if tune.sum() < cfg.MIN_TUNING:
        return [], []
    values, out = [], []
    for grid in grids_by_size(inputs, method, result, lambdas):
        pred = with_final(grid.predictions, final)
        values = grid.values
        out.append((grid.size, tune_lambda(pred, truth.values, tune, report, per_step)))
    return values, out


def grids_by_size(
    inputs: LdsInputs, method: str, result: Scores, lambdas: list[float]
) -> Iterator[Grid]:
    """A method's :class:`Grid` for its first 1, 2, … members (none: nothing to tune): gradient
    methods re-solve the ridge for every λ of ``lds.lambdas`` (the ensemble's prediction is the
    members' mean); a method whose file holds candidate scores (ekfac's damping scales)
    predicts from the mean of its members' own candidates, or from the file's ensemble mean
    alone when the report was not given them; a grid given whole (``inputs.grids``) as is."""
    if method in inputs.grids:
        yield inputs.grids[method]
    elif method in inputs.members and lambdas:
        members = member_predictions(inputs.members[method], lambdas, inputs.masks)
        for size in range(1, len(members) + 1):
            yield Grid(list(lambdas), size, members[:size].mean(0))
    elif result.candidates is not None:
        members = inputs.member_candidates.get(method)
        if members:
            grids = [(size, np.mean(members[:size], axis=0)) for size in range(1, len(members) + 1)]
        else:  # the ensemble mean the score file holds
            grids = [
                (len(result.attrs.get("ensemble_members") or [None]), result.candidates.scores)
            ]
        for size, grid in grids:
            pred = np.stack([predictions(c, inputs.masks) for c in grid])
            yield Grid(result.candidates.values, size, pred)


def stored_lambdas(
    attrs: dict[str, Any], columns: Sequence[str], final: bool
) -> tuple[str, list[float | None]]:
    """The λ source and λ per column of a stored score file: ``config`` (attribution.lambda at
    every step), or ``tuned`` (a file scored with an LDS report's per-step λ: patch scores)."""
    if attrs.get("lambda_source") == "tuned":
        per_step = [float(v) for v in attrs["lambda_per_step"]]
        return "tuned", per_step + per_step[-1:] * final
    return "config", [attrs.get("lambda")] * len(columns)


def measure_truth(inputs: LdsInputs, report: np.ndarray, null_draws: int, seed: int) -> Truth:
    """Seed-averaged ground truth per column, with the null band and ceiling on the reporting
    subsets (the ceiling is √ of the split-half reliability over training seeds)."""
    per_seed = np.moveaxis(inputs.f_t, 0, -1)  # (seeds, steps, targets, subsets)
    seeds = [per_seed[:, s] for s in range(len(inputs.steps))]
    if inputs.final_loss is not None:
        seeds.append(np.moveaxis(inputs.final_loss, 0, -1))  # (seeds, targets, subsets)
    values = np.stack([s.mean(0) for s in seeds])
    context = []
    for column, column_seeds in zip(values, seeds, strict=True):
        null = shared_null(inputs.masks[report], column[:, report], null_draws, seed)
        rel = split_half_reliability(column_seeds[..., report])
        context.append(
            {
                "null_low": float(np.percentile(null, 5)),
                "null_high": float(np.percentile(null, 95)),
                "reliability": rel,
                "ceiling": float(np.sqrt(rel)) if rel >= 0 else float("nan"),
            }
        )
    columns = [str(s) for s in inputs.steps] + [FINAL] * (inputs.final_loss is not None)
    return Truth(columns, values, seeds, context)


def memorization_reference(
    inputs: LdsInputs, truth: Truth, report: np.ndarray, bootstrap: int, seed: int
) -> dict[str, dict[str, float]]:
    """How far the subset models behave like their subset's empirical optimal denoiser (a
    Spearman across reporting subsets like the LDS; not an attribution, nothing tuned)."""
    out = {}
    for s, step in enumerate(inputs.steps):
        memo, values = inputs.memorization[s][:, report], truth.values[s][:, report]
        lo, hi = bootstrap_interval(memo, values, bootstrap, seed)
        value = lds(memo, values)
        out[str(step)] = {"spearman": value, "ci_low": lo, "ci_high": hi}
        log.info("memorization reference at t=%d: %.3f [%.3f, %.3f]", step, value, lo, hi)
    return out


def with_final(pred: np.ndarray, final: bool = True) -> np.ndarray:
    """(..., steps, targets, subsets) → (..., steps + 1, ...): the last step's predictions
    again, scored against the final image's loss (unchanged without a ``final`` column)."""
    return np.concatenate([pred, pred[..., -1:, :, :]], axis=-3) if final else pred


def member_predictions(
    members: Sequence[tuple[Sequence[RowBlocks], np.ndarray, np.ndarray | None]],
    lambdas: Sequence[float],
    masks: np.ndarray,
    block: int = 8192,
) -> np.ndarray:
    """Predictions of every ensemble member's scores on every subset, for every λ:
    (members, lambdas, steps, targets, subsets). The ensemble's prediction is their mean
    (predictions are linear in the scores; weighted scores diag(w)τ predict through M·diag(w)).
    Steps sharing a feature store are predicted together."""
    out = []
    for stores, psi, weights in members:
        n_steps, n_targets, k = psi.shape
        weighted = masks if weights is None else masks * weights[None, :]
        pred = np.empty((len(lambdas), n_steps, n_targets, len(masks)))
        for store in {id(s): s for s in stores}.values():
            steps = [i for i, s in enumerate(stores) if s is store]
            q = psi[steps].reshape(-1, k)
            part = ridge_predictions(store.blocks(block), q, lambdas, weighted)
            pred[:, steps] = part.reshape(len(lambdas), len(steps), n_targets, -1)
        out.append(pred)
    return np.stack(out)


def per_column_lds(pred: np.ndarray, truth: np.ndarray) -> np.ndarray:
    """pred, truth (columns, targets, subsets) → LDS per column."""
    return np.array([lds(pred[c], truth[c]) for c in range(len(pred))])


def tune_lambda(
    pred: np.ndarray, truth: np.ndarray, tune: np.ndarray, report: np.ndarray, per_column: bool
) -> Tuning:
    """λ chosen on the tuning subsets only: per column (the best tuning LDS there) or one λ
    shared by all columns (the best mean). ``pred`` (lambdas, columns, targets, subsets),
    ``truth`` (columns, targets, subsets)."""
    tuning = np.array([per_column_lds(p[..., tune], truth[..., tune]) for p in pred])
    if per_column:
        best = np.nanargmax(np.nan_to_num(tuning, nan=-np.inf), axis=0)
    else:
        best = np.full(tuning.shape[1], int(np.nanargmax(np.nanmean(tuning, axis=1))))
    chosen = pred[best, np.arange(len(best))]  # (columns, targets, subsets)
    reporting = per_column_lds(chosen[..., report], truth[..., report]).tolist()
    return Tuning(best, tuning, reporting, chosen)


def warn_at_grid_edge(
    method: str, lambdas: Sequence[float], best: np.ndarray, columns: Sequence[str]
) -> list[str]:
    """The columns (steps) whose tuned λ is at the grid's edge, logged as a warning."""
    edges = [c for c, b in zip(columns, best, strict=True) if b in (0, len(lambdas) - 1)]
    if len(lambdas) <= 1:
        return []
    if edges:
        log.warning(
            "%s: the tuned λ is at the edge of lds.lambdas %s at %s; extend the grid",
            method,
            [lambdas[0], lambdas[-1]],
            ", ".join(edges),
        )
    return edges
