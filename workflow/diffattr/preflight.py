"""The config files of a Snakemake command line, checked before Snakemake reads them.

Snakemake loads ``--configfile`` files before the workflow runs: a missing one ends in its own
Python traceback, a YAML syntax error in a message that names neither the file nor the line.
``make run`` and ``make report`` call ``python -m diffattr.preflight <their snakemake arguments>``
first, and the Snakefile checks its default config file the same way: each problem is one line
``diffattr: config error: <file>:<line>:<column>: …`` and the exit status 1.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from pathlib import Path

import yaml

OPTIONS = ("--configfile", "--configfiles")


def configfiles(args: Sequence[str]) -> list[str]:
    """The files ``--configfile``/``--configfiles`` name in ``args``, as Snakemake's argparse
    reads them: ``--configfile=a`` is one file, ``--configfile a b`` every value up to the next
    option."""
    files: list[str] = []
    taking = False
    for arg in args:
        name, eq, value = arg.partition("=")
        if name in OPTIONS:
            taking = not eq
            files += [value] if eq else []
        elif arg.startswith("-"):
            taking = False
        elif taking:
            files.append(arg)
    return files


def problem(path: str | Path) -> str | None:
    """What is wrong with config file ``path`` (None: it exists and is a YAML mapping)."""
    path = Path(path)
    if not path.is_file():
        return f"{path} does not exist (a --configfile path: check its spelling)"
    try:
        values = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.MarkedYAMLError as err:
        mark, start = err.problem_mark or err.context_mark, err.context_mark
        where = f"{path}:{mark.line + 1}:{mark.column + 1}" if mark else str(path)
        opened = f"; {err.context} from line {start.line + 1}" if start and err.problem else ""
        return f"{where}: not valid YAML ({err.problem or err.context}{opened}); fix the file"
    except (yaml.YAMLError, UnicodeDecodeError, OSError) as err:
        return f"{path}: not readable YAML ({err}); fix the file"
    if values is not None and not isinstance(values, dict):
        return f"{path}: a config file holds keys at its top level (got a {type(values).__name__})"
    return None


def checked(path: str) -> str:
    """``path`` if it is a readable config file; otherwise its one line and exit status 1."""
    message = problem(path)
    if message:
        print(f"diffattr: config error: {message}", file=sys.stderr)
        sys.exit(1)
    return path


def main(argv: Sequence[str] | None = None) -> int:
    messages = [m for f in configfiles(sys.argv[1:] if argv is None else argv) if (m := problem(f))]
    for message in messages:
        print(f"diffattr: config error: {message}", file=sys.stderr)
    return 1 if messages else 0


if __name__ == "__main__":
    sys.exit(main())
