"""Synthetic data in the official formats, and tiny pretrained-style encoders, made by the tests."""

from __future__ import annotations

import io
import itertools
import json
import pickle
import tarfile
from pathlib import Path

import numpy as np


def cifar_arrays(n_train: int = 60, n_test: int = 20, seed: int = 0):
    rng = np.random.default_rng(seed)
    train = rng.integers(0, 256, (n_train, 3, 32, 32), dtype=np.uint8)
    test = rng.integers(0, 256, (n_test, 3, 32, 32), dtype=np.uint8)
    return (train, np.arange(n_train) % 10), (test, np.arange(n_test) % 10)


def _batches(images, labels, parts):
    bounds = np.linspace(0, len(images), parts + 1).astype(int)
    return [(images[a:b], labels[a:b]) for a, b in itertools.pairwise(bounds)]


def write_cifar_archive(path: Path, fmt: str, n_train: int = 60, n_test: int = 20) -> Path:
    """A cifar-10-{binary,python}.tar.gz with the official member names and record layouts."""
    (train, train_y), (test, test_y) = cifar_arrays(n_train, n_test)
    folder = "cifar-10-batches-bin" if fmt == "binary" else "cifar-10-batches-py"
    members = {}
    for i, (x, y) in enumerate(_batches(train, train_y, 5), start=1):
        members[f"data_batch_{i}"] = (x, y)
    members["test_batch"] = (test, test_y)
    with tarfile.open(path, "w:gz") as tar:
        for name, (x, y) in members.items():
            if fmt == "binary":
                blob = np.concatenate([y.astype(np.uint8)[:, None], x.reshape(len(x), -1)], 1)
                blob, name = blob.tobytes(), name + ".bin"
            else:
                payload = {
                    b"batch_label": b"synthetic",
                    b"labels": [int(v) for v in y],
                    b"data": x.reshape(len(x), -1),
                    b"filenames": [b"x.png"] * len(x),
                }
                blob = pickle.dumps(payload, protocol=2)
            info = tarfile.TarInfo(f"{folder}/{name}")
            info.size = len(blob)
            tar.addfile(info, io.BytesIO(blob))
    return path


def write_coco(root: Path, n_images: int = 12, size: int = 40, seed: int = 0) -> Path:
    """annotations/captions_{train,val}2017.json and JPEGs of varied aspect ratios."""
    from PIL import Image

    rng = np.random.default_rng(seed)
    words = ["a", "red", "cat", "dog", "on", "the", "grass", "car", "blue", "sky"]
    for split, n in (("train2017", n_images), ("val2017", 4)):
        (root / split).mkdir(parents=True, exist_ok=True)
        images, anns = [], []
        for i in range(n):
            w, h = size + int(rng.integers(0, 12)), size + int(rng.integers(0, 12))
            arr = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
            name = f"{i:012d}.jpg"
            Image.fromarray(arr).save(root / split / name, quality=95)
            images.append({"id": 1000 + i, "file_name": name, "width": w, "height": h})
            for c in range(int(rng.integers(3, 6))):  # some images have fewer than 5 captions
                text = " ".join(rng.choice(words, 4))
                anns.append({"id": len(anns), "image_id": 1000 + i, "caption": f"{text} {c}"})
        (root / "annotations").mkdir(parents=True, exist_ok=True)
        (root / "annotations" / f"captions_{split}.json").write_text(
            json.dumps({"images": images, "annotations": anns})
        )
    return root


def write_tiny_encoders(folder: Path) -> Path:
    """A randomly initialised AutoencoderKL (vae/) and CLIP tokenizer + text encoder
    (tokenizer/, text_encoder/) saved with save_pretrained, laid out like a hub model."""
    import torch
    from diffusers import AutoencoderKL
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTokenizer

    torch.manual_seed(0)
    folder.mkdir(parents=True, exist_ok=True)
    bs = [*range(33, 127), *range(161, 173), *range(174, 256)]
    cs, extra = bs[:], 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + extra)
            extra += 1
    vocab = {"<|startoftext|>": 0, "<|endoftext|>": 1}
    for c in sorted({chr(c) for c in cs}):
        vocab.setdefault(c, len(vocab))
        vocab.setdefault(c + "</w>", len(vocab))
    (folder / "vocab.json").write_text(json.dumps(vocab))
    (folder / "merges.txt").write_text("#version: 0.2\n")
    CLIPTokenizer(str(folder / "vocab.json"), str(folder / "merges.txt")).save_pretrained(
        folder / "tokenizer"
    )
    config = CLIPTextConfig(
        vocab_size=len(vocab),
        hidden_size=16,
        intermediate_size=32,
        num_hidden_layers=1,
        num_attention_heads=2,
        max_position_embeddings=16,
        projection_dim=16,
    )
    CLIPTextModel(config).save_pretrained(folder / "text_encoder")
    AutoencoderKL(
        in_channels=3,
        out_channels=3,
        down_block_types=["DownEncoderBlock2D"] * 2,
        up_block_types=["UpDecoderBlock2D"] * 2,
        block_out_channels=[8, 8],
        latent_channels=4,
        norm_num_groups=4,
        sample_size=16,
    ).save_pretrained(folder / "vae")
    return folder


def write_image_folder(root, classes=("cat", "dog"), per_class=3, size=(12, 10)):
    """root/<class>/<i>.png with seeded RGB pixels; returns the pixels by (class, i)."""
    from PIL import Image

    rng = np.random.default_rng(0)
    pixels = {}
    for c, name in enumerate(classes):
        (root / name).mkdir(parents=True)
        for i in range(per_class):
            arr = rng.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)
            Image.fromarray(arr).save(root / name / f"{i}.png")
            pixels[c, i] = arr
    (root / classes[-1] / "notes.txt").write_text("not an image")
    return pixels


def write_pretrained_pipeline(folder: Path, unet_kwargs: dict, image_shape, seed: int = 0) -> Path:
    """A seeded tiny UNet2DModel and a DDPM scheduler saved by diffusers' own
    ``DDPMPipeline.save_pretrained`` (model_index.json, unet/, scheduler/): a pretrained model
    as a user would bring it."""
    import torch
    from diffusers import DDPMPipeline, DDPMScheduler, UNet2DModel

    torch.manual_seed(seed)
    channels, size, _ = image_shape
    unet = UNet2DModel(sample_size=size, in_channels=channels, out_channels=channels, **unet_kwargs)
    scheduler = DDPMScheduler(num_train_timesteps=1000, beta_schedule="linear")
    DDPMPipeline(unet=unet, scheduler=scheduler).save_pretrained(folder)
    return folder
