import numpy as np
import pytest
import torch
from conftest import COND_UNET, REPO, TINY_UNET
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
    assert (tmp_path / "m" / "unet" / "diffusion_pytorch_model.safetensors").exists()
    loaded, sched = load_model(tmp_path / "m", "cpu")
    for a, b in zip(small.parameters(), loaded.parameters(), strict=True):
        assert torch.equal(a, b)
    assert sched.config.num_train_timesteps == 1000
    with pytest.raises(ModelError, match="train_model"):
        load_model(tmp_path / "nothing", "cpu")


def test_saved_models_open_in_ddpm_pipeline_and_flat_folders_still_load(tmp_path, scheduler):
    """diffusers' own DDPMPipeline opens a saved checkpoint (same weights, same scheduler), and
    a flat save_pretrained folder (earlier versions' layout) still loads."""
    from diffusers import DDPMPipeline

    small = build_unet(ModelConfig.from_dict(TINY_UNET), (1, 8, 8))
    save_model(small, scheduler, tmp_path / "m")
    pipeline = DDPMPipeline.from_pretrained(tmp_path / "m")
    for a, b in zip(small.parameters(), pipeline.unet.parameters(), strict=True):
        assert torch.equal(a, b)
    assert pipeline.scheduler.alphas_cumprod.equal(scheduler.alphas_cumprod)
    assert pipeline.scheduler.config.prediction_type == scheduler.config.prediction_type
    small.save_pretrained(tmp_path / "flat")
    scheduler.save_pretrained(tmp_path / "flat")
    loaded, _ = load_model(tmp_path / "flat", "cpu", ModelConfig.from_dict(TINY_UNET))
    for a, b in zip(small.parameters(), loaded.parameters(), strict=True):
        assert torch.equal(a, b)


# ---------------------------------------------------------------------------------------------
# Caption embeddings stream from data.h5


def test_streamed_caption_embeddings_train_and_featurize_bit_for_bit(tmp_path):
    """read_data leaves caption embeddings on disk (StoredRows); training and featurization
    read them per batch and give exactly what the in-memory array gives."""
    from diffattr.artifacts import StoredRows
    from diffattr.config import DiffusionConfig, TrainConfig
    from diffattr.data import PreparedData
    from diffattr.diffusion import train
    from diffattr.draws import FeatureDraws, ModelDraws
    from diffattr.features import featurize_training, residual_weights
    from diffattr.models import build_scheduler
    from diffattr.projection import FactoredProjector

    rng = np.random.default_rng(0)
    captions = rng.standard_normal((10, 3, 4, 16)).astype(np.float32)
    data = PreparedData(
        images=rng.uniform(-1, 1, (10, 4, 8, 8)).astype(np.float32),
        labels=np.full(10, -1),
        ids=np.arange(10),
        class_names=[],
        name="toy",
        extra={"caption_embeddings": captions, "null_embedding": np.zeros((4, 16), np.float32)},
    )
    write_data(tmp_path / "data.h5", data, {})
    stored = read_data(tmp_path / "data.h5")
    streamed = stored.extra["caption_embeddings"]
    assert isinstance(streamed, StoredRows) and streamed.shape == captions.shape
    assert np.array_equal(np.asarray(streamed), captions)

    scheduler = build_scheduler(DiffusionConfig())
    recipe = TrainConfig.from_dict({"steps": 3, "batch_size": 6, "warmup_steps": 1})
    null = torch.zeros(4, 16)

    def trained(conditions):
        torch.manual_seed(0)
        model = build_unet(ModelConfig.from_dict(COND_UNET), (4, 8, 8))
        images = torch.from_numpy(data.images)
        train(
            model,
            scheduler,
            images,
            recipe,
            0,
            progress=False,
            conditions=conditions,
            null_condition=null,
        )
        return model

    in_memory, on_disk = trained(torch.from_numpy(captions)), trained(streamed)
    assert all(
        torch.equal(a, b)
        for a, b in zip(in_memory.state_dict().values(), on_disk.state_dict().values(), strict=True)
    )

    model = in_memory.eval()
    projector = FactoredProjector(model, 2, 2, 0, "projector")
    positions = np.arange(10)

    def features(conditions):
        member = ModelDraws(model, scheduler.alphas_cumprod, data.images, data.ids, 0, 0, 4)
        spec = FeatureDraws("loss", 2)
        return featurize_training(member, projector, spec, positions, conditions, progress=False)

    assert np.array_equal(features(captions), features(streamed))
    weights = [
        residual_weights(
            ModelDraws(model, scheduler.alphas_cumprod, data.images, data.ids, 0, 0, 4),
            positions,
            3,
            conditions,
        )
        for conditions in (captions, streamed)
    ]
    assert np.array_equal(*weights)
