"""What each rule's jobs compute, store and hold, in units of the config's sizes.

Per rule, summed over its jobs: ``work`` (the unit its rate in ``rates.json`` is per), the
largest array one job holds (bytes) and what its outputs take on disk (bytes). With F the
UNet's forward FLOPs per example, n training examples of d values, k feature dimensions, M
ensemble members, S attribution steps, T targets:

- training: models × steps × batch × F; sampling: T × sampling steps × F;
- featurize_train: Σ_kinds c_kind × M × n × K × F (c_kind: the kind's cost relative to
  journey_trak's ``loss``, README "Featurization cost per method"); kernel: jobs × n × k²;
- featurize_targets: Σ_methods M × T × draws × F (draws: S × R per step, K for the final image);
- score: Σ_methods M × kinds × S × T × n × k (gradient) or S × T × n × d (R × … for the
  optimal denoiser), with attribution.top_k the same work over the score_shard jobs and
  shards × S × T × K for merge_top_k; ekfac: M × (n × K × (2 + dampings) + S × T × R) × F;
- unlearning: M × (T × S_u + 5 × pieces) × n × F (≈ 5 unlearnings' worth of Fisher and losses
  per job);
- ground truth: subsets × seeds × T × (S × draws + final timesteps × final noise) × F;
- memorization reference: S × T × subsets × draws × n/2 × d; emergence: T × S × samples ×
  sampling steps/2 × F; counterfactual resampling: models × samples × sampling steps × F;
  group regeneration: (models + 1) × group size × samples × sampling steps × F;
- everything else (figures, plans, reports, subsets): per job (work = jobs).

Disk: checkpoints p × 4 B, features rows × k × 4 B, kernels k² × 8 B, scores S × T × n × 4 B
(top-k: 2 × S × T × K × 12 B).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from .config import RunConfig
from .methods import FeatureKind, get_method
from .sizes import Sizes

# journey_trak's ``loss`` = 1 (README: example·draws/s relative to journey_trak)
KIND_COST = {"loss": 1.0, "loss-uniform": 0.9, "square_norm": 1.21, "normalized": 5.92}
FIGURE_BYTES = 200_000  # a figure or HTML table
F32, F64 = 4, 8
REGENERATION_STEPS = 100  # regime diagnostics: sampler steps per regenerated target (a guess)


def kind_cost(kind: FeatureKind) -> float:
    if kind.normalize:
        return KIND_COST["normalized"]
    if kind.output == "square_norm":
        return KIND_COST["square_norm"]
    return KIND_COST["loss-uniform"] if kind.uniform else KIND_COST["loss"]


@dataclass(frozen=True)
class Cost:
    work: float  # summed over the rule's jobs, in the rate's unit
    array_bytes: float = 0.0  # the largest array one job holds
    disk_bytes: float = 0.0  # summed over the rule's jobs


EKFAC_UNITS = 2.192e-10 / 6.886e-10
"""ekfac's fitted seconds per unit of work over unlearning's (rates.json's member_scores rate
was fitted on unlearning jobs: test run and README digits-lds): ekfac's work is counted in
unlearning's units."""
EKFAC_JOB_UNITS = (6.373 - 0.174) / 6.886e-10  # ekfac's extra start-up per job, in those units


def _member_work(cfg: RunConfig, method: str, dampings: int) -> float:
    """Forward-backward passes over the training set per member of a per-member method:
    EK-FAC's factor, eigendecomposition and score passes (K draws each); unlearning's loss
    evaluations per target block and step (5 per piece of its pieces)."""
    a, u = cfg.attribution, cfg.attribution.unlearning
    if method == "ekfac":
        return EKFAC_UNITS * a.K * (2 + dampings)
    if method.startswith("mucs"):  # per unlearning: the n × noises inference losses (+ ≈ 50 %
        m = a.mucs  # for the ascent steps: a rough guess, not fitted)
        per_target = 1 if method == "mucs" else len(cfg.attribution_steps())
        return 1.5 * cfg.targets.n * per_target * m.noises
    if method.startswith("unlearning"):
        per_target = 1 if method.endswith("_final") else len(cfg.attribution_steps())
        return cfg.targets.n * per_target + 5 * u.shards * u.train_shards
    return 0.0


def _gradient_methods(cfg: RunConfig) -> list[str]:
    return [m for m in cfg.attribution.methods if get_method(m).uses_gradients]


def _kinds(cfg: RunConfig, methods: list[str]) -> list[FeatureKind]:
    steps = cfg.attribution_steps()
    return list(dict.fromkeys(k for m in methods for k in get_method(m).kinds(steps)))


def _target_draws(cfg: RunConfig, method: str) -> int:
    a = cfg.attribution
    per_step = get_method(method).target_image == "x0_hat"
    return len(cfg.attribution_steps()) * a.R if per_step else a.K


def _score_work(cfg: RunConfig, z: Sizes, methods: list[str], members: int) -> float:
    S, T, a = len(cfg.attribution_steps()), cfg.targets.n, cfg.attribution
    work = 0.0
    for name in methods:
        method = get_method(name)
        if method.uses_gradients:
            work += members * len(_kinds(cfg, [name])) * S * T * z.n * z.k
        elif name == "optimal_denoiser":
            work += S * T * a.R * z.n * z.d
        else:
            work += S * T * z.n * z.d
    return work


def _training(cfg: RunConfig, z: Sizes, models: int, subset: bool = False) -> Cost:
    recipe = cfg.for_subset_models().train if subset else cfg.train
    ckpts = 1 + len(recipe.checkpoints)
    work = models * recipe.steps * recipe.batch_size * z.flops
    return Cost(work, 16 * z.params + z.n * z.d * F32, models * ckpts * z.params * F32)


def rule_costs(cfg: RunConfig, z: Sizes, jobs: dict[str, int]) -> dict[str, Cost]:
    """Per rule of ``jobs`` (``diffattr.fanout.rule_jobs``), its :class:`Cost`."""
    a, lds, cf = cfg.attribution, cfg.lds, cfg.counterfactual
    S, T, F, n, d, k = len(cfg.attribution_steps()), cfg.targets.n, z.flops, z.n, z.d, z.k
    M = cfg.train.ensemble * len(a.checkpoints)
    gradient = _gradient_methods(cfg)
    n_patches = 0
    if a.patches.enabled:
        n_patches = (
            len(a.patches.boxes or ())
            or (a.patches.grid or (1, 1))[0] * (a.patches.grid or (1, 1))[1]
        )
    subsets, seeds = lds.n_subsets, lds.seeds
    dampings = 1 + (len(lds.ekfac_dampings) if lds.enabled else 0)
    scores = S * T * n * F32
    top_k = 2 * S * T * (a.top_k or 0) * (F32 + 8)  # one top-k file: index int64, score
    sampled = T * (2 * S + 1) * d * F32
    traj = T * S * cf.samples * cfg.targets.sampling_steps / 2 * F
    costs: dict[str, Callable[[], Cost]] = {
        "prepare_data": lambda: Cost(1, n * d * F32, n * d * F32),
        "train_model": lambda: _training(cfg, z, jobs.get("train_model", 0)),
        "import_model": lambda: Cost(jobs["import_model"], 0, M * z.params * F32),
        "sample_targets": lambda: Cost(T * cfg.targets.sampling_steps * F, sampled, sampled),
        "featurize_train": lambda: Cost(
            sum(kind_cost(kd) for kd in _kinds(cfg, gradient)) * M * n * a.K * F,
            n / a.shards * k * F32,
            jobs["featurize_train"] * n / a.shards * k * F32,
        ),
        "kernel": lambda: Cost(
            jobs["kernel"] * n * k * k,
            2 * k * k * F64 + a.block_size * k * F64,
            jobs["kernel"] * k * k * F64,
        ),
        "featurize_targets": lambda: Cost(
            sum(M * T * _target_draws(cfg, m) * F for m in gradient),
            S * T * k * F32,
            M * len(gradient) * S * T * k * F32,
        ),
        "member_scores": lambda: Cost(
            sum(_member_work(cfg, m, dampings) for m in a.methods) * M * n * F
            + (EKFAC_UNITS * (M * S * T * a.R * F) + EKFAC_JOB_UNITS * M) * ("ekfac" in a.methods),
            16 * z.params + scores,
            jobs["member_scores"] * scores * (dampings if "ekfac" in a.methods else 1),
        ),
        "score": lambda: Cost(
            _score_work(cfg, z, list(a.methods), M),
            scores + a.block_size * k * F32,
            len(a.methods) * scores,
        ),
        "score_shard": lambda: Cost(  # the same scoring work, split over the shards
            _score_work(cfg, z, list(a.methods), M),
            2 * 256 * ((a.top_k or 0) + a.block_size) * (F32 + 8) + a.block_size * k * F32,
            jobs["score_shard"] * top_k,
        ),
        "merge_top_k": lambda: Cost(
            jobs["score_shard"] * S * T * (a.top_k or 0), top_k, len(a.methods) * top_k
        ),
        "tuned_scores": lambda: Cost(
            _score_work(cfg, z, [m for m in a.methods if get_method(m).tunable], M),
            scores + a.block_size * k * F32,
            jobs["tuned_scores"] * scores,
        ),
        "lds_subsets": lambda: Cost(1, subsets * n, subsets * n),
        "train_subset_model": lambda: _training(cfg, z, subsets * seeds, subset=True),
        "train_regime_model": lambda: _training(cfg, z, 1, subset=True),
        "ground_truth": lambda: Cost(
            subsets * seeds * T * (S * lds.draws + lds.final_timesteps * lds.final_noise) * F,
            T * S * lds.draws * d * F32,
            subsets * T * (S + 1) * seeds * F64,
        ),
        "memorization_reference": lambda: Cost(
            S * T * subsets * lds.draws * n / 2 * d, n * d * F32 * 4, S * T * subsets * F64
        ),
        "regime_diagnostics": lambda: Cost(
            2 * T * S * REGENERATION_STEPS * F + 2 * lds.regime_loss_images * S * F,
            n * d * F32 * 4,
            FIGURE_BYTES,
        ),
        "lds_report": lambda: Cost(
            (len(a.methods) + 1) * (S + 1) * subsets * T * (lds.bootstrap + lds.null_draws),
            2 * len(a.methods) * scores,
            FIGURE_BYTES,
        ),
        "train_cf_model": lambda: _training(cfg, z, cf.n_cases),
        "train_cf_floor": lambda: _training(cfg, z, 1),
        "emergence": lambda: Cost(traj, T * S * cf.samples * d * F32, T * S * cf.samples * d * F32),
        "cf_resample": lambda: Cost(
            jobs["cf_resample"] * cf.samples * cfg.targets.sampling_steps * F,
            cf.samples * S * d * F32,
            jobs["cf_resample"] * cf.samples * 2 * d * F32,
        ),
        "train_group_model": lambda: _training(cfg, z, len(cf.group_models)),
        "group_regenerate": lambda: Cost(
            jobs["group_regenerate"] * cf.group.size * cf.samples * cfg.targets.sampling_steps * F,
            cf.group.size * cf.samples * d * F32 * 4,
            jobs["group_regenerate"] * cf.group.size * cf.samples * d * F32,
        ),
        "featurize_patch_targets": lambda: Cost(
            n_patches * sum(M * T * _target_draws(cfg, m) * F for m in gradient),
            n_patches * S * T * k * F32,
            jobs["featurize_patch_targets"] * n_patches * S * T * k * F32,
        ),
        "ground_truth_patches": lambda: Cost(
            n_patches * subsets * seeds * T * S * lds.draws * F,
            0,
            subsets * n_patches * T * S * F64,
        ),
        "score_patches": lambda: Cost(
            n_patches * _score_work(cfg, z, a.patches.methods_of(a.methods), M),
            n_patches * scores,
            jobs["score_patches"] * n_patches * scores,
        ),
        "featurize_extra_targets": lambda: Cost(
            jobs["featurize_extra_targets"] * _extra_targets(cfg) * S * a.R * F,
            S * _extra_targets(cfg) * k * F32,
            jobs["featurize_extra_targets"] * S * _extra_targets(cfg) * k * F32,
        ),
        "sample_extra_targets": lambda: Cost(
            sum(cfg.extra_targets.samples.values()) * cfg.targets.sampling_steps * F
        ),
    }
    out = {}
    for rule, count in jobs.items():
        make = costs.get(rule)
        out[rule] = make() if make else Cost(count, 0, FIGURE_BYTES * count)
    return out


def _extra_targets(cfg: RunConfig) -> float:
    """Mean targets per extra set (image folders: ``targets.n`` as a guess)."""
    sets = cfg.extra_targets.names
    counts = [cfg.extra_targets.samples.get(s, cfg.targets.n) for s in sets]
    return sum(counts) / max(1, len(counts))
