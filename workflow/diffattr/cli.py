"""The ``diffattr`` command line: one subcommand per workflow stage (what the Snakemake rules call).

Each subcommand's options are generated from its stage's signature (``diffattr.stages``): a
``Path`` is a required file option, ``list[Path]`` takes several, ``X | None`` is optional.
The configuration comes as ``--cfg`` (the JSON slice a rule passes, ``RunConfig.slice``) or as
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
from .config import RunConfig, load
from .errors import DiffattrError
from .stages import STAGES

log = logging.getLogger("diffattr")


def _option(parser: argparse.ArgumentParser, name: str, hint: object, default: object) -> None:
    flag = f"--{name.replace('_', '-')}"
    optional = default is not inspect.Parameter.empty
    args = typing.get_args(hint)
    if typing.get_origin(hint) in (typing.Union, types.UnionType) and type(None) in args:
        hint = next(a for a in args if a is not type(None))
    if typing.get_origin(hint) is list:
        parser.add_argument(flag, nargs="*", type=Path, default=[], metavar="PATH")
    elif hint is bool:  # progress bars (on unless --no-progress)
        parser.add_argument(f"--no-{name.replace('_', '-')}", dest=name, action="store_false")
    else:
        kind = Path if hint is Path else hint
        parser.add_argument(
            flag,
            type=kind,
            required=not optional,
            default=None if not optional else default,
            metavar="PATH" if kind is Path else None,
        )


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="diffattr", description=__doc__)
    parser.add_argument("--version", action="version", version=f"diffattr {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name, (stage, _) in STAGES.items():
        summary = (stage.__doc__ or "").strip().split("\n")[0]
        p = sub.add_parser(name, help=summary, description=stage.__doc__)
        config = p.add_mutually_exclusive_group()
        config.add_argument(
            "--cfg", default="", help="the JSON config slice a workflow rule passes"
        )
        config.add_argument("--configfile", nargs="+", type=Path, help="YAML config file(s)")
        p.add_argument("--threads", type=int, default=1, help="torch and BLAS threads")
        hints = typing.get_type_hints(stage)
        for param in list(inspect.signature(stage).parameters.values())[1:]:
            _option(p, param.name, hints[param.name], param.default)
        p.set_defaults(stage=stage)
    return parser


def _setup(threads: int) -> None:
    import torch
    from threadpoolctl import threadpool_limits

    # The job's thread budget for torch and for numpy's BLAS (an unlimited BLAS spins on the
    # cores of the other jobs Snakemake runs beside this one).
    threadpool_limits(max(1, threads))
    torch.set_num_threads(max(1, threads))
    torch.use_deterministic_algorithms(True, warn_only=True)


def main(argv: Sequence[str] | None = None) -> None:
    args = vars(_parser().parse_args(argv))
    logging.basicConfig(
        level=logging.INFO,
        format="%(asctime)s %(name)s %(levelname)s %(message)s",
        datefmt="%H:%M:%S",
    )
    command, stage = args.pop("command"), args.pop("stage")
    text, files = args.pop("cfg"), args.pop("configfile")
    _setup(args.pop("threads"))
    try:
        if files:
            cfg = RunConfig.from_slice(load(files).slice(STAGES[command][1]))
        else:
            cfg = RunConfig.from_slice(text)
        stage(cfg, **args)
    except DiffattrError as err:
        print(f"diffattr {command}: error: {err}", file=sys.stderr)
        sys.exit(2)


if __name__ == "__main__":
    main()
