"""Dataset registry and loaders: each dataset becomes ``PreparedData``, written once as
``data.h5`` (``artifacts.write_data``): ``images`` float32 (n, C, H, W) in [-1, 1], ``labels``
int64 (n,), ``ids`` int64 (n,) stable ids (indices into the original source). Training,
featurizing and evaluation read only that file. Loaders receive the ``dataset`` config section
as a mapping (every key, defaults filled by ``DatasetConfig``) plus ``device`` (mscoco's
encoders).
"""

from __future__ import annotations

import bz2
import gzip
import io
import json
import lzma
import pickle
import tarfile
import zlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from .config import DatasetConfig
from .errors import ConfigError, DatasetError
from .hub import is_hub_name, offline, offline_message, unreachable


def take_rows(array, rows, columns=None):
    """``array[rows]`` or ``array[rows, columns]`` (element pairs) for an in-memory array or
    tensor, or read from disk for a stored one (``artifacts.StoredRows``: caption embeddings,
    ≈93 GB at full COCO, are never loaded whole). Tensors give tensors, the others arrays."""
    if hasattr(array, "take_rows"):
        return array.take_rows(np.asarray(rows), None if columns is None else np.asarray(columns))
    return array[rows] if columns is None else array[rows, columns]


@dataclass(frozen=True)
class PreparedData:
    """Images in [-1, 1] with labels and stable ids; ``extra`` holds dataset-specific arrays."""

    images: np.ndarray
    labels: np.ndarray
    ids: np.ndarray
    class_names: list[str]
    name: str
    extra: dict[str, np.ndarray] = field(default_factory=dict)
    config: dict[str, Any] = field(default_factory=dict)
    digest: str = ""  # sha256 of the examples (artifacts.content_digest), set when read from disk

    def __post_init__(self) -> None:
        n = len(self.images)
        if not (len(self.labels) == len(self.ids) == n):
            raise DatasetError(f"{self.name}: images, labels and ids differ in length")
        if len(np.unique(self.ids)) != n:
            raise DatasetError(f"{self.name}: example ids are not unique")

    @property
    def n(self) -> int:
        return len(self.images)

    @property
    def shape(self) -> tuple[int, int, int]:
        return tuple(self.images.shape[1:])  # type: ignore[return-value]

    @property
    def conditional(self) -> bool:
        """Text-conditioned data (per-example caption embeddings)."""
        return "caption_embeddings" in self.extra


Loader = Callable[[Mapping[str, Any]], PreparedData]
DATASETS: dict[str, Loader] = {}


def register(name: str) -> Callable[[Loader], Loader]:
    """Register a dataset loader under ``name`` (the config's ``dataset.name``)."""

    def wrap(fn: Loader) -> Loader:
        DATASETS[name] = fn
        return fn

    return wrap


def select_classes(
    labels: np.ndarray, classes: list[int] | None, per_class: int | None
) -> np.ndarray:
    """Positions kept by a class filter and a per-class cap (the first ``per_class`` of each)."""
    keep = np.arange(len(labels))
    if classes is not None:
        missing = sorted(set(classes) - set(np.unique(labels).tolist()))
        if missing:
            raise ConfigError(f"dataset.classes names labels {missing} that the dataset lacks")
        keep = keep[np.isin(labels, classes)]
    if per_class is not None:
        if per_class < 1:
            raise ConfigError("dataset.per_class must be at least 1")
        kept = [keep[labels[keep] == c][:per_class] for c in np.unique(labels[keep])]
        keep = np.sort(np.concatenate(kept))
    return keep


@register("digits")
def load_digits(cfg: Mapping[str, Any]) -> PreparedData:
    """scikit-learn's bundled 8×8 digits (1797 images, 10 classes), scaled to [-1, 1]."""
    from sklearn.datasets import load_digits as sk_digits

    bunch = sk_digits()
    images = (bunch.images.astype(np.float32) / 16.0 * 2.0 - 1.0)[:, None]
    labels = bunch.target.astype(np.int64)
    keep = select_classes(labels, cfg.get("classes"), cfg.get("per_class"))
    return PreparedData(
        images=images[keep],
        labels=labels[keep],
        ids=keep.astype(np.int64),
        class_names=[str(c) for c in range(10)],
        name="digits",
    )


FONTDIGITS_PER_CLASS = 180  # per_class null: about the bundled digits' 1797
PHOTOPATCHES = 2000  # limit null


def _procedural_size(cfg: Mapping[str, Any]) -> int:
    DatasetConfig.from_dict({k: v for k, v in cfg.items() if k not in RUN_KEYS}).check_procedural()
    return cfg["image_size"]


@register("fontdigits")
def load_fontdigits(cfg: Mapping[str, Any]) -> PreparedData:
    """Digits 0–9 drawn from matplotlib's bundled fonts with random affine jitter, stroke width
    and blur (``procedural.render_fontdigits``), ``per_class`` of each (null: 180), keyed by the
    run's seed; ``classes`` keeps some digits. Extra: each image's font."""
    from .procedural import render_fontdigits

    per_class = cfg.get("per_class") or FONTDIGITS_PER_CLASS
    images, labels, fonts = render_fontdigits(
        per_class, int(cfg.get("seed") or 0), _procedural_size(cfg)
    )
    keep = select_classes(labels, cfg.get("classes"), None)
    return PreparedData(
        images=images[keep],
        labels=labels[keep],
        ids=keep.astype(np.int64),
        class_names=[str(c) for c in range(10)],
        name="fontdigits",
        extra={"font": fonts[keep]},
    )


@register("photopatches")
def load_photopatches(cfg: Mapping[str, Any]) -> PreparedData:
    """``limit`` (null: 2000) grey patches of the bundled photographs (``procedural.
    cut_photopatches``), keyed by the run's seed; the label is the photograph. Extra: each
    patch's top-left corner in its photograph (supersampled pixels)."""
    from .procedural import cut_photopatches

    n = cfg.get("limit") or PHOTOPATCHES
    images, labels, names, where = cut_photopatches(
        n, int(cfg.get("seed") or 0), _procedural_size(cfg)
    )
    return PreparedData(
        images=images,
        labels=labels,
        ids=np.arange(n, dtype=np.int64),
        class_names=names,
        name="photopatches",
        extra={"corner": where},
    )


IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".tif", ".tiff"}
FOLDER_HELP = (
    "dataset.root must be a folder with one subfolder per class (the subfolder names, sorted, "
    "are the classes) holding the images (png, jpg, …)"
)


@register("folder")
def load_folder(cfg: Mapping[str, Any]) -> PreparedData:
    """Your images: ``root/<class>/<image>``; classes are the sorted subfolder names, labels
    their positions; every image centre-cropped to a square and resized to ``image_size`` (RGB,
    [-1, 1]); ids are positions in the sorted listing (class, then file name)."""
    root = Path(cfg["root"] or "")
    if not root.is_dir():
        raise DatasetError(f"dataset.root {root} is not a folder. {FOLDER_HELP}")
    classes = sorted(d.name for d in root.iterdir() if d.is_dir() and not d.name.startswith("."))
    files, labels = [], []
    for label, name in enumerate(classes):
        found = sorted(f for f in (root / name).iterdir() if f.suffix.lower() in IMAGE_SUFFIXES)
        if not found:
            raise DatasetError(f"class folder {root / name} holds no images. {FOLDER_HELP}")
        files += found
        labels += [label] * len(found)
    if not files:
        raise DatasetError(f"{root} has no class subfolders. {FOLDER_HELP}")
    labels_arr = np.asarray(labels, dtype=np.int64)
    keep = select_classes(labels_arr, cfg.get("classes"), cfg.get("per_class"))
    if cfg.get("limit"):
        keep = keep[: int(cfg["limit"])]
    images = []
    for i in keep:
        try:
            images.append(load_square_image(files[i], int(cfg["image_size"])))
        except OSError as err:
            raise DatasetError(f"{files[i]} is not a readable image ({err})") from None
    return PreparedData(
        images=np.stack(images).astype(np.float32),
        labels=labels_arr[keep],
        ids=keep.astype(np.int64),
        class_names=classes,
        name="folder",
        extra={"files": np.array([str(files[i].relative_to(root)) for i in keep], dtype="S")},
    )


RUN_KEYS = ("device", "seed")
"""Keys a loader receives beside the ``dataset`` section: the device (mscoco's encoders) and the
run's master seed (procedural datasets draw from it)."""


def prepare(cfg: Mapping[str, Any]) -> PreparedData:
    """Load the configured dataset through the registry. ``cfg``: the ``dataset`` section (keys
    left out take DatasetConfig's defaults) plus the optional :data:`RUN_KEYS`. Loaders receive
    every key; ``split`` None means the dataset's training split."""
    name = cfg.get("name")
    if name not in DATASETS:
        raise ConfigError(f"unknown dataset {name!r}; available: {sorted(DATASETS)}")
    options = DatasetConfig.from_dict({k: v for k, v in cfg.items() if k not in RUN_KEYS})
    return DATASETS[name]({**options.to_dict(), **{k: cfg.get(k) for k in RUN_KEYS}})


# ---------------------------------------------------------------------------------------------
# CIFAR-10 (the user's copy of the official archives)

CIFAR10_CLASSES = [
    "airplane",
    "automobile",
    "bird",
    "cat",
    "deer",
    "dog",
    "frog",
    "horse",
    "ship",
    "truck",
]
CIFAR_HELP = (
    "Download the CIFAR-10 binary or python version from "
    "https://www.cs.toronto.edu/~kriz/cifar.html and set dataset.root to the archive "
    "(cifar-10-binary.tar.gz / cifar-10-python.tar.gz) or to the folder that holds "
    "cifar-10-batches-bin/ or cifar-10-batches-py/"
)


class RestrictedUnpickler(pickle.Unpickler):
    """Unpickles plain data only: dicts, lists, strings, numbers and numpy arrays.

    Any other global (a function, a class with side effects) is refused, so a tampered archive
    cannot run code.
    """

    ALLOWED: ClassVar[set[tuple[str, str]]] = {
        ("numpy.core.multiarray", "_reconstruct"),
        ("numpy._core.multiarray", "_reconstruct"),
        ("numpy", "ndarray"),
        ("numpy", "dtype"),
        ("numpy.core.multiarray", "scalar"),
        ("numpy._core.multiarray", "scalar"),
        ("_codecs", "encode"),  # how protocol-2 pickles store bytes; converts text to bytes only
    }

    def find_class(self, module: str, name: str):
        if (module, name) in self.ALLOWED:
            return super().find_class(module, name)
        raise pickle.UnpicklingError(f"refusing to unpickle {module}.{name}: not plain data")


def restricted_load(blob: bytes) -> Any:
    return RestrictedUnpickler(io.BytesIO(blob), encoding="bytes").load()


_COMPRESSED = {b"\x1f\x8b": gzip.open, b"BZh": bz2.open, b"\xfd7zXZ": lzma.open}


def _decompress_whole(archive: Path) -> None:
    """Read a compressed archive to its end: its checksum (gzip's CRC, …) is checked there only,
    so bytes changed in a member read before the end would otherwise pass unnoticed."""
    with open(archive, "rb") as f:
        head = f.read(6)
    for magic, opener in _COMPRESSED.items():
        if head.startswith(magic):
            with opener(archive, "rb") as f:
                while f.read(1 << 24):
                    pass


def _cifar_members(root: Path, split: str) -> tuple[str, list[tuple[str, bytes]]]:
    """(format, [(name, bytes)]) of the batch files of ``split`` from a folder or an archive."""
    names = {
        "binary": (
            [f"data_batch_{i}.bin" for i in range(1, 6)] if split == "train" else ["test_batch.bin"]
        ),
        "python": (
            [f"data_batch_{i}" for i in range(1, 6)] if split == "train" else ["test_batch"]
        ),
    }
    folders = {"binary": "cifar-10-batches-bin", "python": "cifar-10-batches-py"}
    if root.is_file():
        try:
            _decompress_whole(root)
            with tarfile.open(root) as tar:
                members = {Path(m.name).name: m for m in tar.getmembers() if m.isfile()}
                for fmt, wanted in names.items():
                    if all(w in members for w in wanted):
                        return fmt, [(w, tar.extractfile(members[w]).read()) for w in wanted]
        except (tarfile.TarError, EOFError, OSError, zlib.error, lzma.LZMAError) as err:
            raise DatasetError(
                f"{root} is a corrupt or truncated archive ({type(err).__name__}: "
                f"{str(err)[:80]}); download it again. {CIFAR_HELP}"
            ) from None
        raise DatasetError(f"{root} holds no CIFAR-10 {split} batches. {CIFAR_HELP}")
    for fmt, wanted in names.items():
        for folder in (root / folders[fmt], root):
            if all((folder / w).exists() for w in wanted):
                return fmt, [(w, (folder / w).read_bytes()) for w in wanted]
    raise DatasetError(f"no CIFAR-10 {split} batches under {root}. {CIFAR_HELP}")


def read_cifar10(root: str | Path, split: str = "train") -> tuple[np.ndarray, np.ndarray]:
    """uint8 images (n, 3, 32, 32) and labels (n,) from the official archives (either format)."""
    root = Path(root)
    if not root.exists():
        raise DatasetError(f"CIFAR-10 root {root} does not exist. {CIFAR_HELP}")
    fmt, members = _cifar_members(root, split)
    images, labels = [], []
    for name, blob in members:
        if fmt == "binary":
            if len(blob) % 3073:
                raise DatasetError(f"{name} is not a CIFAR-10 binary batch (size {len(blob)})")
            rec = np.frombuffer(blob, dtype=np.uint8).reshape(-1, 3073)
            labels.append(rec[:, 0].astype(np.int64))
            images.append(rec[:, 1:].reshape(-1, 3, 32, 32))
        else:
            try:
                batch = restricted_load(blob)
            except (pickle.UnpicklingError, EOFError, ValueError) as err:
                message = f"{name} in {root} is not a plain CIFAR-10 batch: {err}"
                raise DatasetError(message) from None
            if not isinstance(batch, dict) or b"data" not in batch:
                raise DatasetError(f"{name} is not a CIFAR-10 python batch")
            images.append(np.asarray(batch[b"data"], dtype=np.uint8).reshape(-1, 3, 32, 32))
            labels.append(np.asarray(batch[b"labels"], dtype=np.int64))
    return np.concatenate(images), np.concatenate(labels)


@register("cifar10")
def load_cifar10(cfg: Mapping[str, Any]) -> PreparedData:
    """CIFAR-10 train or test split, optional class filter and per-class count (CIFAR-2 =
    classes [1, 7], 2500 each: automobile + horse, the D-TRAK benchmark)."""
    if not cfg.get("root"):
        raise ConfigError(f"dataset.root is required for cifar10. {CIFAR_HELP}")
    images, labels = read_cifar10(cfg["root"], cfg["split"] or "train")
    keep = select_classes(labels, cfg.get("classes"), cfg.get("per_class"))
    return PreparedData(
        images=images[keep].astype(np.float32) / 127.5 - 1.0,
        labels=labels[keep],
        ids=keep.astype(np.int64),
        class_names=CIFAR10_CLASSES,
        name="cifar10",
    )


# ---------------------------------------------------------------------------------------------
# MS COCO captions, encoded once into latents and text embeddings

COCO_HELP = (
    "Download COCO 2017 (train2017.zip and annotations_trainval2017.zip from "
    "https://cocodataset.org) and set dataset.root to the folder holding "
    "annotations/captions_<split>.json and <split>/"
)


def coco_captions(annotations: Path) -> tuple[dict[int, str], dict[int, list[str]]]:
    """{image id: file name}, {image id: captions} from a COCO captions JSON file."""
    if not annotations.exists():
        raise DatasetError(f"COCO captions file {annotations} does not exist. {COCO_HELP}")
    try:
        payload = json.loads(annotations.read_text())
        files = {int(im["id"]): im["file_name"] for im in payload["images"]}
        captions: dict[int, list[str]] = {}
        for ann in payload["annotations"]:
            captions.setdefault(int(ann["image_id"]), []).append(str(ann["caption"]).strip())
    except (json.JSONDecodeError, KeyError, TypeError, ValueError) as err:
        what = f"{type(err).__name__}: {err}" if isinstance(err, ValueError) else err
        raise DatasetError(
            f"{annotations} is not a COCO captions file ({what}). {COCO_HELP}"
        ) from None
    return files, captions


def load_square_image(path: Path, size: int, channels: int = 3) -> np.ndarray:
    """Centre crop to a square, resize to ``size`` (bicubic), (channels, size, size) float32 in
    [-1, 1]; ``channels`` 3 (RGB) or 1 (grey, PIL's L conversion)."""
    from PIL import Image

    if not path.exists():
        raise DatasetError(f"image {path} does not exist")
    with Image.open(path) as im:
        im = im.convert("RGB" if channels == 3 else "L")
        side = min(im.size)
        left, top = (im.width - side) // 2, (im.height - side) // 2
        im = im.crop((left, top, left + side, top + side)).resize((size, size), Image.BICUBIC)
        arr = np.asarray(im, dtype=np.float32)
    arr = arr.transpose(2, 0, 1) if arr.ndim == 3 else arr[None]
    return arr / 127.5 - 1.0


def load_target_images(folder: Path, shape: tuple[int, int, int]) -> tuple[np.ndarray, list[str]]:
    """The images of ``folder`` (sorted by file name) shaped like the training images ``shape``
    (C, H, W): centre square, resized, grey or RGB, [-1, 1]; and their file names."""
    channels, height, width = shape
    if height != width or channels not in (1, 3):
        raise DatasetError(
            f"target images need square grey or RGB training images, not {channels}×{height}×"
            f"{width} (latent models: encode the images yourself)"
        )
    folder = Path(folder)
    files = sorted(f for f in folder.iterdir() if f.suffix.lower() in IMAGE_SUFFIXES)
    if not files:
        raise DatasetError(f"{folder} holds no images (png, jpg, …)")
    images = []
    for path in files:
        try:
            images.append(load_square_image(path, height, channels))
        except OSError as err:
            raise DatasetError(f"{path} is not a readable image ({err})") from None
    return np.stack(images).astype(np.float32), [f.name for f in files]


def load_encoders(cfg: Mapping[str, Any], device: str):
    """The pretrained VAE and CLIP text encoder named in the config (hub names or local folders),
    through the same ``from_pretrained`` path for real weights and for test-made tiny models."""
    from diffusers import AutoencoderKL

    try:
        from transformers import CLIPTextModel, CLIPTokenizer
    except ImportError as err:
        raise ConfigError("mscoco needs transformers: pip install -e '.[coco]'") from err
    try:
        vae = AutoencoderKL.from_pretrained(cfg["vae"], subfolder=cfg["vae_subfolder"])
        tokenizer = CLIPTokenizer.from_pretrained(
            cfg["text_encoder"], subfolder=cfg["tokenizer_subfolder"]
        )
        text = CLIPTextModel.from_pretrained(
            cfg["text_encoder"], subfolder=cfg["text_encoder_subfolder"]
        )
    except (OSError, ValueError) as err:
        for key in ("vae", "text_encoder"):
            name = str(cfg.get(key))
            if is_hub_name(name) and (offline() or unreachable(err)):
                raise DatasetError(offline_message(name, f"dataset.{key}")) from None
        raise DatasetError(
            f"cannot load the VAE / CLIP text encoder from {cfg.get('vae')!r} / "
            f"{cfg.get('text_encoder')!r}: {err}. Give a hub name reachable from this machine or a "
            "local folder saved with save_pretrained (subfolders vae/, tokenizer/, text_encoder/)"
        ) from err
    return vae.to(device).eval(), tokenizer, text.to(device).eval()


def encode_texts(texts: list[str], tokenizer, text_model, max_length: int, device, batch=256):
    import torch

    out = []
    with torch.no_grad():
        for lo in range(0, len(texts), batch):
            tok = tokenizer(
                texts[lo : lo + batch],
                padding="max_length",
                max_length=max_length,
                truncation=True,
                return_tensors="pt",
            )
            out.append(text_model(tok.input_ids.to(device)).last_hidden_state.cpu())
    return torch.cat(out).numpy().astype(np.float16)


@register("mscoco")
def load_mscoco(cfg: Mapping[str, Any]) -> PreparedData:
    """COCO 2017 images (centre crop, resize) encoded once to VAE latents (× scaling factor; the
    posterior mean), and their captions to CLIP text embeddings (``captions_per_image`` per
    image, cycled when an image has fewer); plus the empty caption and the target prompts."""
    import torch

    from .seeding import numpy_rng

    root = Path(cfg.get("root") or "")
    split = cfg["split"] or "train2017"
    files, captions = coco_captions(root / "annotations" / f"captions_{split}.json")
    ids = sorted(i for i in files if captions.get(i))
    if cfg.get("limit"):
        ids = ids[: int(cfg["limit"])]
    per = cfg["captions_per_image"]
    device = cfg.get("device") or ("cuda" if torch.cuda.is_available() else "cpu")
    vae, tokenizer, text_model = load_encoders(cfg, device)
    size, length = cfg["image_size"], cfg["max_length"]
    latents = []
    with torch.no_grad():
        for lo in range(0, len(ids), 64):
            batch = np.stack(
                [load_square_image(root / split / files[i], size) for i in ids[lo : lo + 64]]
            )
            dist = vae.encode(torch.from_numpy(batch).to(device)).latent_dist
            latents.append((dist.mean * vae.config.scaling_factor).cpu().numpy())
    caps = [[captions[i][c % len(captions[i])] for c in range(per)] for i in ids]
    flat = encode_texts([c for row in caps for c in row], tokenizer, text_model, length, device)
    prompts = list(cfg.get("prompts") or [])
    if not prompts and cfg.get("val_prompts"):
        _, val = coco_captions(root / "annotations" / "captions_val2017.json")
        pool = sorted(c for cs in val.values() for c in cs)
        picks = numpy_rng(0, "coco-prompts").choice(len(pool), int(cfg["val_prompts"]), False)
        prompts = [pool[k] for k in sorted(picks)]
    extra = {
        "caption_embeddings": flat.reshape(len(ids), per, length, -1),
        "captions": np.array(caps, dtype="S"),
        "null_embedding": encode_texts([""], tokenizer, text_model, length, device)[0],
        "prompt_embeddings": encode_texts(prompts or [""], tokenizer, text_model, length, device),
        "prompts": np.array(prompts or [""], dtype="S"),
    }
    return PreparedData(
        images=np.concatenate(latents).astype(np.float32),
        labels=np.full(len(ids), -1, dtype=np.int64),
        ids=np.asarray(ids, dtype=np.int64),
        class_names=[],
        name="mscoco",
        extra=extra,
    )


def decode_latents(dataset_cfg: Mapping[str, Any], latents: np.ndarray) -> np.ndarray:
    """Images in [-1, 1] from latents (÷ scaling factor, VAE decode) for figures."""
    import torch
    from diffusers import AutoencoderKL

    vae = AutoencoderKL.from_pretrained(
        dataset_cfg["vae"], subfolder=DatasetConfig.from_dict(dataset_cfg).vae_subfolder
    ).eval()
    with torch.no_grad():
        z = torch.from_numpy(np.asarray(latents, np.float32)) / vae.config.scaling_factor
        return vae.decode(z).sample.clamp(-1, 1).numpy()
