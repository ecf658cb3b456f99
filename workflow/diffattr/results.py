"""A finished run as a library: scores as labelled arrays, top influencers as tables, the reports
with the row to read chosen for you.

    from diffattr.results import Run

    run = Run("results/default")
    tau = run.scores("journey_trak")                  # xarray (step, target, train), labelled
    run.top("journey_trak", target=3, step=300, k=10) # the 10 strongest + and − influencers
    run.lds()                                         # the LDS rows to read
    run.patch_scores("journey_trak")                  # (step, target, patch, train) with boxes
    run.add_targets("mine", ["config/config.yaml"], images="my_images/")  # new targets
    run.scores("journey_trak", target_set="mine")

Axes: ``step`` holds timesteps t (noisy → clean, as sampled), ``target`` target ids, ``train``
training-example ids (with their ``label`` and ``position``, the row of ``data.h5`` and of
``run.data.images``). Sign: a positive score supports the target (its removal raises f_t).
"""

from __future__ import annotations

import inspect
import logging
from collections.abc import Sequence
from functools import cached_property
from pathlib import Path

import numpy as np
import pandas as pd
import yaml

from .artifacts import (
    ScoreFile,
    Targets,
    TopKFile,
    is_top_k,
    read_data,
    read_emergence,
    read_scores,
    read_targets,
    ridge_caption,
)
from .config import RunConfig
from .config import load as load_config
from .counterfactual_summary import MIN_INTERVAL_TARGETS, shows_an_effect
from .data import PreparedData
from .errors import ArtifactError, ConfigError
from .layout import Paths, parse_scores
from .lds.stats import rows_to_read, shows_a_result, untuned_methods
from .methods import METHODS, get_method, unused_score_keys
from .storage import config_hash
from .topk import Ranked, rank_dense

log = logging.getLogger("diffattr")


class Run:
    """The results folder of one run (``results/<run>``)."""

    def __init__(self, folder: str | Path):
        self.folder = Path(folder)
        if not self.folder.is_dir():
            raise ArtifactError(f"no run at {self.folder}{_closest_run(self.folder)}")
        self.paths = Paths(str(self.folder))

    @cached_property
    def data(self) -> PreparedData:
        return read_data(self.paths.data)

    @cached_property
    def targets(self) -> Targets:
        return read_targets(self.paths.targets)

    def methods(self) -> list[str]:
        """Methods with a score file (dense, or top-k with attribution.top_k)."""
        folder = Path(self.paths.scores("any")).parent
        top_k = Path(self.paths.top_k("any")).parent
        found = [*folder.glob("*.h5"), *top_k.glob("*.h5")]
        return sorted({parse_scores(p) for p in found})

    def check_config(self, config: RunConfig | Sequence[str | Path]) -> RunConfig:
        """``config`` (a RunConfig or the YAML files the run was made with, merged as Snakemake
        merges them) after checking it is this run's: its scoring keys hash to what the run's
        score files recorded."""
        cfg = config if isinstance(config, RunConfig) else load_config(config)
        if cfg.run != self.folder.name:
            raise ConfigError(f"the config is of run {cfg.run!r}, not {self.folder.name!r}")
        for path in sorted(Path(self.paths.scores("any")).parent.glob("*.h5")):
            with ScoreFile(path) as f:
                text = cfg.slice("score", unused_score_keys(str(f.attrs.get("method"))))
                expected = config_hash(RunConfig.from_slice(text, "score").to_dict())
                read = yaml.safe_load(text)  # the keys this method's score job reads
                recorded = f.attrs.get("config_hash", expected)
                if recorded != expected and not scored_with(f.attrs.get("config"), read):
                    raise ConfigError(
                        f"the config does not match the one {path} was scored with (λ, K, R, "
                        "the schedule or the seed differ): pass the run's own config files"
                    )
        return cfg

    def extra_sets(self) -> list[str]:
        """Names of the run's extra target sets (``extra/<set>/``)."""
        folder = self.folder / "extra"
        return sorted(p.name for p in folder.iterdir() if p.is_dir()) if folder.is_dir() else []

    def add_targets(
        self,
        name: str,
        config: RunConfig | Sequence[str | Path],
        *,
        images: str | Path | None = None,
        samples: int = 0,
        methods: Sequence[str] | None = None,
        progress: bool = False,
    ) -> list[str]:
        """Score a new target set against the run's stored training features and kernels, in
        this process (what ``extra_targets`` does in the workflow; the same files, under
        ``extra/<name>/``): the images of the folder ``images`` (forward-diffused at each step
        with keyed noise) or ``samples`` new samples of model 0. Only the targets' trajectories
        and features are computed. Returns the methods scored (``methods`` or every scored one
        but those that refit per target: ekfac, unlearning); read them with
        ``scores(method, target_set=name)``. ``config``: the run's config files (checked,
        ``check_config``)."""
        from .stages.extra import extra_target_jobs, stage_function

        cfg, run = self.check_config(config), self.paths
        chosen = [m for m in (methods or self.methods()) if not get_method(m).uses_member_scores]
        source = {"image_folder": None if images is None else Path(images), "new_samples": samples}
        lds = Path(run.report("lds.json")).exists()
        for command, kwargs in extra_target_jobs(cfg, run, name, chosen, source, lds):
            stage = stage_function(command)
            takes = inspect.signature(stage).parameters
            stage(cfg, **kwargs, **({"progress": progress} if "progress" in takes else {}))
        return chosen

    def score_targets(
        self,
        method: str,
        name: str,
        config: RunConfig | Sequence[str | Path],
        *,
        images: str | Path | None = None,
        samples: int = 0,
        progress: bool = False,
    ):
        """One call: τ of new targets (the images of the folder ``images``, or ``samples`` new
        samples of model 0) under ``method`` with every member of the run and, where the run
        has an LDS, the λ it tuned per step — ``add_targets`` for this one method, then
        ``scores(method, target_set=name)``: an ``xarray.DataArray`` (step, target, train). The
        set's ``name`` keys its noise (forward diffusion, new samples), as in the workflow."""
        self.add_targets(
            name, config, images=images, samples=samples, methods=[method], progress=progress
        )
        return self.scores(method, target_set=name)

    def _score_path(self, method: str, tuned: bool = True, target_set: str | None = None) -> Path:
        if target_set is not None:
            path = Path(self.paths.extra(target_set).scores(method))
            if not path.exists():
                raise ArtifactError(
                    f"no scores of {method!r} for the target set {target_set!r} in {self.folder};"
                    " add it with Run.add_targets or extra_targets in the config"
                )
            return path  # made with the LDS-tuned λ where the run has an LDS
        path = Path(self.paths.scores(method))
        if not path.exists() and Path(self.paths.top_k(method)).exists():
            return Path(self.paths.top_k(method))  # attribution.top_k: no dense scores
        if not path.exists():
            raise ArtifactError(f"no scores of {method!r} in {self.folder}; have {self.methods()}")
        tuned_path = Path(self.paths.tuned_scores(method))
        if not (tuned and tuned_path.exists()):
            return path
        with ScoreFile(path) as plain, ScoreFile(tuned_path) as retuned:
            same = plain.attrs.get("feature_digests") == retuned.attrs.get("feature_digests")
        if not same:  # the scores were remade after their tuned copy: it is stale
            log.warning("%s predates %s's features; using the config λ's scores", tuned_path, path)
            return path
        return tuned_path

    def scores(self, method: str, tuned: bool = True, target_set: str | None = None):
        """Scores τ of every (step, target, training example) as an ``xarray.DataArray``: with the
        λ the LDS tuned per step where the run has them (``tuned``; attribute lambda_source);
        of an extra target set's targets with ``target_set``."""
        import xarray as xr

        path = self._score_path(method, tuned, target_set)
        if is_top_k(path):
            raise ArtifactError(
                f"{path} holds only the top {TopKFile(path).k} of each sign per (step, target) "
                "(attribution.top_k): read them with Run.top or Run.top_k"
            )
        result = read_scores(path)
        labels = self.data.labels[np.searchsorted(self.data.ids, result.train_ids)]
        return xr.DataArray(
            result.scores,
            dims=("step", "target", "train"),
            coords={
                "step": result.steps,
                "target": result.target_ids,
                "train": result.train_ids,
                "label": ("train", labels),
                "position": ("train", np.arange(len(result.train_ids))),
            },
            name=method,
            attrs={k: str(v) for k, v in result.attrs.items()},
        )

    def patch_scores(self, method: str):
        """Patch scores τ of every (step, target, patch, training example) as an
        ``xarray.DataArray``; coordinates ``y0, x0, y1, x1`` (target, patch) give each box."""
        import xarray as xr

        path = Path(self.paths.patch_scores(method))
        if not path.exists():
            raise ArtifactError(
                f"no patch scores of {method!r} in {self.folder}; set attribution.patches and "
                "run the workflow"
            )
        result = read_scores(path)
        labels = self.data.labels[np.searchsorted(self.data.ids, result.train_ids)]
        boxes = {
            name: (("target", "patch"), result.boxes[..., i])
            for i, name in enumerate(["y0", "x0", "y1", "x1"])
        }
        return xr.DataArray(
            result.scores,
            dims=("step", "target", "patch", "train"),
            coords={
                "step": result.steps,
                "target": result.target_ids,
                "patch": np.arange(result.boxes.shape[1]),
                "train": result.train_ids,
                "label": ("train", labels),
                **boxes,
            },
            name=f"{method} (patches)",
            attrs={k: str(v) for k, v in result.attrs.items()},
        )

    def top(
        self,
        method: str,
        target: int,
        step: int,
        k: int = 10,
        patch: int | None = None,
        target_set: str | None = None,
    ) -> pd.DataFrame:
        """The ``k`` strongest positive and ``k`` strongest negative influencers of target id
        ``target`` at timestep ``step`` (of its patch ``patch`` with attribution.patches; of an
        extra target set with ``target_set``): columns rank, sign, train_id, position, label,
        score (the images are ``run.data.images[df.position]``). ``df.attrs`` says what was
        read: method, target, its class, step, λ and the number of training examples."""
        if isinstance(k, bool) or not isinstance(k, int | np.integer) or k < 1:
            raise ConfigError(f"k = {k!r}: ask for k ≥ 1 influencers of each sign")
        target = _target_id(target)
        if patch is None:
            path = self._score_path(method, target_set=target_set)
        else:
            path = Path(self.paths.patch_scores(method))
        if patch is not None and not path.exists():
            raise ArtifactError(f"no patch scores of {method!r} in {self.folder}")
        if patch is None and is_top_k(path):
            return self._top_of_top_k(path, method, target, step, k, target_set)
        with ScoreFile(path) as scores:
            row = scores.row(step, self._locate(scores.steps, scores.target_ids, step, target))
            if patch is not None:
                if not 0 <= patch < len(row):
                    raise ConfigError(f"no patch {patch}; target {target} has {len(row)} patches")
                row = row[patch]
            train_ids, attrs = scores.train_ids, dict(scores.attrs)
        ranked = rank_dense(row, k)  # the order of top-k files (ties: lower position first)
        positions = np.searchsorted(self.data.ids, train_ids)[ranked.index]
        table = (ranked, positions, method, target, step, patch, target_set, attrs, path)
        return self._table(*table, n_train=len(row))

    def _top_of_top_k(
        self, path: Path, method: str, target: int, step: int, k: int, target_set: str | None
    ) -> pd.DataFrame:
        """``top`` from a top-k file (attribution.top_k): its first k of each sign."""
        with TopKFile(path) as f:
            where = self._locate(f.steps, f.target_ids, step, target)
            if k > f.k:
                raise ConfigError(
                    f"k = {k}: {path} keeps the top {f.k} of each sign (attribution.top_k); "
                    f"ask for k ≤ {f.k}"
                )
            kept, attrs, n = f.row(step, where), dict(f.attrs), f.n_train
        ranked = Ranked(kept.index[:, :k], kept.score[:, :k])
        table = (ranked, ranked.index, method, target, step, None, target_set, attrs, path)
        return self._table(*table, n_train=n)

    @staticmethod
    def _locate(steps: Sequence[int], target_ids: np.ndarray, step: int, target: int) -> int:
        if step not in steps:
            raise ConfigError(
                f"step {step} is not an attribution step; choose {list(steps)} "
                "(timesteps t, noisy → clean)"
            )
        where = np.flatnonzero(target_ids == target)
        if not len(where):
            raise ConfigError(f"no target {target}; targets are {_id_range(target_ids.tolist())}")
        return int(where[0])

    def _table(  # noqa: PLR0913  (what a top table records)
        self,
        ranked: Ranked,
        positions: np.ndarray,
        method: str,
        target: int,
        step: int,
        patch: int | None,
        target_set: str | None,
        attrs: dict,
        path: Path,
        n_train: int | None = None,
    ) -> pd.DataFrame:
        """The rows of ``ranked`` (2, k): positives then negatives, at data.h5 ``positions``."""
        k = ranked.k
        table = pd.DataFrame(
            [
                {
                    "rank": r + 1,
                    "sign": sign,
                    "train_id": int(self.data.ids[positions[s, r]]),
                    "position": int(positions[s, r]),
                    "label": int(self.data.labels[positions[s, r]]),
                    "score": float(ranked.score[s, r]),
                }
                for s, sign in enumerate(("+", "−"))
                for r in range(k)
            ]
        )
        table.attrs = {
            "method": method,
            "target": target,
            "target_class": self._target_class(target, target_set),
            "step": step,
            "patch": patch,
            "lambda": ridge_caption(attrs).strip(" ()"),
            "n_train": n_train if n_train is not None else len(self.data.ids),
            "scores": str(path),
        }
        return table

    def _target_class(self, target: int, target_set: str | None) -> int | None:
        """The class the feature classifier read in the target's final image (counterfactual
        runs; None elsewhere or for extra target sets)."""
        path = Path(self.paths.emergence)
        if target_set is not None or not path.exists():
            return None
        emergence, targets = read_emergence(path), self.targets
        return int(emergence.classes[int(np.flatnonzero(targets.target_ids == target)[0])])

    def lds(self) -> pd.DataFrame:
        """The LDS rows to read (``lds.stats.rows_to_read``): λ tuned on the tuning subsets where
        the run tuned it, else the config λ (``lambda_source`` says which), and the methods
        without λ."""
        table = pd.read_csv(self.paths.report("lds.csv"))
        return rows_to_read(table).reset_index(drop=True)

    def counterfactual(self) -> pd.DataFrame:
        """The counterfactual report (one row per method, step, k, protocol and metric)."""
        return pd.read_csv(self.paths.report("counterfactual.csv"))

    def group_removal(self) -> pd.DataFrame:
        """The group protocol's report (one row per method and metric: effect, ratio and AUC
        against random removals of the same size, with intervals over the group's targets)."""
        return pd.read_csv(self.paths.report("group_removal.csv"))

    def summary(self) -> str:
        """One line for the end of a run: where the results are, the best per-step LDS (with
        its interval and whether its ground truth is reliable) or, when no method's interval
        clears the null on a reliable ground truth, that the LDS is a pipeline check; the methods
        whose λ was not tuned; whether the counterfactual shows an effect
        (``counterfactual_summary.shows_an_effect``); and how to open the report."""
        text = f"diffattr: results in {self.folder}/"
        if Path(self.paths.report("lds.csv")).exists():
            table = self.lds()
            per_step = table[(table.ground_truth == "f_t") & (table.method != "random")]
            if len(per_step) and not shows_a_result(table):
                text += (
                    "; LDS: pipeline check only (no method's interval clears the null where the"
                    " ground truth is reliable; results: config/digits-lds.yaml)"
                )
            elif len(per_step):
                best = per_step.loc[per_step.lds.idxmax()]
                note = "reliable" if not best.flagged else "UNRELIABLE ground truth: indicative"
                text += (
                    f"; best LDS {best.lds:.2f} [{best.ci_low:.2f}, {best.ci_high:.2f}] "
                    f"({best.method}, t = {int(best.step)}, ceiling {best.ceiling:.2f}, {note})"
                )
            untuned = untuned_methods(table)
            if untuned:
                text += f"; λ not tuned (config λ) for {', '.join(untuned)}"
        if Path(self.paths.report("counterfactual.csv")).exists():
            effects = self.counterfactual()
            if len(effects) and not shows_an_effect(effects):
                text += (
                    f"; counterfactual: pipeline check only ({int(effects.n_targets.min())} "
                    "targets; results: config/digits-cf.yaml)"
                )
        if Path(self.paths.report("group_removal.csv")).exists():
            text += group_line(self.group_removal())
        return text + "; report: make report (report.html)"


def group_line(table: pd.DataFrame) -> str:
    """The group protocol in the end-of-run line: a pipeline check below
    ``MIN_INTERVAL_TARGETS`` targets, else each method's AUC of the P(class) drop against its
    random removals with its interval."""
    if not len(table):
        return ""
    n = int(table.n_targets.min())
    if n < MIN_INTERVAL_TARGETS:
        results = "results: config/fontdigits-cf.yaml"
        return f"; group removal: pipeline check only ({n} targets; {results})"
    rows = table[table.metric == "prob_drop"]
    aucs = ", ".join(
        f"{r.method} {r.auc:.2f} [{r.auc_low:.2f}, {r.auc_high:.2f}]" for r in rows.itertuples()
    )
    return f"; group removal, AUC of the P(class) drop against random (0.5: none): {aucs}"


def scored_with(recorded: dict | None, read: dict) -> bool:
    """A score file's recorded config holds the values of every key a score job reads (``read``:
    the config's score slice), old flat names (``config_section.MOVED``) read as their new
    nested keys: equal scoring keys, however many keys with defaults were added since (a key the
    file does not record, its job did not read)."""
    from .config_section import MOVED

    if not isinstance(recorded, dict):
        return False
    nested = {k: dict(v) if isinstance(v, dict) else v for k, v in recorded.items()}
    for old, new in MOVED.items():
        section, key = old.split(".", 1)
        if key in nested.get(section, {}):
            _, group, name = new.split(".")
            nested[section].setdefault(group, {})[name] = nested[section].pop(key)

    def holds(have: object, want: object) -> bool:
        if have is None:
            return True
        if isinstance(want, dict):
            return isinstance(have, dict) and all(holds(have.get(k), v) for k, v in want.items())
        return have == want or (isinstance(have, list | tuple) and list(have) == want)

    return holds(nested, read)


def top(
    *,
    run: Path,
    method: str,
    target: int,
    step: int,
    k: int = 10,
    patch: int | None = None,
    target_set: str | None = None,
    figure: Path | None = None,
) -> None:
    """Print the top positive and negative influencers of one target (or one of its patches)
    at one step t."""
    results = Run(run)
    table = results.top(method, target, step, k, patch, target_set)
    print(top_header(table))
    print(table.to_string(index=False, float_format=lambda v: f"{v:.4g}"))
    if figure is None:
        return
    from .figures import attribution_grid, save

    target = table.attrs["target"]  # the id as stored (text that spells one is accepted)

    box = None
    if patch is not None:
        patches = results.patch_scores(method).sel(step=step, target=target, patch=patch)
        box = [int(patches[c]) for c in ("y0", "x0", "y1", "x1")]
    k = len(table) // 2  # the table's picks (dense or top-k scores alike): (sign, step, rank)
    shown = Ranked(
        table.position.to_numpy().reshape(2, 1, k), table.score.to_numpy().reshape(2, 1, k)
    )
    targets = (
        results.targets
        if target_set is None
        else read_targets(results.paths.extra(target_set).targets)
    )
    s = targets.steps.index(step)
    j = int(np.flatnonzero(targets.target_ids == target)[0])
    fig = attribution_grid(
        targets.x0_hat[s : s + 1, j],
        [step],
        shown,
        results.data.images,
        results.data.labels,
        k,
        f"{method}: target {target}, t = {step}" + ("" if box is None else f", patch {patch}"),
        box=box,
    )
    save(fig, figure)
    print(f"figure: {figure}")


def top_epilog(argv: Sequence[str] = ()) -> str:
    """``diffattr top --help``'s closing text: the registry's methods and, when ``--run`` names a
    finished run, its methods, steps and targets."""
    text = f"methods of the registry: {', '.join(METHODS)}"
    argv = list(argv)
    if "--run" in argv[:-1]:
        folder = Path(argv[argv.index("--run") + 1])
        try:
            run = Run(folder)
            methods = run.methods()
            path = run._score_path(methods[0], tuned=False)
            with TopKFile(path) if is_top_k(path) else ScoreFile(path) as f:
                steps, ids = f.steps, f.target_ids.tolist()
        except (ArtifactError, IndexError, OSError) as err:
            return text + f"\n{folder}: {err or 'no score files yet'}"
        text += (
            f"\n{folder}: methods {', '.join(methods)}; steps (--step, timesteps t, noisy → "
            f"clean) {', '.join(map(str, steps))}; targets {_id_range(ids)}"
        )
    else:
        text += "\n(with --run <folder> --help: that run's methods, steps and targets)"
    return text


def top_header(table: pd.DataFrame) -> str:
    """One line saying what a ``Run.top`` table is."""
    a = table.attrs
    target = f"target {a['target']}"
    if a.get("target_class") is not None:
        target += f" (class {a['target_class']})"
    if a.get("patch") is not None:
        target += f", patch {a['patch']}"
    lam = f", {a['lambda']}" if a.get("lambda") else ""
    k = len(table) // 2
    return (
        f"{a['method']}: {target}, t = {a['step']}{lam}; the {k} strongest positive (+, supports "
        f"the target) and negative (−) of {a['n_train']} training examples"
    )


def _target_id(target: int | str) -> int:
    """A target id as stored (an integer); text that is one is accepted."""
    if isinstance(target, str) and target.strip().lstrip("-").isdigit():
        return int(target)
    if isinstance(target, bool) or not isinstance(target, int | np.integer):
        raise ConfigError(f"target {target!r}: target ids are integers (targets.h5 target_ids)")
    return int(target)


def _id_range(ids: Sequence[int]) -> str:
    """[0, 1, …, 15] as '0–15' when consecutive."""
    if len(ids) > 3 and list(ids) == list(range(ids[0], ids[0] + len(ids))):
        return f"{ids[0]}–{ids[-1]}"
    return str(list(ids))


def _closest_run(folder: Path) -> str:
    """'; did you mean results/default?' for a misspelt run folder, else how to make one."""
    import difflib

    parent = folder.parent if folder.parent.is_dir() else None
    runs = [p.name for p in parent.iterdir() if p.is_dir()] if parent else []
    close = difflib.get_close_matches(folder.name, runs, n=1)
    if close:
        return f"; did you mean {parent / close[0]}?"
    listed = f" (runs there: {', '.join(sorted(runs))})" if runs else ""
    return f"; run the workflow first{listed}"
