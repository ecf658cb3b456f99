"""CIFAR-10 and MS COCO loaders on data in the official formats written by the tests."""

import os
import pickle

import numpy as np
import pytest
import torch
from diffattr.data import (
    DatasetError,
    coco_captions,
    load_square_image,
    prepare,
    read_cifar10,
    restricted_load,
)
from diffattr.errors import ConfigError
from synthetic import (
    cifar_arrays,
    write_cifar_archive,
    write_coco,
    write_image_folder,
    write_tiny_encoders,
)


@pytest.mark.parametrize("fmt", ["binary", "python"])
def test_cifar_archives_read_in_both_formats(tmp_path, fmt):
    archive = write_cifar_archive(tmp_path / f"cifar-10-{fmt}.tar.gz", fmt)
    (train, train_y), (test, test_y) = cifar_arrays()
    x, y = read_cifar10(archive, "train")
    assert np.array_equal(x, train) and np.array_equal(y, train_y)
    x, y = read_cifar10(archive, "test")
    assert np.array_equal(x, test) and np.array_equal(y, test_y)
    import tarfile

    with tarfile.open(archive) as tar:  # the extracted folder reads the same
        tar.extractall(tmp_path / "x", filter="data")
    x2, _ = read_cifar10(tmp_path / "x", "test")
    assert np.array_equal(x2, test)


def test_cifar2_class_filter_and_scaling(tmp_path):
    archive = write_cifar_archive(tmp_path / "c.tar.gz", "binary", n_train=100)
    data = prepare({"name": "cifar10", "root": str(archive), "classes": [1, 7], "per_class": 4})
    assert data.n == 8 and set(data.labels.tolist()) == {1, 7}
    assert data.images.shape == (8, 3, 32, 32) and data.images.dtype == np.float32
    assert data.images.min() >= -1.0 and data.images.max() <= 1.0
    (train, _), _ = cifar_arrays(100)
    np.testing.assert_allclose(data.images[0], train[data.ids[0]] / 127.5 - 1, atol=1e-6)


class Evil:
    def __reduce__(self):
        return (os.system, ("echo pwned",))


def test_restricted_unpickler_refuses_code():
    with pytest.raises(pickle.UnpicklingError, match="refusing"):
        restricted_load(pickle.dumps({b"data": Evil()}))
    ok = restricted_load(pickle.dumps({b"data": np.arange(3), b"labels": [1, 2]}, protocol=2))
    assert ok[b"labels"] == [1, 2]


def test_missing_or_broken_cifar_says_what_to_do(tmp_path):
    with pytest.raises(DatasetError, match="Download the CIFAR-10"):
        read_cifar10(tmp_path / "nope")
    with pytest.raises(ConfigError, match=r"dataset\.root"):
        prepare({"name": "cifar10"})
    (tmp_path / "cifar-10-batches-bin").mkdir()
    for i in range(1, 6):
        (tmp_path / "cifar-10-batches-bin" / f"data_batch_{i}.bin").write_bytes(b"x" * 10)
    with pytest.raises(DatasetError, match="not a CIFAR-10 binary batch"):
        read_cifar10(tmp_path)


def test_coco_loader_encodes_with_tiny_pretrained_models(tmp_path):
    from diffusers import AutoencoderKL
    from transformers import CLIPTextModel, CLIPTokenizer

    root = write_coco(tmp_path / "coco", n_images=5)
    enc = write_tiny_encoders(tmp_path / "enc")
    cfg = {
        "name": "mscoco",
        "root": str(root),
        "image_size": 16,
        "max_length": 8,
        "vae": str(enc),
        "text_encoder": str(enc),
        "prompts": ["a red cat"],
        "device": "cpu",
    }
    data = prepare(cfg)
    assert data.images.shape == (5, 4, 8, 8)
    assert data.extra["caption_embeddings"].shape == (5, 5, 8, 16)
    assert data.extra["prompt_embeddings"].shape == (1, 8, 16)
    assert data.conditional and (data.labels == -1).all()
    files, caps = coco_captions(root / "annotations" / "captions_train2017.json")
    first = sorted(files)[0]
    vae = AutoencoderKL.from_pretrained(enc, subfolder="vae")
    img = torch.from_numpy(load_square_image(root / "train2017" / files[first], 16))[None]
    with torch.no_grad():
        ref = vae.encode(img).latent_dist.mean * vae.config.scaling_factor
    np.testing.assert_allclose(data.images[0], ref[0].numpy(), rtol=1e-4, atol=1e-5)
    tok = CLIPTokenizer.from_pretrained(enc, subfolder="tokenizer")
    text = CLIPTextModel.from_pretrained(enc, subfolder="text_encoder")
    ids = tok(
        [caps[first][0]], padding="max_length", max_length=8, truncation=True, return_tensors="pt"
    ).input_ids
    with torch.no_grad():
        emb = text(ids).last_hidden_state[0].numpy()
    np.testing.assert_allclose(data.extra["caption_embeddings"][0, 0], emb, rtol=2e-3, atol=2e-3)
    # Every image keeps 5 captions; an image with fewer has its own cycled (j mod its count).
    short = 0
    for row, image_id in enumerate(sorted(i for i in files if caps.get(i))):
        own = caps[image_id]
        short += len(own) < 5
        stored = [c.decode() for c in data.extra["captions"][row]]
        assert stored == [own[c % len(own)] for c in range(5)], image_id
    assert short > 0, "the synthetic COCO set must include images with fewer than 5 captions"


def test_coco_errors_name_the_missing_file(tmp_path):
    with pytest.raises(DatasetError, match=r"captions_train2017\.json"):
        coco_captions(tmp_path / "annotations" / "captions_train2017.json")
    with pytest.raises(DatasetError, match="does not exist"):
        load_square_image(tmp_path / "x.jpg", 16)
    bad = tmp_path / "bad.json"
    bad.write_text("{}")
    with pytest.raises(DatasetError, match="not a COCO captions file"):
        coco_captions(bad)


def test_square_crop_keeps_the_centre(tmp_path):
    from PIL import Image

    arr = np.zeros((20, 40, 3), np.uint8)
    arr[:, 10:30] = 255  # the centre square is white, the sides black
    Image.fromarray(arr).save(tmp_path / "a.png")
    out = load_square_image(tmp_path / "a.png", 10)
    assert out.shape == (3, 10, 10) and out.min() > 0.9


def test_image_folder_dataset_labels_from_subfolders(tmp_path):
    pixels = write_image_folder(tmp_path / "imgs")
    data = prepare({"name": "folder", "root": str(tmp_path / "imgs"), "image_size": 8})
    assert data.images.shape == (6, 3, 8, 8) and data.images.dtype == np.float32
    assert data.labels.tolist() == [0, 0, 0, 1, 1, 1] and data.class_names == ["cat", "dog"]
    assert data.ids.tolist() == list(range(6))
    assert data.extra["files"][4].decode() == "dog/1.png"
    assert data.images.min() >= -1 and data.images.max() <= 1
    # the centre square (10×10 of 12×10), resized: a direct PIL computation of the same
    from PIL import Image

    im = Image.fromarray(pixels[1, 1]).crop((1, 0, 11, 10)).resize((8, 8), Image.BICUBIC)
    expected = np.asarray(im, np.float32).transpose(2, 0, 1) / 127.5 - 1
    np.testing.assert_allclose(data.images[4], expected, atol=1e-6)
    kept = prepare(
        {"name": "folder", "root": str(tmp_path / "imgs"), "image_size": 8, "per_class": 2}
    )
    assert kept.labels.tolist() == [0, 0, 1, 1] and kept.ids.tolist() == [0, 1, 3, 4]


def test_image_folder_errors_name_the_folder_and_the_layout(tmp_path):
    with pytest.raises(DatasetError, match="one subfolder per class"):
        prepare({"name": "folder", "root": str(tmp_path / "missing"), "image_size": 8})
    (tmp_path / "flat").mkdir()
    with pytest.raises(DatasetError, match="no class subfolders"):
        prepare({"name": "folder", "root": str(tmp_path / "flat"), "image_size": 8})
    (tmp_path / "flat" / "empty").mkdir()
    with pytest.raises(DatasetError, match="holds no images"):
        prepare({"name": "folder", "root": str(tmp_path / "flat"), "image_size": 8})
    (tmp_path / "bad" / "a").mkdir(parents=True)
    (tmp_path / "bad" / "a" / "x.png").write_bytes(b"not a png")
    with pytest.raises(DatasetError, match=r"x\.png is not a readable image"):
        prepare({"name": "folder", "root": str(tmp_path / "bad"), "image_size": 8})


def test_target_images_are_shaped_like_the_training_images(tmp_path):
    """Grey training images: PIL's L conversion of the centre square, resized, in [-1, 1];
    files sorted by name; a folder without images is one line."""
    from diffattr.data import load_target_images
    from PIL import Image

    pixels = write_image_folder(tmp_path / "imgs", classes=("x",), per_class=2)
    images, files = load_target_images(tmp_path / "imgs" / "x", (1, 8, 8))
    assert images.shape == (2, 1, 8, 8) and files == ["0.png", "1.png"]
    grey = Image.fromarray(pixels[0, 1]).convert("L").crop((1, 0, 11, 10))
    expected = np.asarray(grey.resize((8, 8), Image.BICUBIC), np.float32) / 127.5 - 1
    np.testing.assert_array_equal(images[1, 0], expected)
    rgb, _ = load_target_images(tmp_path / "imgs" / "x", (3, 8, 8))
    assert rgb.shape == (2, 3, 8, 8)
    (tmp_path / "empty").mkdir()
    with pytest.raises(DatasetError, match="holds no images"):
        load_target_images(tmp_path / "empty", (1, 8, 8))
