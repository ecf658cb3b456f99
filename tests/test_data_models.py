import numpy as np
import pytest
import torch
from conftest import REPO, TINY_UNET
from diffattr.artifacts import read_data, write_data
from diffattr.config import ModelConfig
from diffattr.data import prepare
from diffattr.errors import ConfigError, DatasetError, ModelError
from diffattr.models import build_unet, load_model, n_parameters, save_model


def test_digits_prepared_in_range(tmp_path):
    data = prepare({"name": "digits"})
    assert data.images.shape == (1797, 1, 8, 8)
    assert data.images.min() == -1.0 and data.images.max() == 1.0
    write_data(tmp_path / "d.h5", data, {"name": "digits"})
    back = read_data(tmp_path / "d.h5")
    np.testing.assert_array_equal(back.images, data.images)
    np.testing.assert_array_equal(back.ids, np.arange(1797))


def test_class_filter_keeps_stable_ids():
    data = prepare({"name": "digits", "classes": [3, 7], "per_class": 5})
    assert data.n == 10
    assert set(data.labels.tolist()) == {3, 7}
    full = prepare({"name": "digits"})
    np.testing.assert_array_equal(full.images[data.ids], data.images)


def test_bad_dataset_errors_are_clear(tmp_path):
    with pytest.raises(ConfigError, match="unknown dataset"):
        prepare({"name": "nope"})
    with pytest.raises(ConfigError, match="lacks"):
        prepare({"name": "digits", "classes": [42]})
    with pytest.raises(DatasetError, match="prepare_data"):
        read_data(tmp_path / "missing.h5")


def test_default_model_size_and_roundtrip(tmp_path, scheduler):
    import yaml

    cfg = yaml.safe_load((REPO / "config" / "config.yaml").read_text())
    model = build_unet(ModelConfig.from_dict(cfg["model"]), (1, 8, 8))
    assert n_parameters(model) == 109_721  # the number config/config.yaml states
    small = build_unet(ModelConfig.from_dict(TINY_UNET), (1, 8, 8))
    save_model(small, scheduler, tmp_path / "m")
    assert (tmp_path / "m" / "diffusion_pytorch_model.safetensors").exists()
    loaded, sched = load_model(tmp_path / "m", "cpu")
    for a, b in zip(small.parameters(), loaded.parameters(), strict=True):
        assert torch.equal(a, b)
    assert sched.config.num_train_timesteps == 1000
    with pytest.raises(ModelError, match="train_model"):
        load_model(tmp_path / "nothing", "cpu")
