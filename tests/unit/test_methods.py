"""The attribution methods' building blocks against direct computations: D-TRAK's output
functions, DAS's unit per-timestep gradients and residual weights, the uniform timestep grid, the
optimal-denoiser scores and the weighted TRAK scores."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from conftest import loss_rows, make_unet, random_rows
from diffattr.config import DiffusionConfig, alphas_cumprod, uniform_timesteps
from diffattr.draws import ModelDraws, TargetSet
from diffattr.errors import ConfigError
from diffattr.features import residual_weights, train_draws
from diffattr.lds.report import member_predictions
from diffattr.methods import METHODS, FeatureKind, GradientMethod
from diffattr.outputs import OUTPUTS, add_noise, predict_noise, row_outputs
from diffattr.projection import (
    DenseProjector,
    FactoredProjector,
    IdentityProjector,
    flatten_gradients,
    per_owner_gradients,
)
from diffattr.scoring import TrakScorer, kernel, optimal_denoiser_block
from scipy.special import softmax
from test_projection import Wrap, explicit_kron, layer_rows
from torch import nn

RNG = np.random.default_rng(7)


class Store:
    """Φ in memory behind the RowBlocks interface."""

    def __init__(self, phi, weights=None):
        self.phi, self.n, self.dim, self.weights = phi, len(phi), phi.shape[1], weights

    def blocks(self, rows):
        for lo in range(0, self.n, rows):
            yield lo, self.phi[lo : lo + rows]

    def read(self, lo, hi):
        return self.phi[lo:hi]

    def residual_weights(self):
        return self.weights


def test_output_functions_match_their_definitions_and_autograd(scheduler):
    """Each output per row equals its formula on ε_θ computed separately, and its gradient is
    autograd's gradient of that formula."""
    model = make_unet(torch.float64)
    batch = random_rows(3, 1)
    abar = scheduler.alphas_cumprod
    pred = predict_noise(model, add_noise(abar, batch["x0"], batch["t"], batch["eps"]), batch["t"])
    p, e = pred.flatten(1), batch["eps"].flatten(1)
    direct = {
        "loss": ((p - e) ** 2).mean(1),
        "square_norm": (p**2).mean(1),
        "mean": p.mean(1),
        "l1_norm": torch.linalg.vector_norm(p, ord=1, dim=1),
        "l2_norm": torch.linalg.vector_norm(p, ord=2, dim=1),
    }
    assert set(OUTPUTS) == set(direct)
    weight = next(model.parameters())
    for name, want in direct.items():
        got = row_outputs(model, abar, batch, name)
        torch.testing.assert_close(got, want, rtol=1e-12, atol=1e-12)
        (g_got,) = torch.autograd.grad(got.sum(), weight)
        (g_want,) = torch.autograd.grad(want.sum(), weight, retain_graph=True)
        torch.testing.assert_close(g_got, g_want, rtol=1e-10, atol=1e-12)
    with pytest.raises(ConfigError, match="unknown model output"):
        row_outputs(model, abar, batch, "l3_norm")


def unit_rows_reference(model, rows_fn, batch, draws, names):
    """Σ_r g_r / ‖g_r‖ per owner from explicit per-row gradients (over ``names``)."""
    grads = per_owner_gradients(model, rows_fn, batch, 1)
    flat = flatten_gradients(grads, names)
    unit = flat / flat.norm(dim=1, keepdim=True)
    return grads, unit.view(-1, draws, flat.shape[1]).sum(1), flat.norm(dim=1)


def test_normalized_identity_and_dense_features_sum_unit_row_gradients(unet64, scheduler):
    rows = loss_rows(scheduler, "mean")
    batch = random_rows(3, 2, seed=4)
    names = [n for n, _ in unet64.named_parameters()]
    _, want, _ = unit_rows_reference(unet64, rows, batch, 2, names)
    got = IdentityProjector(unet64).project(unet64, rows, batch, 2, normalize=True)
    torch.testing.assert_close(got, want, rtol=1e-10, atol=1e-12)
    dense = DenseProjector(unet64, 16, 0, "unit")
    got = dense.project(unet64, rows, batch, 2, normalize=True)
    torch.testing.assert_close(got, want @ dense.matrix, rtol=1e-9, atol=1e-10)
    plain = IdentityProjector(unet64).project(unet64, rows, batch, 2)
    assert (plain - want).norm() > 0.1 * want.norm()  # normalising changes the features


def test_factored_normalized_features_divide_each_row_by_its_exact_gradient_norm(unet64, scheduler):
    """Gram and per-row-gradient norm forms against explicit per-row gradients over the layers
    the projector covers (the whole UNet: convolutions, linear and attention layers)."""
    rows = loss_rows(scheduler, "mean")
    batch = random_rows(3, 2, seed=5)
    proj = FactoredProjector(unet64, 4, 4, 0, "unit")
    covered = [n for n, _ in unet64.named_parameters() if n not in proj.uncovered]
    grads, _, norms = unit_rows_reference(unet64, rows, batch, 2, covered)
    per_row = explicit_kron(proj, grads, 6)  # projected per-row gradients (6 rows)
    want = (per_row / norms[:, None]).view(3, 2, -1).sum(1)
    got = proj.project(unet64, rows, batch, 2, normalize=True)
    torch.testing.assert_close(got, want, rtol=1e-9, atol=1e-12)


@pytest.mark.parametrize(
    "layer, in_shape",
    [
        (nn.Linear(6, 5), (4, 6)),  # per-row gradient form
        (nn.Linear(40, 30), (2, 40)),  # Gram form
        (nn.Conv2d(3, 4, 3, padding=1), (3, 6, 6)),  # per-row gradient form
        (nn.Conv2d(16, 16, 3, stride=2, padding=1, bias=False), (16, 4, 4)),  # Gram form
    ],
)
def test_factored_row_norms_in_both_forms(layer, in_shape):
    model = Wrap(layer.double())
    g = torch.Generator().manual_seed(1)
    x = torch.randn(4, *in_shape, generator=g, dtype=torch.float64)
    out_shape = layer(x).shape[1:]
    batch = {
        "x0": x,
        "t": torch.zeros(4, dtype=torch.long),
        "eps": torch.randn(4, *out_shape, generator=g, dtype=torch.float64),
    }
    proj = FactoredProjector(model, 3, 3, 0, "norm")
    names = [n for n, _ in model.named_parameters()]
    grads, _, norms = unit_rows_reference(model, layer_rows, batch, 2, names)
    want = (explicit_kron(proj, grads, 4) / norms[:, None]).view(2, 2, -1).sum(1)
    got = proj.project(model, layer_rows, batch, 2, normalize=True)
    torch.testing.assert_close(got, want, rtol=1e-9, atol=1e-12)


def test_uniform_grid_is_dtraks_range_and_train_draws_sit_on_it():
    assert uniform_timesteps(10, 1000) == list(range(0, 1000, 100))
    assert uniform_timesteps(3, 10) == [0, 3, 6]
    ts, eps, _, _ = train_draws([5, 9], 4, 1000, (1, 2, 2), 0, 1, grid=uniform_timesteps(4, 1000))
    assert ts.tolist() == [[0, 250, 500, 750]] * 2
    ts_random, _, _, _ = train_draws([5, 9], 4, 1000, (1, 2, 2), 0, 1)
    assert len(set(ts_random.flatten().tolist())) > 4  # random t otherwise
    assert not torch.equal(eps[0], eps[1])  # noise stays keyed per example


def test_alphas_cumprod_matches_diffusers(scheduler):
    np.testing.assert_allclose(
        alphas_cumprod(DiffusionConfig()), scheduler.alphas_cumprod.double().numpy(), rtol=1e-5
    )


def test_feature_kinds_name_their_paths_and_each_method_its_kind():
    for kind in [
        FeatureKind("loss"),
        FeatureKind("mean", True, True),
        FeatureKind("l1_norm", True),
    ]:
        assert FeatureKind.parse(kind.key) == kind
    assert FeatureKind("loss").key == "loss"  # unchanged paths for the random-draw kinds
    assert FeatureKind("mean", uniform=True, normalize=True).key == "mean-uniform-normalized"
    for bad in ["", "loss-uniform-uniform", "loss-sorted"]:
        with pytest.raises(ConfigError, match="not a feature kind"):
            FeatureKind.parse(bad)
    kinds = {m.name: m.train_features for m in METHODS.values() if isinstance(m, GradientMethod)}
    assert kinds["trak"] == FeatureKind("loss", uniform=True)
    assert kinds["dtrak"] == FeatureKind("square_norm", uniform=True)
    assert kinds["das"] == kinds["das_step"] == FeatureKind("mean", True, True)
    assert kinds["journey_trak"] == FeatureKind("loss")
    assert kinds["dtrak_step"] == FeatureKind("square_norm")
    assert all(o.output in OUTPUTS for o in kinds.values())


def test_residual_weights_are_mean_over_norm_of_rms_residuals(scheduler):
    model = make_unet(torch.float32)
    images = RNG.uniform(-1, 1, (5, 1, 8, 8)).astype(np.float32)
    ids = np.array([3, 1, 4, 1, 5]) * 10
    member = ModelDraws(model, scheduler.alphas_cumprod, images, ids, 0, 1, batch_size=2)
    got = residual_weights(member, np.arange(5), 4)
    from diffattr.seeding import generator

    grid = uniform_timesteps(4, 1000)
    for i in range(5):
        errs = []
        for t in grid:
            eps = torch.randn((1, 8, 8), generator=generator(0, "residual", 1, int(ids[i]), t))
            x_t = add_noise(
                scheduler.alphas_cumprod,
                torch.from_numpy(images[i : i + 1]),
                torch.tensor([t]),
                eps[None],
            )
            with torch.no_grad():
                pred = predict_noise(model, x_t, torch.tensor([t]))
            errs.append(((pred - eps) ** 2).mean().double().sqrt().item())
        errs = np.array(errs)
        assert got[i] == pytest.approx(errs.mean() / np.linalg.norm(errs), rel=1e-5)
    assert np.all((got > 0) & (got <= 0.5 + 1e-12))  # mean/‖·‖₂ ≤ 1/√T


def test_weighted_trak_scores_and_their_lds_predictions():
    """τ = (1/M) Σ_m diag(w_m) Φ_m A_m ψ_m, and the LDS's ridge predictions of weighted scores
    equal −M τ computed from them."""
    n, k = 12, 4
    phis = [RNG.standard_normal((n, k)) for _ in range(2)]
    psis = [RNG.standard_normal((1, 3, k)) for _ in range(2)]
    weights = [RNG.uniform(0.1, 1, n) for _ in range(2)]
    kernels = [kernel(Store(p), 0.1, 5) for p in phis]
    members = [(Store(p), kk, s) for p, kk, s in zip(phis, kernels, psis, strict=True)]
    got = TrakScorer(members, weights)(0, slice(0, 3), slice(0, n))
    want = np.mean(
        [
            w[:, None] * (p @ kk.matrix @ s[0].T)
            for p, kk, s, w in zip(phis, kernels, psis, weights, strict=True)
        ],
        0,
    ).T
    np.testing.assert_allclose(got, want, rtol=1e-5)
    unweighted = TrakScorer(members)(0, slice(0, 3), slice(0, n))
    assert not np.allclose(got, unweighted)
    masks = RNG.random((6, n)) < 0.5
    pred = member_predictions(
        [([Store(p)], s, w) for p, s, w in zip(phis, psis, weights, strict=True)], [0.1], masks, 5
    ).mean(0)[0, 0]  # (targets, subsets)
    np.testing.assert_allclose(pred, -(masks.astype(float) @ want.T).T, rtol=1e-4)


def brute_force_loo(train, x0, eps, abar):
    """f^{−i} − f per example by explicit re-softmax on the n − 1 others (scipy)."""
    a, s = np.sqrt(abar), np.sqrt(1 - abar)
    x_t = a * x0 + s * eps

    def f(rows):
        w = softmax(-((x_t - a * rows) ** 2).sum(1) / (2 * (1 - abar)))
        return np.mean(((x_t - a * (w @ rows)) / s - eps) ** 2)

    full = f(train)
    return np.array([f(np.delete(train, i, 0)) - full for i in range(len(train))])


@pytest.mark.parametrize("t", [50, 500, 950])
def test_optimal_denoiser_scores_are_exact_leave_one_out_effects(t):
    from diffattr.seeding import numpy_rng

    abar = alphas_cumprod(DiffusionConfig())
    train = RNG.uniform(-1, 1, (9, 1, 2, 3))
    x0_hat = RNG.uniform(-1, 1, (1, 2, 1, 2, 3))
    x0_hat[0, 1] = train[4] + 0.01  # near-memorized: one posterior weight ≈ 1
    block = optimal_denoiser_block(train, x0_hat, [t], np.array([7, 8]), abar, 3, 0)
    got = block(0, slice(0, 2), slice(0, 9))
    for j, target in enumerate([7, 8]):
        want = np.mean(
            [
                brute_force_loo(
                    train.reshape(9, -1),
                    x0_hat[0, j].reshape(-1),
                    numpy_rng(0, "optimal-denoiser", target, t, r).standard_normal(6),
                    abar[t],
                )
                for r in range(3)
            ],
            0,
        )
        np.testing.assert_allclose(got[j], want, rtol=1e-4, atol=1e-9)
    if t == 50:
        assert int(np.argmax(got[1])) == 4  # the memorized example supports its copy most


class FlatLinear(nn.Module):
    """ε_θ(x, t) = W vec(x) + b: one Linear layer seen once per call (no weight sharing over
    positions), so one example's Fisher is exactly Kronecker-factored."""

    def __init__(self, d):
        super().__init__()
        self.layer = nn.Linear(d, d)

    def forward(self, x, t):
        class Out:
            sample = self.layer(x.flatten(1)).view_as(x)

        return Out


def test_ekfac_scores_equal_the_explicit_damped_fisher_inverse(scheduler):
    """Fitted on one example with one draw, EK-FAC's Fisher is that example's gradient outer
    product F = g gᵀ (A = aaᵀ, G = δδᵀ, corrected eigenvalues (‖δ‖‖a‖)²), so the scores must be
    ∇f_qᵀ (F + λI)⁻¹ ∇L_i for every query q and training example i scored against it, with
    λ = c · mean eigenvalue = c ‖g‖²/P (P = 20 weights and biases) for each damping scale c."""
    pytest.importorskip("kronfluence")
    from diffattr.ekfac import ekfac_scores
    from diffattr.features import target_draws

    torch.manual_seed(0)
    model = FlatLinear(4)
    abar = scheduler.alphas_cumprod
    images = RNG.uniform(-1, 1, (1, 1, 2, 2)).astype(np.float32)
    x0_hat = RNG.uniform(-1, 1, (2, 3, 1, 2, 2)).astype(np.float32)
    steps, scales = [700, 100], (0.05, 2.0)
    got = ekfac_scores(
        ModelDraws(model, abar, images, np.array([11]), 0, 0, batch_size=1),
        TargetSet(x0_hat, steps, np.arange(3)),
        1,
        2,
        dampings=scales,
        fisher="empirical",
    )
    params = list(model.parameters())

    def grad(x0, t, eps):  # ∇ Σ_d ℓ over draws, flattened over (W, b)
        x0 = torch.as_tensor(x0).expand(len(t), *x0.shape[-3:])
        loss = ((model(add_noise(abar, x0, t, eps), t).sample - eps) ** 2).flatten(1).mean(1).sum()
        return torch.cat([g.flatten() for g in torch.autograd.grad(loss, params)]).double()

    ts, eps, _, _ = train_draws([11], 1, 1000, (1, 2, 2), 0, 0)
    g_train = grad(torch.from_numpy(images[0]), ts[0], eps[0])
    assert got.shape == (2, 2, 3, 1)
    for g, scale in enumerate(scales):
        damping = scale * (g_train @ g_train) / len(g_train)
        inverse = torch.linalg.inv(
            torch.outer(g_train, g_train) + damping * torch.eye(len(g_train), dtype=torch.float64)
        )
        for s, t in enumerate(steps):
            noise = target_draws(range(3), [t, t], (1, 2, 2), 0, "target-draw")
            for j in range(3):
                g_q = grad(torch.from_numpy(x0_hat[s, j]), torch.tensor([t, t]), noise[j])
                want = (g_q @ inverse @ g_train).item()
                assert got[g, s, j, 0] == pytest.approx(want, rel=2e-3)


def test_local_draws_stay_in_their_window_and_the_window_is_clipped(scheduler):
    from diffattr.attribution import Attributor
    from diffattr.config import AttributionConfig
    from diffattr.layout import Member

    ts, _, _, _ = train_draws(list(range(50)), 8, 1000, (1, 2, 2), 0, 1, window=(400, 600))
    assert ts.min() >= 400 and ts.max() <= 600 and len(set(ts.flatten().tolist())) > 50
    attributor = Attributor(
        make_unet(torch.float32), scheduler, Member(0, "final"), AttributionConfig(), 0
    )
    assert attributor.window(FeatureKind("loss")) is None
    assert attributor.window(FeatureKind("loss", near=500)) == (400, 600)
    assert attributor.window(FeatureKind("loss", near=40)) == (0, 140)
    assert attributor.window(FeatureKind("loss", near=999)) == (899, 999)
    local = METHODS["journey_trak_local"]
    assert [k.key for k in local.kinds([900, 500, 900])] == ["loss-near900", "loss-near500"]
    assert METHODS["journey_trak"].kinds([900, 500]) == [FeatureKind("loss")]


def test_step_local_scores_use_each_steps_own_features_and_kernel(tmp_path):
    """journey_trak_local at step s is TRAK on the feature set of s alone, and the LDS's ridge
    predictions follow the same per-step stores."""
    from diffattr import layout
    from diffattr.artifacts import (
        TargetFeatures,
        read_scores,
        write_feature_shard,
        write_target_features,
    )
    from test_stages import config, ridge_scores, run_stage, write_inputs

    cfg = config()
    p, data, targets, _, psis, _ = write_inputs(tmp_path)
    kernels, shards, per_step_phis = [], [], {}
    for t in targets.steps:
        kind = f"loss-near{t}"
        per_step_phis[t] = [RNG.standard_normal((30, 6)).astype(np.float32) for _ in range(2)]
        for m, phi in enumerate(per_step_phis[t]):
            member = layout.Member(m, "final")
            mine = []
            for s, (lo, hi) in enumerate([(0, 16), (16, 30)]):
                path = p.train_features(kind, member, s)
                write_feature_shard(path, phi[lo:hi], np.arange(lo, hi), data.ids[lo:hi], {})
                mine.append(path)
            shards += mine
            kernels.append(p.kernel(kind, member))
            run_stage("kernel", cfg, features=mine, out=kernels[-1])
            write_target_features(
                p.target_features("journey_trak_local", member),
                TargetFeatures(psis[m], targets.steps, np.arange(3)),
            )
    run_stage(
        "score",
        cfg,
        method="journey_trak_local",
        data=p.data,
        targets=p.targets,
        out=tmp_path / "local.h5",
        kernels=kernels,
        target_features=[
            p.target_features("journey_trak_local", layout.Member(m, "final")) for m in range(2)
        ],
        train_features=shards,
    )
    got = read_scores(tmp_path / "local.h5")
    lam = cfg.attribution.lambda_
    for s, t in enumerate(targets.steps):
        want = ridge_scores(per_step_phis[t], psis, lam)[s]
        np.testing.assert_allclose(got.scores[s], want, rtol=1e-4, atol=1e-5)
    assert set(got.attrs["feature_digests"]) == {
        f"loss-near{t}/m{m}_final" for t in targets.steps for m in range(2)
    }
    masks = RNG.random((5, 30)) < 0.5
    stores = [
        [Store(per_step_phis[t][m].astype(np.float64)) for t in targets.steps] for m in range(2)
    ]
    pred = member_predictions([(st, psis[m], None) for m, st in enumerate(stores)], [lam], masks, 7)
    for s, t in enumerate(targets.steps):
        want = -(masks.astype(float) @ ridge_scores(per_step_phis[t], psis, lam)[s].T).T
        np.testing.assert_allclose(pred.mean(0)[0, s], want, rtol=1e-4, atol=1e-6)


def test_featurization_cost_adds_up_over_shards(tmp_path):
    from diffattr.artifacts import FeatureStore, write_feature_shard
    from diffattr.stages.scoring import cost_attrs

    paths = []
    for s, (lo, hi, seconds) in enumerate([(0, 16, 2.0), (16, 30, 3.0)]):
        paths.append(tmp_path / f"shard{s}.h5")
        write_feature_shard(
            paths[-1],
            np.zeros((hi - lo, 3), np.float32),
            np.arange(lo, hi),
            np.arange(lo, hi),
            {"seconds": seconds, "K": 5},
        )
    assert FeatureStore(paths).cost() == (5.0, 150)
    assert cost_attrs([(5.0, 150), (5.0, 50)]) == {
        "seconds": 10.0,
        "example_draws": 200,
        "example_draws_per_s": 20.0,
    }
