"""diffusers models and schedulers: build from config, save and load (safetensors).

A trained model is a folder ``<dir>/<checkpoint>/`` in the ``DDPMPipeline`` layout (``unet/``,
``scheduler/``, ``model_index.json``); ``<checkpoint>`` is ``final`` or ``step-<n>``.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

import diffusers
import torch
from diffusers import DDPMScheduler, UNet2DModel
from diffusers.utils import logging as diffusers_logging

from . import layout
from .config import DiffusionConfig, ModelConfig
from .errors import ConfigError, ModelError
from .hub import download_hint, is_hub_name
from .storage import file_digest

if TYPE_CHECKING:  # imported where used: its module costs a job ≈ 1.3 CPU-s (lazy_packages)
    from diffusers import UNet2DConditionModel

diffusers_logging.set_verbosity_error()


def resolve_device(name: str | None = "auto") -> torch.device:
    """``auto`` picks CUDA when available, else CPU; anything else is passed to ``torch.device``."""
    if name in (None, "auto"):
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"device {name!r} requested but CUDA is not available; use device: auto")
    return device


def build_unet(
    model_cfg: ModelConfig, image_shape: tuple[int, int, int]
) -> UNet2DModel | UNet2DConditionModel:
    """A ``UNet2DModel`` for images of ``image_shape`` = (C, H, W) sized by ``model_cfg``, or a
    text-conditioned ``UNet2DConditionModel`` (cross-attention) when ``conditional`` is set."""
    channels, height, width = image_shape
    if height != width:
        raise ConfigError(f"square images expected, got {height}×{width}")
    # Unset keys (None) are left to diffusers' own defaults.
    given = {k: getattr(model_cfg, k) for k in ModelConfig.UNET_KEYS}
    kwargs = {k: list(v) if isinstance(v, tuple) else v for k, v in given.items() if v is not None}
    if len(model_cfg.down_block_types) != len(model_cfg.block_out_channels):
        raise ConfigError("model.down_block_types and model.block_out_channels differ in length")
    downsamples = 2 ** (len(model_cfg.block_out_channels) - 1)
    if height % downsamples:
        raise ConfigError(
            f"image size {height} is not divisible by {downsamples}; use fewer model blocks"
        )
    if model_cfg.conditional:
        if model_cfg.cross_attention_dim is None:
            raise ConfigError("model.cross_attention_dim is required for a conditional model")
        from diffusers import UNet2DConditionModel

        return UNet2DConditionModel(
            sample_size=height,
            in_channels=channels,
            out_channels=channels,
            cross_attention_dim=model_cfg.cross_attention_dim,
            **kwargs,
        )
    return UNet2DModel(sample_size=height, in_channels=channels, out_channels=channels, **kwargs)


def build_scheduler(diffusion_cfg: DiffusionConfig) -> DDPMScheduler:
    """The DDPM scheduler: linear β, ε-prediction."""
    return DDPMScheduler(
        num_train_timesteps=diffusion_cfg.num_train_timesteps,
        beta_start=diffusion_cfg.beta_start,
        beta_end=diffusion_cfg.beta_end,
        beta_schedule="linear",
        prediction_type="epsilon",
        clip_sample=diffusion_cfg.clip_sample,
        variance_type="fixed_small",
    )


def n_parameters(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


MADE_FROM = "diffattr.json"
"""What a checkpoint saved here was made from (``data_digest``) and its weights' sha256
(``weights_sha256``), beside model_index.json."""


def save_model(
    model: UNet2DModel | UNet2DConditionModel,
    scheduler: DDPMScheduler,
    folder: str | Path,
    made_from: dict[str, Any] | None = None,
) -> None:
    """Save in the layout ``DDPMPipeline.from_pretrained(folder)`` opens: ``unet/`` (safetensors
    + config.json), ``scheduler/`` and ``model_index.json`` (unconditional UNets; a latent
    text-conditioned UNet has no diffusers pipeline without its VAE and text encoder), and
    ``made_from``."""
    folder = Path(folder)
    model.save_pretrained(folder / "unet", safe_serialization=True)
    scheduler.save_pretrained(folder / "scheduler")
    if isinstance(model, UNet2DModel):
        index = {
            "_class_name": "DDPMPipeline",
            "_diffusers_version": diffusers.__version__,
            "scheduler": ["diffusers", "DDPMScheduler"],
            "unet": ["diffusers", "UNet2DModel"],
        }
        (folder / "model_index.json").write_text(json.dumps(index, indent=2) + "\n")
    record = {**(made_from or {}), "weights_sha256": weights_digests(folder / "unet")}
    (folder / MADE_FROM).write_text(json.dumps(record, sort_keys=True) + "\n")


def weights_digests(unet_dir: Path) -> dict[str, str]:
    """sha256 of each safetensors weights file of a UNet folder, by file name."""
    return {p.name: file_digest(p) for p in sorted(unet_dir.glob("*.safetensors"))}


def check_weights(folder: Path, unet_dir: Path) -> None:
    """The weights files hold the bytes :func:`save_model` recorded (checkpoints saved before
    digests were recorded, and foreign models, are not checked)."""
    recorded = made_from(folder).get("weights_sha256") or {}
    actual = weights_digests(unet_dir)
    for name, digest in recorded.items():
        if actual.get(name) != digest:
            model = folder.parent if folder.name.startswith(("final", "step-")) else folder
            found = actual.get(name, "missing")
            raise ModelError(
                f"{unet_dir / name} does not hold the weights it was saved with (sha256 "
                f"{found[:12]} ≠ recorded {digest[:12]}: corrupted or edited in place); "
                f"{model}: {layout.remake_hint(model)}"
            )


def made_from(folder: str | Path) -> dict[str, Any]:
    """What :func:`save_model` recorded the checkpoint was made from ({} for foreign models)."""
    path = Path(folder) / MADE_FROM
    try:
        return json.loads(path.read_text()) if path.exists() else {}
    except (json.JSONDecodeError, UnicodeDecodeError):
        raise ModelError(f"{path} is not JSON; delete {Path(folder)} and retrain") from None


def load_model(
    folder: str | Path,
    device: torch.device | str,
    expected: ModelConfig | None = None,
    dtype: torch.dtype = torch.float32,
) -> tuple[UNet2DModel, DDPMScheduler]:
    """Load a model saved by :func:`save_model` (or a flat ``save_pretrained`` UNet folder with
    its scheduler config) onto ``device`` (required: a job's configured device must reach every
    model it runs), in eval mode. With ``expected``, a checkpoint of another architecture is
    refused before its weights are read."""
    folder = Path(folder)
    unet_dir, scheduler_dir = layout.model_files(folder)
    if is_hub_name(str(folder)):
        raise ModelError(
            f"no model folder {folder} (a hub name? models load from local folders: "
            f"{download_hint(str(folder))})"
        )
    if not (unet_dir / "config.json").exists():
        raise ModelError(
            f"no model in {folder} (neither unet/config.json nor config.json); train it with the "
            "train_model rule or point the config at a folder written by save_pretrained"
        )
    try:
        saved = json.loads((unet_dir / "config.json").read_text())
    except (json.JSONDecodeError, UnicodeDecodeError):
        raise ModelError(
            f"{unet_dir}/config.json is not JSON; delete {folder} and retrain"
        ) from None
    if expected is not None:
        check_architecture(folder, saved, expected)
    check_weights(folder, unet_dir)
    if saved.get("_class_name") == "UNet2DConditionModel":
        from diffusers import UNet2DConditionModel

        cls = UNet2DConditionModel
    else:
        cls = UNet2DModel
    try:
        model = cls.from_pretrained(unet_dir, low_cpu_mem_usage=False, torch_dtype=dtype)
        scheduler = DDPMScheduler.from_pretrained(scheduler_dir)
    except (OSError, ValueError, RuntimeError) as err:
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise ModelError(
            f"cannot load the checkpoint {folder}: its weights do not match its config.json or "
            f"are truncated ({first[:160]}); delete {folder} and retrain"
        ) from None
    return model.to(device=device).eval(), scheduler


def check_architecture(folder: Path, saved: dict, expected: ModelConfig) -> None:
    """The checkpoint's config.json agrees with the configured model (keys set in the config)."""
    differ = expected.differences(saved)
    if differ:
        raise ModelError(
            f"the checkpoint {folder} is not the configured model ({'; '.join(differ)}): "
            f"delete {folder.parent if folder.name.startswith(('final', 'step-')) else folder} "
            "to retrain it, or set model: as it was trained"
        )
