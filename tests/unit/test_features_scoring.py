"""Features are seeded and shard-invariant; kernel and scores equal the formula in numpy."""

import h5py
import numpy as np
import pytest
import torch
from conftest import make_unet
from diffattr.artifacts import (
    SIGN_CONVENTION,
    FeatureStore,
    read_scores,
    write_feature_shard,
    write_scores,
)
from diffattr.draws import FeatureDraws, ModelDraws, TargetDraws
from diffattr.features import (
    featurize_targets,
    featurize_training,
    shard_positions,
    target_draws,
    train_draws,
)
from diffattr.outputs import row_outputs
from diffattr.projection import FactoredProjector, IdentityProjector
from diffattr.scoring import TrakScorer, kernel, pixel_similarity_block, random_block


@pytest.fixture
def setup(scheduler):
    model = make_unet(torch.float32)
    proj = FactoredProjector(model, 4, 4, 0, "projector", 0, "final")
    rng = np.random.default_rng(0)
    images = rng.uniform(-1, 1, (20, 1, 8, 8)).astype(np.float32)
    ids = np.arange(100, 120)
    return model, proj, scheduler.alphas_cumprod, images, ids


def featurize(setup, positions, batch_size=4):
    model, proj, abar, images, ids = setup
    member = ModelDraws(model, abar, images, ids, seed=0, model_index=0, batch_size=batch_size)
    return featurize_training(member, proj, FeatureDraws("loss", 3), positions, progress=False)


def test_draws_are_keyed_by_example_not_position():
    t1, e1, c1, f1 = train_draws([5, 9], 3, 1000, (1, 2, 2), seed=0, model=0, captions=5, flip=True)
    t2, e2, c2, f2 = train_draws([9], 3, 1000, (1, 2, 2), seed=0, model=0, captions=5, flip=True)
    assert torch.equal(c1[1], c2[0]) and torch.equal(f1[1], f2[0])
    t0, e0, _, _ = train_draws([9], 3, 1000, (1, 2, 2), seed=0, model=0)
    assert torch.equal(t0, t2) and torch.equal(e0, e2)  # conditioning draws come after t, ε
    assert torch.equal(t1[1], t2[0]) and torch.equal(e1[1], e2[0])
    t3, *_ = train_draws([9], 3, 1000, (1, 2, 2), seed=0, model=1)
    assert not torch.equal(t2, t3)


def test_features_reproducible_and_shards_equal_one_job_bitwise(setup):
    one = featurize(setup, np.arange(20))
    again = featurize(setup, np.arange(20))
    assert np.array_equal(one, again)
    shards = [featurize(setup, shard_positions(20, 4, 3, s)) for s in range(3)]
    assert np.array_equal(np.concatenate(shards), one)


def test_shard_positions_tile_whole_batches():
    parts = [shard_positions(23, 4, 3, s) for s in range(3)]
    assert np.array_equal(np.concatenate(parts), np.arange(23))
    assert all(len(p) % 4 == 0 for p in parts[:-1])


def test_target_features_are_the_gradient_of_the_sum_over_draws(scheduler):
    """ψ_j = ∇θ Σ_r ℓ(x_j, t_r, ε_r) with ε_r the keyed target draws: against autograd on the
    explicit sum (exact gradients, float64), and the same per target in any batch."""
    model = make_unet(torch.float64)
    abar = scheduler.alphas_cumprod
    rng = np.random.default_rng(5)
    x = torch.from_numpy(rng.uniform(-1, 1, (2, 1, 8, 8)))
    timesteps = [500, 500, 120]
    loss = FeatureDraws("loss", len(timesteps))
    psi = featurize_targets(
        model, IdentityProjector(model), abar, loss, TargetDraws(x, [7, 9], timesteps), 0, 2
    )
    eps = target_draws([7, 9], timesteps, (1, 8, 8), seed=0, tag="target-draw").double()
    for j in range(2):
        batch = {
            "x0": x[j].expand(3, 1, 8, 8),
            "t": torch.tensor(timesteps),
            "eps": eps[j],
        }
        model.zero_grad()
        row_outputs(model, abar, batch, "loss").sum().backward()
        grad = torch.cat([p.grad.flatten() for p in model.parameters()])
        np.testing.assert_allclose(psi[j], grad.float().numpy(), rtol=1e-4, atol=1e-6)
    alone = featurize_targets(
        model, IdentityProjector(model), abar, loss, TargetDraws(x[1:], [9], timesteps), 0, 1
    )
    np.testing.assert_allclose(psi[1], alone[0], rtol=1e-5, atol=1e-7)


def write_shards(tmp_path, phi, sizes, name="m0_final"):
    paths, lo = [], 0
    for s, size in enumerate(sizes):
        path = tmp_path / name / f"shard{s}.h5"
        rows = np.arange(lo, lo + size)
        write_feature_shard(path, phi[lo : lo + size], rows, rows, {"projection": {"kind": "test"}})
        paths.append(path)
        lo += size
    return FeatureStore(paths[::-1])  # order of the argument list must not matter


def numpy_scores(phis, psis, lam):
    total = 0
    for phi, psi in zip(phis, psis, strict=True):
        phi = phi.astype(np.float64)
        xtx = phi.T @ phi
        lam_abs = lam * np.trace(xtx) / phi.shape[1]
        total = total + phi @ np.linalg.inv(xtx + lam_abs * np.eye(len(xtx))) @ psi.T
    return total / len(phis)


@pytest.mark.parametrize("dim", [6, 40])  # primal (k ≤ n) and dual (k > n)
def test_scores_equal_numpy_formula(tmp_path, dim):
    rng = np.random.default_rng(1)
    n, n_targets, n_steps, lam = 30, 5, 2, 0.05
    phis = [rng.standard_normal((n, dim)).astype(np.float32) for _ in range(2)]
    psis = [rng.standard_normal((n_steps, n_targets, dim)).astype(np.float32) for _ in range(2)]
    members = []
    for m, (phi, psi) in enumerate(zip(phis, psis, strict=True)):
        store = write_shards(tmp_path, phi, [12, 10, 8], name=f"m{m}_final")
        k = kernel(store, lam, block_rows=7)
        assert k.form == ("primal" if dim <= n else "dual")
        members.append((store, k, psi))
    path = tmp_path / "scores.h5"
    write_scores(
        path,
        [500, 0],
        np.arange(n_targets),
        np.arange(n),
        TrakScorer(members),
        {"method": "journey_trak"},
        train_block=7,
        target_block=2,
    )
    got = read_scores(path)
    for s in range(n_steps):
        ref = numpy_scores(phis, [p[s] for p in psis], lam)
        np.testing.assert_allclose(got.scores[s], ref.T, rtol=2e-4, atol=1e-5)
    assert got.attrs["sign"] == SIGN_CONVENTION
    with h5py.File(path) as f:
        assert f["scores"].chunks[:2] == (1, 1)


def test_blockwise_scores_equal_one_shot(tmp_path):
    rng = np.random.default_rng(2)
    phi = rng.standard_normal((50, 8)).astype(np.float32)
    psi = rng.standard_normal((1, 9, 8)).astype(np.float32)
    store = write_shards(tmp_path, phi, [50])
    k = kernel(store, 0.1, block_rows=50)
    member = [(store, k, psi)]
    for name, tb, ib in [("one.h5", 9, 50), ("blocks.h5", 2, 3)]:
        write_scores(
            tmp_path / name,
            [0],
            np.arange(9),
            np.arange(50),
            TrakScorer(member),
            {},
            train_block=ib,
            target_block=tb,
        )
    a, b = read_scores(tmp_path / "one.h5"), read_scores(tmp_path / "blocks.h5")
    np.testing.assert_allclose(a.scores, b.scores, rtol=1e-6, atol=1e-7)


def test_pixel_similarity_is_cosine_and_random_is_seeded():
    rng = np.random.default_rng(3)
    train = rng.standard_normal((7, 1, 2, 2))
    targets = rng.standard_normal((2, 3, 1, 2, 2))
    block = pixel_similarity_block(train, targets)(1, slice(0, 3), slice(0, 7))
    t, x = targets[1].reshape(3, -1), train.reshape(7, -1)
    ref = (t @ x.T) / np.linalg.norm(t, axis=1)[:, None] / np.linalg.norm(x, axis=1)[None]
    np.testing.assert_allclose(block, ref, rtol=1e-5)
    r1 = random_block(0, [10, 0], np.arange(3), 7)(0, slice(0, 3), slice(0, 7))
    r2 = random_block(0, [10, 0], np.arange(3), 7)(0, slice(1, 3), slice(2, 7))
    np.testing.assert_array_equal(r1[1:, 2:], r2)
