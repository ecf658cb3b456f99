"""What every artefact codec shares: the score sign convention, digest-checked reading and the
refusal to write non-finite values."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path

import h5py
import numpy as np

from ..errors import ArtifactError
from ..layout import remake_hint
from ..storage import check_digest

SIGN_CONVENTION = (
    "tau[i] > 0: including training example i lowers the target's output f_t, i.e. supports the "
    "generated image (positive influencer); tau[i] < 0: negative influencer"
)


@contextlib.contextmanager
def reading(path: str | Path) -> Iterator[h5py.File]:
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


def refuse_non_finite(path: str | Path, **arrays: np.ndarray | None) -> None:
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
