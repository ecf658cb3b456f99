"""Atomic writes and provenance metadata (the HDF5 layouts themselves are in ``artifacts``).

Every output is written under a temporary name beside its final path and moved into place with
``os.replace`` only when complete, so a killed job never leaves a file that looks finished.
HDF5 files carry their meaning in attributes; dicts and lists are stored as JSON strings.
"""

from __future__ import annotations

import contextlib
import functools
import glob
import hashlib
import json
import os
import shutil
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import h5py
import numpy as np

from . import __version__


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    elif path.exists() or path.is_symlink():
        path.unlink()


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; move it to ``path`` only if the block succeeds.

    Works for files and directories. On failure the temporary is removed and ``path`` is untouched.
    """
    final = Path(path)
    final.parent.mkdir(parents=True, exist_ok=True)
    for stale in final.parent.glob(f".{glob.escape(final.name)}.partial-*"):
        _remove(stale)  # left by a killed job that wrote this output before
    tmp = final.with_name(f".{final.name}.partial-{os.getpid()}")
    try:
        yield tmp
    except BaseException:
        _remove(tmp)
        raise
    if final.is_dir() and tmp.is_dir():
        _remove(final)
    os.replace(tmp, final)


@contextlib.contextmanager
def create_h5(
    path: str | os.PathLike, attrs: Mapping[str, Any] | None = None, digest: bool = True
) -> Iterator[h5py.File]:
    """Open a new HDF5 file for writing that appears at ``path`` only once closed successfully,
    recording its :func:`datasets_digest` as the ``DIGEST`` attribute (unless ``digest`` is off:
    ``data.h5`` records its own)."""
    with atomic_path(path) as tmp, h5py.File(tmp, "w") as f:
        write_attrs(f, {**provenance(), **(attrs or {})})
        yield f
        if digest:
            f.attrs[DIGEST] = datasets_digest(f)


DIGEST = "datasets_digest"
"""The attribute holding a file's :func:`datasets_digest`, written by :func:`create_h5`."""

_BLOCK_BYTES = 1 << 26  # datasets are hashed in blocks of rows of about 64 MB


def datasets_digest(f: h5py.File) -> str:
    """sha256 of every dataset of ``f`` in name order: its name, dtype, shape and bytes (read in
    blocks of rows, so memory stays bounded). Attributes are not covered."""
    digest = hashlib.sha256()
    names: list[str] = []
    f.visititems(lambda name, obj: names.append(name) if isinstance(obj, h5py.Dataset) else None)
    for name in sorted(names):
        data = f[name]
        digest.update(str((name, data.dtype.str, data.shape)).encode())
        if data.shape is None:  # an empty dataspace
            continue
        if data.shape == ():
            digest.update(repr(data[()]).encode())
            continue
        row_bytes = data.dtype.itemsize * int(np.prod(data.shape[1:]))
        rows = max(1, _BLOCK_BYTES // max(1, row_bytes))
        for lo in range(0, data.shape[0], rows):
            block = data[lo : lo + rows]
            if block.dtype.kind == "O":  # variable-length strings: their values, not pointers
                digest.update(repr(block.tolist()).encode())
            else:
                digest.update(np.ascontiguousarray(block).data)
    return digest.hexdigest()


_VERIFIED: set[tuple[str, int, int, int]] = set()


def check_digest(f: h5py.File, path: str | os.PathLike) -> None:
    """``f`` (open at ``path``) holds the datasets it was written with, by the digest
    :func:`create_h5` recorded: a mismatch is one ArtifactError naming the file and the rule that
    remakes it. Files written before digests were recorded are not checked. A file is hashed
    once per process and version (inode, size, modification time)."""
    recorded = f.attrs.get(DIGEST)
    if recorded is None:
        return
    stat = os.stat(path)
    key = (os.path.abspath(path), stat.st_ino, stat.st_size, stat.st_mtime_ns)
    if key in _VERIFIED:
        return
    actual = datasets_digest(f)
    if actual != str(recorded):
        from .errors import ArtifactError
        from .layout import remake_hint

        raise ArtifactError(
            f"{path} does not hold what it was written with (content digest {actual[:12]} ≠ "
            f"recorded {str(recorded)[:12]}: corrupted or edited in place); {remake_hint(path)}"
        )
    _VERIFIED.add(key)


def write_attrs(obj: h5py.HLObject, attrs: Mapping[str, Any]) -> None:
    """Store attributes; dicts, lists, tuples and None are JSON-encoded."""
    for key, value in attrs.items():
        if isinstance(value, Mapping | list | tuple) or value is None:
            obj.attrs[key] = json.dumps(value, sort_keys=True, default=_json_default)
        elif isinstance(value, str):
            obj.attrs[key] = str(value)
        else:
            obj.attrs[key] = value


def read_attrs(obj: h5py.HLObject) -> dict[str, Any]:
    """Read attributes back, decoding the JSON-encoded ones."""
    out: dict[str, Any] = {}
    for key, value in obj.attrs.items():
        if isinstance(value, bytes):
            value = value.decode()
        if isinstance(value, str) and value[:1] in "[{n":
            with contextlib.suppress(json.JSONDecodeError):
                value = json.loads(value)
        elif isinstance(value, np.generic):
            value = value.item()
        out[key] = value
    return out


def _json_default(value: Any) -> Any:
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, Path):
        return str(value)
    raise TypeError(f"cannot store {type(value).__name__} in an HDF5 attribute")


def file_digest(path: str | os.PathLike, chunk: int = 1 << 20) -> str:
    """sha256 of a file's bytes (streamed)."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def config_hash(cfg: Mapping[str, Any]) -> str:
    """Short sha256 of a config section's canonical JSON."""
    text = json.dumps(cfg, sort_keys=True, default=_json_default)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def provenance() -> dict[str, Any]:
    """Attributes every diffattr file carries."""
    return {
        "package": "diffattr",
        "package_version": __version__,
        "torch_version": _torch_version(),
    }


@functools.cache
def _torch_version() -> str:
    """The installed torch's version, without importing torch."""
    import importlib.metadata

    return importlib.metadata.version("torch")


def write_json(path: str | os.PathLike, payload: Any) -> None:
    """Atomically write JSON."""
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(payload, indent=2, sort_keys=True, default=_json_default) + "\n")


def read_json(path: str | os.PathLike) -> Any:
    """Read JSON; an unreadable or malformed file is one ArtifactError line."""
    from .errors import ArtifactError

    try:
        return json.loads(Path(path).read_text())
    except (OSError, ValueError) as err:
        raise ArtifactError(f"{path} is not readable JSON ({err}); remake it") from err
