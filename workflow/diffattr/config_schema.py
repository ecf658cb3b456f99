"""The JSON schema of the config: validation with one line naming the key (and the moved flat
keys), and the schema-aware helpers (nulls mean defaults; unset optional keys)."""

from __future__ import annotations

from collections.abc import Mapping
from functools import cache
from pathlib import Path
from typing import Any

import yaml

from .config_section import _plain, check_moved
from .errors import ConfigError

# ---------------------------------------------------------------------------------------------
# Schema


SCHEMA = Path(__file__).resolve().parents[1] / "schemas" / "config.schema.yaml"


@cache
def schema() -> dict[str, Any]:
    return yaml.safe_load(SCHEMA.read_text())


def validate(values: Mapping[str, Any]) -> None:
    """Validate a config mapping against the JSON schema; one line naming the key on failure.
    A null value means unset (as if the key were absent)."""
    import jsonschema

    _check_keys(values, schema(), "")
    try:
        jsonschema.validate(without_nulls(values), schema(), cls=jsonschema.Draft202012Validator)
    except jsonschema.ValidationError as err:
        where = ".".join(str(p) for p in err.absolute_path) or "the top level"
        if err.validator == "type" and isinstance(err.instance, str) and len(err.path) > 1:
            kinds = err.validator_value
            kinds = " or ".join(kinds) if isinstance(kinds, list) else kinds
            raise ConfigError(
                f"invalid config at {where}: {err.instance!r} is text, not {kinds} "
                "(Snakemake reads values nested in --config as text): put nested overrides in a "
                "YAML file and pass it with --configfile"
            ) from None
        raise ConfigError(f"invalid config at {where}: {err.message}") from None


def _check_keys(values: Any, node: Mapping[str, Any], where: str) -> None:
    """Unknown keys, one line each with the closest valid key (before the schema's own message)."""
    import difflib

    props = node.get("properties")
    if not isinstance(values, Mapping) or props is None:
        return
    check_moved([k for k in values if k not in props], where.rstrip("."))
    for key, value in values.items():
        if key not in props:
            close = difflib.get_close_matches(str(key), list(props), n=1)
            hint = f"; did you mean {where}{close[0]}?" if close else f"; valid: {sorted(props)}"
            raise ConfigError(f"unknown config key {where}{key}{hint}")
        _check_keys(value, props[key], f"{where}{key}.")


def without_nulls(value: Any) -> Any:
    """``value`` without its null entries (a null means the key's default), recursively."""
    if isinstance(value, Mapping):
        return {k: without_nulls(v) for k, v in value.items() if v is not None}
    return _plain(value)


def _without_unset(values: dict[str, Any], node: Mapping[str, Any]) -> dict[str, Any]:
    """``values`` without the None of keys that have no schema default (recursively)."""
    props = node.get("properties", {})
    out = {}
    for key, value in values.items():
        prop = props.get(key, {})
        if value is None and "default" not in prop:
            continue
        nested = isinstance(value, dict) and "properties" in prop
        out[key] = _without_unset(value, prop) if nested else value
    return out
