"""One reader and one writer per HDF5 artefact of a run: every h5py call and dataset name is in
this package (a module per stage family: ``data``, ``features``, ``scores``, ``lds``,
``counterfactual``; ``_h5`` the shared digest-checked reading).

Each artefact is a small dataclass; ``write_*`` writes it atomically (``storage.create_h5``) with
provenance attributes, ``read_*`` gives it back. Score files are written block by block and read
lazily one (step, target) row at a time (``ScoreFile``), so they scale past memory.

| artefact | datasets |
|---|---|
| prepared data | ``images`` (n, C, H, W), ``labels``, ``ids`` (+ dataset-specific arrays) |
| targets | ``final`` (q, C, H, W); ``x_t``, ``x0_hat`` (steps, q, C, H, W); ``steps``,
  ``target_ids``; conditional: ``cond``, ``prompts`` |
| feature shard | ``features`` (rows, k), ``positions``, ``train_ids`` |
| kernel | ``matrix`` ((ΦᵀΦ+λI)⁻¹ or its dual) |
| target features | ``features`` (steps, q, k), ``steps``, ``target_ids`` |
| scores | ``scores`` float32 (steps, q, n) chunked per row, ``steps``, ``target_ids``,
  ``train_ids``; patch scores: ``scores`` (steps, q, patches, n) and ``boxes`` (q, patches, 4) |
| top-k scores | ``index`` int64 training positions and ``score`` float32, both (2, steps, q, k):
  sign (positive, negative) × step × target × rank; ``steps``, ``target_ids`` (``topk``) |
| patches | ``boxes`` (q, patches, 4) image pixels, ``grid_boxes`` on the sample grid |
| patch ground truth | ``f_t`` (seeds, steps, q, patches), ``steps``, ``target_ids``, ``boxes`` |
| LDS subsets | ``masks`` (subsets, n) bool, ``role`` (tuning/reporting), ``train_ids`` |
| ground truth | ``f_t`` (seeds, steps, q), ``final_loss`` (seeds, q), ``steps``, ``target_ids`` |
| memorization reference | ``loss`` (steps, q, subsets), ``steps``, ``target_ids`` |
| LDS kit grids | ``<method>`` (values, steps, q, subsets) per tuned method |
| emergence | ``probability`` (steps, q), ``samples``, ``steps``, ``classes``, ``decision_step`` |
| counterfactual plan | ``keep`` (cases, n) bool; the cases in the ``cases`` attribute |
| resampled case | one group ``t<target>-s<step>`` per pair with ``original``, ``a``, ``b`` |
| group plan | ``keep`` (models, n) bool, ``targets``, ``ranked_at`` (methods, targets); the
  model and method names in attributes |
| group samples | ``samples`` (targets, S, C, H, W), ``targets`` (positions in targets.h5) |
"""

from __future__ import annotations

from ._h5 import (
    SIGN_CONVENTION,
)
from .counterfactual import (
    Emergence,
    Plan,
    Runs,
    read_emergence,
    read_group_plan,
    read_group_samples,
    read_plan,
    read_resampled,
    write_emergence,
    write_group_plan,
    write_group_samples,
    write_plan,
    write_resampled,
)
from .data import (
    STREAMED,
    StoredRows,
    Targets,
    check_made_from,
    content_digest,
    read_data,
    read_targets,
    write_data,
    write_targets,
)
from .features import (
    FeatureStore,
    TargetFeatures,
    read_kernel,
    read_patches,
    read_target_features,
    write_feature_shard,
    write_kernel,
    write_patches,
    write_target_features,
)
from .lds import (
    GroundTruth,
    Memorization,
    PatchGroundTruth,
    Subsets,
    read_grids,
    read_ground_truth,
    read_memorization,
    read_patch_ground_truth,
    read_subsets,
    write_grids,
    write_ground_truth,
    write_memorization,
    write_patch_ground_truth,
    write_subsets,
)
from .scores import (
    TOP_K_ORDER,
    Candidates,
    ScoreFile,
    Scores,
    TopKFile,
    digest_key,
    is_top_k,
    read_scores,
    ridge_caption,
    write_patch_scores,
    write_scores,
    write_top_k,
)

__all__ = [
    "SIGN_CONVENTION",
    "STREAMED",
    "TOP_K_ORDER",
    "Candidates",
    "Emergence",
    "FeatureStore",
    "GroundTruth",
    "Memorization",
    "PatchGroundTruth",
    "Plan",
    "Runs",
    "ScoreFile",
    "Scores",
    "StoredRows",
    "Subsets",
    "TargetFeatures",
    "Targets",
    "TopKFile",
    "check_made_from",
    "content_digest",
    "digest_key",
    "is_top_k",
    "read_data",
    "read_emergence",
    "read_grids",
    "read_ground_truth",
    "read_group_plan",
    "read_group_samples",
    "read_kernel",
    "read_memorization",
    "read_patch_ground_truth",
    "read_patches",
    "read_plan",
    "read_resampled",
    "read_scores",
    "read_subsets",
    "read_target_features",
    "read_targets",
    "ridge_caption",
    "write_data",
    "write_emergence",
    "write_feature_shard",
    "write_grids",
    "write_ground_truth",
    "write_group_plan",
    "write_group_samples",
    "write_kernel",
    "write_memorization",
    "write_patch_ground_truth",
    "write_patch_scores",
    "write_patches",
    "write_plan",
    "write_resampled",
    "write_scores",
    "write_subsets",
    "write_target_features",
    "write_targets",
    "write_top_k",
]
