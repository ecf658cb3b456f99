"""A model job's start without diffusers' model zoo.

``diffusers.models.unets`` and ``diffusers.models.transformers`` import every UNet and every
transformer in the library when they are initialised, and importing ``UNet2DModel`` initialises
both (``unet_2d_blocks`` imports two transformer blocks): ≈ 1.6 of the ≈ 6 CPU-seconds a job
spends on imports before it computes (``python -X importtime``, README "Where the time goes").
:func:`defer_package_inits` registers these packages so that their ``__init__`` runs only when an
attribute of the package itself is asked for; importing a submodule (``unets.unet_2d``) does not
ask, so a job gets the same classes from the same files without the rest of the zoo.
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

DEFERRED = ("diffusers.models.unets", "diffusers.models.transformers")


def defer_package_inits(packages: tuple[str, ...] = DEFERRED) -> list[str]:
    """Register each not yet imported package of ``packages`` with its ``__init__`` deferred to
    the first attribute access; return the names registered. Nothing is imported here."""
    deferred = []
    for name in packages:
        if name in sys.modules:
            continue
        top, _, rest = name.partition(".")
        root = importlib.util.find_spec(top)  # a top-level find_spec imports nothing
        if root is None or root.origin is None:
            continue
        folder = Path(root.origin).parent.joinpath(*rest.split("."))
        init = folder / "__init__.py"
        if not init.is_file():
            continue
        spec = importlib.util.spec_from_file_location(
            name, init, submodule_search_locations=[str(folder)]
        )
        sys.modules[name] = _deferred_module(spec)
        deferred.append(name)
    return deferred


def _deferred_module(spec) -> ModuleType:
    module = importlib.util.module_from_spec(spec)

    def __getattr__(attribute: str):  # PEP 562: only for names the module does not have yet
        if attribute.startswith("__"):
            raise AttributeError(attribute)
        del module.__dict__["__getattr__"]
        spec.loader.exec_module(module)  # the package's own __init__, now
        return getattr(module, attribute)

    module.__getattr__ = __getattr__
    return module
