"""Counterfactual machinery: removal sets, paired resampling, Fréchet distance, summaries."""

import numpy as np
import pandas as pd
import pytest
import torch
from conftest import make_unet
from diffattr.classifier import (
    FeatureClassifier,
    load_classifier,
    save_classifier,
    train_classifier,
)
from diffattr.config import ClassifierConfig
from diffattr.counterfactual import (
    decision_step,
    frechet_distance,
    random_removal,
    removal_size,
    resample,
    sample_metrics,
    swap_window,
    top_influencers,
)
from diffattr.counterfactual_summary import (
    MIN_INTERVAL_TARGETS,
    bootstrap_interval,
    shows_an_effect,
    summarize,
    t_interval,
)
from diffattr.data import prepare
from diffattr.diffusion import inference_timesteps, model_predictor, swapped_predictor
from diffattr.errors import ConfigError
from scipy import linalg


def test_removal_sets_are_the_top_k_and_seeded():
    rng = np.random.default_rng(0)
    scores = rng.standard_normal(100)
    top = top_influencers(scores, 10)
    assert set(top) == set(np.argsort(scores)[-10:])
    assert scores[top].min() >= np.delete(scores, top).max()
    assert np.array_equal(random_removal(100, 10, 0, 3, 500), random_removal(100, 10, 0, 3, 500))
    other_target = random_removal(100, 10, 0, 4, 500)
    assert not np.array_equal(random_removal(100, 10, 0, 3, 500), other_target)
    assert removal_size(0.1, 1797) == 180 and removal_size(25, 1797) == 25
    with pytest.raises(ConfigError, match="removes 2000 of 1797"):
        removal_size(2000, 1797)


def test_frechet_distance_matches_direct_numpy():
    rng = np.random.default_rng(1)
    a, b = rng.standard_normal((40, 3)), rng.standard_normal((30, 3)) * 2 + 1
    mu = a.mean(0) - b.mean(0)
    ca, cb = np.cov(a, rowvar=False), np.cov(b, rowvar=False)
    ref = mu @ mu + np.trace(ca + cb - 2 * np.real(linalg.sqrtm(ca @ cb)))
    assert frechet_distance(a, b) == pytest.approx(ref, rel=1e-6)
    assert frechet_distance(a, a) == pytest.approx(0.0, abs=1e-6)


def test_paired_resampling_shares_noise_so_only_the_model_differs(scheduler):
    """Original and counterfactual samples from x_t use the same keyed noise streams: a rerun
    with the original model is identical (zero metrics), another model moves the samples, and
    protocol a (the other model on [t − Δ, t] only) moves them less than protocol b."""
    original, other = make_unet(torch.float32, 0), make_unet(torch.float32, 1)
    classifier = FeatureClassifier(1, 10)
    x_t = torch.randn(1, 8, 8)
    steps = inference_timesteps(scheduler, 20)
    t = steps[8]
    base, moved = model_predictor(original), model_predictor(other)
    orig = resample(x_t, t, scheduler, 20, base, 0, 3, 4)
    again = resample(x_t, t, scheduler, 20, base, 0, 3, 4)
    assert sample_metrics(orig, again, classifier, 2) == {
        "l2": 0.0,
        "prob_drop": 0.0,
        "frechet": pytest.approx(0.0, abs=1e-8),
    }
    a = resample(
        x_t, t, scheduler, 20, swapped_predictor(base, moved, swap_window(t, 100, steps)), 0, 3, 4
    )
    b = resample(x_t, t, scheduler, 20, moved, 0, 3, 4)
    l2_a = sample_metrics(orig, a, classifier, 2)["l2"]
    l2_b = sample_metrics(orig, b, classifier, 2)["l2"]
    assert 0 < l2_a < l2_b
    other_stream = resample(x_t, t, scheduler, 20, base, 0, 4, 4)  # another target's streams
    assert not torch.equal(other_stream, orig)


def test_swap_window_and_decision_step():
    assert swap_window(500, 100, [900, 700, 500, 450, 400, 300]) == [500, 450, 400]
    assert decision_step(np.array([0.1, 0.15, 0.8, 0.9]), [900, 600, 300, 0]) == 600


def test_classifier_is_accurate_on_held_out_digits(tmp_path):
    data = prepare({"name": "digits"})
    model, info = train_classifier(
        data.images, data.labels, 10, ClassifierConfig(steps=600), seed=0
    )
    assert info["n_held_out"] == 359
    assert info["held_out_accuracy"] > 0.9, info
    save_classifier(model, tmp_path / "c", info)
    back, info2 = load_classifier(tmp_path / "c")
    x = torch.from_numpy(data.images[:5])
    assert torch.equal(back(x), model(x))
    assert info2["held_out_accuracy"] == info["held_out_accuracy"]


def summary_cases(targets: int) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Per-case metrics of three removals at t = 500 over ``targets`` targets, and the floor."""
    cases = pd.DataFrame(
        [
            {
                "method": m,
                "target": j,
                "step": 500,
                "k": 10,
                "protocol": "a",
                "label": "500",
                "scored_at": 500,
                "l2": v + j * 0.01,
                "prob_drop": 0.0,
                "frechet": 1.0,
            }
            for m, v in [("journey_trak", 3.0), ("pixel_similarity", 2.0), ("random", 1.0)]
            for j in range(targets)
        ]
    )
    floor = pd.DataFrame(
        [
            {"target": j, "step": 500, "protocol": "a", "l2": 0.5, "prob_drop": 0.0, "frechet": 1.0}
            for j in range(targets)
        ]
    )
    return cases, floor


def test_summary_differences_and_counts():
    cases, floor = summary_cases(4)
    table = summarize(cases, floor)
    row = table[(table.method == "journey_trak") & (table.metric == "l2")].iloc[0]
    assert row["diff_vs_random"] == pytest.approx(2.0)
    assert row["seed_floor"] == pytest.approx(0.5)
    assert bool(row["counts"])
    same = table[(table.method == "journey_trak") & (table.metric == "frechet")].iloc[0]
    assert not bool(same["counts"])  # no difference to random: no interval above 0
    # Random removal never beats itself: its paired difference is exactly 0 (not set by hand).
    rand = table[table.method == "random"]
    assert (rand.diff_vs_random == 0).all() and not rand["counts"].any()
    assert row["diff_vs_pixel"] == pytest.approx(1.0)
    # The seed floor is a reference band, not a bar: a same-seed removal still counts under it.
    high_floor = floor.assign(l2=10.0)
    row = summarize(cases, high_floor).query("method == 'journey_trak' and metric == 'l2'")
    assert row.diff_vs_floor_low.iloc[0] < 0 and bool(row["counts"].iloc[0])
    # Beating random is not enough: pixel similarity's removal (same seed stream) must be beaten.
    stronger_pixel = cases.assign(l2=np.where(cases.method == "pixel_similarity", 4.0, cases.l2))
    table = summarize(stronger_pixel, floor)
    row = table.query("method == 'journey_trak' and metric == 'l2'")
    assert row.diff_vs_random_low.iloc[0] > 0 and not bool(row["counts"].iloc[0])
    pixel = table.query("method == 'pixel_similarity' and metric == 'l2'")
    assert bool(pixel["counts"].iloc[0])  # the baseline itself is compared with random only


def test_the_interval_of_a_non_negative_metric_cannot_go_below_zero():
    """Percentile bootstrap of the mean over targets: within the values' range (a t-interval on
    [0.1, 9] goes far below 0), equal to a direct resampling with the same seeded draws."""
    values = np.array([0.1, 9.0, 0.2])
    mean, low, high = bootstrap_interval(values)
    assert t_interval(values)[1] < 0 <= values.min() <= low < mean < high <= values.max()
    rng = np.random.default_rng(0)
    means = values[rng.integers(0, 3, (2000, 3))].mean(axis=1)
    assert (low, high) == tuple(np.percentile(means, [2.5, 97.5]))


def test_step_specificity_is_the_paired_difference_to_the_twin_and_twins_stay_out_of_rows():
    def case(method, j, scored_at, l2, label="500", step=500):
        return {
            "method": method,
            "target": j,
            "step": step,
            "k": 10,
            "protocol": "a",
            "label": label,
            "scored_at": scored_at,
            "l2": l2,
            "prob_drop": 0.1,
            "frechet": 1.0,
        }

    rows = [case("journey_trak", j, 500, 3.0 + 0.1 * j) for j in range(5)]
    rows += [case("journey_trak", j, 0, 2.0 + 0.3 * j) for j in range(5)]  # the twins
    rows += [case("random", j, 500, 1.0) for j in range(5)]
    rows += [case("random", j, 0, 1.0, "final", 999) for j in range(5)]  # not a twin
    rows += [case("journey_trak", j, 0, 5.0, "final", 999) for j in range(5)]
    floor = pd.DataFrame(
        [
            {"target": j, "step": s, "protocol": "a", "l2": 0.5, "prob_drop": 0.0, "frechet": 1.0}
            for j in range(5)
            for s in (500, 999)
        ]
    )
    table = summarize(pd.DataFrame(rows), floor).set_index(["method", "step", "metric"])
    row = table.loc["journey_trak", "500", "l2"]
    assert row["mean"] == pytest.approx(3.2) and row["n_targets"] == 5  # the twins left out
    diffs = np.array([1.0 - 0.2 * j for j in range(5)])
    mean, lo, hi = t_interval(diffs)
    assert (row.diff_vs_other_step, row.diff_vs_other_step_low) == pytest.approx((mean, lo))
    assert row.diff_vs_other_step_high == pytest.approx(hi)
    final = table.loc["journey_trak", "final", "l2"]
    assert final["mean"] == 5.0 and final.diff_vs_random == 4.0
    assert np.isnan(final.diff_vs_other_step)  # final has no twin
    assert table.loc["random", "final", "l2"].seed_floor == 0.5  # x_T's floor, not t = 500's


def test_the_report_names_the_lambda_each_removal_was_ranked_by(tmp_path):
    """Without an LDS the removals rank by the config λ, and the report says so per method."""
    from diffattr.artifacts import write_scores
    from diffattr.stages.figures import removal_ranking

    def block(s, targets, train):
        return np.zeros((targets.stop - targets.start, train.stop - train.start))

    files = []
    for method, attrs in [
        ("journey_trak", {"lambda": 0.01}),
        ("dtrak", {"lambda": 0.5, "lambda_source": "tuned"}),
        ("pixel_similarity", {}),
    ]:
        files.append(tmp_path / f"{method}.h5")
        write_scores(files[-1], [0], np.arange(2), np.arange(3), block, {"method": method, **attrs})
    assert removal_ranking(files) == (
        "journey_trak (config λ = 0.01, not tuned); "
        "dtrak (λ tuned per step on the LDS tuning subsets); pixel_similarity"
    )


def test_fewer_targets_than_an_interval_needs_give_points_and_a_pipeline_check(tmp_path):
    """Over 2 targets a percentile bootstrap 'interval' is their min and max: the summary has no
    interval (NaN, n_targets said), the figure draws each target as a point with n in its title
    and the pipeline-check banner; from MIN_INTERVAL_TARGETS targets on, intervals and a
    counted effect are reported (no banner)."""
    from diffattr.figures import CF_PIPELINE_CHECK, counterfactual_metrics_figure

    cases, floor = summary_cases(2)
    table = summarize(cases, floor)
    assert table.ci_low.isna().all() and table.floor_low.isna().all()
    assert (table.n_targets == 2).all() and table["mean"].notna().all()
    assert bool(table.query("method == 'journey_trak' and metric == 'l2'")["counts"].iloc[0])
    assert not shows_an_effect(table)  # counted, but over 2 targets: a pipeline check
    fig = counterfactual_metrics_figure(table, cases)
    texts = [t.get_text() for t in fig.texts]
    assert CF_PIPELINE_CHECK.format(n=MIN_INTERVAL_TARGETS) in texts
    assert "n = 2 targets" in fig._suptitle.get_text()
    points = [line for line in fig.axes[0].lines if line.get_marker() == "."]
    assert sorted(len(p.get_ydata()) for p in points) == [2, 2, 2]
    cases, floor = summary_cases(MIN_INTERVAL_TARGETS)
    table = summarize(cases, floor)
    assert table.ci_low.notna().all() and shows_an_effect(table)
    fig = counterfactual_metrics_figure(table, cases)
    texts = [t.get_text() for t in fig.texts]
    assert CF_PIPELINE_CHECK.format(n=MIN_INTERVAL_TARGETS) not in texts
    assert "targets:" not in fig._suptitle.get_text()
