"""The factored projection equals the explicit Kronecker product on exact per-example gradients."""

import math

import pytest
import torch
from conftest import loss_rows, random_rows
from diffattr.projection import (
    DenseProjector,
    FactoredProjector,
    IdentityProjector,
    flatten_gradients,
    per_owner_gradients,
)
from torch import nn


def explicit_kron(projector, grads, owners):
    """(P_out ⊗ P_in) vec([W | b]) per owner, from explicit per-owner gradients."""
    parts = []
    for name, sk in projector.layers.items():
        w = grads[f"{name}.weight"].reshape(owners, sk.p_out.shape[1], -1)
        if sk.has_bias:
            w = torch.cat([w, grads[f"{name}.bias"][:, :, None]], dim=2)
        kron = torch.kron(sk.p_out, sk.p_in)  # the dense Kronecker matrix itself
        parts.append(w.reshape(owners, -1) @ kron.T)
    return torch.cat(parts, dim=1)


class Wrap(nn.Module):
    """A single layer behind the RowFn interface: f = mean((layer(x) − ε)²)."""

    def __init__(self, layer):
        super().__init__()
        self.layer = layer

    def forward(self, x, t):
        class Out:
            sample = self.layer(x)

        return Out


def layer_rows(model, batch):
    return ((model(batch["x0"], batch["t"]).sample - batch["eps"]) ** 2).flatten(1).mean(1)


@pytest.mark.parametrize(
    "layer, in_shape, out_shape",
    [
        (nn.Linear(6, 5), (4, 6), (4, 5)),
        (nn.Linear(6, 5, bias=False), (3, 6), (3, 5)),
        (nn.Conv2d(3, 4, 3, padding=1), (3, 6, 6), (4, 6, 6)),
        (nn.Conv2d(3, 4, 3, stride=2, padding=1, bias=False), (3, 6, 6), (4, 3, 3)),
        (nn.Conv2d(2, 3, 2, stride=2, dilation=1), (2, 6, 6), (3, 3, 3)),
    ],
)
def test_factored_equals_kron_single_layer(layer, in_shape, out_shape):
    torch.manual_seed(0)
    model = Wrap(layer).double()
    owners, draws = 3, 2
    g = torch.Generator().manual_seed(1)
    batch = {
        "x0": torch.randn(owners * draws, *in_shape, generator=g, dtype=torch.float64),
        "t": torch.zeros(owners * draws, dtype=torch.long),
        "eps": torch.randn(owners * draws, *out_shape, generator=g, dtype=torch.float64),
    }
    proj = FactoredProjector(model, 3, 2, 0, "test")
    feats = proj.project(model, layer_rows, batch, draws)
    ref = explicit_kron(proj, per_owner_gradients(model, layer_rows, batch, draws), owners)
    rel = (feats - ref).norm() / ref.norm()
    assert rel < 1e-10, rel


def test_factored_equals_kron_whole_unet(unet64, scheduler):
    rows = loss_rows(scheduler)
    batch = random_rows(3, 2)
    proj = FactoredProjector(unet64, 4, 4, 0, "test")
    feats = proj.project(unet64, rows, batch, 2)
    ref = explicit_kron(proj, per_owner_gradients(unet64, rows, batch, 2), 3)
    assert ((feats - ref).norm() / ref.norm()) < 1e-10
    assert 0.9 < proj.coverage < 1.0
    assert any("norm" in n for n in proj.uncovered)
    assert proj.dim == sum(s.dim for s in proj.layers.values())


def test_factored_features_independent_of_batch_mates(unet64, scheduler):
    rows = loss_rows(scheduler)
    batch = random_rows(4, 3)
    proj = FactoredProjector(unet64, 4, 4, 0, "test")
    full = proj.project(unet64, rows, batch, 3)
    alone = proj.project(unet64, rows, {k: v[3:6] for k, v in batch.items()}, 3)
    torch.testing.assert_close(full[1], alone[0], rtol=1e-10, atol=1e-12)


def test_factored_preserves_inner_products(scheduler):
    """JL check: ⟨Pg_i, Pg_j⟩ ≈ ⟨g_i, g_j⟩ for per-example gradients of a small model.

    Per layer the sketch is Gaussian with k = k_in·k_out rows; the relative error of an inner
    product is O(‖g_i‖‖g_j‖/√k). We compare the cosine-similarity matrices, averaged over seeds.
    """
    from conftest import make_unet

    model = make_unet(torch.float64)
    rows = loss_rows(scheduler)
    batch = random_rows(6, 1, seed=3)
    exact = flatten_gradients(
        per_owner_gradients(model, rows, batch, 1), [n for n, _ in model.named_parameters()]
    )
    proj = FactoredProjector(model, 16, 16, 0, "jl")
    feats = proj.project(model, rows, batch, 1)
    cos = lambda m: (m / m.norm(dim=1, keepdim=True)) @ (m / m.norm(dim=1, keepdim=True)).T  # noqa: E731
    err = (cos(feats) - cos(exact)).abs().max().item()
    # k per layer ≥ min(16,fan)·min(16,out); the largest layers dominate with k = 256
    assert err < 4 / math.sqrt(256), err


def test_dense_projector_deterministic_and_equals_exact_times_matrix(unet64, scheduler):
    rows = loss_rows(scheduler)
    batch = random_rows(3, 2)
    a = DenseProjector(unet64, 64, 0, "dense")
    b = DenseProjector(unet64, 64, 0, "dense")
    assert torch.equal(a.matrix, b.matrix)
    exact = IdentityProjector(unet64).project(unet64, rows, batch, 2)
    torch.testing.assert_close(a.project(unet64, rows, batch, 2), exact @ a.matrix)
    c = DenseProjector(unet64, 64, 1, "dense")
    assert not torch.equal(a.matrix, c.matrix)


def test_dense_projection_preserves_inner_products_on_random_vectors():
    """E[PᵀP] = I: ⟨Pu, Pv⟩ concentrates around ⟨u, v⟩ with error ~ ‖u‖‖v‖·√(2/k)."""
    torch.manual_seed(0)
    model = nn.Linear(500, 4)  # p = 2004
    proj = DenseProjector(model, 4096, 0, "jl")
    u, v = torch.randn(2004, dtype=torch.float64), torch.randn(2004, dtype=torch.float64)
    w = (u + v) / 2
    P = proj.matrix.double()
    for a, b in [(u, v), (u, w), (u, u)]:
        err = abs((a @ P) @ (b @ P) - a @ b) / (a.norm() * b.norm())
        assert err < 5 * math.sqrt(2 / 4096), err


def test_bf16_autocast_features_track_fp32(scheduler):
    """Mixed precision changes the forward/backward, not the float32 accumulation."""
    from conftest import make_unet
    from diffattr.draws import FeatureDraws
    from diffattr.features import project_rows

    model = make_unet(torch.float32)
    batch = random_rows(4, 2, dtype=torch.float32)
    proj = FactoredProjector(model, 4, 4, 0, "bf16")
    alphas = scheduler.alphas_cumprod
    full = project_rows(model, proj, alphas, FeatureDraws("loss", 2, "fp32"), batch)
    half = project_rows(model, proj, alphas, FeatureDraws("loss", 2, "bf16"), batch)
    assert half.dtype == torch.float32
    cos = torch.nn.functional.cosine_similarity(full, half, dim=1)
    assert (cos > 0.98).all(), cos
