"""Stages that draw figures and HTML tables from stored results only: the LDS figure and table,
the patch LDS figure, the feature-emergence curves, the counterfactual figures and table. They
import no model library and nothing depends on their outputs, so forcing them (the README's
figures-only rerun) never retrains, samples or featurizes."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import pandas as pd

from .. import layout
from ..artifacts import (
    ScoreFile,
    TopKFile,
    is_top_k,
    read_data,
    read_emergence,
    read_plan,
    read_resampled,
    ridge_caption,
)
from ..config import RunConfig
from ..counterfactual_summary import MIN_INTERVAL_TARGETS, shows_an_effect
from ..figures import (
    CF_PIPELINE_CHECK,
    counterfactual_metrics_figure,
    counterfactual_samples_figure,
    data_samples_figure,
    emergence_figure,
    group_removal_figure,
    html_table,
    lds_figure,
    patch_lds_figure,
    save,
)
from ..lds.stats import rows_to_read, untuned_methods
from ..storage import atomic_path, read_json

SHOWN_TARGETS = 3  # targets drawn in the paired-samples figure


def data_figure(cfg: RunConfig, *, data: Path, out_figure: Path) -> None:
    """A figure of the training data: the first images of each class (data.h5)."""
    prepared = read_data(data)
    save(data_samples_figure(prepared.images, prepared.labels, prepared.class_names), out_figure)


def lds_figures(
    cfg: RunConfig, *, table: Path, details: Path, out_figure: Path, out_html: Path
) -> None:
    """The LDS figure and the HTML table of the rows to read, from reports/lds.csv and lds.json."""
    rows, info = pd.read_csv(table), read_json(details)
    save(lds_figure(rows, info.get("memorization_reference"), info.get("regime")), out_figure)
    with atomic_path(out_html) as tmp:
        tmp.write_text(lds_html(rows, info))


def lds_html(table: pd.DataFrame, details: dict) -> str:
    """The LDS rows to read (``rows_to_read``: λ tuned on the tuning subsets where it was) as the
    report's HTML table, with the pipeline-check, untuned-λ, reliability and λ-grid warnings."""
    rows = rows_to_read(table).reset_index(drop=True)
    warnings = []
    if details.get("pipeline_check"):
        warnings.append(
            "Pipeline check only: no method's interval clears the null where the ground truth "
            "is reliable (≥ 0.5), so these numbers are not a result (config/digits-lds.yaml is "
            "the benchmark)."
        )
    untuned = untuned_methods(table)
    if untuned:
        warnings.append(
            f"λ not tuned for {', '.join(untuned)}: their rows use attribution.lambda "
            "(lambda_source config); lds.tuning ≥ 3 subsets tunes it."
        )
    edges = {m: d["lambda_at_grid_edge"] for m, d in details.get("methods", {}).items()}
    for method, steps in sorted(edges.items()):
        if steps:
            warnings.append(
                f"{method}: the tuned λ is at the edge of lds.lambdas at {', '.join(steps)}; "
                "extend the grid."
            )
    notes = [
        "Muted rows: the step's ground truth has reliability < 0.5 (⚑ in the figure); bold: "
        "the best method at a step whose margin interval over the next best is above 0.",
        "lds with a 95% bootstrap interval [ci_low, ci_high]; null: the shared random-score band; "
        "ceiling: √reliability.",
    ]
    best = rows.margin_ci_low.fillna(-1) > 0
    classes = [
        "muted" if f else ("strong" if b else "") for f, b in zip(rows.flagged, best, strict=True)
    ]
    regime = details.get("regime")
    note = regime and (
        f"{regime['rule']}. r2: the share of subset 0's model's x̂₀ that each empirical denoiser "
        "of its training half explains (whole image or p×p patches)."
    )
    sections = [("Regime per step", note, regime_table(regime))] if regime else []
    contrast = details.get("model_vs_gradient_free")
    if contrast:
        sections.append(
            (
                "Model-reading vs gradient-free",
                "Per step the best method that reads the trained models against the best "
                "gradient-free baseline (pixel similarity, the optimal and local denoisers); "
                "margin: their LDS difference with a 95% paired bootstrap interval.",
                pd.DataFrame(contrast),
            )
        )
    return html_table(
        rows, "Linear datamodeling score per step", warnings, notes, classes, sections
    )


def regime_table(regime: dict) -> pd.DataFrame:
    """lds.json's regime section as rows (noisy → clean): step, verdict, the measurements
    behind it and the model fidelity (r² of the model's x̂₀ explained by each gradient-free
    denoiser: ``r2 optimal_denoiser``, ``r2 local_<p>``)."""
    columns = ["agreement", "near_copies", "loss_gap", "reference_share"]
    rows = []
    for step in sorted(regime["steps"], key=int, reverse=True):
        d = regime["steps"][step]
        fidelity = {f"r2 {k}": v for k, v in d.get("fidelity", {}).items()}
        rows.append(
            {"step": int(step), "verdict": d["verdict"]} | {c: d[c] for c in columns} | fidelity
        )
    table = pd.DataFrame(rows)
    return table.astype({c: float for c in table.columns if c not in ("step", "verdict")})


def lds_patches_figure(
    cfg: RunConfig, *, table: Path, localization: Path, out_figure: Path
) -> None:
    """The patch LDS figure, from reports/lds_patches.csv and its localization margins."""
    save(patch_lds_figure(pd.read_csv(table), pd.read_csv(localization)), out_figure)


def emergence_figure_stage(cfg: RunConfig, *, emergence: Path, out_figure: Path) -> None:
    """The feature-emergence curves, with each target's decision step."""
    stored = read_emergence(emergence)
    save(emergence_figure(stored.probability, stored.steps, stored.decision_step), out_figure)


def removal_ranking(scores: Sequence[Path]) -> str:
    """The scores the removals were ranked by, each with its λ (tuned or the config's)."""
    named = []
    for path in scores:
        with TopKFile(path) if is_top_k(path) else ScoreFile(path) as f:
            named.append(f"{f.attrs['method']}{ridge_caption(f.attrs)}")
    return "; ".join(named)


def shown_protocol(label: str) -> str:
    """The protocol a figure shows: D-TRAK's (b) for final, the paper's (a) at a step."""
    return "b" if label == "final" else "a"


def cf_figures(  # noqa: PLR0913  (issue 32: not yet split)
    cfg: RunConfig,
    *,
    table: Path,
    cases: Path,
    plan: Path,
    samples: list[Path],
    out_figure_metrics: Path,
    out_figure_samples: Path,
    out_html: Path,
    scores: Sequence[Path] = (),
) -> None:
    """The counterfactual figures (effects per removal; paired samples of the first targets)
    and HTML table, from reports/counterfactual*.csv and the resampled cases; ``scores`` (the
    files the plan ranked by) name each method's λ."""
    summary, per_case = pd.read_csv(table), pd.read_csv(cases)
    ranking = removal_ranking(scores)
    files = {layout.parse_case(layout.parse_cf_samples(p)): p for p in samples}
    shown = []
    for case in read_plan(plan).cases:
        if case.target >= SHOWN_TARGETS:
            continue
        runs = read_resampled(files[case.index])[case.target, case.step]
        protocol = shown_protocol(case.label)
        if protocol in runs:
            shown.append((case, runs["original"], runs[protocol]))
    save(counterfactual_metrics_figure(summary, per_case, ranking), out_figure_metrics)
    save(counterfactual_samples_figure(shown), out_figure_samples)
    accuracy = float(summary.classifier_accuracy.iloc[0]) if len(summary) else float("nan")
    notes = [
        "mean over targets with a 95% bootstrap interval (none with fewer than "
        f"{MIN_INTERVAL_TARGETS} targets: n_targets); diff_vs_random, diff_vs_pixel: paired "
        "differences (same seed stream, t-intervals) to removing random examples and pixel "
        "similarity's top examples; seed_floor: a reseeded full-data model's change (a "
        "reference band, not a bar).",
        "step final: D-TRAK's protocol (the final image's attribution removed, the target "
        "regenerated from its own x_T; protocol b only). diff_vs_other_step: the "
        "step-specificity test, the same removal size chosen from the attribution at the "
        "farthest other step, resampled from the same x_t.",
        f"Bold rows count (above 0 against random and pixel similarity); classifier "
        f"held-out accuracy {accuracy:.2f}.",
    ] + ([f"Removals ranked by {ranking}."] if ranking else [])
    banner = CF_PIPELINE_CHECK.format(n=MIN_INTERVAL_TARGETS).replace("\n", " ")
    warnings = [] if shows_an_effect(summary) else [banner]
    classes = ["strong" if c else "" for c in summary["counts"]]
    page = html_table(summary, "Counterfactual retraining", warnings, notes, classes)
    with atomic_path(out_html) as tmp:
        tmp.write_text(page)


def group_figure(cfg: RunConfig, *, table: Path, cases: Path, out_figure: Path) -> None:
    """The group protocol's figure: ratio and AUC against random removals per method and metric
    (from reports/group_removal.csv and group_removal_targets.csv)."""
    save(group_removal_figure(pd.read_csv(table), pd.read_csv(cases)), out_figure)
