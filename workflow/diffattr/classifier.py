"""The feature classifier: labels images (a feature's likelihood) and embeds them (for Fréchet
distances between sample sets). A small CNN trained in the workflow on the training set, with a
held-out split for its reported accuracy; saved as safetensors + JSON (no pickles)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors.torch import load_file, save_file
from torch import Tensor, nn

from .config import ClassifierConfig
from .errors import ModelError
from .seeding import derive_seed, generator, numpy_rng


class FeatureClassifier(nn.Module):
    """conv(3×3) ×3 (stride 1, 2, 2) → 2×2 pooling → embedding (``embed_dim``) → class logits."""

    def __init__(self, channels: int, n_classes: int, width: int = 32, embed_dim: int = 64):
        super().__init__()
        self.config = {
            "channels": channels,
            "n_classes": n_classes,
            "width": width,
            "embed_dim": embed_dim,
        }
        self.body = nn.Sequential(
            nn.Conv2d(channels, width, 3, padding=1),
            nn.ReLU(),
            nn.Conv2d(width, 2 * width, 3, stride=2, padding=1),
            nn.ReLU(),
            nn.Conv2d(2 * width, 2 * width, 3, stride=2, padding=1),
            nn.ReLU(),
            nn.AdaptiveAvgPool2d(2),
            nn.Flatten(),
            nn.Linear(8 * width, embed_dim),
            nn.ReLU(),
        )
        self.head = nn.Linear(embed_dim, n_classes)

    def embed(self, x: Tensor) -> Tensor:
        return self.body(x)

    def forward(self, x: Tensor) -> Tensor:
        return self.head(self.body(x))

    @torch.no_grad()
    def probabilities(self, x: Tensor) -> Tensor:
        return torch.softmax(self(x), dim=-1)


def train_classifier(
    images: np.ndarray, labels: np.ndarray, n_classes: int, cfg: ClassifierConfig, seed: int
) -> tuple[FeatureClassifier, dict[str, Any]]:
    """Train on a seeded (1 − held_out) split; report accuracy on the held-out rest."""
    n = len(images)
    order = numpy_rng(seed, "classifier-split").permutation(n)
    n_test = round(cfg.held_out * n)
    test, train = order[:n_test], order[n_test:]
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(derive_seed(seed, "classifier-init"))
        model = FeatureClassifier(images.shape[1], n_classes, cfg.width)
    x, y = torch.from_numpy(images), torch.from_numpy(labels)
    opt = torch.optim.Adam(model.parameters(), lr=cfg.lr)
    gen = generator(seed, "classifier-batches")
    steps, batch = cfg.steps, cfg.batch_size
    model.train()
    for _ in range(steps):
        pick = torch.from_numpy(train)[torch.randint(len(train), (batch,), generator=gen)]
        # light augmentation: small noise so that imperfect samples are still read sensibly
        noisy = x[pick] + 0.1 * torch.randn(x[pick].shape, generator=gen)
        loss = nn.functional.cross_entropy(model(noisy), y[pick])
        opt.zero_grad()
        loss.backward()
        opt.step()
    model.eval()
    with torch.no_grad():
        acc_test = (model(x[test]).argmax(1) == y[test]).float().mean().item() if n_test else None
        acc_train = (model(x[train]).argmax(1) == y[train]).float().mean().item()
    return model, {
        "held_out_accuracy": acc_test,
        "train_accuracy": acc_train,
        "n_train": len(train),
        "n_held_out": n_test,
        "steps": steps,
    }


def save_classifier(model: FeatureClassifier, folder: str | Path, info: dict[str, Any]) -> None:
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    save_file(model.state_dict(), folder / "model.safetensors")
    (folder / "config.json").write_text(json.dumps({**model.config, **info}, indent=2))


def load_classifier(folder: str | Path) -> tuple[FeatureClassifier, dict[str, Any]]:
    folder = Path(folder)
    if not (folder / "config.json").exists():
        raise ModelError(f"no classifier in {folder}; run the train_classifier rule")
    info = json.loads((folder / "config.json").read_text())
    model = FeatureClassifier(info["channels"], info["n_classes"], info["width"], info["embed_dim"])
    model.load_state_dict(load_file(folder / "model.safetensors"))
    return model.eval(), info
