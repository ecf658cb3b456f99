"""Procedural datasets, offline and unlimited, for benchmarks where models generalize.

``fontdigits``: the digits 0–9 of the fonts bundled with matplotlib, each drawn with a random
affine jitter (rotation, scale, shear, shift) and stroke width, blurred, rendered at 8× the
output side and area-downsampled (the bundled 8×8 digits were made the same way, from 32×32
bitmaps). ``photopatches``: grey square patches cut at random from the photographs bundled with
scikit-learn (and scikit-image where installed), labelled by their photograph. Both are keyed by
a seed alone, so a dataset is rebuilt bit for bit from its config; ink / light is +1.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .errors import DatasetError
from .seeding import derive_seed

FONTS = (
    *(f"DejaVuSans{s}.ttf" for s in ("", "-Bold", "-Oblique", "-BoldOblique")),
    *(f"DejaVuSerif{s}.ttf" for s in ("", "-Bold", "-Italic", "-BoldItalic")),
    *(f"DejaVuSansMono{s}.ttf" for s in ("", "-Bold", "-Oblique", "-BoldOblique")),
    *(f"STIXGeneral{s}.ttf" for s in ("", "Bol", "Italic", "BolIta")),
    *(f"cm{s}10.ttf" for s in ("r", "b", "ss", "tt", "ti", "mi")),
)
"""The 22 text fonts of matplotlib's ``mpl-data/fonts/ttf`` that draw 0–9 as digits."""
SUPERSAMPLE = 8  # rendered at 8× the output side, then area-averaged


@dataclass(frozen=True)
class Jitter:
    """Ranges of the random draw per image (uniform): rotation in degrees, scale, shear, shift as
    a fraction of the side, stroke dilation in supersampled pixels, blur σ in output pixels."""

    rotation: float = 12.0
    scale: tuple[float, float] = (0.85, 1.05)
    shear: float = 0.25
    shift: float = 0.08
    dilation: tuple[int, ...] = (1, 2, 3, 4)
    blur: tuple[float, float] = (0.25, 0.6)


def font_paths() -> list[Path]:
    """The bundled fonts of :data:`FONTS` (a missing one is an error: the data would change)."""
    import matplotlib

    folder = Path(matplotlib.get_data_path()) / "fonts" / "ttf"
    missing = [name for name in FONTS if not (folder / name).exists()]
    if missing:
        raise DatasetError(
            f"fontdigits needs matplotlib's bundled fonts {missing} (not in {folder}); "
            "install the matplotlib version of constraints.txt"
        )
    return [folder / name for name in FONTS]


def glyph(path: Path, digit: int, side: int) -> np.ndarray:
    """Digit ``digit`` of the font at ``path`` as ink in [0, 1] on a (side, side) canvas, its
    box scaled to 85 % of the side in height (aspect kept) and centred."""
    import torch
    from matplotlib import ft2font

    font = ft2font.FT2Font(str(path))
    font.set_size(4 * side, 72)
    font.set_text(str(digit))
    font.draw_glyphs_to_bitmap(antialiased=True)
    ink = np.asarray(font.get_image(), dtype=np.float32) / 255.0
    rows, cols = np.nonzero(ink > 0.05)
    ink = ink[rows.min() : rows.max() + 1, cols.min() : cols.max() + 1]
    height = round(0.85 * side)
    width = max(1, min(side - 2, round(ink.shape[1] * height / ink.shape[0])))
    resized = torch.nn.functional.interpolate(
        torch.from_numpy(ink)[None, None], (height, width), mode="area"
    )[0, 0].numpy()
    canvas = np.zeros((side, side), np.float32)
    top, left = (side - height) // 2, (side - width) // 2
    canvas[top : top + height, left : left + width] = resized
    return canvas


def render_fontdigits(
    per_class: int, seed: int, size: int = 8, jitter: Jitter = Jitter(), batch: int = 4096
):
    """``per_class`` images of each digit, (10·per_class, 1, size, size) in [-1, 1], with labels
    and the font of each image. Image i's font and jitter are drawn from ``seed`` alone."""
    import torch
    import torch.nn.functional as F

    side = size * SUPERSAMPLE
    paths = font_paths()
    prototypes = torch.from_numpy(
        np.stack([[glyph(p, d, side) for d in range(10)] for p in paths])
    )  # (fonts, 10, side, side)
    n = 10 * per_class
    labels = np.repeat(np.arange(10), per_class)
    gen = torch.Generator().manual_seed(derive_seed(seed, "fontdigits", per_class, size))
    fonts = torch.randint(len(paths), (n,), generator=gen)

    def uniform(lo: float, hi: float) -> torch.Tensor:
        return lo + (hi - lo) * torch.rand(n, generator=gen)

    angle = torch.deg2rad(uniform(-jitter.rotation, jitter.rotation))
    scale = uniform(*jitter.scale)
    shear = uniform(-jitter.shear, jitter.shear)
    shift = 2 * jitter.shift * (2 * torch.rand(n, 2, generator=gen) - 1)  # sides span 2
    dilation = torch.tensor(jitter.dilation)[
        torch.randint(len(jitter.dilation), (n,), generator=gen)
    ]
    blur = uniform(*jitter.blur)
    # output → input map of affine_grid: (rotation · shear · scale)⁻¹ applied about the centre
    cos, sin = torch.cos(angle), torch.sin(angle)
    forward = (
        torch.stack(
            [torch.stack([cos, cos * shear - sin], 1), torch.stack([sin, sin * shear + cos], 1)], 1
        )
        * scale[:, None, None]
    )
    inverse = torch.linalg.inv(forward)
    theta = torch.cat([inverse, -inverse @ shift[:, :, None]], 2)
    out = np.empty((n, 1, size, size), np.float32)
    for lo in range(0, n, batch):
        rows = slice(lo, min(n, lo + batch))
        ink = prototypes[fonts[rows], torch.from_numpy(labels[rows])][:, None]
        for width in jitter.dilation:  # thicker strokes: a max filter of radius ``width``
            pick = dilation[rows] == width
            if width and pick.any():
                ink[pick] = F.max_pool2d(ink[pick], 2 * width + 1, stride=1, padding=width)
        grid = F.affine_grid(theta[rows], list(ink.shape), align_corners=False)
        ink = F.grid_sample(ink, grid, mode="bilinear", align_corners=False)
        small = F.avg_pool2d(ink, SUPERSAMPLE)
        out[rows] = _gaussian_blur(small, blur[rows]).clamp(0, 1).numpy() * 2 - 1
    return out, labels.astype(np.int64), np.array([paths[i].name for i in fonts], dtype="S")


def _gaussian_blur(images, sigma):
    """Each image blurred by its own Gaussian σ (output pixels), 5×5 kernel, edges zero."""
    import torch
    import torch.nn.functional as F

    offsets = torch.arange(-2, 3, dtype=torch.float32)
    k = torch.exp(-(offsets[None] ** 2) / (2 * sigma[:, None] ** 2))
    k = k / k.sum(1, keepdim=True)  # (n, 5)
    kernel = (k[:, :, None] * k[:, None, :])[:, None]  # (n, 1, 5, 5)
    n = len(images)
    out = F.conv2d(images.reshape(1, n, *images.shape[2:]), kernel, padding=2, groups=n)
    return out.reshape(images.shape)


# ---------------------------------------------------------------------------------------------
# photopatches

SKIMAGE_PHOTOS = (
    "astronaut",
    "camera",
    "coffee",
    "chelsea",
    "coins",
    "moon",
    "page",
    "text",
    "brick",
    "grass",
    "gravel",
    "rocket",
    "immunohistochemistry",
    "hubble_deep_field",
    "retina",
    "cat",
)


def photographs() -> tuple[list[np.ndarray], list[str]]:
    """Grey photographs in [0, 1]: scikit-learn's two, then scikit-image's bundled ones that
    load offline (an optional package: without it, scikit-learn's alone)."""
    from sklearn.datasets import load_sample_images

    bunch = load_sample_images()
    names = [Path(f).with_suffix("").name for f in bunch.filenames]
    photos = [_grey(image) for image in bunch.images]
    try:
        from skimage import data as skdata
    except ImportError:
        return photos, names
    for name in SKIMAGE_PHOTOS:
        try:
            image = getattr(skdata, name)()
        except Exception:  # not bundled in this version (it would download)
            continue
        photos.append(_grey(image))
        names.append(name)
    return photos, names


def _grey(image: np.ndarray) -> np.ndarray:
    image = np.asarray(image, dtype=np.float64)
    if image.max() > 1.0:
        image = image / 255.0
    if image.ndim == 3:
        image = image[..., :3] @ np.array([0.2125, 0.7154, 0.0721])
    return image.astype(np.float32)


def cut_photopatches(n: int, seed: int, size: int = 8, scale: int = 2):
    """``n`` grey patches (n, 1, size, size) in [-1, 1] with their photograph as label: a square
    of side ``size·scale`` at a random position of a random photograph, area-downsampled by
    ``scale``; patches with almost no contrast (std < 0.02) or equal to one drawn before are
    drawn again (no two patches are the same)."""
    photos, names = photographs()
    rng = np.random.default_rng(derive_seed(seed, "photopatches", size, scale))
    side = size * scale
    out = np.empty((n, 1, size, size), np.float32)
    labels = np.empty(n, np.int64)
    where = np.empty((n, 2), np.int64)
    seen: set[bytes] = set()
    i = 0
    while i < n:
        label = int(rng.integers(len(photos)))
        photo = photos[label]
        y, x = (int(rng.integers(s - side + 1)) for s in photo.shape)
        patch = photo[y : y + side, x : x + side].reshape(size, scale, size, scale).mean((1, 3))
        value = (patch * 2 - 1).astype(np.float32)
        if patch.std() < 0.02 or value.tobytes() in seen:
            continue
        seen.add(value.tobytes())
        out[i, 0], labels[i], where[i] = value, label, (y, x)
        i += 1
    return out, labels, names, where
