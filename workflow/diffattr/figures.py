"""Figures from stored results only (re-running figures never retrains or recomputes anything)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np

from .counterfactual_summary import MIN_INTERVAL_TARGETS, shows_an_effect
from .lds.stats import rows_to_read, shows_a_result, untuned_methods
from .topk import Ranked, rank_dense

if TYPE_CHECKING:
    import pandas as pd

plt.rcParams.update({"figure.dpi": 120, "savefig.dpi": 150, "font.size": 8})


def to_display(image: np.ndarray) -> np.ndarray:
    """(C, H, W) in [-1, 1] → (H, W) or (H, W, 3) in [0, 1]."""
    img = np.clip((np.asarray(image, dtype=np.float32) + 1) / 2, 0, 1)
    return img[0] if img.shape[0] == 1 else np.transpose(img[:3], (1, 2, 0))


def _show(ax: plt.Axes, image: np.ndarray, title: str | None = None) -> None:
    ax.imshow(to_display(image), cmap="gray", vmin=0, vmax=1, interpolation="nearest")
    ax.set_xticks([])
    ax.set_yticks([])
    if title:
        ax.set_title(title, fontsize=8, pad=2)


def data_samples_figure(
    images: np.ndarray, labels: np.ndarray, class_names: Sequence[str], per_class: int = 12
) -> plt.Figure:
    """The first ``per_class`` training images of each of the first 10 classes, one row per
    class named on the left (what the models were trained on)."""
    classes = np.unique(labels)[:10]
    fig, axes = plt.subplots(
        len(classes), per_class, figsize=(0.55 * per_class, 0.6 * len(classes)), squeeze=False
    )
    for row, label in zip(axes, classes, strict=True):
        shown = images[labels == label][:per_class]
        for ax in row:
            ax.axis("off")
        for ax, image in zip(row, shown, strict=False):
            _show(ax, image)
        name = class_names[label] if label < len(class_names) else str(label)
        row[0].text(-0.15, 0.5, name, transform=row[0].transAxes, ha="right", va="center")
    fig.subplots_adjust(left=0.1, right=0.99, bottom=0.01, top=0.92, wspace=0.05, hspace=0.05)
    fig.suptitle(f"training data: {len(images)} images, {len(classes)} classes shown", y=0.97)
    return fig


def attribution_grid(  # noqa: PLR0913  (issue 32: not yet split)
    x0_hat: np.ndarray,
    steps: Sequence[int | str],
    scores: np.ndarray | Ranked,
    train_images: np.ndarray,
    train_labels: np.ndarray,
    top_k: int,
    title: str,
    box: Sequence[int] | None = None,
    train_ids: np.ndarray | None = None,
) -> plt.Figure:
    """The paper's signature figure for one target.

    Columns are attribution steps t (noisy → clean; a label such as "final image" is shown as
    is); the first row shows x̂_0^t, then the ``top_k`` strongest positive influencers at that
    step (green), then the ``top_k`` negative ones (red), each titled with its score, training id
    and label. ``x0_hat`` is (n_steps, C, H, W); ``scores`` is (n_steps, n_train), or their
    top-k (``topk.Ranked`` (2, n_steps, k), e.g. from a top-k score file). With a patch
    ``box`` [y0, x0, y1, x1) the scores are the patch's and the box is outlined on every image.
    """
    n_steps = len(steps)
    ranked = scores if isinstance(scores, Ranked) else rank_dense(scores, top_k)
    top_k = min(top_k, ranked.k)
    rows = 1 + 2 * top_k
    ids = np.arange(len(train_labels)) if train_ids is None else train_ids
    fig, axes = plt.subplots(rows, n_steps, figsize=(1.1 * n_steps + 0.7, 1.15 * rows + 0.5))
    axes = np.asarray(axes).reshape(rows, n_steps)
    for c, t in enumerate(steps):
        _show(axes[0, c], x0_hat[c], f"t={t}" if isinstance(t, int | np.integer) else str(t))
        picks = [
            (1 + sign * top_k + r, int(ranked.index[sign, c, r]), ranked.score[sign, c, r], color)
            for sign, color in enumerate(("tab:green", "tab:red"))
            for r in range(top_k)
        ]
        for row, i, value, color in picks:
            tile = f"{value:+.2g}\n#{ids[i]} · {train_labels[i]}"
            _show(axes[row, c], train_images[i], tile)
            _frame(axes[row, c], color)
    if box is not None:
        for ax in axes.ravel():
            _outline(ax, box)
    axes[0, 0].set_ylabel("x̂₀ᵗ" if isinstance(steps[0], int | np.integer) else "target", fontsize=8)
    axes[1, 0].set_ylabel(f"top {top_k} +", fontsize=8, color="tab:green")
    axes[1 + top_k, 0].set_ylabel(f"top {top_k} −", fontsize=8, color="tab:red")
    fig.suptitle(title, fontsize=9)
    fig.tight_layout(pad=0.3, h_pad=0.4, w_pad=0.2, rect=(0, 0, 1, 0.97))
    return fig


def _outline(ax: plt.Axes, box: Sequence[int], color: str = "gold") -> None:
    """Outline the patch [y0, x0, y1, x1) on an image axis (pixel edges at ±0.5), inset a
    little so that its sides on the image border stay visible inside the frame."""
    y0, x0, y1, x1 = (int(v) for v in box)
    d = 0.12
    corner = (x0 - 0.5 + d, y0 - 0.5 + d)
    ax.add_patch(
        plt.Rectangle(corner, x1 - x0 - 2 * d, y1 - y0 - 2 * d, fill=False, ec=color, lw=1.4)
    )


def patches_overview(
    x0_hat: np.ndarray,
    steps: Sequence[int],
    scores: np.ndarray,
    boxes: np.ndarray,
    train_images: np.ndarray,
    train_labels: np.ndarray,
    top_k: int,
    title: str,
) -> plt.Figure:
    """How the patches of one target draw on different training images: a row per patch with
    the final x̂_0 (patch outlined) and, per step, that patch's top ``top_k`` positive
    influencers (patch outlined). ``scores`` (steps, patches, n_train), ``boxes`` (patches, 4)."""
    n_patches = len(boxes)
    cols = 1 + len(steps) * top_k
    fig, axes = plt.subplots(
        n_patches, cols, figsize=(0.7 * cols + 0.4, 0.8 * n_patches + 0.6), squeeze=False
    )
    for p, box in enumerate(boxes):
        _show(axes[p, 0], x0_hat[-1], f"patch {p}" if p else f"t={steps[-1]}, patch 0")
        _outline(axes[p, 0], box)
        for c, t in enumerate(steps):
            top = np.argsort(scores[c, p])[::-1][:top_k]
            for r, i in enumerate(top):
                ax = axes[p, 1 + c * top_k + r]
                _show(ax, train_images[i], f"t={t}" if p == 0 and r == 0 else None)
                _outline(ax, box)
                _frame(ax, "tab:green")
    fig.suptitle(f"{title} (top {top_k} + per step)", fontsize=8)
    fig.tight_layout(pad=0.3, h_pad=0.3, w_pad=0.1, rect=(0, 0, 1, 0.95))
    return fig


def patch_lds_figure(table, localization) -> plt.Figure:
    """Left: LDS per step of every method on each patch's ground truth, mean over patches (dots:
    single patches). Right: the localization margin LDS(patch scores) − LDS(whole-image scores),
    pooled over patches with its paired bootstrap interval."""
    rows = table[table.ground_truth == "f_t"]
    steps = sorted(rows.step.unique(), reverse=True)
    xs = np.arange(len(steps))
    methods = sorted(rows.method.unique())
    bases = sorted({m.removesuffix(" (whole image)") for m in methods})
    palette = plt.get_cmap("tab10" if len(bases) <= 10 else "tab20").colors
    color_of = {b: palette[i % len(palette)] for i, b in enumerate(bases)}
    fig, (ax, bx) = plt.subplots(1, 2, figsize=(8.5, 3.2))
    ctx = rows.groupby("step")[["null_low", "null_high", "ceiling"]].mean().loc[steps]
    ax.fill_between(xs, ctx.null_low, ctx.null_high, color="0.85", label="null (mean over patches)")
    ax.plot(xs, ctx.ceiling, "k--", lw=1, label="ceiling (mean over patches)")
    for method in methods:  # a method and its whole-image scores share a colour
        g = rows[rows.method == method]
        mean = g.groupby("step").lds.mean().loc[steps]
        color = color_of[method.removesuffix(" (whole image)")]
        ls = "--" if method.endswith("(whole image)") else "-"
        ax.plot(xs, mean, "o" + ls, ms=3, lw=1, color=color, label=method)
        for i, step in enumerate(steps):
            ax.scatter(
                np.full(len(g[g.step == step]), i),
                g[g.step == step].lds,
                s=4,
                color=color,
                alpha=0.4,
            )
    ax.axhline(0, color="0.4", lw=0.6)
    ax.set_xticks(xs, [str(s) for s in steps])
    ax.set_xlabel("attribution step t (noisy → clean)")
    ax.set_ylabel("patch LDS (Spearman)")
    ax.legend(fontsize=8, ncol=2, loc="upper center", bbox_to_anchor=(0.5, -0.22))
    ax.set_title("LDS on the patches' ground truth (reporting subsets)", fontsize=8)
    pooled = localization[localization.patch.astype(str) == "all"]
    for k, (method, g) in enumerate(pooled.groupby("method")):
        g = g.set_index("step").loc[[s for s in steps if s in set(g.step)]]
        x = np.array([steps.index(s) for s in g.index]) + (k - 0.5) * 0.15
        bx.errorbar(
            x,
            g.margin,
            yerr=[g.margin - g.margin_ci_low, g.margin_ci_high - g.margin],
            fmt="o",
            ms=3,
            capsize=2,
            color=color_of.get(method),
            label=method,
        )
    bx.axhline(0, color="0.4", lw=0.6)
    bx.set_xticks(xs, [str(s) for s in steps])
    bx.set_xlabel("attribution step t")
    bx.set_ylabel("LDS(patch) − LDS(whole image)")
    bx.set_title("does localizing help? (paired, 95% interval)", fontsize=8)
    bx.legend(fontsize=8)
    fig.tight_layout()
    return fig


def _frame(ax: plt.Axes, color: str) -> None:
    for spine in ax.spines.values():
        spine.set_edgecolor(color)
        spine.set_linewidth(1.5)


def save(fig: plt.Figure, path: str | Path) -> None:
    """Save a figure atomically and close it."""
    from .storage import atomic_path

    with atomic_path(path) as tmp:
        fig.savefig(tmp, format=Path(path).suffix.lstrip(".") or "png", bbox_inches="tight")
    plt.close(fig)


def _html_rows(table: pd.DataFrame, row_class: Sequence[str] | None = None) -> str:
    import html

    def cell(value) -> str:
        if isinstance(value, float):
            return "" if np.isnan(value) else f"{value:.3f}"
        return html.escape(str(value))

    classes = list(row_class) if row_class is not None else [""] * len(table)
    head = "".join(f"<th>{html.escape(str(c))}</th>" for c in table.columns)
    rows = "".join(
        f'<tr class="{cls}">' + "".join(f"<td>{cell(v)}</td>" for v in row) + "</tr>"
        for cls, row in zip(classes, table.itertuples(index=False), strict=True)
    )
    return f"<table><thead><tr>{head}</tr></thead><tbody>{rows}</tbody></table>"


def lds_figure(table, memorization: dict | None = None, regime: dict | None = None) -> plt.Figure:
    """LDS against step (noisy → clean) for every method, with bootstrap intervals, the shared-
    random-vector null band (5–95%) and the noise ceiling √reliability; steps whose ground truth
    is unreliable (reliability < 0.5) are shaded; ``memorization`` ({step: {"spearman": ...}}):
    the memorizing denoiser's correlation with the truth, dotted; ``regime`` (lds.json's): each
    step's verdict under its tick. Right: the trajectory-free LDS. The rows are
    :func:`rows_to_read`'s; a method whose λ was not tuned is labelled so."""
    rows = rows_to_read(table)
    untuned = set(untuned_methods(table))
    per_step = rows[rows.ground_truth == "f_t"]
    final = rows[rows.ground_truth == "final_loss"]
    steps = sorted(per_step.step.unique(), reverse=True)
    fig, (ax, bx) = plt.subplots(1, 2, figsize=(8.5, 3.2), gridspec_kw={"width_ratios": [3, 1.2]})
    ctx = per_step.drop_duplicates("step").set_index("step").loc[steps]
    xs = np.arange(len(steps))
    ax.fill_between(xs, ctx.null_low, ctx.null_high, color="0.85", label="null (shared random τ)")
    ax.plot(xs, ctx.ceiling, "k--", lw=1, label="ceiling √reliability")
    if memorization:
        memo = [memorization.get(str(step), {}).get("spearman", np.nan) for step in steps]
        ax.plot(xs, memo, ":", color="0.3", lw=1.2, label="memorizing denoiser (reference)")
    for i, flagged in enumerate(ctx.flagged):
        if flagged:
            ax.axvspan(i - 0.5, i + 0.5, color="tab:red", alpha=0.07, lw=0)
    methods = sorted(per_step.method.unique())
    palette = plt.get_cmap("tab10" if len(methods) <= 10 else "tab20").colors
    width = 0.7 / max(1, len(methods))
    for k, (method, group) in enumerate(per_step.groupby("method")):
        g = group.set_index("step").loc[steps]
        off = (k - (len(methods) - 1) / 2) * width
        ax.errorbar(
            xs + off,
            g.lds,
            yerr=[g.lds - g.ci_low, g.ci_high - g.lds],
            fmt="o-",
            ms=3,
            lw=1,
            capsize=2,
            color=palette[k % len(palette)],
            label=_lambda_label(method, untuned),
        )
    ax.axhline(0, color="0.4", lw=0.6)
    verdicts = (regime or {}).get("steps", {})
    short = {"generalizing": "gen", "transitional": "trans", "memorizing": "mem"}
    ticks = [
        f"{s}\n{short.get(verdicts[str(s)]['verdict'], verdicts[str(s)]['verdict'])}"
        if str(s) in verdicts
        else str(s)
        for s in steps
    ]
    ax.set_xticks(xs, ticks, fontsize=7 if verdicts else None)
    regime_key = "; regime: gen(eralizing), trans(itional), mem(orizing)" if verdicts else ""
    ax.set_xlabel(f"attribution step t (noisy → clean; red: reliability < 0.5{regime_key})")
    ax.set_ylabel("LDS (Spearman)")
    below = -0.32 if verdicts else -0.22  # under two-line tick labels
    ax.legend(fontsize=8, ncol=4, loc="upper center", bbox_to_anchor=(0.5, below))
    ax.set_title("LDS per step (reporting subsets)", fontsize=8)
    f = final.set_index("method").loc[methods]
    bx.axhspan(f.null_low.iloc[0], f.null_high.iloc[0], color="0.85")
    bx.bar(
        range(len(methods)),
        f.lds,
        yerr=[f.lds - f.ci_low, f.ci_high - f.lds],
        capsize=2,
        color=[palette[i % len(palette)] for i in range(len(methods))],
    )
    bx.axhline(f.ceiling.iloc[0], color="k", ls="--", lw=1)
    bx.axhline(0, color="0.4", lw=0.6)
    labels = [_lambda_label(m, untuned) for m in methods]
    bx.set_xticks(range(len(methods)), labels, rotation=45, ha="right", fontsize=8)
    bx.set_title("trajectory-free LDS (final image)", fontsize=8)
    fig.tight_layout()
    if not shows_a_result(table):
        fig.text(
            0.5,
            0.62,  # above the step labels and their verdicts
            PIPELINE_CHECK,
            ha="center",
            va="center",
            fontsize=9,
            color="tab:red",
            bbox={"facecolor": "white", "alpha": 0.85, "edgecolor": "tab:red"},
        )
    return fig


def _lambda_label(method: str, untuned: set[str]) -> str:
    return f"{method} (config λ, untuned)" if method in untuned else method


PIPELINE_CHECK = (
    "PIPELINE CHECK ONLY: no method's interval clears the null where\n"
    "the ground truth is reliable (≥ 0.5). Results: config/digits-lds.yaml"
)
"""The LDS figure's banner when the table shows no result (``lds.stats.shows_a_result``)."""


def emergence_figure(probs: np.ndarray, steps: Sequence[int], decided: Sequence[int]) -> plt.Figure:
    """P(final class) among samples of p(·|x_t) against t, one line per target; markers at each
    target's decision step (just before the steepest rise)."""
    fig, ax = plt.subplots(figsize=(4.8, 3))
    xs = np.arange(len(steps))
    for j in range(probs.shape[1]):
        (line,) = ax.plot(xs, probs[:, j], "-", lw=1, alpha=0.8)
        d = list(steps).index(decided[j])
        ax.plot(xs[d], probs[d, j], "o", color=line.get_color(), ms=4)
    ax.plot(xs, probs.mean(1), "k-", lw=2.2, label="mean over targets")
    ax.set_xticks(xs, [str(s) for s in steps])
    ax.set_ylim(-0.02, 1.02)
    ax.set_xlabel("step t (noisy → clean)")
    ax.set_ylabel("P(final class | sample of p(·|x_t))")
    ax.set_title("Feature emergence (dots: decision step per target)", fontsize=8)
    ax.legend(fontsize=8)
    fig.tight_layout()
    return fig


def counterfactual_metrics_figure(table, cases=None, ranking: str = "") -> plt.Figure:  # noqa: C901  (issue 32: not yet split)
    """Each metric (rows) at each examined step (columns, under the protocol shown there: the
    paper's a at a step, D-TRAK's b for final): bars per method and removal size, mean over
    targets with 95% bootstrap intervals; the seed floor's interval as a grey band. A summary
    over fewer than ``MIN_INTERVAL_TARGETS`` targets has no interval (NaN): its bars show each
    target's value of ``cases`` (counterfactual_cases.csv) as points instead, and n is said.
    ``ranking`` (which scores and λ chose the removals) goes under the title; without an effect
    (``counterfactual_summary.shows_an_effect``) the figure carries the pipeline-check banner."""
    metrics = [
        ("l2", "paired pixel L2"),
        ("prob_drop", "drop of P(target class)"),
        ("frechet", "Fréchet distance (classifier features)"),
    ]
    labels = list(dict.fromkeys(table.step.astype(str)))
    fig, axes = plt.subplots(3, len(labels), figsize=(3.4 * len(labels) + 0.6, 8.4), squeeze=False)
    few = bool((table.n_targets < MIN_INTERVAL_TARGETS).any())
    for c, label in enumerate(labels):
        protocol = "b" if label == "final" else "a"
        for r, (metric, title) in enumerate(metrics):
            ax = axes[r, c]
            g = table[
                (table.step.astype(str) == label)
                & (table.protocol == protocol)
                & (table.metric == metric)
            ].sort_values(["method", "k"])
            xs = np.arange(len(g))
            yerr = None if few else np.nan_to_num([g["mean"] - g.ci_low, g.ci_high - g["mean"]])
            colors = [_method_color(m) for m in g.method]
            ax.bar(xs, g["mean"], yerr=yerr, capsize=2, color=colors, alpha=0.5 if few else 1)
            if few and cases is not None:
                for x, (_, row) in zip(xs, g.iterrows(), strict=True):
                    values = _case_values(cases, row, label, protocol, metric)
                    ax.plot(np.full(len(values), x), values, "k.", ms=5)
            for x, counted in zip(xs, g["counts"], strict=True):
                if counted:
                    ax.annotate("*", (x, 1.0), xycoords=("data", "axes fraction"), ha="center")
            if len(g) and g.floor_low.notna().any():
                band = (g.floor_low.min(), g.floor_high.max())
                ax.axhspan(*band, color="0.85", zorder=0, label="seed floor (95% interval)")
            elif len(g):
                ax.axhline(g.seed_floor.mean(), color="0.6", ls=":", lw=1, label="seed floor")
            ax.axhline(0, color="0.4", lw=0.6)
            ticks = [f"{m}\n−{k} examples" for m, k in zip(g.method, g.k, strict=True)]
            ax.set_xticks(xs, ticks, fontsize=8, rotation=35, ha="right")
            ax.tick_params(axis="y", labelsize=8)
            where = {"final": "final image, from x_T", "emergence": "decision step"}.get(
                label, f"t = {label}"
            )
            ax.set_title(f"{title}\n{where}, protocol {protocol}", fontsize=8)
            if c == 0 and r == 0 and len(g):
                ax.legend(fontsize=8, loc="upper left")
    title = "Counterfactual effect per removal (* counts: above random and pixel removal)"
    if few:
        n = int(table.n_targets.min())
        title += (
            f"\nn = {n} targets: points are targets, bars their mean, no interval "
            f"(an interval needs ≥ {MIN_INTERVAL_TARGETS})"
        )
    fig.suptitle(title + (f"\nremovals ranked by {ranking}" if ranking else ""), fontsize=9)
    fig.tight_layout()
    if not shows_an_effect(table):
        fig.text(
            0.5,
            0.5,
            CF_PIPELINE_CHECK.format(n=MIN_INTERVAL_TARGETS),
            ha="center",
            va="center",
            fontsize=9,
            color="tab:red",
            bbox={"facecolor": "white", "alpha": 0.85, "edgecolor": "tab:red"},
        )
    return fig


CF_PIPELINE_CHECK = (
    "PIPELINE CHECK ONLY: no removal counts over ≥ {n} targets.\nResults: config/digits-cf.yaml"
)
"""The counterfactual figure's banner when its summary shows no effect."""


def _case_values(cases, row, label: str, protocol: str, metric: str) -> np.ndarray:
    """Per-target values behind one summary row (the step-specificity twins left out)."""
    twin = (cases.label.astype(str) != "final") & (cases.scored_at != cases.step)
    pick = (
        ~twin
        & (cases.method == row.method)
        & (cases.label.astype(str) == label)
        & (cases.k == row.k)
        & (cases.protocol == protocol)
    )
    return cases.loc[pick, metric].to_numpy()


def _method_color(method: str) -> str:
    return {"random": "0.6", "pixel_similarity": "C2", "journey_trak": "C0"}.get(method, "C1")


def counterfactual_samples_figure(shown, per_row: int = 6) -> plt.Figure:
    """Paired samples per (target, examined step): the original model's samples of p(·|x_t)
    (x_T for final), then per removal the counterfactual model's samples from the same noise
    streams. ``shown``: (case, original, counterfactual) triples."""
    groups: dict[tuple[int, str], list] = {}
    for case, original, other in shown:
        groups.setdefault((case.target, case.label), []).append((case, original, other))
    n = min(per_row, shown[0][1].shape[0]) if shown else 1
    heights = [1 + len(g) for g in groups.values()] or [1]
    fig = plt.figure(figsize=(0.85 * n + 1.8, 0.85 * sum(heights) + 0.5 * len(heights)))
    subfigs = fig.subfigures(len(heights), 1, height_ratios=heights, squeeze=False)[:, 0]
    for sub, ((target, label), group) in zip(subfigs, groups.items(), strict=False):
        axes = sub.subplots(1 + len(group), n, squeeze=False)
        rows = [("original", group[0][1])]
        for case, _, other in group:
            chosen = f" @t={case.scored_at}" if case.twin else ""
            rows.append((f"{case.method}{chosen}\n−{case.k} examples", other))
        for r, (name, images) in enumerate(rows):
            for c in range(n):
                _show(axes[r, c], images[c])
            axes[r, 0].set_ylabel(name, fontsize=8, rotation=0, ha="right", va="center")
        where = {
            "final": "regenerated from its x_T (final-image attribution)",
            "emergence": f"from x_t at its decision step t = {group[0][0].step}",
        }.get(label, f"from x_t, t = {label}")
        sub.suptitle(f"target {target}, {where}", fontsize=8)
    return fig


_TABLE_STYLE = """
body { font: 13px/1.4 system-ui, sans-serif; margin: 12px; color: #1e293b; }
h1 { font-size: 16px; margin: 0 0 8px; }
p.note { margin: 4px 0; }
p.warn { margin: 4px 0; padding: 6px 8px; background: #fef2f2; border-left: 4px solid #dc2626; }
table { border-collapse: collapse; margin-top: 8px; }
th, td { padding: 3px 8px; border-bottom: 1px solid #e2e8f0; text-align: right; }
th { background: #f1f5f9; position: sticky; top: 0; }
td:first-child, th:first-child { text-align: left; }
tr.muted td { color: #94a3b8; }
tr.strong td { font-weight: 600; }
"""


def html_table(
    table: pd.DataFrame,
    title: str,
    warnings: Sequence[str] = (),
    notes: Sequence[str] = (),
    row_class: Sequence[str] | None = None,
    sections: Sequence[tuple[str, str, pd.DataFrame]] = (),
) -> str:
    """A report table as a standalone HTML page (the report shows it inline): a title, warning
    boxes, notes, then the rows (``row_class`` per row: "muted", "strong" or ""); then each of
    ``sections`` (heading, note, table)."""
    import html

    parts = [f"<h1>{html.escape(title)}</h1>"]
    parts += [f'<p class="warn">{html.escape(w)}</p>' for w in warnings]
    parts += [f'<p class="note">{html.escape(n)}</p>' for n in notes]
    parts.append(_html_rows(table, row_class))
    for heading, note, rows in sections:
        parts += [f"<h2>{html.escape(heading)}</h2>", f'<p class="note">{html.escape(note)}</p>']
        parts.append(_html_rows(rows))
    return (
        f'<!DOCTYPE html><html><head><meta charset="utf-8"><title>{html.escape(title)}</title>'
        f"<style>{_TABLE_STYLE}</style></head><body>{''.join(parts)}</body></html>\n"
    )


GROUP_METRICS = [
    ("l2", "paired pixel L2"),
    ("ssim_drop", "1 − SSIM"),
    ("prob_drop", "drop of P(target class)"),
]


def group_removal_figure(table, per_target) -> plt.Figure:
    """The group protocol (reports/group_removal.csv): per metric (columns), the ratio of each
    method's effect to its random removals' mean (top; 1 = random) and the AUC against them
    (bottom; 0.5 = random), mean over the group's targets with 95% bootstrap intervals; with
    fewer than ``MIN_INTERVAL_TARGETS`` targets each target's value (``per_target``, the
    per-(model, target) effects) is drawn as a point instead."""
    from .group_removal import per_method

    values = per_method(per_target)
    methods = list(dict.fromkeys(table.method))
    fig, axes = plt.subplots(2, len(GROUP_METRICS), figsize=(3.3 * len(GROUP_METRICS), 5.2))
    xs = np.arange(len(methods))
    for c, (metric, title) in enumerate(GROUP_METRICS):
        for r, (stat, chance) in enumerate([("ratio", 1.0), ("auc", 0.5)]):
            ax = axes[r, c]
            g = table[table.metric == metric].set_index("method").reindex(methods)
            for x, method in zip(xs, methods, strict=True):
                row, color = g.loc[method], _method_color(method)
                if np.isfinite(row[f"{stat}_low"]):
                    err = [[row[stat] - row[f"{stat}_low"]], [row[f"{stat}_high"] - row[stat]]]
                    ax.errorbar(x, row[stat], yerr=err, fmt="o", color=color, capsize=3)
                else:
                    points = values[method, metric][stat]
                    ax.plot(np.full(len(points), x), points, ".", color=color, alpha=0.7)
                    ax.plot(x, row[stat], "_", color=color, ms=14)
            ax.axhline(chance, color="0.5", lw=0.8, ls="--")
            ax.set_xticks(xs, methods, rotation=30, ha="right")
            ax.set_xlim(-0.6, len(methods) - 0.4)
            ax.set_title(f"{title}: {stat}" if r == 0 else f"AUC against random ({title})")
            if stat == "auc":
                ax.set_ylim(-0.03, 1.03)
    n = int(table.n_targets.max()) if len(table) else 0
    draws = int(table.n_random.max()) if len(table) else 0
    fig.suptitle(
        f"Group removal: {n} targets, one retraining per method, {draws} random removals of "
        "each union's size (dashed: random)",
        fontsize=9,
    )
    fig.tight_layout()
    return fig
