"""A versioned LDS kit: a finished LDS run's benchmark in one folder, to evaluate new attribution
methods in minutes without the workflow, its features or its subset models.

The kit (``snakemake --configfile … kit`` → ``results/<run>/kit``, ``stages.kit.build_kit``)
keeps the run's layout (``layout.Paths`` reads it): the training data (``data.h5``), the
targets with their trajectories (``targets.h5``: x_t and x̂₀ᵗ at every attribution step, the
final images), the full-model ensemble (``models/m<i>/<checkpoint>``, diffusers folders), the
subsets with their tuning/reporting roles (``lds/subsets.h5``), the ground truth f_t of every
(subset, seed, step, target) and the final image's loss (``lds/ground_truth/s<j>.h5``), the
memorization reference and regime diagnostics, every method's score file (``scores/``: the
reference rows), and in place of the training features the whole ensemble's LDS predictions
−M τ_v at every value v of each tuned method's grid (``reference/grids.h5``: the ridge λ of
``lds.lambdas``, ekfac's dampings), which is all the report's tuning reads of them. The run's
own report is ``reference/lds.csv`` (and ``lds.json``); ``manifest.json`` holds the format
version, every file's sha256 and size, the resolved config and the command that rebuilds it.

Evaluating the kit's reference score files reproduces ``reference/lds.csv`` bit for bit; in
lds.json only the ``ensemble_size`` curve of a tuned method is shorter (the whole ensemble's
entry alone: its smaller ensembles need each member's features, which the kit does not ship).

    import diffattr

    kit = diffattr.Kit("results/digits-lds/kit")
    tau = my_method(kit.train_images, kit.targets.x0_hat)        # (steps, targets, n)
    kit.write_scores("mine.h5", "mine", tau)
    table = diffattr.evaluate("mine.h5", kit)                      # every LDS row
"""

from __future__ import annotations

import json
import tempfile
from collections.abc import Sequence
from functools import cached_property
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from . import __version__
from .artifacts import (
    Candidates,
    Scores,
    read_data,
    read_grids,
    read_ground_truth,
    read_memorization,
    read_scores,
    read_subsets,
    read_targets,
    write_scores,
)
from .config import RunConfig
from .data import PreparedData
from .errors import ArtifactError
from .evaluate_run import check_scores, evaluate_scores, show_table
from .layout import Paths, members
from .storage import file_digest, read_json, write_json

FORMAT = "diffattr-lds-kit"
VERSION = 1
MANIFEST = "manifest.json"
GRIDS = "reference/grids.h5"
REFERENCE_CSV = "reference/lds.csv"
REFERENCE_JSON = "reference/lds.json"


def write_manifest(
    folder: Path, config: dict[str, Any], methods: list[str], command: str
) -> dict[str, Any]:
    """``manifest.json`` of the kit in ``folder``: format, version, every other file's sha256
    and size (sorted paths), the resolved config, the reference methods and ``command``."""
    files = sorted(p for p in folder.rglob("*") if p.is_file() and p.name != MANIFEST)
    manifest = {
        "format": FORMAT,
        "version": VERSION,
        "package_version": __version__,
        "run": config["run"],
        "command": command,
        "methods": sorted(methods),
        "config": config,
        "files": {
            p.relative_to(folder).as_posix(): {"sha256": file_digest(p), "bytes": p.stat().st_size}
            for p in files
        },
    }
    write_json(folder / MANIFEST, manifest)
    return manifest


OVERHEAD = 10_000
"""Bytes of HDF5 structure and attributes per file (8–14 KB in the test run's kit)."""


def estimated_bytes(cfg: RunConfig) -> dict[str, int]:
    """The kit's size by part from the config's sizes (``sizes.sizes``: n examples of
    d = C·H·W values, the UNet's p parameters), q targets, S attribution steps, E members,
    J subsets of R seeds, the methods and among them G gradient methods over |λ| ridges and
    ekfac's |c| dampings (float32: 4 bytes, float64: 8):
    data 4nd; targets 4(2S+1)qd; models 4pE; subsets Jn; ground truth 8R(S+1)qJ;
    memorization 8SqJ; scores 4Sqn·(methods + |c|); grids 8|λ|SqJ·G + 4|c|SqJ;
    plus ``OVERHEAD`` per HDF5 file."""
    from .methods import get_method
    from .sizes import sizes

    size = sizes(cfg)
    n, d, q, lds = size.n, size.d, cfg.targets.n, cfg.lds
    steps, subsets = len(cfg.attribution_steps()), lds.n_subsets
    methods = list(cfg.attribution.methods)
    gradient = sum(get_method(m).uses_gradients for m in methods)
    dampings = len(lds.ekfac_dampings) * ("ekfac" in methods)
    memorization = lds.memorization_reference
    return {
        "data": 4 * n * d + 16 * n + OVERHEAD,
        "targets": 4 * (2 * steps + 1) * q * d + OVERHEAD,
        "models": len(members(cfg.train.ensemble, cfg.attribution.checkpoints))
        * (4 * size.params + 3000),
        "subsets": subsets * n + 8 * n + OVERHEAD,
        "ground_truth": subsets * (8 * lds.seeds * (steps + 1) * q + OVERHEAD),
        "memorization": (8 * steps * q * subsets + OVERHEAD) * memorization,
        "scores": 4 * steps * q * n * (len(methods) + dampings) + len(methods) * OVERHEAD,
        "grids": steps * q * subsets * (8 * len(lds.lambdas) * gradient + 4 * dampings) + OVERHEAD,
    }


def verify(folder: str | Path) -> dict[str, Any]:
    """The kit's manifest after checking every file it lists: present, of its size and sha256.
    A missing, altered or foreign file is one ArtifactError line naming it."""
    folder = Path(folder)
    if not (folder / MANIFEST).is_file():
        raise ArtifactError(f"{folder} is not an LDS kit: it has no {MANIFEST}")
    manifest = read_json(folder / MANIFEST)
    if manifest.get("format") != FORMAT or manifest.get("version") != VERSION:
        raise ArtifactError(
            f"{folder / MANIFEST} is not a {FORMAT} of version {VERSION} (format "
            f"{manifest.get('format')!r}, version {manifest.get('version')!r})"
        )
    rebuild = f"rebuild the kit ({manifest.get('command') or 'snakemake … kit'})"
    for name, expected in manifest["files"].items():
        path = folder / name
        if not path.is_file():
            raise ArtifactError(f"kit file {path} is missing; {rebuild}")
        if path.stat().st_size != expected["bytes"] or file_digest(path) != expected["sha256"]:
            raise ArtifactError(
                f"kit file {path} does not match its manifest digest (altered or truncated); "
                f"{rebuild}"
            )
    return manifest


class Kit:
    """An LDS kit, verified against its manifest on opening: what a new method needs to score
    (``train_images``, ``targets``, ``models``) and to be evaluated (``evaluate``)."""

    def __init__(self, folder: str | Path):
        self.folder = Path(folder)
        self.manifest = verify(self.folder)
        self.paths = Paths(str(self.folder))

    def __repr__(self) -> str:
        return f"Kit({str(self.folder)!r}: run {self.config.run}, methods {self.methods})"

    @cached_property
    def config(self) -> RunConfig:
        """The run's resolved config (its ``lds`` section sets the report: λ grid, bootstrap)."""
        return RunConfig.from_slice(json.dumps(self.manifest["config"]), "kit")

    @property
    def methods(self) -> list[str]:
        """The reference methods (each with ``scores/<method>.h5``)."""
        return list(self.manifest["methods"])

    @cached_property
    def data(self) -> PreparedData:
        return read_data(self.paths.data)

    @property
    def train_images(self) -> np.ndarray:
        """The training images (n, C, H, W) in [-1, 1], in the order of ``train_ids``."""
        return self.data.images

    @property
    def train_ids(self) -> np.ndarray:
        return self.data.ids

    @cached_property
    def targets(self):
        """The targets (``artifacts.Targets``): ``final`` (q, C, H, W), ``x_t`` and ``x0_hat``
        (steps, q, C, H, W) at ``steps`` (noisy → clean), ``target_ids``."""
        return read_targets(self.paths.targets)

    @property
    def steps(self) -> list[int]:
        return list(self.targets.steps)

    @property
    def members(self) -> list[str]:
        """The ensemble members (``m<i>_<checkpoint>``) the reference scores average over."""
        cfg = self.config
        return [str(m) for m in members(cfg.train.ensemble, cfg.attribution.checkpoints)]

    def model_dir(self, member: str) -> Path:
        """A member's diffusers folder (``DDPMPipeline`` layout: ``unet/``, ``scheduler/``)."""
        index, _, checkpoint = member.partition("_")
        return Path(self.paths.model(index[1:])) / checkpoint

    @cached_property
    def models(self) -> list:
        """Every member's (``UNet2DModel``, ``DDPMScheduler``), on the CPU in eval mode."""
        from .models import load_model

        return [load_model(self.model_dir(m), "cpu", self.config.model) for m in self.members]

    def scores(self, method: str) -> Scores:
        """A reference method's score file, whole."""
        if method not in self.methods:
            raise ArtifactError(f"the kit has no method {method!r} (it has {self.methods})")
        return read_scores(self.paths.scores(method))

    def write_scores(
        self,
        path: str | Path,
        method: str,
        scores: np.ndarray,
        candidates: Candidates | None = None,
        setting: float | None = None,
    ) -> Path:
        """Write ``scores`` τ (steps, targets, n) of a new ``method`` for the kit's targets as a
        score file ``evaluate`` reads (τ_i > 0: example i supports the target); optionally the
        ``candidates`` of a setting the report tunes on the tuning subsets, ``scores`` being
        those at its value ``setting``."""
        expected = (len(self.steps), self.targets.n, len(self.train_ids))
        if np.shape(scores) != expected:
            raise ArtifactError(
                f"scores of shape {np.shape(scores)}, the kit's (steps, targets, training "
                f"examples) are {expected}"
            )
        attrs = {"method": method, "data_digest": self.data.digest}
        write_scores(
            path,
            self.steps,
            self.targets.target_ids,
            self.train_ids,
            lambda s, rows, columns: np.asarray(scores[s, rows, columns], np.float32),
            attrs | ({} if setting is None else {"lambda": setting}),
            candidates=candidates,
        )
        return Path(path)

    def evaluate(
        self, scores: str | Path | Sequence[str | Path] = (), out: str | Path | None = None
    ) -> pd.DataFrame:
        """:func:`evaluate` on this kit."""
        return evaluate(scores, self, out)


def evaluate(
    scores: str | Path | Sequence[str | Path],
    kit: str | Path | Kit,
    out: str | Path | None = None,
) -> pd.DataFrame:
    """The LDS report of the kit's reference methods and the new ``scores`` files, every row
    (``lds.report.COLUMNS``: per (method, step) LDS with its 95% bootstrap interval, the null
    band, the ceiling √reliability, λ tuned on the tuning subsets where a file carries
    candidates, paired margins); lds.json's details in ``table.attrs["details"]``. Written to
    ``out`` (lds.csv, lds.json, lds.html) when given. With no ``scores``, the table is the
    kit's ``reference/lds.csv``, bit for bit."""
    from .stages.figures import lds_html
    from .stages.lds import write_lds_report

    kit = kit if isinstance(kit, Kit) else Kit(kit)
    new = [Path(scores)] if isinstance(scores, str | Path) else [Path(s) for s in scores]
    inputs = kit_inputs(kit, new)
    regime = kit.folder / "lds" / "regime.json"
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(out) if out is not None else Path(tmp)
        csv, details = folder / "lds.csv", folder / "lds.json"
        cfg = kit.config
        write_lds_report(cfg, inputs, read_json(regime) if regime.exists() else None, csv, details)
        table = pd.read_csv(csv)
        table.attrs["details"] = read_json(details)
        if out is not None:
            (folder / "lds.html").write_text(lds_html(table, table.attrs["details"]))
    return table


def kit_inputs(kit: Kit, new: Sequence[Path]):
    """The report's inputs from the kit (``lds.report.LdsInputs``, the tuning grids in place
    of the features), after checking each new score file against the kit's targets, steps and
    training examples (one line naming the file)."""
    from .lds.report import LdsInputs
    from .stages.lds import check_consistent

    paths, cfg = kit.paths, kit.config
    split = read_subsets(paths.subsets)
    reference = [Path(paths.scores(m)) for m in kit.methods]
    first = read_scores(reference[0])
    for path in new:
        check_scores(path, first, split.train_ids, set(kit.methods), "the kit")
    truth_paths = [Path(paths.ground_truth(j)) for j in range(cfg.lds.n_subsets)]
    truths = [read_ground_truth(p) for p in truth_paths]
    score_paths = [*reference, *new]
    results = {r.method: r for r in map(read_scores, score_paths)}
    check_consistent(paths.subsets, split, truth_paths, truths, score_paths, list(results.values()))
    memorization = Path(paths.memorization)
    return LdsInputs.of(
        split,
        truths,
        results,
        read_memorization(memorization).loss if memorization.exists() else None,
        memorization,
        grids=read_grids(kit.folder / GRIDS),
    )


def evaluate_command(
    *,
    kit: Path | None = None,
    run: Path | None = None,
    configfile: list[Path] = [],  # noqa: B006  (the CLI reads the signature; never mutated)
    scores: Sequence[Path] = (),
    out: Path | None = None,
) -> None:
    """Evaluate score files on an LDS kit (--kit) or a finished LDS run (--run, --configfile):
    per-step LDS with intervals, null band, ceiling, reliability and paired margins beside the
    reference methods, λ tuned on the tuning subsets; lds.csv, lds.json and lds.html in --out."""
    if (kit is None) == (run is None):
        raise ArtifactError("name an LDS kit (--kit) or a finished run (--run, --configfile)")
    new = {read_scores(p).method for p in scores}
    if run is not None:
        table, _ = evaluate_scores(run, configfile, scores, out)
        show_table(table, new)
        return
    opened = Kit(kit)
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(out or tmp)
        table = evaluate(scores, opened, folder)
        show_table(table, new)
        if not scores:
            same = (folder / "lds.csv").read_bytes() == (opened.folder / REFERENCE_CSV).read_bytes()
            print(f"the kit's {REFERENCE_CSV} reproduced bit for bit: {'yes' if same else 'NO'}")
