"""The training loop on a tiny model: accumulation, resume, files written."""
import json
import os

import pytest
import torch

import tinygpt
from fakes import fake_dataset_config
from tiny import tiny_config
from tinygpt.common import dist
from tinygpt.common.registry import registry
from tinygpt.runners.iter_runner import IterRunner
from tinygpt.tasks.image_text import ImageTextTask

CPU = torch.device("cpu")
ONE = dist.DistInfo(rank=0, local_rank=0, world_size=1, is_main=True)


def make_cfg(root, out, **run):
    cfg = tiny_config(root)
    cfg.datasets = {"fake": fake_dataset_config()}
    cfg.model.llm.lora.dropout = 0.0  # dropout masks would differ between the runs compared
    cfg.run.num_workers = 0
    cfg.run.output_dir = str(out)
    cfg.run.init_lr, cfg.run.min_lr, cfg.run.warmup_steps = 1e-3, 1e-4, 2
    cfg.run.tensorboard = False
    for k, v in run.items():
        setattr(cfg.run, k, v)
    return cfg


def make_runner(cfg):
    torch.manual_seed(0)
    model = tinygpt.build_model(cfg, CPU)
    return IterRunner(cfg, model, ImageTextTask(cfg), CPU, ONE)


def trainable(model):
    return {n: p.detach().clone() for n, p in model.named_parameters() if p.requires_grad}


def first_step_grads(cfg):
    runner = make_runner(cfg)
    captured = {}

    def record(closure=None):
        for n, p in runner.model.named_parameters():
            if p.grad is not None:
                captured[n] = p.grad.clone()

    runner.optimizer.step = record
    runner.run.max_epoch, runner.run.iters_per_epoch, runner.total_steps = 1, 1, 1
    runner.run.grad_clip = 0.0
    runner.train()
    return captured


@pytest.mark.parametrize("loss_reduction", ["token", "sample"])
def test_two_accumulated_batches_of_4_give_the_gradient_of_one_batch_of_8(tiny_root, tmp_path, loss_reduction):
    cfgs = [make_cfg(tiny_root, tmp_path / "a", batch_size_train=8, accum_grad_iters=1),
            make_cfg(tiny_root, tmp_path / "b", batch_size_train=4, accum_grad_iters=2)]
    for cfg in cfgs:
        cfg.model.loss_reduction = loss_reduction
    big, small = (first_step_grads(cfg) for cfg in cfgs)
    assert big.keys() == small.keys() and len(big) > 0
    for name in big:
        torch.testing.assert_close(small[name], big[name], rtol=1e-4, atol=1e-6, msg=name)


@pytest.mark.parametrize("cell_classes", [0, 5], ids=["plain", "with_cell_head"])
def test_resumed_run_ends_with_the_same_weights_as_an_uninterrupted_one(tiny_root, tmp_path, cell_classes):
    # Dropout ON everywhere (LoRA 0.1, the trained Q-Former's own): a resumed run must draw the same
    # masks as the uninterrupted one, so nothing may consume the global RNG differently after a resume.
    steps = dict(max_epoch=2, iters_per_epoch=3, batch_size_train=4, log_every=1, save_every=2)

    def cfg_for(out, **run):
        cfg = make_cfg(tiny_root, out, **steps, **run)
        cfg.model.llm.lora.dropout = 0.1
        cfg.model.qformer.train, cfg.model.qformer.cell_classes = bool(cell_classes), cell_classes
        return cfg

    full = make_runner(cfg_for(tmp_path / "full"))
    full.train()

    part = tmp_path / "part"
    runner = make_runner(cfg_for(part))
    runner.total_steps = 5  # killed after step 5 (mid-epoch); the last checkpoint is step 4's
    runner.train()
    resume = os.path.join(part, "checkpoint_step0000004.pt")
    assert os.path.exists(resume)
    (part / ".tmp-killed-save.pt").write_bytes(b"half a checkpoint")  # a save the kill interrupted

    resumed = make_runner(cfg_for(part, resume_ckpt_path=resume))
    assert resumed.step == 4
    resumed.train()
    want, got = trainable(full.model), trainable(resumed.model)
    assert ("cell_head.weight" in want) == bool(cell_classes)
    for name in want:
        torch.testing.assert_close(got[name], want[name], rtol=0, atol=1e-6, msg=name)
    assert not list(part.glob(".tmp-*"))
    # Step 5 ran twice (killed run, then resumed) but is logged once, with the resumed run's figures.
    rows = [json.loads(line) for line in (part / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == [1, 2, 3, 4, 5, 6]
    full_rows = [json.loads(line) for line in (tmp_path / "full" / "metrics.jsonl").read_text().splitlines()]
    assert [r["loss"] for r in rows] == pytest.approx([r["loss"] for r in full_rows], abs=1e-6)
    csv_steps = [line.split(",")[0] for line in (part / "metrics.csv").read_text().splitlines()[1:]]
    assert csv_steps == ["1", "2", "3", "4", "5", "6"]


def test_train_main_writes_checkpoint_metrics_and_plot(tiny_root, tmp_path):
    cfg = make_cfg(tiny_root, tmp_path / "run", max_epoch=1, iters_per_epoch=4, batch_size_train=4, log_every=2,
                   tensorboard=True)
    summary = make_runner(cfg).train()
    out = tmp_path / "run"
    for name in ("config.yaml", "metrics.jsonl", "metrics.csv", "loss_curve.png", "checkpoint_final.safetensors",
                 "checkpoint_step0000004.pt"):
        assert (out / name).exists(), name
    assert (out / "tensorboard").is_dir()
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == [2, 4]
    assert all(r["loss"] > 0 and r["samples_per_s"] > 0 for r in rows)
    assert summary["steps"] == 4
    assert summary["skipped_samples"] == "data: nothing skipped"  # the run's loader's own count

    # The final weights load into a fresh model as a `model.ckpt` entry.
    cfg2 = make_cfg(tiny_root, tmp_path / "next")
    cfg2.model.ckpt = [str(out / "checkpoint_final.safetensors")]
    reloaded = tinygpt.build_model(cfg2, CPU)
    final = make_runner(cfg)  # fresh weights differ...
    trained = trainable(reloaded)
    assert any(not torch.equal(trained[n], p) for n, p in trainable(final.model).items())


def test_held_out_loss_every_valid_every_steps_is_the_task_loss_over_the_whole_split(tiny_root, tmp_path):
    # valid_every 3 with log_every 2: validation rows at 3 and at the last step (4), beside the log rows.
    cfg = make_cfg(tiny_root, tmp_path / "run", max_epoch=1, iters_per_epoch=4, batch_size_train=4, log_every=2,
                   valid_every=3, batch_size_eval=5)
    cfg.valid_datasets = {"held_out": fake_dataset_config()}
    runner = make_runner(cfg)
    runner.train()
    rows = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert [(r["step"], "valid_loss" in r) for r in rows] == [(2, False), (3, True), (4, True)]
    header = (tmp_path / "run" / "metrics.csv").read_text().splitlines()[0].split(",")
    assert "valid_loss" in header  # the CSV header widened when the first held-out loss arrived

    # The logged number is the task's loss over all 64 held-out samples (13 batches of <= 5), in eval
    # mode, with the final weights: recompute it by hand.
    from tinygpt.datasets.loader import build_valid_loader

    model, task = runner.model.eval(), ImageTextTask(cfg)
    total = units = 0.0
    n_samples = 0
    for _, loader in build_valid_loader(cfg):
        for batch in loader:
            step = task.valid_step(model, batch)
            total, units = total + float(step.total), units + float(step.units)
            n_samples += len(batch["answer"])
    assert n_samples == 64
    assert rows[-1]["valid_loss"] == pytest.approx(total / units, rel=1e-5)
