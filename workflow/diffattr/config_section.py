"""The config's building blocks: a frozen :class:`Section` whose fields a job's slice may leave
out (reading one raises, naming the key), the value conversions, and the keys that moved."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from typing import Any, ClassVar, get_args, get_origin, get_type_hints

from .errors import ConfigError


class _NotPassed:
    def __repr__(self) -> str:
        return "<not passed to this job>"


NOT_PASSED: Any = _NotPassed()


class Section:
    """A frozen config section. Reading a field that the job's slice did not carry raises."""

    path: ClassVar[str] = ""
    renamed: ClassVar[dict[str, str]] = {}  # field name → config key (``lambda_`` → ``lambda``)

    def __getattribute__(self, name: str) -> Any:
        value = object.__getattribute__(self, name)
        if value is NOT_PASSED:
            key = type(self).key(name)
            key = f"{type(self).path}.{key}" if type(self).path else key
            raise ConfigError(
                f"config key {key} is not passed to this job; add it to the job's slice in "
                "diffattr.config.SLICES"
            )
        return value

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.to_dict()!r})"

    def __eq__(self, other: object) -> bool:
        return type(self) is type(other) and self.to_dict() == other.to_dict()  # type: ignore[attr-defined]

    __hash__ = None  # type: ignore[assignment]

    @classmethod
    def key(cls, name: str) -> str:
        return cls.renamed.get(name, name)

    @classmethod
    def from_dict(cls, values: Mapping[str, Any], partial: bool | Sequence[str] = False):
        """Build from a config mapping. ``partial``: fields absent from ``values`` are not
        passed (a job's slice) instead of taking their defaults, except the keys it lists (the
        slice's keys: an unset optional one is left out of the slice but read as None); nested
        sections are whole."""
        hints = get_type_hints(cls)
        known = {cls.key(f.name) for f in dataclasses.fields(cls)}
        check_moved(sorted(set(values) - known), cls.path)
        unknown = sorted(set(values) - known)
        if unknown:
            raise ConfigError(f"unknown config keys {unknown} in {cls.path or 'the top level'}")
        listed = () if isinstance(partial, bool) else partial
        kwargs: dict[str, Any] = {}
        for f in dataclasses.fields(cls):
            key = cls.key(f.name)
            required = f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING
            value = values.get(key)
            if value is not None:
                kwargs[f.name] = _convert(hints[f.name], value)
            elif key in values and not required:  # null means unset: the default
                factory = f.default_factory
                kwargs[f.name] = f.default if factory is dataclasses.MISSING else factory()
            elif partial and key not in listed and key not in values:
                kwargs[f.name] = NOT_PASSED
            elif required:
                name = f"{cls.path}.{key}" if cls.path else key
                raise ConfigError(f"config key {name} is required")
        return cls(**kwargs)

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-ready values under config keys (fields not passed are left out; unset
        ones are None)."""
        out: dict[str, Any] = {}
        for f in dataclasses.fields(self):
            value = object.__getattribute__(self, f.name)
            if value is NOT_PASSED:
                continue
            out[type(self).key(f.name)] = _plain(value)
        return out


def _plain(value: Any) -> Any:
    if isinstance(value, Section):
        return value.to_dict()
    if isinstance(value, tuple | list):
        return [_plain(v) for v in value]
    if isinstance(value, Mapping):
        return {k: _plain(v) for k, v in value.items()}
    return value


def _section_type(hint: Any) -> type[Section] | None:
    options = get_args(hint) if get_origin(hint) is not None else (hint,)
    for option in options:
        if isinstance(option, type) and issubclass(option, Section):
            return option
    return None


def _convert(hint: Any, value: Any) -> Any:
    """Config value → field value: nested sections built (whole), lists frozen as tuples."""
    section = _section_type(hint)
    if section is not None and isinstance(value, Mapping):
        return section.from_dict(value)
    if isinstance(value, list):
        return tuple(value)
    return value


MOVED = {  # an old flat key → where it lives now (a one-line error names it, never a silent drop)
    **{f"attribution.ekfac_{k}": f"attribution.ekfac.{k}" for k in ("damping", "fisher")},
    **{
        f"attribution.unlearning_{k}": f"attribution.unlearning.{k}"
        for k in (
            "lr",
            "steps",
            "window",
            "draws",
            "eval_draws",
            "fisher_draws",
            "shards",
            "train_shards",
        )
    },
}


def check_moved(keys: Sequence[str], where: str) -> None:
    """A key of ``MOVED`` among ``keys`` (of section ``where``) is an error naming its new key."""
    for key in keys:
        name = f"{where}.{key}" if where else str(key)
        if name in MOVED:
            raise ConfigError(f"config key {name} moved: write {MOVED[name]}")
