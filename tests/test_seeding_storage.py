import h5py
import numpy as np
import pytest
import torch
from diffattr.seeding import derive_seed, generator
from diffattr.storage import atomic_path, create_h5, read_attrs


def test_derive_seed_is_a_function_of_keys():
    assert derive_seed(0, "train-draw", 1, 5, 2) == derive_seed(0, "train-draw", 1, 5, 2)
    seeds = {derive_seed(0, "x", i, k) for i in range(50) for k in range(10)}
    assert len(seeds) == 500
    assert derive_seed(0, "a") != derive_seed(0, "b")
    a = torch.randn(5, generator=generator(3, "z"))
    b = torch.randn(5, generator=generator(3, "z"))
    assert torch.equal(a, b)


def test_seed_keys_validated():
    with pytest.raises(ValueError):
        derive_seed(-1)
    with pytest.raises(TypeError):
        derive_seed(1.5)


def test_atomic_path_leaves_nothing_on_failure(tmp_path):
    target = tmp_path / "out.h5"
    with pytest.raises(RuntimeError), create_h5(target) as f:
        f.create_dataset("x", data=np.arange(3))
        raise RuntimeError("killed")
    assert not target.exists()
    assert list(tmp_path.iterdir()) == []


def test_atomic_directory_replaces_only_when_done(tmp_path):
    target = tmp_path / "model"
    with atomic_path(target) as tmp:
        tmp.mkdir()
        (tmp / "a").write_text("1")
        assert not target.exists()
    assert (target / "a").read_text() == "1"


def test_h5_attributes_roundtrip(tmp_path):
    path = tmp_path / "f.h5"
    with create_h5(path, {"method": "x", "cfg": {"a": [1, 2]}, "lam": 0.5, "none": None}) as f:
        f.create_dataset("d", data=np.zeros(2))
    with h5py.File(path) as f:
        attrs = read_attrs(f)
    assert attrs["method"] == "x"
    assert attrs["cfg"] == {"a": [1, 2]}
    assert attrs["lam"] == 0.5
    assert attrs["none"] is None
    assert attrs["package"] == "diffattr"
    assert "package_version" in attrs
