"""Procedural datasets (fontdigits, photopatches): rebuilt bit for bit from a seed, in range,
labelled, distinct, and equal to a direct numpy recomputation where the draw is switched off."""

import numpy as np
import pytest
import torch
from diffattr.artifacts import read_data, write_data
from diffattr.config import DatasetConfig
from diffattr.data import prepare
from diffattr.errors import ConfigError
from diffattr.procedural import (
    FONTS,
    Jitter,
    cut_photopatches,
    font_paths,
    glyph,
    photographs,
    render_fontdigits,
)


def test_fontdigits_are_keyed_by_the_seed_alone():
    a, labels, fonts = render_fontdigits(30, seed=0)
    b, labels_b, fonts_b = render_fontdigits(30, seed=0, batch=7)  # batching changes nothing
    assert np.array_equal(a, b) and np.array_equal(labels, labels_b)
    assert np.array_equal(fonts, fonts_b)
    c, _, _ = render_fontdigits(30, seed=1)
    assert not np.array_equal(a, c)


def test_fontdigits_range_labels_fonts_and_no_duplicates():
    images, labels, fonts = render_fontdigits(200, seed=3)
    assert images.shape == (2000, 1, 8, 8) and images.dtype == np.float32
    assert np.isfinite(images).all() and images.min() >= -1 and images.max() <= 1
    assert np.array_equal(np.bincount(labels), [200] * 10)
    assert len(np.unique(images.reshape(2000, -1), axis=0)) == 2000
    assert set(fonts.astype(str)) <= set(FONTS) and len(set(fonts)) > 15
    # ink is where a digit is: the mean image of a class is not the mean of another
    means = np.stack([images[labels == c].mean(0).ravel() for c in range(10)])
    assert np.corrcoef(means).max(initial=0, where=~np.eye(10, dtype=bool)) < 0.98


def test_fontdigits_without_jitter_are_the_area_averaged_glyphs():
    still = Jitter(
        rotation=0.0, scale=(1.0, 1.0), shear=0.0, shift=0.0, dilation=(0,), blur=(1e-4, 1e-4)
    )
    images, labels, fonts = render_fontdigits(3, seed=5, size=8, jitter=still)
    paths = {p.name: p for p in font_paths()}
    for image, label, font in zip(images, labels, fonts.astype(str), strict=True):
        ink = glyph(paths[font], int(label), 64)
        expected = ink.reshape(8, 8, 8, 8).mean((1, 3)) * 2 - 1
        np.testing.assert_allclose(image[0], expected, atol=2e-3)


def test_sixteen_pixel_digits_and_the_size_check():
    images, _, _ = render_fontdigits(2, seed=0, size=16)
    assert images.shape == (20, 1, 16, 16)
    with pytest.raises(ConfigError, match="image_size: 8"):
        DatasetConfig.from_dict({"name": "fontdigits"}).check_procedural()
    with pytest.raises(ConfigError, match="image_size: 8"):
        prepare({"name": "photopatches", "image_size": 12})


def test_photopatches_are_area_averaged_crops_of_their_photograph():
    images, labels, names, corners = cut_photopatches(300, seed=2, size=8, scale=2)
    photos, photo_names = photographs()
    assert names == photo_names and "china" in names
    assert images.shape == (300, 1, 8, 8) and images.min() >= -1 and images.max() <= 1
    assert len(np.unique(images.reshape(300, -1), axis=0)) == 300
    for image, label, (y, x) in zip(images[:40], labels[:40], corners[:40], strict=True):
        crop = photos[label][y : y + 16, x : x + 16]
        expected = crop.reshape(8, 2, 8, 2).mean((1, 3)) * 2 - 1
        np.testing.assert_allclose(image[0], expected, atol=1e-6)
        assert image.std() >= 0.01
    again, *_ = cut_photopatches(300, seed=2, size=8, scale=2)
    assert np.array_equal(images, again)


def test_registry_loaders_record_seed_and_round_trip(tmp_path):
    cfg = {"name": "fontdigits", "image_size": 8, "per_class": 6, "classes": [1, 7], "seed": 4}
    data = prepare(cfg)
    assert data.n == 12 and set(data.labels.tolist()) == {1, 7}
    assert np.array_equal(prepare({**cfg, "seed": 4}).images, data.images)
    assert not np.array_equal(prepare({**cfg, "seed": 5}).images, data.images)
    write_data(tmp_path / "data.h5", data, cfg)
    back = read_data(tmp_path / "data.h5")
    assert np.array_equal(back.images, data.images) and back.config["seed"] == 4
    assert back.extra["font"].shape == (12,)
    patches = prepare({"name": "photopatches", "image_size": 8, "limit": 20, "seed": 0})
    assert patches.n == 20 and patches.class_names[0] == "china"
    assert torch.from_numpy(patches.images).abs().max() <= 1
