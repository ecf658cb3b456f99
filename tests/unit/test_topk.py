"""Top-k scoring (attribution.top_k): the streaming selection and its tie-break, shards merged
equal one pass over every example, the score-shard and merge-top-k stages equal the argsort of
the dense scores, and the readers (Run.top, figures, removals) and refusals (LDS, evaluate)."""

from __future__ import annotations

import dataclasses
import itertools
from pathlib import Path

import numpy as np
import pytest
from diffattr.artifacts import TopKFile, read_scores
from diffattr.config import RunConfig
from diffattr.counterfactual import top_influencers
from diffattr.errors import ArtifactError, ConfigError
from diffattr.evaluate_run import evaluate_scores
from diffattr.results import Run
from diffattr.topk import Running, merge, rank_dense
from test_stages import config, run_stage, write_inputs

N = 30


def reference(scores: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """The order top-k files promise, from a full sort of dense rows (..., n): positive =
    highest first, negative = lowest first, equal scores: the lower position first."""
    n = scores.shape[-1]
    flat = scores.reshape(-1, n)
    pos = np.stack([np.lexsort((np.arange(n), -row))[:k] for row in flat])
    neg = np.stack([np.lexsort((np.arange(n), row))[:k] for row in flat])
    return (
        pos.reshape(*scores.shape[:-1], -1),
        neg.reshape(*scores.shape[:-1], -1),
    )


@pytest.mark.parametrize("block", [1, 7, 64])
def test_streamed_top_k_equals_a_full_sort_ties_included(block):
    rng = np.random.default_rng(1)
    scores = rng.integers(-4, 5, (3, 5, 90)).astype(np.float32)  # many exact ties
    running = Running(15, 8)
    for lo in range(0, 90, block):
        hi = min(lo + block, 90)
        running.add(scores.reshape(15, 90)[:, lo:hi], np.arange(lo, hi))
    got = running.result()
    pos, neg = reference(scores, 8)
    assert np.array_equal(got.index[0].reshape(3, 5, 8), pos)
    assert np.array_equal(got.index[1].reshape(3, 5, 8), neg)
    rows = np.take_along_axis(scores, pos, -1)
    assert np.array_equal(got.score[0].reshape(3, 5, 8), rows)
    assert np.array_equal(rank_dense(scores, 8).index[0], pos)


def test_merged_shards_equal_one_pass_over_every_example():
    rng = np.random.default_rng(2)
    scores = np.round(rng.standard_normal((2, 4, 101)), 1).astype(np.float32)
    bounds = [0, 3, 40, 41, 101]  # uneven shards, one narrower than k
    parts = []
    for lo, hi in itertools.pairwise(bounds):
        running = Running(8, 6)
        running.add(scores.reshape(8, -1)[:, lo:hi], np.arange(lo, hi))
        got = running.result()
        parts.append(type(got)(got.index.reshape(2, 2, 4, -1), got.score.reshape(2, 2, 4, -1)))
    merged = merge(parts, 6)
    whole = rank_dense(scores, 6)
    assert np.array_equal(merged.index, whole.index)
    assert np.array_equal(merged.score, whole.score)
    assert not np.array_equal(merge(parts[:1], 6).index, whole.index)  # the merge matters


def top_k_config(k: int = 5, shards: int = 3) -> RunConfig:
    cfg = config()
    attribution = dataclasses.replace(cfg.attribution, top_k=k, batch_size=4, shards=shards)
    lds = dataclasses.replace(cfg.lds, enabled=False)
    return dataclasses.replace(cfg, attribution=attribution, lds=lds)


def score_in_shards(cfg, p, paths, method, shards=3):
    gradient = method == "journey_trak"
    inputs = {
        "kernels": paths["kernels"] if gradient else [],
        "target_features": paths["target_features"] if gradient else [],
        "train_features": paths["train_features"] if gradient else [],
    }
    common = {"method": method, "data": Path(p.data), "targets": Path(p.targets), **inputs}
    files = []
    for shard in range(shards):
        out = Path(p.top_k_shard(method, shard))
        run_stage("score-shard", cfg, **common, shard=shard, shards=shards, out=out)
        files.append(out)
    run_stage("merge-top-k", cfg, shard_files=files[::-1], out=Path(p.top_k(method)))
    dense = Path(p.run) / "dense" / f"{method}.h5"
    run_stage("score", cfg, **common, out=dense)
    return files, read_scores(dense).scores


@pytest.mark.parametrize("method", ["journey_trak", "pixel_similarity"])
def test_shard_jobs_and_merge_equal_the_argsort_of_dense_scores(tmp_path, method):
    cfg = top_k_config()
    p, data, targets, *_, paths = write_inputs(tmp_path, n=N)
    files, dense = score_in_shards(cfg, p, paths, method)
    with TopKFile(files[1]) as f:
        assert f.attrs["rows"] == [8, 20] and f.k == 5  # batches of 4: 2 | 3 | 3 batches
    pos, neg = reference(dense, 5)
    with TopKFile(p.top_k(method)) as f:
        kept = f.all()
        assert (f.method, f.k, f.n_train, f.steps) == (method, 5, N, [500, 0])
        assert np.array_equal(f.target_ids, targets.target_ids)
    assert np.array_equal(kept.index[0], pos) and np.array_equal(kept.index[1], neg)
    np.testing.assert_allclose(kept.score[0], np.take_along_axis(dense, pos, -1), rtol=1e-6)
    np.testing.assert_allclose(kept.score[1], np.take_along_axis(dense, neg, -1), rtol=1e-6)
    # through Run.top, as `diffattr top` reads it: the run has no dense scores/<method>.h5
    table = Run(tmp_path).top(method, target=2, step=0, k=3)
    assert list(table.sign) == ["+"] * 3 + ["−"] * 3
    assert list(table.position) == [*pos[1, 2, :3], *neg[1, 2, :3]]
    assert list(table.train_id) == list(data.ids[table.position])
    assert table.attrs["n_train"] == N
    with pytest.raises(ConfigError, match="keeps the top 5"):
        Run(tmp_path).top(method, target=2, step=0, k=6)
    with pytest.raises(ArtifactError, match=r"Run\.top"):
        Run(tmp_path).scores(method)


def test_merge_refuses_shards_that_do_not_tile_the_training_set(tmp_path):
    cfg = top_k_config()
    p, *_, paths = write_inputs(tmp_path, n=N)
    files, _ = score_in_shards(cfg, p, paths, "pixel_similarity")
    with pytest.raises(ArtifactError, match=r"do not tile|cover rows"):
        run_stage("merge-top-k", cfg, shard_files=files[::2], out=tmp_path / "merged.h5")


def test_removals_and_figures_read_the_top_k_file(tmp_path):
    cfg = top_k_config()
    p, *_, paths = write_inputs(tmp_path, n=N)
    _, dense = score_in_shards(cfg, p, paths, "journey_trak")
    with TopKFile(p.top_k("journey_trak")) as f:
        row = f.row(0, 1)
    assert np.array_equal(top_influencers(row, 4), top_influencers(dense[1, 1], 4))
    with pytest.raises(ConfigError, match=r"attribution\.top_k"):
        top_influencers(row, 6)
    out = tmp_path / "figures"
    figure = dict(scores=Path(p.top_k("journey_trak")), targets=Path(p.targets), data=Path(p.data))
    run_stage("figure-attributions", cfg, **figure, out=out)
    assert sorted(f.name for f in out.iterdir()) == ["target-0.png", "target-1.png"]


def test_the_lds_and_evaluate_need_dense_scores(tmp_path):
    cfg = config()
    values = cfg.to_dict()
    values["attribution"]["top_k"] = 5
    with pytest.raises(ConfigError, match="needs dense scores"):
        RunConfig.from_dict(values)
    values["attribution"]["top_k"] = 0
    with pytest.raises(ConfigError, match="top_k"):
        RunConfig.from_dict(values)
    p, *_, paths = write_inputs(tmp_path, n=N)
    score_in_shards(top_k_config(), p, paths, "random")
    with pytest.raises(ArtifactError, match="need dense scores"):
        read_scores(p.top_k("random"))  # what the LDS report reads
    with pytest.raises(ConfigError, match="exceeds the 30 training examples"):
        run_stage(
            "merge-top-k",
            top_k_config(k=31),
            shard_files=[Path(p.top_k_shard("random", 0))],
            out=tmp_path / "x.h5",
        )
    top_k_run = top_k_config()
    with pytest.raises(ArtifactError, match="need dense scores"):
        evaluate_scores(tmp_path, dataclasses.replace(top_k_run, run=tmp_path.name))
