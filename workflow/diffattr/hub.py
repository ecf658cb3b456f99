"""Hugging Face hub names that cannot be reached: say so, and how to work offline."""

from __future__ import annotations

import os
import re
from pathlib import Path

_UNREACHABLE = {"LocalEntryNotFoundError", "OfflineModeIsEnabled", "ConnectionError"}


def is_hub_name(name: str) -> bool:
    """``owner/name`` that is not a local path."""
    return bool(re.fullmatch(r"[\w.-]+/[\w.-]+", name)) and not Path(name).exists()


def offline() -> bool:
    """Hub access switched off by the environment (HF_HUB_OFFLINE, TRANSFORMERS_OFFLINE)."""
    flags = (os.environ.get(k, "") for k in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE"))
    return any(v.strip().lower() in ("1", "true", "yes", "on") for v in flags)


def unreachable(err: BaseException) -> bool:
    """``err`` (or an exception it was raised from) says the hub could not be reached."""
    seen: BaseException | None = err
    while seen is not None:
        if type(seen).__name__ in _UNREACHABLE:
            return True
        seen = seen.__cause__ or seen.__context__
    return False


def download_hint(name: str) -> str:
    """How to use hub model ``name`` on a machine that cannot reach the hub."""
    return (
        f"download it where the hub is reachable (hf download {name} --local-dir <folder>), "
        "copy the folder to this machine and give its path instead"
    )


def offline_message(name: str, what: str) -> str:
    """One line: ``what`` (a config key) names hub model ``name``, which cannot be reached."""
    why = (
        "this machine is offline (HF_HUB_OFFLINE or TRANSFORMERS_OFFLINE is set)"
        if offline()
        else "the Hugging Face hub cannot be reached from this machine (offline?)"
    )
    return f"{what} {name!r} is a hub model and {why}, nor is it in the local cache: " + (
        download_hint(name)
    )
