"""The ``diffattr`` command line: one subcommand per workflow stage (what the Snakemake rules call).

Each subcommand's options are generated from its stage's signature (``diffattr.stages``): a
``Path`` is a required file option, ``list[Path]`` takes several, ``X | None`` is optional.
The configuration comes as ``--cfg`` (the config slice a rule passes, ``RunConfig.slice``) or as
``--configfile`` (YAML files merged like Snakemake's, validated, then sliced for the stage).
"""

from __future__ import annotations

import argparse
import inspect
import logging
import sys
import types
import typing
from collections.abc import Sequence
from pathlib import Path

from . import __version__
from .config import RunConfig
from .config import load as load_config
from .errors import DiffattrError
from .estimate import estimate_command
from .kit import evaluate_command
from .results import top, top_epilog
from .stages import STAGES, first_sentence, slice_of, summary
from .stages import load as load_stage
from .verdicts import verdicts_command

# commands for users, beside the workflow's stages
COMMANDS = {
    "top": top,
    "evaluate": evaluate_command,
    "estimate": estimate_command,
    "verdicts": verdicts_command,
}

log = logging.getLogger("diffattr")


# One help line per option name (options mean the same in every subcommand).
HELP = {
    "data": "prepared data (data.h5)",
    "out": "output file or folder (written atomically)",
    "model": "a trained model's folder (its checkpoints final, step-<n> inside)",
    "model_index": "index i of the full ensemble model (seed tag model-<i>)",
    "source": "a pretrained diffusers model folder (DDPMPipeline layout or a UNet folder)",
    "target_set": "name of an extra target set (extra_targets)",
    "image_folder": "a folder of target images (forward-diffused at each attribution step)",
    "new_samples": "how many new targets to sample from model 0",
    "member": "ensemble member m<index>_<checkpoint>, e.g. m0_final",
    "model_output": "feature kind <output>[-uniform][-normalized], e.g. loss, square_norm-uniform",
    "method": "attribution method (diffattr.methods.METHODS)",
    "lds": "an LDS report's lds.json: score each step with the λ it tuned",
    "member_scores": "score files of a per-member method (ekfac), one per ensemble member",
    "shard": "shard index (0-based) of the training set",
    "shards": "number of shards the training set is split into",
    "targets": "targets with trajectories (targets.h5)",
    "features": "training-feature shards of one member",
    "kernels": "kernels, one per ensemble member",
    "target_features": "target features, one per ensemble member",
    "train_features": "training-feature shards of every member",
    "scores": "score files",
    "shard_files": "top-k shard files of one method (scores/topk/shards/<method>/shard<s>.h5)",
    "patches": "every target's patch boxes (patches.h5)",
    "patch_scores": "patch score files (scores/patches/<method>.h5)",
    "out_localization": "output CSV of the localization margins (patch − whole image)",
    "localization": "the localization margins (reports/lds_patches_localization.csv)",
    "subsets": "LDS subsets (lds/subsets.h5)",
    "subset": "LDS subset index",
    "seed_index": "training seed r of the subset models (seed tag lds-seed-<r>)",
    "models": "model folders: a subset's (one per training seed), or the full ensemble's (kit)",
    "ground_truth": "ground-truth files, one per subset",
    "memorization": "memorization reference (optional)",
    "regime": "regime diagnostics (lds/regime.json, optional)",
    "classifier": "the feature classifier's folder",
    "emergence": "feature emergence (emergence.h5)",
    "plan": "counterfactual plan (plan.h5)",
    "case": "counterfactual case: index (train-counterfactual) or c<i>/floor (cf-resample)",
    "original": "the original model's folder (full model 0)",
    "samples": "resampled-case files",
    "floor": "the seed floor's resampled file",
    "reference": "the original model's regenerations of the group (group/samples/original.h5)",
    "name": "group model: <method> or random<r>-<method>",
    "out_targets": "output CSV of every (model, target) effect",
    "out_pairs": "output CSV of the paired differences between methods",
    "table": "a report's table (reports/<name>.csv)",
    "details": "the LDS report's details (reports/lds.json)",
    "cases": "every counterfactual case (reports/counterfactual_cases.csv)",
    "out_csv": "output CSV",
    "out_json": "output JSON",
    "out_cases": "output CSV of every case",
    "out_figure": "output figure (PNG)",
    "out_html": "output HTML table (shown in the report)",
    "out_figure_metrics": "output figure of the metrics (PNG)",
    "out_figure_samples": "output figure of paired samples (PNG)",
    "run": "a run's results folder, e.g. results/default",
    "kit": "an LDS kit folder, e.g. results/digits-lds/kit (snakemake … kit)",
    "rebuild": "the command that rebuilds the kit (recorded in its manifest)",
    "configfile": "config files merged left to right (a run's own, for evaluate)",
    "device": "estimate: cpu or gpu hours (default: the config's device)",
    "target": "target id",
    "step": "attribution timestep t (one of the run's steps)",
    "k": "how many positive and negative influencers",
    "patch": "a patch index of the target (attribution.patches): its influencers",
    "figure": "also draw them into this PNG",
    "reports": "LDS reports (reports/lds.csv, lds.json beside it) of one benchmark, one per seed",
}


def _option(parser: argparse.ArgumentParser, name: str, hint: object, default: object) -> None:
    flag = f"--{name.replace('_', '-')}"
    flags = [flag, f"-{name}"] if len(name) == 1 else [flag]
    optional = default is not inspect.Parameter.empty
    args = typing.get_args(hint)
    if typing.get_origin(hint) in (typing.Union, types.UnionType) and type(None) in args:
        hint = next(a for a in args if a is not type(None))
    if typing.get_origin(hint) in (list, Sequence):
        nargs = "*" if optional else "+"
        parser.add_argument(
            flag,
            nargs=nargs,
            type=Path,
            default=[],
            required=not optional,
            metavar="PATH",
            help=HELP.get(name),
        )
    elif hint is bool:  # progress bars (on unless --no-progress)
        parser.add_argument(
            f"--no-{name.replace('_', '-')}",
            dest=name,
            action="store_false",
            help="hide progress bars",
        )
    else:
        kind = Path if hint is Path else hint
        parser.add_argument(
            *flags,
            type=kind,
            required=not optional,
            default=None if not optional else default,
            metavar="PATH" if kind is Path else kind.__name__.upper(),
            help=HELP.get(name),
        )


def _parser(only: str | None = None, argv: Sequence[str] = ()) -> argparse.ArgumentParser:
    """The parser. ``only``: the one stage that gets its options (its module is the only one
    imported, so a job starts fast); "": none (``diffattr --help`` and ``diffattr top`` import
    no stage, hence no model library); None: every stage (tests)."""
    parser = argparse.ArgumentParser(prog="diffattr", description=__doc__)
    parser.add_argument("--version", action="version", version=f"diffattr {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name, command in COMMANDS.items():  # for users: no config needed
        p = sub.add_parser(
            name,
            help=first_sentence(command.__doc__),
            description=command.__doc__,
            epilog=top_epilog(argv),
            formatter_class=argparse.RawDescriptionHelpFormatter,
        )
        hints = typing.get_type_hints(command)
        for param in inspect.signature(command).parameters.values():
            _option(p, param.name, hints[param.name], param.default)
        p.set_defaults(stage=command)
    for name in STAGES:  # the workflow's steps
        if only is not None and name != only:
            sub.add_parser(name, help=summary(name))
            continue
        stage = load_stage(name)
        p = sub.add_parser(name, help=summary(name), description=stage.__doc__)
        config = p.add_mutually_exclusive_group()
        config.add_argument(
            "--cfg", default="", help="the config slice a workflow rule passes (flow YAML or JSON)"
        )
        config.add_argument(
            "--configfile",
            nargs="+",
            type=Path,
            metavar="YAML",
            help="config files merged left to right (put config/config.yaml first to merge "
            "like the workflow)",
        )
        p.add_argument("--threads", type=int, default=1, help="torch and BLAS threads")
        hints = typing.get_type_hints(stage)
        for param in list(inspect.signature(stage).parameters.values())[1:]:
            _option(p, param.name, hints[param.name], param.default)
        p.set_defaults(stage=stage)
    return parser


def _setup(threads: int) -> None:
    from threadpoolctl import threadpool_limits

    # The job's thread budget for torch and for numpy's BLAS (an unlimited BLAS spins on the
    # cores of the other jobs Snakemake runs beside this one). Torch is configured only when
    # the stage's module uses it (jobs without a model never import it).
    threadpool_limits(max(1, threads))
    if "torch" in sys.modules:
        torch = sys.modules["torch"]
        torch.set_num_threads(max(1, threads))
        torch.use_deterministic_algorithms(True, warn_only=True)


def main(argv: Sequence[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else list(argv)
    only = argv[0] if argv and argv[0] in STAGES else ""
    args = vars(_parser(only, argv).parse_args(argv))
    logging.basicConfig(
        level=logging.INFO,
        format="%(asctime)s %(name)s %(levelname)s %(message)s",
        datefmt="%H:%M:%S",
    )
    log.setLevel(logging.INFO)  # its own level: libraries that lower the root's (kronfluence)
    command, stage = args.pop("command"), args.pop("stage")
    try:
        if command in COMMANDS:
            stage(**args)
            return
        text, files = args.pop("cfg"), args.pop("configfile")
        _setup(args.pop("threads"))
        slice_ = slice_of(command, args.get("method"))
        cfg = RunConfig.from_slice(load_config(files).slice(slice_) if files else text, slice_)
        stage(cfg, **args)
    except DiffattrError as err:
        print(f"diffattr {command}: error: {err}", file=sys.stderr)
        sys.exit(2)
    except OSError as err:  # unwritable folder, disk full, …: the system's words, one line
        where = f": {err.filename}" if err.filename else ""
        print(f"diffattr {command}: error: {err.strerror or err}{where}", file=sys.stderr)
        sys.exit(2)


if __name__ == "__main__":
    main()
