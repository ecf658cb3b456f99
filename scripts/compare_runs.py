"""Compare two runs' results bit for bit: every HDF5 dataset and every CSV under the given
relative paths. Usage: python scripts/compare_runs.py RUN_A RUN_B [PATH ...]
(default paths: scores/*.h5, reports/lds.csv, reports/counterfactual.csv). Exit status 1 on any
difference; attributes are compared too and their differences listed (they may name paths)."""

from __future__ import annotations

import sys
from pathlib import Path

import h5py
import numpy as np

DEFAULT = ["scores/*.h5", "reports/lds.csv", "reports/counterfactual.csv"]


def datasets(path: Path) -> dict[str, np.ndarray]:
    out = {}
    with h5py.File(path, "r") as f:
        f.visititems(
            lambda name, obj: (
                out.__setitem__(name, obj[()]) if isinstance(obj, h5py.Dataset) else None
            )
        )
    return out


def attributes(path: Path) -> dict[str, object]:
    with h5py.File(path, "r") as f:
        return {k: (v.tolist() if isinstance(v, np.ndarray) else v) for k, v in f.attrs.items()}


def main(a: str, b: str, patterns: list[str]) -> int:
    same = True
    for pattern in patterns or DEFAULT:
        files = sorted(Path(a).glob(pattern))
        if not files:
            print(f"MISSING {pattern} in {a}")
            same = False
        for left in files:
            rel = left.relative_to(a)
            right = Path(b) / rel
            if not right.exists():
                print(f"MISSING {rel} in {b}")
                same = False
            elif left.suffix == ".h5":
                da, db = datasets(left), datasets(right)
                diff = [
                    k
                    for k in da.keys() | db.keys()
                    if k not in da or k not in db or not np.array_equal(da[k], db[k])
                ]
                aa, ab = attributes(left), attributes(right)
                attr_diff = sorted(k for k in aa.keys() | ab.keys() if aa.get(k) != ab.get(k))
                print(
                    f"{'SAME' if not diff else 'DIFF'} {rel} datasets {sorted(da)}"
                    + (f" differ: {diff}" if diff else "")
                    + (f"; attributes differ: {attr_diff}" if attr_diff else "")
                )
                same &= not diff
            else:
                equal = left.read_bytes() == right.read_bytes()
                print(f"{'SAME' if equal else 'DIFF'} {rel}")
                same &= equal
    return 0 if same else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1], sys.argv[2], sys.argv[3:]))
