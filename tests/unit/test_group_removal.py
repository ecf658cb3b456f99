"""The group-removal protocol (MUCS's): union-of-top-k removals, the random null, ratio and AUC
against it with intervals over targets, SSIM and P(class) effects, the config's checks."""

import numpy as np
import pandas as pd
import pytest
import torch
from diffattr.config import CounterfactualConfig, load
from diffattr.counterfactual_summary import MIN_INTERVAL_TARGETS, bootstrap_interval
from diffattr.errors import ConfigError
from diffattr.group_removal import (
    METRICS,
    against_random,
    effects,
    pairs,
    plan,
    random_union,
    ranking_step,
    ssim,
    summarize,
    union_of_top_k,
)
from diffattr.layout import group_random, parse_group_model
from skimage.metrics import structural_similarity


def synthetic(n_targets=12, draws=6, seed=0):
    """Per-target effects of two methods and their random draws (one row per value)."""
    rng = np.random.default_rng(seed)
    rows, truth = [], {}
    for method, shift in [("journey_trak", 0.8), ("pixel_similarity", 0.1)]:
        for metric in METRICS:
            own = rng.gamma(2.0, 1.0, n_targets) + shift
            null = rng.gamma(2.0, 1.0, (draws, n_targets))
            truth[method, metric] = own, null
            for draw, values in [(-1, own), *enumerate(null)]:
                rows += [
                    {"method": method, "draw": draw, "target": t, "metric": metric, "value": v}
                    for t, v in enumerate(values)
                ]
    frame = pd.DataFrame(rows).sample(frac=1, random_state=1)  # order must not matter
    return frame, truth


def test_ratio_and_auc_equal_a_direct_numpy_computation():
    frame, truth = synthetic()
    table = summarize(frame, {"journey_trak": 30, "pixel_similarity": 25}).set_index(
        ["method", "metric"]
    )
    for (method, metric), (own, null) in truth.items():
        ratio = own / null.mean(axis=0)
        auc = np.array([(null[:, t] < own[t]).mean() for t in range(len(own))])
        row = table.loc[method, metric]
        assert row.ratio == pytest.approx(ratio.mean())
        assert row.auc == pytest.approx(auc.mean())
        assert row.effect == pytest.approx(own.mean())
        assert row.random == pytest.approx(null.mean())
        assert row.minus_random == pytest.approx((own - null.mean(0)).mean())
        assert (row.auc_low, row.auc_high) == pytest.approx(bootstrap_interval(auc)[1:])
        assert (row.ratio_low, row.ratio_high) == pytest.approx(bootstrap_interval(ratio)[1:])
        assert row.n_random == null.shape[0] and row.n_targets == len(own)
    assert table.loc["journey_trak", "l2"].removed == 30
    paired = pairs(frame).set_index(["method", "other", "metric"])
    own_a, null_a = truth["journey_trak", "l2"]
    own_b, null_b = truth["pixel_similarity", "l2"]
    diff = own_a / null_a.mean(0) - own_b / null_b.mean(0)
    assert paired.loc["journey_trak", "pixel_similarity", "l2"].diff_ratio == pytest.approx(
        diff.mean()
    )


def test_auc_counts_ties_half_and_few_targets_get_no_interval():
    ratio, auc = against_random(np.array([2.0, 1.0]), np.array([[1.0, 1.0], [3.0, 0.5]]))
    assert ratio == pytest.approx([1.0, 4 / 3])
    assert auc == pytest.approx([0.5, 0.75])
    frame, _ = synthetic(n_targets=MIN_INTERVAL_TARGETS - 1)
    table = summarize(frame, {"journey_trak": 3, "pixel_similarity": 3})
    assert table[["ratio_low", "auc_high"]].isna().all().all()
    assert table.auc.notna().all()


def scores_of(table):
    return lambda method, step, target: table[method, step][target]


def test_union_of_top_k_masks_equal_a_hand_computation():
    n, steps = 12, [500, 100, 0]
    jt = {  # journey_trak at each target's decision step (500 and 100)
        500: np.array([[9, 8, 7, 0, 0, 0, 0, 0, 0, 0, 0, 1], [0] * 12], float),
        100: np.array([[0] * 12, [0, 0, 0, 0, 0, 0, 0, 0, 5, 9, 8, 7]], float),
    }
    das = np.zeros((2, n))  # final-image attribution: the last step's row
    das[0, [3, 4]] = [2, 1]
    das[1, [4, 5]] = [3, 2]
    table = {("journey_trak", s): jt[s] for s in jt} | {("das", 0): das}
    cf = CounterfactualConfig.from_dict(
        {"methods": ["journey_trak", "das", "random"], "group": {"size": 2, "k": 2, "random": 2}}
    )
    planned = plan(cf, n, steps, [500, 100], scores_of(table), 0, trajectory_free=["das"])
    assert planned.names == [
        "journey_trak",
        "das",
        *[group_random(m, r) for m in ("journey_trak", "das") for r in range(2)],
    ]
    removed = {name: set(np.flatnonzero(~planned.keep[i])) for i, name in enumerate(planned.names)}
    assert removed["journey_trak"] == {0, 1, 9, 10}  # target 0's top 2 at 500, target 1's at 100
    assert removed["das"] == {3, 4, 5}  # the union of {3, 4} and {4, 5}
    assert planned.ranked_at.tolist() == [[500, 100], [0, 0]]
    for method in ("journey_trak", "das"):
        for r in range(2):
            drawn = removed[group_random(method, r)]
            assert len(drawn) == len(removed[method])
            assert drawn == set(random_union(n, len(removed[method]), 0, r))
    # the draws are nested across sizes, and differ between draws
    assert removed[group_random("das", 0)] < removed[group_random("journey_trak", 0)]
    assert removed[group_random("das", 0)] != removed[group_random("das", 1)]
    assert ranking_step(True, 500, steps) == 0 and ranking_step(False, 500, steps) == 500
    assert union_of_top_k(np.array([[3.0, 2.0, 1.0], [3.0, 2.0, 1.0]]), 1).tolist() == [0]


def test_ssim_is_scikit_images_and_effects_read_the_target_class():
    rng = np.random.default_rng(0)
    a = rng.uniform(-1, 1, (2, 3, 1, 8, 8))
    b = np.clip(a + 0.3 * rng.standard_normal(a.shape), -1, 1)
    got = ssim(a, b)
    ref = structural_similarity(a[1, 2, 0], b[1, 2, 0], win_size=7, data_range=2.0)
    assert got.shape == (2, 3) and got[1, 2] == pytest.approx(ref)
    assert ssim(a, a) == pytest.approx(np.ones((2, 3)))

    class Reader:  # P(class 1) = the image's mean pixel mapped to [0, 1]
        def probabilities(self, x):
            p1 = (x.flatten(1).mean(1) + 1) / 2
            return torch.stack([1 - p1, p1], dim=1)

    found = effects(a, b, Reader(), [1, 0])
    mean_a, mean_b = (a.reshape(2, 3, -1).mean(-1) + 1) / 2, (b.reshape(2, 3, -1).mean(-1) + 1) / 2
    assert found["prob_drop"][0] == pytest.approx((mean_a - mean_b)[0].mean(), abs=1e-6)
    assert found["prob_drop"][1] == pytest.approx(-(mean_a - mean_b)[1].mean(), abs=1e-6)
    assert found["ssim_drop"] == pytest.approx(1 - got.mean(1))
    assert found["l2"][0] == pytest.approx(np.linalg.norm((a - b)[0].reshape(3, -1), axis=1).mean())


def test_group_names_and_config_checks(tmp_path):
    assert parse_group_model("random3-journey_trak") == ("journey_trak", 3)
    assert parse_group_model("das") == ("das", None)
    with pytest.raises(ConfigError, match="bad group model"):
        parse_group_model("original")
    path = tmp_path / "big.yaml"
    path.write_text("counterfactual: {group: {size: 9}}\n")
    with pytest.raises(ConfigError, match=r"group.size \(9\) exceeds targets.n \(3\)"):
        load(["config/config.yaml", "config/test.yaml", path])
    only_random = "{methods: [random], specificity: [], group: {size: 2, methods: null}}"
    path.write_text(f"counterfactual: {only_random}\n")
    with pytest.raises(ConfigError, match="needs a method other than random"):
        load(["config/config.yaml", "config/test.yaml", path])
    cfg = load(["config/config.yaml", "config/test.yaml"]).counterfactual
    assert cfg.group_models == ("journey_trak", "random0-journey_trak")  # group.methods
    path.write_text("counterfactual: {group: {size: 2, methods: [das]}}\n")
    with pytest.raises(ConfigError, match=r"group.methods \['das'\]: list them"):
        load(["config/config.yaml", "config/test.yaml", path])
