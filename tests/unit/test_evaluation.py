"""LDS machinery against closed forms and scipy."""

import dataclasses

import numpy as np
import pandas as pd
import pytest
import torch
from conftest import make_unet
from diffattr.features import rows_batch, target_draws
from diffattr.lds.ground_truth import ground_truth
from diffattr.lds.memorization import memorization_loss
from diffattr.lds.report import tune_lambda
from diffattr.lds.stats import (
    bootstrap_interval,
    bootstrap_lds,
    family_contrast,
    lds,
    paired_margins,
    pairwise_margins,
    predictions,
    shared_null,
    spearman_rows,
    split_half_reliability,
    variance_components,
)
from diffattr.lds.subsets import make_subsets
from diffattr.methods import METHODS
from diffattr.outputs import evaluate
from diffattr.ridge import ridge_predictions
from scipy import stats


def test_subsets_have_exactly_alpha_n_members_and_are_seeded():
    masks = make_subsets(101, 20, 0.5, seed=3)
    assert (masks.sum(1) == 50).all()
    assert np.array_equal(masks, make_subsets(101, 20, 0.5, seed=3))
    assert not np.array_equal(masks, make_subsets(101, 20, 0.5, seed=4))
    assert len({m.tobytes() for m in masks}) == 20


def test_lds_is_one_when_truth_is_linear_in_the_masks():
    rng = np.random.default_rng(0)
    masks = make_subsets(60, 30, 0.5, seed=0)
    w = rng.standard_normal((4, 60))  # per target: f(S) = c + Σ_{i∈S} w_i
    truth = masks @ w.T + 5.0
    tau = -w  # positive τ lowers the output
    assert lds(predictions(tau, masks), truth.T) == pytest.approx(1.0)
    assert lds(predictions(w, masks), truth.T) == pytest.approx(-1.0)


def test_spearman_matches_scipy_with_ties():
    rng = np.random.default_rng(1)
    a = rng.integers(0, 5, (6, 12)).astype(float)
    b = rng.standard_normal((6, 12))
    ours = spearman_rows(a, b)
    ref = [stats.spearmanr(a[i], b[i]).statistic for i in range(6)]
    np.testing.assert_allclose(ours, ref, rtol=1e-12)


def test_bootstrap_interval_agrees_with_scipy_for_one_target():
    rng = np.random.default_rng(2)
    x = rng.standard_normal(40)
    y = x + rng.standard_normal(40)
    lo, hi = bootstrap_interval(x[None], y[None], 3000, seed=0)
    res = stats.bootstrap(
        (x, y),
        lambda a, b: stats.spearmanr(a, b).statistic,
        paired=True,
        vectorized=False,
        n_resamples=3000,
        method="percentile",
        random_state=np.random.default_rng(0),
    )
    assert lo == pytest.approx(res.confidence_interval.low, abs=0.05)
    assert hi == pytest.approx(res.confidence_interval.high, abs=0.05)


def test_batched_bootstrap_and_null_equal_one_at_a_time():
    """The vectorized bootstrap and null give the numbers of the plain loops over lds()."""
    from diffattr.seeding import numpy_rng

    rng = np.random.default_rng(3)
    masks = make_subsets(30, 12, 0.5, seed=2)
    pred = rng.standard_normal((5, 12))
    truth = pred + rng.standard_normal((5, 12))
    truth[0] = 1.0  # a constant row: NaN correlation, skipped by the mean
    ref_rng = numpy_rng(0, "lds-bootstrap")
    values = []
    for _ in range(50):
        r, c = ref_rng.integers(5, size=5), ref_rng.integers(12, size=12)
        values.append(lds(pred[np.ix_(r, c)], truth[np.ix_(r, c)]))
    expected = np.nanpercentile(values, [2.5, 97.5])
    np.testing.assert_allclose(bootstrap_interval(pred, truth, 50, seed=0, chunk=7), expected)
    null_rng = numpy_rng(0, "lds-null")
    loop = [
        lds(np.broadcast_to(predictions(null_rng.standard_normal(30), masks), (5, 12)), truth)
        for _ in range(20)
    ]
    np.testing.assert_allclose(shared_null(masks, truth, 20, seed=0), loop, rtol=1e-12)


def test_predictions_do_not_depend_on_the_thread_count():
    """A 1-thread report job and ``diffattr evaluate`` on all cores give the same predictions
    bit for bit (a float32 BLAS matmul does not: its blocking follows the threads), equal to
    the float64 sum within rounding."""
    from threadpoolctl import threadpool_limits

    rng = np.random.default_rng(0)
    scores = rng.standard_normal((6, 24, 2000)).astype(np.float32)
    masks = rng.random((44, 2000)) < 0.5
    everywhere = predictions(scores, masks)
    with threadpool_limits(1):
        one = predictions(scores, masks)
    np.testing.assert_array_equal(everywhere, one)
    exact = -(scores.astype(np.float64) @ masks.T.astype(np.float64))
    np.testing.assert_allclose(everywhere, exact, rtol=0, atol=1e-10)


def test_family_contrast_pairs_the_best_of_each_side_on_the_same_resamples():
    """Per step: the best model-reading method against the best gradient-free baseline (random
    on neither side, an unknown name counts as model-reading, config rows of a tuned method not
    read); the interval is the percentile interval of the paired resample differences; a step
    without a baseline is left out."""
    rng = np.random.default_rng(5)
    truth = rng.standard_normal((6, 15))
    noisy = {s: truth + s * rng.standard_normal(truth.shape) for s in (0.3, 0.6, 1.0, 3.0)}
    rows, resamples = [], []

    def add(method, step, pred, source="none", value=None):
        rows.append(
            {
                "method": method,
                "step": step,
                "ground_truth": "f_t",
                "lds": lds(pred, truth) if value is None else value,
                "lambda_source": source,
            }
        )
        resamples.append(bootstrap_lds(pred, truth, 200, seed=3))

    add("journey_trak", 100, noisy[1.0], "tuned")
    add("journey_trak", 100, noisy[0.3], "config", value=0.99)  # a tuned method's config row
    add("my_method", 100, noisy[0.6])  # not in the registry: model-reading
    add("pixel_similarity", 100, noisy[3.0])
    add("local_denoiser", 100, noisy[1.0], "tuned")
    add("random", 100, truth)  # the floor: on neither side, however good
    add("journey_trak", 300, noisy[0.3], "tuned")  # no baseline at 300
    table = pd.DataFrame(rows)
    families = {m: METHODS[m].family for m in table.method if m in METHODS}
    (row,) = family_contrast(table, resamples, families)
    assert (row["step"], row["model"], row["gradient_free"]) == (100, "my_method", "local_denoiser")
    diff = resamples[2] - resamples[4]
    assert row["margin"] == pytest.approx(rows[2]["lds"] - rows[4]["lds"])
    assert row["margin_ci_low"] == pytest.approx(np.percentile(diff, 2.5))
    assert row["margin_ci_high"] == pytest.approx(np.percentile(diff, 97.5))
    assert {m for m, x in METHODS.items() if x.family == "gradient_free"} == {
        "pixel_similarity",
        "optimal_denoiser",
        "local_denoiser",
    }


def test_paired_margins_use_the_same_resamples_for_both_methods():
    """margin = LDS difference to the best other method; its interval comes from the difference
    of the two methods' LDS on identical resamples (so a copy of a method has margin [0, 0])."""
    import pandas as pd

    rng = np.random.default_rng(8)
    truth = rng.standard_normal((6, 15))
    good = truth + 0.5 * rng.standard_normal(truth.shape)
    preds = {"a": good, "b": good.copy(), "c": rng.standard_normal(truth.shape)}
    rows, resamples = [], []
    for method, pred in preds.items():
        rows.append(
            {
                "method": method,
                "step": 5,
                "ground_truth": "f_t",
                "lds": lds(pred, truth),
                "lambda_source": "none",
            }
        )
        resamples.append(bootstrap_lds(pred, truth, 200, seed=3))
    rows.append(
        {"method": "a", "step": 5, "ground_truth": "f_t", "lds": 9.0, "lambda_source": "config"}
    )  # not compared
    resamples.append(np.zeros(200))
    table = pd.DataFrame(rows)
    paired_margins(table, resamples)
    assert list(table.margin_over[:3]) == ["b", "a", "a"]
    assert table.margin[0] == 0 and table.margin_ci_low[0] == table.margin_ci_high[0] == 0
    diff = resamples[2] - resamples[0]
    assert table.margin[2] == pytest.approx(lds(preds["c"], truth) - lds(good, truth))
    assert table.margin_ci_low[2] == pytest.approx(np.percentile(diff, 2.5))
    assert table.margin_ci_high[2] == pytest.approx(np.percentile(diff, 97.5))
    assert table.margin_ci_high[2] < 0  # pure noise loses to a good prediction, paired
    assert np.isnan(table.margin[3])
    pairs = {(p["method"], p["other"]): p for p in pairwise_margins(table, resamples)}
    assert set(pairs) == {("a", "b"), ("a", "c"), ("b", "c")}  # config row of "a" not read
    assert pairs["a", "b"]["margin_ci_low"] == pairs["a", "b"]["margin_ci_high"] == 0
    assert pairs["a", "c"]["margin"] == pytest.approx(-table.margin[2])
    assert pairs["a", "c"]["margin_ci_low"] == pytest.approx(np.percentile(-diff, 2.5))


def test_random_scores_sit_inside_the_shared_null_band():
    rng = np.random.default_rng(4)
    masks = make_subsets(80, 24, 0.5, seed=1)
    shared = rng.standard_normal(24)  # a per-model component common to all targets
    truth = shared[None] + 0.5 * rng.standard_normal((8, 24))
    null = shared_null(masks, truth, 300, seed=0)
    lo, hi = np.percentile(null, [2.5, 97.5])
    inside = [
        lo <= lds(predictions(rng.standard_normal((8, 80)), masks), truth) <= hi for _ in range(40)
    ]
    assert np.mean(inside) >= 0.9


def test_split_half_reliability_bounds():
    rng = np.random.default_rng(5)
    signal = rng.standard_normal((3, 16))
    same = np.stack([signal] * 4)
    assert split_half_reliability(same) == pytest.approx(1.0)
    noise = rng.standard_normal((4, 3, 16))
    assert abs(split_half_reliability(noise)) < 0.6
    assert np.isnan(split_half_reliability(same[:1]))


@pytest.mark.parametrize("seeds", [2, 3, 4, 5])
def test_split_half_reliability_is_that_of_the_full_seed_average(seeds):
    """truth = subset effect (var 1) + seed noise (var 3): one seed has reliability 1/4, the
    S-seed mean S/(S + 3). Spearman on Gaussians is (6/π) asin(ρ/2), slightly below Pearson's ρ,
    hence the one-sided tolerance; an odd S corrected as if it were S − 1 misses by > 0.05."""
    rng = np.random.default_rng(seeds)
    effect = rng.standard_normal((20, 2000))
    per_seed = effect + np.sqrt(3) * rng.standard_normal((seeds, 20, 2000))
    half = seeds // 2
    rho_half = half / (half + 3)  # reliability of one h-seed half, then Spearman's version
    r_s = 6 / np.pi * np.arcsin(rho_half / 2)
    m = seeds / half
    assert split_half_reliability(per_seed) == pytest.approx(
        m * r_s / (1 + (m - 1) * r_s), abs=0.02
    )
    assert abs(split_half_reliability(per_seed) - seeds / (seeds + 3)) < 0.03


def test_variance_components_recover_known_subset_and_noise_variances():
    rng = np.random.default_rng(8)
    seeds, targets, m = 4, 3, 4000
    subset = 0.5 * rng.standard_normal((1, targets, m))  # σ²_a = 0.25, one per target
    seed_shift = 100.0 * rng.standard_normal((seeds, 1, 1))  # shared by all subsets: harmless
    noise = rng.standard_normal((seeds, targets, m))  # σ²_e = 1
    out = variance_components(subset + seed_shift + noise)
    assert out["subset_var"] == pytest.approx(0.25, rel=0.1)
    assert out["noise_var"] == pytest.approx(1.0, rel=0.05)
    assert out["reliability"] == pytest.approx(0.25 / (0.25 + 1 / seeds), rel=0.1)
    assert out["seeds_for_half"] == pytest.approx(4.0, rel=0.15)
    assert out["common_share"] == pytest.approx(1 / targets, abs=0.05)
    shared = variance_components(np.broadcast_to(subset[:, :1], (seeds, targets, m)) + seed_shift)
    assert shared["common_share"] == pytest.approx(1.0)
    assert shared["noise_var"] == pytest.approx(0.0, abs=1e-9)


def test_variance_components_two_seeds_equal_half_the_difference_variance():
    rng = np.random.default_rng(9)
    x = rng.standard_normal((2, 5, 30))
    out = variance_components(x)
    d = x[0] - x[1]
    assert out["noise_var"] == pytest.approx(np.mean(d.var(-1, ddof=1) / 2))
    ms_a = 2 * x.mean(0).var(-1, ddof=1)
    assert out["subset_var"] == pytest.approx(np.mean((ms_a - d.var(-1, ddof=1) / 2) / 2))


def test_ridge_predictions_equal_explicit_kernel_formula_streamed_in_blocks():
    """−M Φ(ΦᵀΦ + λ_abs I)⁻¹ψᵀ, with Φ fed in uneven row blocks, for n > k and n < k."""
    rng = np.random.default_rng(6)
    for n, k in [(30, 8), (10, 25)]:
        phi, psi = rng.standard_normal((n, k)), rng.standard_normal((3, k))
        masks = make_subsets(n, 7, 0.5, seed=1)
        lambdas = [0.01, 0.3, 10.0]
        blocks = [(0, phi[:4]), (4, phi[4:9]), (9, phi[9:])]
        got = ridge_predictions(iter(blocks), psi, lambdas, masks)
        assert got.shape == (3, 3, 7)
        for i, lam in enumerate(lambdas):
            lam_abs = lam * np.trace(phi.T @ phi) / k
            tau = phi @ np.linalg.solve(phi.T @ phi + lam_abs * np.eye(k), psi.T)  # (n, q)
            np.testing.assert_allclose(got[i], predictions(tau.T, masks), rtol=1e-7, atol=1e-9)


def test_lambda_is_tuned_per_step_on_the_tuning_subsets_only():
    """Each step takes the λ whose tuning LDS (scipy Spearman, mean over targets) is best there;
    the reporting subsets never influence the choice; shared mode takes the best mean."""
    rng = np.random.default_rng(11)
    n_lam, steps, targets, m = 3, 4, 5, 20
    pred = rng.standard_normal((n_lam, steps, targets, m))
    truth = rng.standard_normal((steps, targets, m))
    tune = np.arange(m) < 8
    report = ~tune

    def spearman_lds(p, t):
        return np.mean([stats.spearmanr(a, b).statistic for a, b in zip(p, t, strict=True)])

    tuning = np.array(
        [
            [spearman_lds(pred[i, s][:, tune], truth[s][:, tune]) for s in range(steps)]
            for i in range(n_lam)
        ]
    )
    best, tuned, reporting, _ = dataclasses.astuple(tune_lambda(pred, truth, tune, report, True))
    np.testing.assert_allclose(tuned, tuning)
    np.testing.assert_array_equal(best, tuning.argmax(0))
    expected = [
        spearman_lds(pred[b, s][:, report], truth[s][:, report]) for s, b in enumerate(best)
    ]
    np.testing.assert_allclose(reporting, expected)
    # Scrambling the reporting subsets' predictions changes nothing about the choice.
    scrambled = pred.copy()
    scrambled[..., report] = rng.standard_normal(scrambled[..., report].shape)
    assert np.array_equal(tune_lambda(scrambled, truth, tune, report, True).best, best)
    shared = tune_lambda(pred, truth, tune, report, per_column=False).best
    assert (shared == tuning.mean(1).argmax()).all()


def test_memorization_loss_is_the_empirical_optimal_denoisers_loss():
    """Against the posterior computed from Gaussian densities (scipy), and the closed form for a
    one-image subset (E[x₀ | x_t] is that image)."""
    rng = np.random.default_rng(4)
    n, d, q, draws, alpha_bar = 6, 5, 2, 3, 0.3
    train = rng.uniform(-1, 1, (n, d))
    x0, eps = rng.uniform(-1, 1, (q, d)), rng.standard_normal((q, draws, d))
    masks = np.zeros((3, n), dtype=bool)
    masks[0, :3] = masks[1, 2:] = masks[2, 4] = True
    got = memorization_loss(train, masks, x0, alpha_bar, eps)
    a, s = np.sqrt(alpha_bar), np.sqrt(1 - alpha_bar)
    for j in range(q):
        for k, mask in enumerate(masks):
            losses = []
            for r in range(draws):
                x_t = a * x0[j] + s * eps[j, r]
                dens = np.array(
                    [
                        stats.multivariate_normal(a * x, (1 - alpha_bar) * np.eye(d)).pdf(x_t)
                        for x in train[mask]
                    ]
                )
                mean = (dens / dens.sum()) @ train[mask]
                losses.append(np.mean(((x_t - a * mean) / s - eps[j, r]) ** 2))
            assert got[j, k] == pytest.approx(np.mean(losses), rel=1e-9)
    single = ((a * (x0 - train[4]))[:, None] / s + eps - eps) ** 2
    np.testing.assert_allclose(got[:, 2], single.mean((1, 2)), rtol=1e-9)


def test_ground_truth_uses_common_random_numbers(scheduler):
    """Both models see the same noise: f_t equals the loss recomputed with the keyed draws."""
    rng = np.random.default_rng(7)
    x0_hat = rng.uniform(-1, 1, (2, 3, 1, 8, 8)).astype(np.float32)
    final = x0_hat[-1]
    for seed_model in (0, 1):
        model = make_unet(torch.float32, seed=seed_model)
        f_t, final_loss = ground_truth(
            model,
            scheduler.alphas_cumprod,
            x0_hat,
            final,
            [500, 0],
            [0, 1, 2],
            4,
            [0, 500],
            1,
            seed=0,
        )
        eps = target_draws([0, 1, 2], list(range(4)), (1, 8, 8), 0, "gt-draw-500")
        t = torch.full((3, 4), 500)
        batch = rows_batch(torch.from_numpy(x0_hat[0]), t, eps)
        ref = evaluate(model, scheduler.alphas_cumprod, batch, "loss").view(3, 4).mean(1)
        np.testing.assert_allclose(f_t[0], ref.numpy(), rtol=1e-5)
        assert final_loss.shape == (3,)


def test_lds_figure_says_pipeline_check_unless_an_interval_clears_the_null_where_reliable():
    from diffattr.figures import PIPELINE_CHECK, lds_figure

    rows = [
        {
            "method": m,
            "step": t,
            "ground_truth": gt,
            "lds": 0.1,
            "ci_low": 0.0,
            "ci_high": 0.2,
            "null_low": -0.1,
            "null_high": 0.1,
            "ceiling": 0.5,
            "reliability": rel,
            "flagged": rel < 0.5,
            "lambda_source": "none",
        }
        for m in ("pixel_similarity", "random")
        for t, gt, rel in [(500, "f_t", 0.3), (0, "f_t", 0.2), (0, "final_loss", 0.4)]
    ]
    table = pd.DataFrame(rows)

    def banner() -> bool:
        return PIPELINE_CHECK in [t.get_text() for t in lds_figure(table).texts]

    assert banner()  # nothing reliable
    table.loc[table.step == 500, ["reliability", "flagged"]] = [0.7, False]
    assert banner()  # reliable, but every interval reaches into the null band
    table.loc[(table.step == 500) & (table.method == "random"), ["lds", "ci_low"]] = [0.2, 0.15]
    assert banner()  # random clearing the null shows nothing
    table.loc[(table.step == 500) & (table.method != "random"), ["lds", "ci_low"]] = [0.2, 0.15]
    assert not banner()
