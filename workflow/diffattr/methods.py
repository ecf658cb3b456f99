"""The registry of attribution methods: what each one differentiates and at which image.

Gradient methods share the TRAK estimator (see ``scoring``) and differ in their model outputs:

- ``journey_trak``: train f = Σ_k ℓ(x_i, t_k, ε_k), K random t; target f_t = Σ_r ℓ(x̂_0^t, t, ε_r).
- ``dtrak``: the same with D-TRAK's output mean(ε_θ(x_t,t)²) in place of the loss ℓ.
- ``trak``: D-TRAK's TRAK baseline; the target is the loss of the final image summed over K
  uniformly spaced timesteps (one score vector per target, repeated at every step).

Baselines: ``pixel_similarity`` (cosine of x̂_0^t with each training image) and ``random``.
"""

from __future__ import annotations

from dataclasses import dataclass

from .errors import ConfigError


@dataclass(frozen=True)
class Method:
    name: str
    family: str  # "gradient" (features + kernel), "pixel" or "random"
    train_output: str | None = None
    target_output: str | None = None
    target_image: str = "x0_hat"  # "x0_hat" (per step) or "final" (the same at every step)
    description: str = ""

    @property
    def uses_gradients(self) -> bool:
        return self.family == "gradient"


METHODS: dict[str, Method] = {
    m.name: m
    for m in (
        Method("journey_trak", "gradient", "loss", "loss", "x0_hat", "Journey-TRAK (per step)"),
        Method("dtrak", "gradient", "square_norm", "square_norm", "x0_hat", "D-TRAK, per step"),
        Method("trak", "gradient", "loss", "loss", "final", "TRAK on the final image"),
        Method("pixel_similarity", "pixel", description="cosine similarity of x̂_0^t to x_i"),
        Method("random", "random", description="seeded Gaussian scores (the floor)"),
    )
}

SIGN_CONVENTION = (
    "tau[i] > 0: including training example i lowers the target's output f_t, i.e. supports the "
    "generated image (positive influencer); tau[i] < 0: negative influencer"
)


def get_method(name: str) -> Method:
    if name not in METHODS:
        raise ConfigError(f"unknown attribution method {name!r}; available: {sorted(METHODS)}")
    return METHODS[name]


def train_outputs(methods: list[str]) -> list[str]:
    """The distinct training-feature outputs that ``methods`` need (each featurized once)."""
    outs = [get_method(m).train_output for m in methods]
    return sorted({o for o in outs if o is not None})
