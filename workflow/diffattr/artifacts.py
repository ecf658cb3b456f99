"""One reader and one writer per HDF5 artefact of a run: every h5py call and dataset name is here.

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

import contextlib
import hashlib
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import h5py
import numpy as np

from .data import PreparedData
from .errors import ArtifactError, DatasetError
from .group_removal import GroupPlan
from .layout import Case, parse_sample_group, remake_hint, sample_group
from .lds.report import Grid
from .patches import Patches
from .scoring import BlockFn, Kernel
from .storage import DIGEST, check_digest, create_h5, file_digest, read_attrs, write_attrs
from .topk import Ranked, dense_required

SIGN_CONVENTION = (
    "tau[i] > 0: including training example i lowers the target's output f_t, i.e. supports the "
    "generated image (positive influencer); tau[i] < 0: negative influencer"
)


@contextlib.contextmanager
def _reading(path: str | Path) -> Iterator[h5py.File]:
    """Open a result for reading, verifying its datasets' digest (``storage.check_digest``); a
    missing, truncated, foreign or altered file is one ArtifactError naming it and how to remake
    it (also when a dataset turns out missing or unreadable)."""
    path = Path(path)
    if not path.exists():
        raise ArtifactError(f"{path} does not exist; run the workflow to make it")
    try:
        f = h5py.File(path, "r")
    except OSError:
        raise ArtifactError(
            f"{path} is not a readable HDF5 file (truncated or corrupt); {remake_hint(path)}"
        ) from None
    try:
        with f:
            check_digest(f, path)
            yield f
    except (KeyError, OSError) as err:
        raise ArtifactError(
            f"{path} is incomplete or not the file expected ({err}); {remake_hint(path)}"
        ) from None


def _finite(path: str | Path, **arrays: np.ndarray | None) -> None:
    """Refuse to write NaN or ±inf: a diverged model or broken input upstream."""
    for name, array in arrays.items():
        if array is not None and np.issubdtype(np.asarray(array).dtype, np.floating):
            bad = int(np.size(array) - np.count_nonzero(np.isfinite(array)))
            if bad:
                raise ArtifactError(
                    f"refusing to write {path}: {bad} of {np.size(array)} values of {name} are "
                    "not finite; an input upstream is broken (a diverged model? check the "
                    "training logs) and has to be remade first"
                )


# ---------------------------------------------------------------------------------------------
# Prepared data


def content_digest(images: np.ndarray, labels: np.ndarray, ids: np.ndarray) -> str:
    """sha256 of the examples as stored (float32 images, labels, ids): the identity of a
    ``data.h5`` that every artefact made from it records as ``data_digest``. The streamed caption
    embeddings are left out (tens of GB at full COCO); they are checked by shape only."""
    digest = hashlib.sha256()
    for array in (np.asarray(images, np.float32), np.asarray(labels), np.asarray(ids)):
        digest.update(str((array.dtype.str, array.shape)).encode())
        digest.update(np.ascontiguousarray(array).data)
    return digest.hexdigest()


def check_made_from(data: PreparedData, made: str | Path, recorded: str | None) -> None:
    """``made`` (an artefact recording ``data_digest``) was made from the examples of ``data``
    (None: made before digests were recorded, not checked)."""
    if recorded and data.digest and recorded != data.digest:
        raise ArtifactError(
            f"{made} was made from other training data than the current data.h5 (data digest "
            f"{recorded[:12]} ≠ {data.digest[:12]}); {remake_hint(made)}"
        )


def write_data(path: str | Path, data: PreparedData, config: Mapping[str, Any]) -> None:
    """Write ``data.h5`` with the examples' ``content_digest``."""
    _finite(path, images=data.images)
    attrs = {
        "dataset": data.name,
        "class_names": data.class_names,
        "config": dict(config),
        "content_digest": content_digest(data.images, data.labels, data.ids),
    }
    with create_h5(path, attrs, digest=False) as f:  # its content_digest is checked instead
        f.create_dataset("images", data=data.images.astype(np.float32))
        f.create_dataset("labels", data=data.labels)
        f.create_dataset("ids", data=data.ids)
        for key, value in data.extra.items():
            f.create_dataset(key, data=value)


STREAMED = ("caption_embeddings",)
"""Datasets of ``data.h5`` read on demand (:class:`StoredRows`), never loaded whole."""


class StoredRows:
    """A dataset of an HDF5 file read row by row on demand: ``take_rows(rows[, columns])`` reads
    the distinct rows asked for (sorted, one read) and returns ``x[rows]`` or ``x[rows, columns]``
    exactly as the in-memory array would (``data.take_rows``). Memory: the rows of one batch."""

    def __init__(self, path: str | Path, name: str):
        self.path, self.name = Path(path), name
        with _reading(self.path) as f:
            self.shape: tuple[int, ...] = f[name].shape
            self.dtype = f[name].dtype
        self._file: h5py.File | None = None

    def __len__(self) -> int:
        return self.shape[0]

    def take_rows(self, rows: np.ndarray, columns: np.ndarray | None = None) -> np.ndarray:
        if self._file is None:
            self._file = h5py.File(self.path, "r")
        unique, inverse = np.unique(rows.ravel(), return_inverse=True)
        block = self._file[self.name][unique] if len(unique) else np.empty((0, *self.shape[1:]))
        where = inverse.reshape(rows.shape)
        return block[where] if columns is None else block[where, columns]

    def __array__(self, dtype=None, copy=None) -> np.ndarray:
        with _reading(self.path) as f:
            return np.asarray(f[self.name][()], dtype=dtype)

    def __getstate__(self):  # no open handle crosses a process boundary
        return {**self.__dict__, "_file": None}


def read_data(path: str | Path) -> PreparedData:
    """Read ``data.h5`` written by :func:`write_data`, verifying its content digest; the
    ``STREAMED`` datasets (caption embeddings) stay on disk as :class:`StoredRows`."""
    path = Path(path)
    if not path.exists():
        raise DatasetError(f"prepared data {path} does not exist; run the prepare_data rule first")
    with _reading(path) as f:
        attrs = read_attrs(f)
        core = {"images", "labels", "ids"}
        extra = {k: f[k][()] for k in f if k not in core and k not in STREAMED}
        streamed = [k for k in STREAMED if k in f]
        data = dict(
            images=f["images"][()],
            labels=f["labels"][()],
            ids=f["ids"][()],
            class_names=list(attrs.get("class_names", [])),
            name=str(attrs.get("dataset", "")),
            config=dict(attrs.get("config") or {}),
        )
    digest = content_digest(data["images"], data["labels"], data["ids"])
    recorded = attrs.get("content_digest")
    if recorded is not None and recorded != digest:
        raise ArtifactError(
            f"{path} does not hold the examples it was written with (content digest {digest[:12]}"
            f" ≠ recorded {str(recorded)[:12]}: corrupted or edited in place); {remake_hint(path)}"
        )
    extra.update({k: StoredRows(path, k) for k in streamed})
    return PreparedData(extra=extra, digest=digest, **data)


# ---------------------------------------------------------------------------------------------
# Targets


@dataclass(frozen=True)
class Targets:
    """Generated targets and their trajectories at the attribution steps (noisy → clean)."""

    final: np.ndarray  # (q, C, H, W)
    x_t: np.ndarray  # (steps, q, C, H, W)
    x0_hat: np.ndarray  # (steps, q, C, H, W)
    steps: list[int]
    target_ids: np.ndarray  # (q,)
    cond: np.ndarray | None = None  # (q, L, D) caption embeddings of text-conditioned targets
    prompts: list[str] | None = None
    attrs: dict[str, Any] = field(default_factory=dict)

    @property
    def n(self) -> int:
        return len(self.target_ids)


def write_targets(path: str | Path, targets: Targets) -> None:
    _finite(path, final=targets.final, x_t=targets.x_t, x0_hat=targets.x0_hat)
    with create_h5(path, targets.attrs) as f:
        f.create_dataset("target_ids", data=np.asarray(targets.target_ids))
        f.create_dataset("steps", data=np.asarray(targets.steps))
        f.create_dataset("final", data=targets.final)
        f.create_dataset("x_t", data=targets.x_t)
        f.create_dataset("x0_hat", data=targets.x0_hat)
        if targets.cond is not None:
            f.create_dataset("cond", data=targets.cond.astype(np.float16))
            prompts = [p.encode("utf-8") for p in targets.prompts or []]
            f.create_dataset("prompts", data=np.array(prompts, dtype="S"))


def read_targets(path: str | Path) -> Targets:
    with _reading(path) as f:
        conditional = "cond" in f
        return Targets(
            final=f["final"][()],
            x_t=f["x_t"][()],
            x0_hat=f["x0_hat"][()],
            steps=f["steps"][()].tolist(),
            target_ids=f["target_ids"][()],
            cond=f["cond"][()] if conditional else None,
            prompts=[p.decode("utf-8") for p in f["prompts"][()]] if conditional else None,
            attrs=read_attrs(f),
        )


# ---------------------------------------------------------------------------------------------
# Training features: shards of one member, read as one matrix in blocks


def write_feature_shard(
    path: str | Path,
    features: np.ndarray,
    positions: np.ndarray,
    train_ids: np.ndarray,
    attrs: Mapping[str, Any],
    residual_weights: np.ndarray | None = None,
) -> None:
    """One shard of Φ: ``features`` (rows, k) of the examples at ``positions``, and for DAS's
    normalised feature kinds the examples' ``residual_weights`` (rows,)."""
    _finite(path, features=features)
    if residual_weights is not None:
        _finite(path, residual_weights=residual_weights)
    with create_h5(path, attrs) as f:
        f.create_dataset("features", data=features)
        f.create_dataset("positions", data=positions)
        f.create_dataset("train_ids", data=train_ids)
        if residual_weights is not None:
            f.create_dataset("residual_weights", data=residual_weights)


class FeatureStore:
    """A feature matrix Φ (n, k) stored as shard files (``features`` at ``positions``), read in
    blocks of rows. The shards may be given in any order; they must tile rows 0..n−1."""

    def __init__(self, paths: Sequence[str | Path]):
        if not paths:
            raise ValueError("no feature shards given")
        shards, data_digests = [], {}
        for path in paths:
            with _reading(path) as f:
                pos = f["positions"][()]
                shards.append(
                    (int(pos[0]) if len(pos) else 0, len(pos), Path(path), f["features"].shape[1])
                )
                self.attrs = read_attrs(f)
            if self.attrs.get("data_digest"):  # not recorded by shards of older versions
                data_digests.setdefault(self.attrs["data_digest"], Path(path))
        if len(data_digests) > 1:
            first, other = list(data_digests.values())[:2]
            raise ArtifactError(
                f"{other} was made from other training data than {first} (their data.h5 "
                f"digests differ); {remake_hint(other)}"
            )
        self.data_digest: str | None = next(iter(data_digests), None)
        shards.sort()
        self.shards = [(Path(p), lo, lo + size) for lo, size, p, _ in shards]
        self.dim = shards[0][3]
        expected = 0
        for path, lo, hi in self.shards:
            if lo != expected:
                raise ValueError(f"feature shards do not tile the training set (gap before {path})")
            expected = hi
        self.n = expected

    def digests(self) -> dict[str, str]:
        """Each shard's digest by file name (recorded by the kernel made from them): the datasets
        digest it records and :func:`_reading` verified, or for shards of older versions the
        sha256 of the file."""
        out = {}
        for path, _, _ in self.shards:
            with _reading(path) as f:
                recorded = f.attrs.get(DIGEST)
            out[path.name] = str(recorded) if recorded is not None else file_digest(path)
        return out

    def check_unchanged_since(self, recorded: Mapping[str, str] | None, made: str | Path) -> None:
        """The shards are the bytes ``made`` (a kernel, a score file) was computed from, by the
        digests it recorded (None: made before digests were recorded, not checked; a file's
        sha256, recorded by older versions, is accepted too)."""
        if recorded is None:
            return
        for name, digest in self.digests().items():
            path = next(p for p, _, _ in self.shards if p.name == name)
            known = recorded.get(name)
            if known != digest and (known is None or known != file_digest(path)):
                raise ArtifactError(
                    f"{path} changed after {made} was made from it; {remake_hint(made)}"
                )

    def blocks(self, rows: int) -> Iterator[tuple[int, np.ndarray]]:
        """Yield (first row, block) pairs of at most ``rows`` rows, in order."""
        for path, lo, hi in self.shards:
            with _reading(path) as f:
                data = f["features"]
                for a in range(0, hi - lo, rows):
                    yield lo + a, data[a : min(a + rows, hi - lo)]

    def cost(self) -> tuple[float, int]:
        """(seconds, example·draws) the shards took to featurize (from their attributes)."""
        seconds, rows = 0.0, 0
        for path, lo, hi in self.shards:
            with _reading(path) as f:
                attrs = read_attrs(f)
            seconds += float(attrs.get("seconds", float("nan")))
            rows += (hi - lo) * int(attrs.get("K", 0))
        return seconds, rows

    def residual_weights(self) -> np.ndarray:
        """DAS's residual weight of every example (n,), stored beside normalised features."""
        parts = []
        for path, _, _ in self.shards:
            with _reading(path) as f:
                if "residual_weights" not in f:
                    raise ArtifactError(f"{path} has no residual_weights; {remake_hint(path)}")
                parts.append(f["residual_weights"][()])
        return np.concatenate(parts)

    def read(self, lo: int, hi: int) -> np.ndarray:
        """Rows [lo, hi) (may span shards)."""
        parts = []
        for path, s_lo, s_hi in self.shards:
            a, b = max(lo, s_lo), min(hi, s_hi)
            if a < b:
                with _reading(path) as f:
                    parts.append(f["features"][a - s_lo : b - s_lo])
        return np.concatenate(parts) if parts else np.empty((0, self.dim), np.float32)


# ---------------------------------------------------------------------------------------------
# Kernels and target features


def write_kernel(path: str | Path, kernel: Kernel) -> None:
    _finite(path, matrix=kernel.matrix)
    attrs = {**kernel.attrs, "form": kernel.form, "lambda_abs": kernel.lambda_abs}
    with create_h5(path, attrs) as f:
        f.create_dataset("matrix", data=kernel.matrix)


def read_kernel(path: str | Path) -> Kernel:
    with _reading(path) as f:
        attrs = read_attrs(f)
        return Kernel(attrs["form"], f["matrix"][()], attrs["lambda_abs"], attrs)


@dataclass(frozen=True)
class TargetFeatures:
    """Projected target gradients ψ of one member: (steps, targets, k)."""

    features: np.ndarray
    steps: list[int]
    target_ids: np.ndarray
    attrs: dict[str, Any] = field(default_factory=dict)


def write_target_features(path: str | Path, value: TargetFeatures) -> None:
    _finite(path, features=value.features)
    with create_h5(path, value.attrs) as f:
        f.create_dataset("features", data=value.features)
        f.create_dataset("steps", data=np.asarray(value.steps))
        f.create_dataset("target_ids", data=value.target_ids)


def read_target_features(path: str | Path) -> TargetFeatures:
    with _reading(path) as f:
        return TargetFeatures(
            f["features"][()], f["steps"][()].tolist(), f["target_ids"][()], read_attrs(f)
        )


def write_patches(path: str | Path, value: Patches, attrs: Mapping[str, Any]) -> None:
    with create_h5(
        path, {**attrs, "image_size": list(value.image_size), "grid_size": list(value.grid_size)}
    ) as f:
        f.create_dataset("boxes", data=value.boxes)
        f.create_dataset("grid_boxes", data=value.grid_boxes)


def read_patches(path: str | Path) -> Patches:
    with _reading(path) as f:
        attrs = read_attrs(f)
        return Patches(
            f["boxes"][()],
            f["grid_boxes"][()],
            tuple(attrs["image_size"]),
            tuple(attrs["grid_size"]),
        )


# ---------------------------------------------------------------------------------------------
# Scores


def digest_key(kind: str, member: object, single_kind: bool) -> str:
    """The key of a member's feature digests in a score file: the member, or ``<kind>/<member>``
    for methods with a feature kind per step."""
    return str(member) if single_kind else f"{kind}/{member}"


def write_scores(  # noqa: PLR0913  (issue 32: not yet split)
    path: str | Path,
    steps: Sequence[int],
    target_ids: np.ndarray,
    train_ids: np.ndarray,
    block_fn: BlockFn,
    attrs: Mapping[str, Any],
    train_block: int = 8192,
    target_block: int = 256,
    candidates: Candidates | None = None,
) -> None:
    """Write a score file, computing it block by block with ``block_fn`` (and, given, the scores
    of every candidate value of the setting a report tunes: dataset ``candidate_scores``)."""
    n_steps, n_targets, n_train = len(steps), len(target_ids), len(train_ids)
    chunk = (1, 1, max(1, min(n_train, 65536)))
    with create_h5(path, {"sign": SIGN_CONVENTION, **attrs}) as f:
        f.create_dataset("steps", data=np.asarray(steps, dtype=np.int64))
        f.create_dataset("target_ids", data=np.asarray(target_ids, dtype=np.int64))
        f.create_dataset("train_ids", data=np.asarray(train_ids, dtype=np.int64))
        scores = f.create_dataset("scores", (n_steps, n_targets, n_train), np.float32, chunks=chunk)
        for axis, (name, index) in enumerate(
            [("step", "steps"), ("target", "target_ids"), ("train", "train_ids")]
        ):
            f[index].make_scale(name)  # dimension scales: readers see named, labelled axes
            scores.dims[axis].attach_scale(f[index])
            scores.dims[axis].label = name
        for s in range(n_steps):
            for t_lo in range(0, n_targets, target_block):
                targets = slice(t_lo, min(t_lo + target_block, n_targets))
                for i_lo in range(0, n_train, train_block):
                    train = slice(i_lo, min(i_lo + train_block, n_train))
                    block = block_fn(s, targets, train)
                    _finite(path, scores=block)
                    scores[s, targets, train] = block
        if candidates is not None:
            _finite(path, candidate_scores=candidates.scores)
            grid = f.create_dataset("candidate_scores", data=candidates.scores.astype(np.float32))
            write_attrs(grid, {"setting": candidates.setting, "values": list(candidates.values)})


def write_patch_scores(
    path: str | Path,
    steps: Sequence[int],
    target_ids: np.ndarray,
    train_ids: np.ndarray,
    boxes: np.ndarray,
    block_fn: BlockFn,
    attrs: Mapping[str, Any],
    train_block: int = 8192,
) -> None:
    """Write a patch score file (steps, targets, patches, n_train); ``block_fn`` indexes the
    (target, patch) queries target-major: target j's patches are rows j·P … (j+1)·P − 1."""
    n_steps, n_targets, n_train = len(steps), len(target_ids), len(train_ids)
    n_patches = boxes.shape[1]
    chunk = (1, 1, n_patches, max(1, min(n_train, 65536)))
    shape = (n_steps, n_targets, n_patches, n_train)
    with create_h5(path, {"sign": SIGN_CONVENTION, **attrs}) as f:
        f.create_dataset("steps", data=np.asarray(steps, dtype=np.int64))
        f.create_dataset("target_ids", data=np.asarray(target_ids, dtype=np.int64))
        f.create_dataset("train_ids", data=np.asarray(train_ids, dtype=np.int64))
        f.create_dataset("boxes", data=np.asarray(boxes, dtype=np.int64))
        scores = f.create_dataset("scores", shape, np.float32, chunks=chunk)
        for axis, (name, index) in [
            (0, ("step", "steps")),
            (1, ("target", "target_ids")),
            (3, ("train", "train_ids")),
        ]:
            f[index].make_scale(name)
            scores.dims[axis].attach_scale(f[index])
            scores.dims[axis].label = name
        scores.dims[2].label = "patch"
        for s in range(n_steps):
            for j in range(n_targets):
                queries = slice(j * n_patches, (j + 1) * n_patches)
                for i_lo in range(0, n_train, train_block):
                    train = slice(i_lo, min(i_lo + train_block, n_train))
                    block = block_fn(s, queries, train)
                    _finite(path, scores=block)
                    scores[s, j, :, train] = block


@dataclass(frozen=True)
class Candidates:
    """A member's scores for every value of the setting an LDS report tunes (ekfac's damping
    scale): ``scores`` (values, steps, targets, n_train)."""

    setting: str
    values: list[float]
    scores: np.ndarray

    def at(self, value: float) -> np.ndarray:
        if value not in self.values:
            raise ArtifactError(
                f"no scores for {self.setting} = {value:g} (scored: {self.values}); rerun the "
                "member jobs"
            )
        return self.scores[self.values.index(value)]


@dataclass(frozen=True)
class Scores:
    """A whole score file in memory: ``scores`` (steps, targets, n_train), or for patch scores
    (steps, targets, patches, n_train) with their ``boxes`` (targets, patches, 4); a per-member
    file may hold its ``candidates``."""

    scores: np.ndarray
    steps: list[int]
    target_ids: np.ndarray
    train_ids: np.ndarray
    attrs: dict[str, Any]
    boxes: np.ndarray | None = None
    candidates: Candidates | None = None

    @property
    def method(self) -> str:
        return str(self.attrs["method"])


def read_scores(path: str | Path) -> Scores:
    """Load a whole score file (reports over all rows; use :class:`ScoreFile` for single rows)."""
    with ScoreFile(path) as f:
        return Scores(f.all(), f.steps, f.target_ids, f.train_ids, f.attrs, f.boxes, f.candidates())


def ridge_caption(attrs: Mapping[str, Any]) -> str:
    """Which λ a gradient method's scores used, for titles and headers ('' for other methods)."""
    if attrs.get("lambda_source") == "tuned":
        return " (λ tuned per step on the LDS tuning subsets)"
    if "lambda" in attrs:
        return f" (config λ = {attrs['lambda']:g}, not tuned)"
    return ""


class ScoreFile:
    """A score file opened for lazy row access: ``row(step, target)`` reads one chunk."""

    def __init__(self, path: str | Path):
        with _reading(path) as f:  # checks the file and its index datasets
            if "scores" not in f and "index" in f:
                raise ArtifactError(dense_required(path))
            self.steps: list[int] = f["steps"][()].tolist()
            self.target_ids = f["target_ids"][()]
            self.train_ids = f["train_ids"][()]
            self.attrs = read_attrs(f)
            self.boxes = f["boxes"][()] if "boxes" in f else None  # patch scores
            f["scores"].shape  # noqa: B018  (the scores exist)
        self._file = h5py.File(path, "r")

    def row(self, step: int, target: int) -> np.ndarray:
        """Scores (n_train,) of target position ``target`` at timestep ``step`` ((patches,
        n_train) in a patch score file)."""
        return self._file["scores"][self.steps.index(step), target]

    def all(self) -> np.ndarray:
        return self._file["scores"][()]

    def candidates(self) -> Candidates | None:
        """The candidate scores a per-member file holds (None: it holds none)."""
        if "candidate_scores" not in self._file:
            return None
        grid = self._file["candidate_scores"]
        meta = read_attrs(grid)
        values = [float(v) for v in meta["values"]]
        return Candidates(str(meta["setting"]), values, grid[()])

    def close(self) -> None:
        self._file.close()

    def __enter__(self) -> ScoreFile:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


# ---------------------------------------------------------------------------------------------
# Top-k scores (attribution.top_k): per (step, target) the K strongest of each sign


def write_top_k(
    path: str | Path,
    steps: Sequence[int],
    target_ids: np.ndarray,
    n_train: int,
    width: int,
    parts: Iterable[tuple[int, slice, Ranked]],
    attrs: Mapping[str, Any],
) -> None:
    """Write a top-k file from ``parts`` ((step index, target slice, its Ranked (2, targets in
    the slice, ``width``)), covering every (step, target) once), one part at a time (memory: one
    part). ``attrs`` must name the method and ``top_k`` (K; ``width`` = min(K, the rows
    ranked))."""
    n_steps, n_targets = len(steps), len(target_ids)
    shape = (2, n_steps, n_targets, width)
    chunk = (1, 1, max(1, min(n_targets, max(1, 65536 // max(1, width)))), max(1, width))
    meta = {
        "sign": SIGN_CONVENTION,
        "order": TOP_K_ORDER,
        "n_train": int(n_train),
        "steps": [int(t) for t in steps],
        "target_ids": [int(t) for t in target_ids],
        **attrs,
    }
    with create_h5(path, meta) as f:
        f.create_dataset("steps", data=np.asarray(steps, dtype=np.int64))
        f.create_dataset("target_ids", data=np.asarray(target_ids, dtype=np.int64))
        chunks = chunk if width else None  # (a shard without rows keeps none)
        index = f.create_dataset("index", shape, np.int64, chunks=chunks)
        score = f.create_dataset("score", shape, np.float32, chunks=chunks)
        covered = np.zeros((n_steps, n_targets), dtype=int)
        for s, targets, ranked in parts:
            _finite(path, score=ranked.score)
            index[:, s, targets] = ranked.index
            score[:, s, targets] = ranked.score
            covered[s, targets] += 1
        if (covered != 1).any():
            raise ArtifactError(f"{path}: top-k parts do not cover every (step, target) once")


TOP_K_ORDER = (
    "index/score[0]: the K highest scores, highest first; [1]: the K lowest, lowest first; "
    "equal scores: the lower training position (row of data.h5) first"
)


class TopKFile:
    """A top-k file opened for row access: ``row(step, target)`` (Ranked (2, k))."""

    def __init__(self, path: str | Path):
        with _reading(path) as f:
            if "index" not in f:
                raise ArtifactError(
                    f"{path} is not a top-k score file (it has no index dataset); "
                    f"{remake_hint(path)}"
                )
            self.steps: list[int] = f["steps"][()].tolist()
            self.target_ids = f["target_ids"][()]
            self.attrs = read_attrs(f)
        self.path = Path(path)
        self.k = int(self.attrs["top_k"])
        self.n_train = int(self.attrs["n_train"])
        self._file = h5py.File(path, "r")

    @property
    def method(self) -> str:
        return str(self.attrs["method"])

    def row(self, step: int, target: int) -> Ranked:
        """The top-k of target position ``target`` at timestep ``step``."""
        s = self.steps.index(step)
        return Ranked(self._file["index"][:, s, target], self._file["score"][:, s, target])

    def rows(self, targets: slice) -> Ranked:
        """Every step of the target positions ``targets``: (2, steps, targets, k)."""
        return Ranked(self._file["index"][:, :, targets], self._file["score"][:, :, targets])

    def all(self) -> Ranked:
        return Ranked(self._file["index"][()], self._file["score"][()])

    def close(self) -> None:
        self._file.close()

    def __enter__(self) -> TopKFile:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def is_top_k(path: str | Path) -> bool:
    """Whether ``path`` (an existing score file) is a top-k file rather than dense scores."""
    with h5py.File(path, "r") as f:
        return "index" in f and "scores" not in f


# ---------------------------------------------------------------------------------------------
# LDS


@dataclass(frozen=True)
class Subsets:
    """LDS subsets: ``masks`` (subsets, n); ``role`` says which tune λ and which are reported."""

    masks: np.ndarray
    role: np.ndarray  # "tuning" | "reporting" per subset
    train_ids: np.ndarray
    attrs: dict[str, Any] = field(default_factory=dict)

    def kept_positions(self, subset: int) -> np.ndarray:
        return np.flatnonzero(self.masks[subset])


def write_subsets(path: str | Path, value: Subsets) -> None:
    with create_h5(path, value.attrs) as f:
        f.create_dataset("masks", data=value.masks)
        f.create_dataset("role", data=value.role.astype("S9"))
        f.create_dataset("train_ids", data=value.train_ids)


def read_subsets(path: str | Path) -> Subsets:
    with _reading(path) as f:
        role = np.array([r.decode() for r in f["role"][()]])
        return Subsets(f["masks"][()], role, f["train_ids"][()], read_attrs(f))


@dataclass(frozen=True)
class GroundTruth:
    """f_t (seeds, steps, targets) and the final image's loss (seeds, targets) of one subset."""

    f_t: np.ndarray
    final_loss: np.ndarray
    steps: list[int]
    target_ids: np.ndarray
    attrs: dict[str, Any] = field(default_factory=dict)


def write_ground_truth(path: str | Path, value: GroundTruth) -> None:
    _finite(path, f_t=value.f_t, final_loss=value.final_loss)
    with create_h5(path, value.attrs) as f:
        f.create_dataset("f_t", data=value.f_t)
        f.create_dataset("final_loss", data=value.final_loss)
        f.create_dataset("steps", data=np.asarray(value.steps))
        f.create_dataset("target_ids", data=np.asarray(value.target_ids))


def read_ground_truth(path: str | Path) -> GroundTruth:
    with _reading(path) as f:
        return GroundTruth(
            f["f_t"][()],
            f["final_loss"][()],
            f["steps"][()].tolist(),
            f["target_ids"][()],
            read_attrs(f),
        )


@dataclass(frozen=True)
class PatchGroundTruth:
    """f_t of every patch (seeds, steps, targets, patches) of one subset, and the ``boxes``."""

    f_t: np.ndarray
    steps: list[int]
    target_ids: np.ndarray
    boxes: np.ndarray
    attrs: dict[str, Any] = field(default_factory=dict)


def write_patch_ground_truth(path: str | Path, value: PatchGroundTruth) -> None:
    _finite(path, f_t=value.f_t)
    with create_h5(path, value.attrs) as f:
        f.create_dataset("f_t", data=value.f_t)
        f.create_dataset("steps", data=np.asarray(value.steps))
        f.create_dataset("target_ids", data=np.asarray(value.target_ids))
        f.create_dataset("boxes", data=np.asarray(value.boxes))


def read_patch_ground_truth(path: str | Path) -> PatchGroundTruth:
    with _reading(path) as f:
        return PatchGroundTruth(
            f["f_t"][()],
            f["steps"][()].tolist(),
            f["target_ids"][()],
            f["boxes"][()],
            read_attrs(f),
        )


@dataclass(frozen=True)
class Memorization:
    """f_t of every subset's empirical optimal denoiser: ``loss`` (steps, targets, subsets)."""

    loss: np.ndarray
    steps: list[int]
    target_ids: np.ndarray
    attrs: dict[str, Any] = field(default_factory=dict)


def write_memorization(path: str | Path, value: Memorization) -> None:
    _finite(path, loss=value.loss)
    with create_h5(path, value.attrs) as f:
        f.create_dataset("loss", data=value.loss)
        f.create_dataset("steps", data=np.asarray(value.steps))
        f.create_dataset("target_ids", data=np.asarray(value.target_ids))


def read_memorization(path: str | Path) -> Memorization:
    with _reading(path) as f:
        return Memorization(
            f["loss"][()], f["steps"][()].tolist(), f["target_ids"][()], read_attrs(f)
        )


def write_grids(path: str | Path, grids: Mapping[str, Grid], attrs: Mapping[str, Any]) -> None:
    """An LDS kit's tuning grids: per method a dataset ``<method>`` holding its whole-ensemble
    predictions (values, steps, targets, subsets), with the grid ``values`` and ensemble
    ``size`` as attributes (``lds.report.Grid``)."""
    with create_h5(path, attrs) as f:
        for method, grid in sorted(grids.items()):
            data = f.create_dataset(method, data=grid.predictions)
            write_attrs(data, {"values": [float(v) for v in grid.values], "size": grid.size})


def read_grids(path: str | Path) -> dict[str, Grid]:
    with _reading(path) as f:
        out = {}
        for method, data in f.items():
            meta = read_attrs(data)
            out[method] = Grid([float(v) for v in meta["values"]], int(meta["size"]), data[()])
        return out


# ---------------------------------------------------------------------------------------------
# Counterfactual


@dataclass(frozen=True)
class Emergence:
    """P(final class) along each trajectory, its samples, and each target's decision step."""

    probability: np.ndarray  # (steps, targets)
    samples: np.ndarray  # (steps, targets, S, C, H, W)
    steps: list[int]
    classes: np.ndarray  # (targets,) the final image's class
    decision_step: np.ndarray  # (targets,)
    attrs: dict[str, Any] = field(default_factory=dict)


def write_emergence(path: str | Path, value: Emergence) -> None:
    _finite(path, probability=value.probability, samples=value.samples)
    with create_h5(path, value.attrs) as f:
        f.create_dataset("probability", data=value.probability)
        f.create_dataset("samples", data=value.samples)
        f.create_dataset("steps", data=np.asarray(value.steps))
        f.create_dataset("classes", data=value.classes)
        f.create_dataset("decision_step", data=value.decision_step)


def read_emergence(path: str | Path) -> Emergence:
    with _reading(path) as f:
        return Emergence(
            f["probability"][()],
            f["samples"][()],
            f["steps"][()].tolist(),
            f["classes"][()],
            f["decision_step"][()],
            read_attrs(f),
        )


@dataclass(frozen=True)
class Plan:
    """Counterfactual cases and, per case, the training examples kept (``keep`` (cases, n))."""

    cases: list[Case]
    keep: np.ndarray
    attrs: dict[str, Any] = field(default_factory=dict)

    def kept_positions(self, case: int) -> np.ndarray:
        return np.flatnonzero(self.keep[case])


def write_plan(path: str | Path, value: Plan) -> None:
    attrs = {**value.attrs, "cases": [c.as_dict() for c in value.cases]}
    with create_h5(path, attrs) as f:
        f.create_dataset("keep", data=value.keep)


def read_plan(path: str | Path) -> Plan:
    with _reading(path) as f:
        attrs = read_attrs(f)
        return Plan([Case(**c) for c in attrs["cases"]], f["keep"][()], attrs)


Runs = dict[str, np.ndarray]  # "original", "a", "b" → samples (S, C, H, W)


def write_resampled(
    path: str | Path, samples: Mapping[tuple[int, int], Runs], attrs: Mapping[str, Any]
) -> None:
    """Samples of p(·|x_t) per (target position, step), one group each."""
    for runs in samples.values():
        _finite(path, **runs)
    with create_h5(path, attrs) as f:
        for (target, step), runs in samples.items():
            group = f.create_group(sample_group(target, step))
            for name, values in runs.items():
                group.create_dataset(name, data=values)


def read_resampled(path: str | Path) -> dict[tuple[int, int], Runs]:
    with _reading(path) as f:
        return {
            parse_sample_group(name): {k: v[()] for k, v in group.items()}
            for name, group in f.items()
        }


# ---------------------------------------------------------------------------------------------
# Group removal (diffattr.group_removal)


def write_group_plan(path: str | Path, value: GroupPlan) -> None:
    attrs = {**value.attrs, "names": value.names, "methods": value.methods}
    with create_h5(path, attrs) as f:
        f.create_dataset("keep", data=value.keep)
        f.create_dataset("targets", data=value.targets)
        f.create_dataset("ranked_at", data=value.ranked_at)


def read_group_plan(path: str | Path) -> GroupPlan:
    with _reading(path) as f:
        attrs = read_attrs(f)
        names, methods = attrs.pop("names"), attrs.pop("methods")
        return GroupPlan(names, f["keep"][()], f["targets"][()], methods, f["ranked_at"][()], attrs)


def write_group_samples(
    path: str | Path, samples: np.ndarray, targets: np.ndarray, attrs: Mapping[str, Any]
) -> None:
    """One model's regenerations of the group: (targets, S, C, H, W)."""
    _finite(path, samples=samples)
    with create_h5(path, attrs) as f:
        f.create_dataset("samples", data=samples)
        f.create_dataset("targets", data=targets)


def read_group_samples(path: str | Path) -> tuple[np.ndarray, np.ndarray, dict[str, Any]]:
    with _reading(path) as f:
        return f["samples"][()], f["targets"][()], read_attrs(f)
