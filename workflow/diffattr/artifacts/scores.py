"""Codecs of score files: dense and top-k (the table: ``diffattr.artifacts``)."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import h5py
import numpy as np

from ..errors import ArtifactError
from ..layout import remake_hint
from ..scoring import BlockFn
from ..storage import create_h5, read_attrs, write_attrs
from ..topk import Ranked, dense_required
from ._h5 import SIGN_CONVENTION, reading, refuse_non_finite


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
                    refuse_non_finite(path, scores=block)
                    scores[s, targets, train] = block
        if candidates is not None:
            refuse_non_finite(path, candidate_scores=candidates.scores)
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
                    refuse_non_finite(path, scores=block)
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
        with reading(path) as f:  # checks the file and its index datasets
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
            refuse_non_finite(path, score=ranked.score)
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
        with reading(path) as f:
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
