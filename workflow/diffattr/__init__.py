"""diffattr: step-by-step data attribution for diffusion models.

Modules, bottom to top (no module imports one above it; none imports snakemake):

- foundations: ``seeding``, ``storage``, ``errors``, ``config`` (sections, ``RunConfig``; with
  ``config_section``, ``config_checks``, ``config_slices``, ``config_schema``), ``schedule``
  (ᾱ_t and the timestep helpers), ``layout``, ``ridge``,
  ``patches`` (boxes of a target), ``lazy_packages`` (a model job's start without diffusers' zoo),
  ``hub`` (hub names that cannot be reached), ``draws`` (the value objects the per-member
  numerics share)
- models and data: ``data``, ``procedural`` (fontdigits, photopatches), ``models``,
  ``projection``, ``outputs``
- algorithms: ``diffusion``, ``scoring``, ``features``, ``ekfac``, ``unlearning``, ``classifier``,
  ``figures``,
  ``counterfactual`` (plan, protocols, metrics), ``counterfactual_summary`` (the report's
  statistics), ``group_removal`` (MUCS's group protocol: union-of-top-k plan, effects, ratio
  and AUC against random removals), ``lds`` (``stats``, ``subsets``, ``ground_truth``,
  ``memorization``, ``report``, ``patches``, ``regime``), ``sizes`` (a config's n, shapes,
  UNet FLOPs and k), ``local_denoiser`` (the patch empirical denoiser's leave-one-out scores),
  ``mucs`` (bounded unlearning, skew scores), ``population`` (P models trained at once),
  ``topk`` (the K strongest of each sign per row, streamed and merged)
- application: ``methods``, ``artifacts``, ``attribution`` (the facade), ``results`` (a
  finished run as a library), ``stages``, ``fanout`` (jobs per rule), ``costs`` (work, memory
  and disk per rule), ``estimate`` (``diffattr estimate``), ``evaluate_run`` (new score files
  on a finished LDS run), ``kit`` (the versioned LDS kit: ``Kit``, ``evaluate``,
  ``diffattr evaluate``), ``verdicts`` (``diffattr verdicts``: wins called under every seed)
- adapters: ``cli``, ``config_doc``, ``warm`` (a run's jobs forked from one warm interpreter),
  ``preflight`` (a command line's config files checked before Snakemake reads them)

Loaded on first use (``import diffattr`` stays light; no module of the package reads them):
``diffattr.Kit`` and ``diffattr.evaluate(scores, kit)`` (``kit``).
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"
__all__ = ["Kit", "__version__", "evaluate"]


def __getattr__(name: str) -> Any:
    """``Kit`` and ``evaluate`` from ``diffattr.kit``, imported when first asked for."""
    if name in ("Kit", "evaluate"):
        return getattr(importlib.import_module(f"{__name__}.kit"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
