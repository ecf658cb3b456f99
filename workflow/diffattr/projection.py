"""Projected gradients: φ = Pᵀ ∇θ Σ_r f_r for groups of rows ("owners": examples or targets).

Three projectors behind one interface (:class:`Projector`), chosen by ``projection.kind``:

- ``factored`` (default; LoGra, Choe et al. 2024): for every Linear and Conv2d layer the gradient of
  one row is G = Σ_s δ_s a_sᵀ (output-gradients × inputs over positions s; a constant 1 is
  appended to a_s when the layer has a bias). With P = P_out ⊗ P_in the projection is
  (P_out ⊗ P_in) vec(G) = vec(Σ_s (P_out δ_s)(P_in a_s)ᵀ), accumulated by hooks during one batched
  forward/backward pass, so no per-example gradient is ever materialised. Convolution inputs are
  projected by a convolution with P_in reshaped as a kernel. Features are the concatenation over
  layers; parameters of other layers (GroupNorm, ...) are not covered and are listed.
- ``dense``: exact per-example gradients (torch.func) times a seeded Gaussian p×k matrix, generated
  once and reused for every batch (TRAK's JL projection, as a reference; fits for p·k ≲ 1e9).
- ``identity``: exact per-example gradients, unprojected (tiny models only).

All projection matrices have N(0, 1/k) entries, so E[PᵀP] = I and inner products are preserved
in expectation.

``normalize=True`` (DAS, Lin et al. 2025) sums unit rows instead: φ = Pᵀ Σ_r g_r / ‖g_r‖ with g_r
the gradient of row r over the parameters the projector covers. The factored projector gets
‖g_r‖² without materialising g_r per layer from the same hooks, by the cheaper of two exact
forms: ‖Σ_s δ_s a_sᵀ‖²_F = Σ_{s,s'} (δ_s·δ_s')(a_s·a_s') (Gram form, O(S²(out + fan_in))) or the
per-row gradient itself (O(S·out·fan_in)); convolution inputs are unfolded for it.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.func import functional_call, grad, vmap

from .config import ProjectionConfig
from .errors import ConfigError
from .seeding import generator

Batch = Mapping[str, Tensor]
RowFn = Callable[[Callable[..., Any], Batch], Tensor]
"""Maps (model callable, batch of rows) to one scalar per row."""


def gaussian(rows: int, cols: int, *keys: int | str) -> Tensor:
    """A seeded (rows × cols) float64 matrix with N(0, 1/rows) entries."""
    return torch.randn(rows, cols, generator=generator(*keys), dtype=torch.float64) / rows**0.5


class Projector(ABC):
    """Maps gradients of owner-summed row outputs to ``dim``-dimensional features."""

    kind: str
    dim: int

    @abstractmethod
    def project(
        self, model: nn.Module, row_fn: RowFn, batch: Batch, draws: int, normalize: bool = False
    ) -> Tensor:
        """Features (n_owners, dim) of ∇θ Σ_r f_r (of Σ_r ∇θ f_r / ‖∇θ f_r‖ with ``normalize``);
        rows come in consecutive blocks of ``draws``."""

    @abstractmethod
    def describe(self) -> dict[str, Any]:
        """Attributes recorded in feature files."""


# ---------------------------------------------------------------------------------------------
# Factored (Kronecker) projection through hooks


@dataclass
class LayerSketch:
    """The two factors of one layer's projection: P_in (k_in × fan_in[+1]), P_out (k_out × out)."""

    p_in: Tensor
    p_out: Tensor
    has_bias: bool

    @property
    def dim(self) -> int:
        return self.p_in.shape[0] * self.p_out.shape[0]


def _factorable(module: nn.Module) -> bool:
    if isinstance(module, nn.Linear):
        return True
    return isinstance(module, nn.Conv2d) and module.groups == 1 and module.padding_mode == "zeros"


def _fan_in(module: nn.Module) -> int:
    return module.weight[0].numel()


class FactoredProjector(Projector):
    """Per-layer Kronecker-factored Gaussian projection accumulated with hooks (LoGra)."""

    kind = "factored"

    def __init__(self, model: nn.Module, k_in: int, k_out: int, *keys: int | str) -> None:
        if k_in < 1 or k_out < 1:
            raise ConfigError("projection.k_in and projection.k_out must be positive")
        self.k_in, self.k_out, self.keys = k_in, k_out, keys
        self.layers: dict[str, LayerSketch] = {}
        covered: set[str] = set()
        for name, module in model.named_modules():
            if not _factorable(module):
                continue
            has_bias = module.bias is not None
            fan_in = _fan_in(module) + int(has_bias)
            n_out = module.weight.shape[0]
            ki, ko = min(k_in, fan_in), min(k_out, n_out)
            self.layers[name] = LayerSketch(
                p_in=gaussian(ki, fan_in, *keys, name, "in"),
                p_out=gaussian(ko, n_out, *keys, name, "out"),
                has_bias=has_bias,
            )
            covered.update({f"{name}.weight", f"{name}.bias"})
        params = dict(model.named_parameters())
        self.uncovered = sorted(n for n in params if n not in covered)
        total = sum(p.numel() for p in params.values())
        self.coverage = 1 - sum(params[n].numel() for n in self.uncovered) / total
        self.dim = sum(layer.dim for layer in self.layers.values())
        self._cast: dict[tuple[torch.device, torch.dtype], dict[str, tuple[Tensor, Tensor]]] = {}

    def describe(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "dim": self.dim,
            "k_in": self.k_in,
            "k_out": self.k_out,
            "seed_keys": list(self.keys),
            "layers": len(self.layers),
            "coverage": self.coverage,
            "uncovered_parameters": self.uncovered,
        }

    def _factors(
        self, device: torch.device, dtype: torch.dtype
    ) -> dict[str, tuple[Tensor, Tensor]]:
        key = (device, dtype)
        if key not in self._cast:
            self._cast[key] = {
                name: (s.p_in.to(device, dtype), s.p_out.to(device, dtype))
                for name, s in self.layers.items()
            }
        return self._cast[key]

    def project(
        self, model: nn.Module, row_fn: RowFn, batch: Batch, draws: int, normalize: bool = False
    ) -> Tensor:
        ref = next(model.parameters())
        factors = self._factors(ref.device, ref.dtype)
        modules = dict(model.named_modules())
        store: dict[str, Tensor] = {}
        sq_norms: list[Tensor] | None = [] if normalize else None
        handles = [
            modules[name].register_forward_hook(self._hook(name, *factors[name], store, sq_norms))
            for name in self.layers
        ]
        flags = {p: p.requires_grad for p in model.parameters()}
        try:
            for p in flags:
                p.requires_grad_(False)
            with torch.enable_grad():
                row_fn(model, batch).sum().backward()
        finally:
            for h in handles:
                h.remove()
            for p, flag in flags.items():
                p.requires_grad_(flag)
        rows = batch["x0"].shape[0]
        parts = [
            store[name] if name in store else ref.new_zeros(rows, sketch.dim)
            for name, sketch in self.layers.items()
        ]
        features = torch.cat(parts, dim=1)
        if sq_norms is not None:
            features = features / unit_scale(sum(sq_norms, ref.new_zeros(rows)))[:, None]
        return features.view(rows // draws, draws, self.dim).sum(1)

    @staticmethod
    def _hook(
        name: str,
        p_in: Tensor,
        p_out: Tensor,
        store: dict[str, Tensor],
        sq_norms: list[Tensor] | None,
    ) -> Callable[[nn.Module, tuple[Tensor, ...], Tensor], None]:
        k_in, fan = p_in.shape

        def forward_hook(module: nn.Module, inputs: tuple[Tensor, ...], out: Tensor) -> None:
            x = inputs[0].detach().to(p_in.dtype)  # float32 accumulation under autocast
            bias_col = p_in[:, -1] if module.bias is not None else None
            w_in = p_in[:, : fan - int(module.bias is not None)]
            batch = x.shape[0]
            with torch.autocast(x.device.type, enabled=False):
                if isinstance(module, nn.Conv2d):
                    kernel = w_in.reshape(k_in, *module.weight.shape[1:])
                    a = F.conv2d(
                        x, kernel, bias_col, module.stride, module.padding, module.dilation
                    )
                    a = a.flatten(2).transpose(1, 2)
                else:
                    a = F.linear(x, w_in, bias_col).reshape(batch, -1, k_in)
            if not out.requires_grad:
                out.requires_grad_(True)
            kept_input = x if sq_norms is not None else None  # held to backward only if needed

            def backward_hook(g: Tensor) -> None:
                g = g.to(p_out.dtype)
                if isinstance(module, nn.Conv2d):
                    d = torch.einsum("bchw,kc->bhwk", g, p_out).reshape(batch, -1, p_out.shape[0])
                else:
                    d = F.linear(g, p_out).reshape(batch, -1, p_out.shape[0])
                block = torch.einsum("bso,bsi->boi", d, a).reshape(batch, -1)
                store[name] = store[name] + block if name in store else block
                if sq_norms is not None:
                    sq_norms.append(_row_gradient_sq_norm(module, kept_input, g))

            out.register_hook(backward_hook)

        return forward_hook


def unit_scale(sq_norm: Tensor) -> Tensor:
    """‖g‖ guarded against zero (a row without gradient stays zero)."""
    return sq_norm.clamp_min(1e-30).sqrt()


def _row_gradient_sq_norm(module: nn.Module, x: Tensor, g: Tensor) -> Tensor:
    """‖∂f_b/∂(W, b)‖²_F per row b of one Linear/Conv2d call, from its input x and output-gradient
    g, by the cheaper exact form (Gram over positions, or the per-row gradient)."""
    batch = x.shape[0]
    with torch.autocast(x.device.type, enabled=False):
        if isinstance(module, nn.Conv2d):
            a = F.unfold(x, module.kernel_size, module.dilation, module.padding, module.stride)
            a = a.transpose(1, 2)  # (B, S, fan_in)
            d = g.flatten(2).transpose(1, 2)  # (B, S, out)
        else:
            a = x.reshape(batch, -1, x.shape[-1])
            d = g.reshape(batch, -1, g.shape[-1])
        if module.bias is not None:
            a = torch.cat([a, a.new_ones(*a.shape[:2], 1)], dim=2)
        positions, n_out, fan_in = a.shape[1], d.shape[2], a.shape[2]
        if positions * (n_out + fan_in) < n_out * fan_in:
            gram = (a @ a.transpose(1, 2)) * (d @ d.transpose(1, 2))
            return gram.sum((1, 2))
        return torch.einsum("bso,bsi->boi", d, a).square().sum((1, 2))


# ---------------------------------------------------------------------------------------------
# Exact per-example gradients (torch.func) for the dense and identity projectors


class _Bound:
    """Call ``model`` with substituted parameters (so torch.func can differentiate through it)."""

    def __init__(self, model: nn.Module, params: dict[str, Tensor], buffers: dict[str, Tensor]):
        self.model, self.params, self.buffers = model, params, buffers

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return functional_call(self.model, (self.params, self.buffers), args, kwargs)


def per_owner_gradients(
    model: nn.Module, row_fn: RowFn, batch: Batch, draws: int, chunk: int | None = 16
) -> dict[str, Tensor]:
    """Exact ∇θ Σ_r f_r per owner, as {parameter name: (n_owners, *shape)} (vmap over owners)."""
    params = {n: p.detach() for n, p in model.named_parameters()}
    buffers = {n: b.detach() for n, b in model.named_buffers()}
    rows = batch["x0"].shape[0]
    grouped = {k: v.reshape(rows // draws, draws, *v.shape[1:]) for k, v in batch.items()}

    def owner_output(p: dict[str, Tensor], one: Batch) -> Tensor:
        return row_fn(_Bound(model, p, buffers), one).sum()

    return vmap(grad(owner_output), in_dims=(None, 0), chunk_size=chunk)(params, grouped)


def flatten_gradients(grads: Mapping[str, Tensor], names: list[str]) -> Tensor:
    """Concatenate per-parameter gradients (n, *shape) into (n, p) in ``names`` order."""
    return torch.cat([grads[n].flatten(1) for n in names], dim=1)


class IdentityProjector(Projector):
    """No projection: features are the exact per-example gradients (dim = p). With ``normalize`` it
    materialises per-row gradients (rows × p: K× the per-owner memory), fine for the tiny
    models these reference projectors are for."""

    kind = "identity"

    def __init__(self, model: nn.Module, chunk: int | None = 16) -> None:
        self.names = [n for n, _ in model.named_parameters()]
        self.dim = sum(p.numel() for p in model.parameters())
        self.chunk = chunk

    def describe(self) -> dict[str, Any]:
        return {"kind": self.kind, "dim": self.dim, "coverage": 1.0, "uncovered_parameters": []}

    def project(
        self, model: nn.Module, row_fn: RowFn, batch: Batch, draws: int, normalize: bool = False
    ) -> Tensor:
        if not normalize:
            return flatten_gradients(
                per_owner_gradients(model, row_fn, batch, draws, self.chunk), self.names
            )
        rows = flatten_gradients(
            per_owner_gradients(model, row_fn, batch, 1, self.chunk), self.names
        )
        rows = rows / unit_scale(rows.square().sum(1))[:, None]
        return rows.view(-1, draws, rows.shape[1]).sum(1)


class DenseProjector(IdentityProjector):
    """Exact per-example gradients times one seeded Gaussian p×k matrix, generated once."""

    kind = "dense"
    block_rows = 65536

    def __init__(self, model: nn.Module, dim: int, *keys: int | str, chunk: int | None = 16):
        super().__init__(model, chunk)
        p = self.dim
        if dim < 1:
            raise ConfigError("projection.dim must be positive")
        if p * dim > 4_000_000_000:
            raise ConfigError(
                f"a dense {p}×{dim} projection needs {p * dim * 4 / 2**30:.0f} GiB; "
                "use projection.kind: factored for models of this size"
            )
        self.keys = keys
        ref = next(model.parameters())
        blocks = [
            gaussian(dim, min(self.block_rows, p - lo), *keys, "dense", lo // self.block_rows).T
            for lo in range(0, p, self.block_rows)
        ]
        self.matrix = torch.cat(blocks).to(ref.device, ref.dtype)  # (p, k), N(0, 1/k) entries
        self.dim = dim

    def describe(self) -> dict[str, Any]:
        return {
            **super().describe(),
            "kind": self.kind,
            "dim": self.dim,
            "seed_keys": list(self.keys),
        }

    def project(
        self, model: nn.Module, row_fn: RowFn, batch: Batch, draws: int, normalize: bool = False
    ) -> Tensor:
        exact = super().project(model, row_fn, batch, draws, normalize)
        return exact @ self.matrix.to(exact.dtype)


def make_projector(cfg: ProjectionConfig, model: nn.Module, *keys: int | str) -> Projector:
    """Build the configured projector for one ensemble member; ``keys`` seed its matrices."""
    kind = cfg.kind
    if kind == "factored":
        return FactoredProjector(model, cfg.k_in, cfg.k_out, *keys)
    if kind == "dense":
        return DenseProjector(model, cfg.dim, *keys)
    if kind == "identity":
        return IdentityProjector(model)
    raise ConfigError(f"unknown projection.kind {kind!r}; use factored, dense or identity")
