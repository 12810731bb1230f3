"""Frozen-feature cache (owned by the task): exact same loss and gradients as the uncached path,
hits skip the towers, new tower weights invalidate, trainable towers are refused."""
from __future__ import annotations

import pytest
import torch

import tinygpt.models.tinygpt_v  # noqa: F401  (registers the "tinygpt_v" arch)
from tiny import tiny_model_config
from tinygpt.common.config import Config, ConfigError
from tinygpt.models.build import build_model
from tinygpt.tasks import feature_cache
from tinygpt.tasks.image_text import ImageTextTask

IMG = "<Img><ImageHere></Img>"


def _model(root, **overrides):
    cfg = tiny_model_config(root)
    cfg.llm.lora.dropout = 0.0  # a deterministic forward, so two passes are comparable bit for bit
    for key, value in overrides.items():
        obj, name = cfg, key.split(".")
        for part in name[:-1]:
            obj = getattr(obj, part)
        setattr(obj, name[-1], value)
    torch.manual_seed(0)
    return build_model(cfg, "cpu", load_weights=False).train()


def _samples(model, batch=3):
    g = torch.Generator().manual_seed(1)
    size = model.cfg.vision.image_size
    return {"image": torch.randn(batch, 3, size, size, generator=g),
            "instruction_input": [f"{IMG} [vqa] what colour is the circle?"] * batch,
            "answer": ["red", "two squares", "a blue triangle"][:batch]}


def _task(model, cache_dir=None):
    """The training task over `model`, with the feature cache at `cache_dir` when given."""
    model.cfg.feature_cache = str(cache_dir) if cache_dir else None
    task = ImageTextTask(Config(model=model.cfg))
    task.setup(model)
    return task


def _loss(task, model, samples) -> torch.Tensor:
    step = task.train_step(model, samples)
    return step.total / step.units


def _loss_and_grads(task, model, samples):
    model.zero_grad(set_to_none=True)
    loss = _loss(task, model, samples)
    loss.backward()
    grads = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
    return loss.detach(), grads


def test_cached_loss_and_grads_equal_uncached(tiny_root, tmp_path):
    model = _model(tiny_root)
    samples = _samples(model)
    ref_loss, ref_grads = _loss_and_grads(_task(model), model, samples)

    task = _task(model, tmp_path / "cache")
    cache = task.feature_cache
    miss_loss, miss_grads = _loss_and_grads(task, model, samples)  # fills the cache
    assert (cache.misses, cache.hits) == (3, 0)
    assert len(list((tmp_path / "cache").rglob("*.pt"))) == 3

    # On a hit the towers must not run at all.
    def boom(*args, **kwargs):
        raise AssertionError("vision tower ran on a cache hit")

    model.visual_encoder.forward = boom
    hit_loss, hit_grads = _loss_and_grads(task, model, samples)
    assert (cache.misses, cache.hits) == (3, 3)
    for loss, grads in ((miss_loss, miss_grads), (hit_loss, hit_grads)):
        assert torch.equal(loss, ref_loss)
        assert grads.keys() == ref_grads.keys()
        for name, g in grads.items():
            assert torch.equal(g, ref_grads[name]), name


def test_a_temp_file_left_by_a_killed_cache_write_is_swept_at_start(tiny_root, tmp_path):
    import os
    import time

    model = _model(tiny_root)
    task = _task(model, tmp_path)
    _loss(task, model, _samples(model))
    leaf = next(task.feature_cache.root.rglob("*.pt")).parent
    killed, busy = leaf / ".tmp-killed.pt", leaf / ".tmp-still-writing.pt"
    killed.write_bytes(b"half a tensor")
    busy.write_bytes(b"being written by another rank")
    old = time.time() - feature_cache.STALE_TEMP_S - 1
    os.utime(killed, (old, old))
    _task(model, tmp_path)  # the next run's cache
    assert not killed.exists() and busy.exists()


@pytest.mark.parametrize("content", [b"garbage", b"", "nan", "vector"])
def test_an_unreadable_or_foreign_cache_entry_is_recomputed(tiny_root, tmp_path, content):
    model = _model(tiny_root)
    samples = _samples(model)
    reference = _loss(_task(model), model, samples)
    _loss(_task(model, tmp_path), model, samples)  # fills the cache
    entry = sorted((tmp_path).rglob("*.pt"))[0]
    if content == "nan":
        torch.save(torch.full_like(torch.load(entry), float("nan")), entry)
    elif content == "vector":
        torch.save(torch.zeros(7), entry)
    else:
        entry.write_bytes(content)
    task = _task(model, tmp_path)
    assert torch.equal(_loss(task, model, samples), reference)
    assert task.feature_cache.misses == 1


def test_partial_hits_compute_only_new_images(tiny_root, tmp_path):
    model = _model(tiny_root).eval()
    samples = _samples(model)
    task = _task(model, tmp_path)
    cache = task.feature_cache
    with torch.no_grad():
        _loss(task, model, {k: v[:2] for k, v in samples.items()})
        assert cache.misses == 2
        out = _loss(task, model, samples)
        ref_model = _model(tiny_root).eval()
        ref = _loss(_task(ref_model), ref_model, samples)
    assert (cache.misses, cache.hits) == (3, 2)
    torch.testing.assert_close(out, ref, rtol=1e-6, atol=1e-6)  # batch composition differs: ulp-level


def test_new_tower_weights_or_config_invalidate(tiny_root, tmp_path):
    model = _model(tiny_root)
    key = feature_cache.tower_key(model)
    assert feature_cache.tower_key(_model(tiny_root)) == key  # same seed, same weights: same key
    with torch.no_grad():
        model.visual_encoder.encoder.layers[0].mlp.fc1.weight[0, 0] += 1e-3
    changed = feature_cache.tower_key(model)
    assert changed != key
    with torch.no_grad():
        model.query_tokens[0, 0, 0] += 1e-3
    assert feature_cache.tower_key(model) not in (key, changed)
    other = _model(tiny_root, **{"qformer.cross_attention_freq": 1})
    assert feature_cache.tower_key(other) != key

    # A changed tower writes to a new directory: the stale entries are never read.
    samples = _samples(model)
    task = _task(model, tmp_path)
    _loss(task, model, samples)
    cache = task.feature_cache
    assert cache.misses == 3 and cache.root.name == feature_cache.tower_key(model)


@pytest.mark.parametrize("flag", ["vision.train", "qformer.train"])
def test_trainable_towers_are_refused(tiny_root, tmp_path, flag):
    model = _model(tiny_root, **{flag: True})
    with pytest.raises(ConfigError, match="frozen"):
        _task(model, tmp_path)
    assert _task(_model(tiny_root)).feature_cache is None


@pytest.mark.parametrize("tower,kind,connector", [("siglip", "siglip", "mlp"), ("dinov2", "hf", "resampler")])
def test_cache_is_exact_for_a_tower_without_a_qformer(tiny_root, tmp_path, tower, kind, connector):
    # SigLIP + MLP, and a DINOv2 `hf` tower of width 24 + a resampler into the width-64 Phi: the cache
    # holds the tower's features (what the connector starts from).
    from backbones import save_tower

    save_tower(tower, tmp_path / tower, **({"hidden_size": 24} if tower == "dinov2" else {}))
    model = _model(tiny_root, **{"vision.kind": kind, "vision.hf_config": str(tmp_path / tower),
                                 "vision.ln_vision": False, "connector.kind": connector,
                                 "connector.num_queries": 3, "connector.heads": 4})
    samples = _samples(model)
    ref_loss, ref_grads = _loss_and_grads(_task(model), model, samples)
    task = _task(model, tmp_path / "cache")
    _loss_and_grads(task, model, samples)  # fills
    hit_loss, hit_grads = _loss_and_grads(task, model, samples)
    assert (task.feature_cache.misses, task.feature_cache.hits) == (3, 3)
    assert torch.equal(hit_loss, ref_loss) and hit_grads.keys() == ref_grads.keys()
    for name, g in hit_grads.items():
        assert torch.equal(g, ref_grads[name]), name


def _auto_task(model, output_dir, min_scale=0.5, processor="blip2_image_train", setting="auto"):
    """The task a run with one dataset of `processor` would build, model.feature_cache = `setting`
    (min_scale 0.5: the config default, which TinyGPT-V's blip2_image_train ignores)."""
    from tinygpt.common.config import DatasetConfig, ProcessorConfig

    cfg = Config(model=model.cfg)
    cfg.model.feature_cache = setting
    cfg.run.output_dir = str(output_dir)
    cfg.datasets = {"coco_vqa": DatasetConfig(vis_processor=ProcessorConfig(
        name=processor, image_size=model.cfg.vision.image_size, min_scale=min_scale))}
    task = ImageTextTask(cfg)
    task.setup(model)
    return task


def test_auto_is_on_where_exact_beside_the_output_dir_and_equals_uncached(tiny_root, tmp_path, caplog):
    model = _model(tiny_root)
    samples = _samples(model)
    ref_loss, ref_grads = _loss_and_grads(_task(model), model, samples)
    with caplog.at_level("INFO", logger="tinygpt.tasks.feature_cache"):
        task = _auto_task(model, tmp_path / "runs" / "stage3")
    assert "auto: on" in caplog.text
    assert task.feature_cache.root.parent == tmp_path / "runs" / "feature_cache"
    for _ in range(2):  # a miss, then a hit (served from memory, then from disk in a new task)
        loss, grads = _loss_and_grads(task, model, samples)
        assert torch.equal(loss, ref_loss) and all(torch.equal(g, ref_grads[n]) for n, g in grads.items())
    assert (task.feature_cache.misses, task.feature_cache.hits) == (3, 3)
    # Another stage with the same towers (a new task, a new process) reads the same files.
    again = _auto_task(model, tmp_path / "runs" / "stage4", processor="blip2_image_eval")
    assert torch.equal(_loss(again, model, samples), ref_loss)
    assert (again.feature_cache.misses, again.feature_cache.hits) == (0, 3)


@pytest.mark.parametrize("case, why", [
    ("random crop", "random image transforms in datasets.coco_vqa"),
    ("towers train", "towers train (visual_encoder, ln_vision)"),
    ("null", None),
])
def test_auto_is_off_where_not_exact_or_asked_off(tiny_root, tmp_path, caplog, case, why):
    model = _model(tiny_root, **({"vision.train": True} if case == "towers train" else {}))
    with caplog.at_level("INFO", logger="tinygpt.tasks.feature_cache"):
        task = _auto_task(model, tmp_path / "stage", setting=None if case == "null" else "auto",
                          processor="lavis_blip2_image_train" if case == "random crop" else "blip2_image_train")
    assert task.feature_cache is None and not (tmp_path / "feature_cache").exists()
    if why:
        assert "auto: off" in caplog.text and why in caplog.text
