"""The patch LDS: the LDS of every (method, step, patch) against the patch's own ground truth, and
whether localizing helps: patch-specific scores vs the same method's whole-image scores.

Each patch is reported like the whole image (``report.lds_table``: bootstrap interval, shared
null, split-half ceiling, paired margin over the best other row) with the patch's f_t as ground
truth. The localization margin of a method at step t and patch P is LDS(patch scores) −
LDS(whole-image scores) on the same bootstrap resamples; pooled over patches it is the mean of
the per-patch margins (its interval: the percentile interval of the mean resampled margin).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping

import numpy as np
import pandas as pd

from ..config import LdsConfig
from .report import LdsInputs, lds_table
from .stats import bootstrap_lds, lds, percentile_interval, predictions
from .subsets import REPORTING

WHOLE = " (whole image)"  # suffix of a whole-image method's rows in the patch table

LOCALIZATION_COLUMNS = [
    "method",
    "step",
    "patch",
    "lds_patch_scores",
    "lds_whole_image_scores",
    "margin",
    "margin_ci_low",
    "margin_ci_high",
    "n_targets",
    "n_subsets",
]


def patch_lds_table(
    masks: np.ndarray,
    role: np.ndarray,
    f_t: np.ndarray,
    steps: list[int],
    patch_scores: Mapping[str, object],
    whole_scores: Mapping[str, object],
    cfg: LdsConfig,
    seed: int,
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The patch LDS table (``report.COLUMNS`` + ``patch``) and the localization table.

    ``f_t`` (subsets, seeds, steps, targets, patches); ``patch_scores[m].scores`` (steps,
    targets, patches, n); ``whole_scores[m].scores`` (steps, targets, n), reported per patch as
    ``m (whole image)``. No λ is tuned here: each file's λ (its ``lambda_source``) stands.
    """
    tables = []
    for p in range(f_t.shape[-1]):
        scores = {
            m: dataclasses.replace(r, scores=r.scores[:, :, p], boxes=None)
            for m, r in patch_scores.items()
        }
        scores.update({m + WHOLE: r for m, r in whole_scores.items()})
        inputs = LdsInputs(masks, role, f_t[..., p], None, steps, scores)
        table, _ = lds_table(inputs, cfg, seed)
        table.insert(2, "patch", p)
        tables.append(table)
    return pd.concat(tables, ignore_index=True), localization(
        masks, role, f_t, steps, patch_scores, whole_scores, cfg.bootstrap, seed
    )


def localization(
    masks: np.ndarray,
    role: np.ndarray,
    f_t: np.ndarray,
    steps: list[int],
    patch_scores: Mapping[str, object],
    whole_scores: Mapping[str, object],
    bootstrap: int,
    seed: int,
) -> pd.DataFrame:
    """Per method with both kinds of scores, step and patch (and pooled over patches, patch
    ``all``): the paired LDS margin of patch-specific over whole-image scores on the reporting
    subsets."""
    report = role == REPORTING
    truth = f_t.mean(1)[report]  # (reporting subsets, steps, targets, patches)
    m = masks[report]
    rows = []
    for method in sorted(set(patch_scores) & set(whole_scores)):
        local, whole = patch_scores[method].scores, whole_scores[method].scores
        for s, step in enumerate(steps):
            pred_whole = predictions(whole[s], m)  # (targets, subsets)
            diffs, pairs = [], []
            for p in range(f_t.shape[-1]):
                values = truth[:, s, :, p].T  # (targets, subsets)
                pred_local = predictions(local[s, :, p], m)
                a = bootstrap_lds(pred_local, values, bootstrap, seed)
                b = bootstrap_lds(pred_whole, values, bootstrap, seed)  # the same resamples
                point_a, point_b = lds(pred_local, values), lds(pred_whole, values)
                lo, hi = percentile_interval(a - b)
                rows.append(_row(method, step, p, point_a, point_b, lo, hi, values.shape))
                diffs.append(a - b)
                pairs.append((point_a, point_b))
            lo, hi = percentile_interval(np.mean(diffs, axis=0))
            mean_a, mean_b = np.mean(pairs, axis=0)
            rows.append(_row(method, step, "all", mean_a, mean_b, lo, hi, values.shape))
    return pd.DataFrame(rows, columns=LOCALIZATION_COLUMNS)


def _row(method, step, patch, a, b, lo, hi, shape) -> dict:
    return {
        "method": method,
        "step": int(step),
        "patch": patch,
        "lds_patch_scores": a,
        "lds_whole_image_scores": b,
        "margin": a - b,
        "margin_ci_low": lo,
        "margin_ci_high": hi,
        "n_targets": shape[0],
        "n_subsets": shape[1],
    }
