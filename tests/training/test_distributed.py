"""2 processes under torchrun (gloo on CPU) against one process on the same global batch."""
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from fakes import fake_dataset_config
from tiny import tiny_config
from tinygpt.common.config import to_yaml

ENTRY = str(Path(__file__).with_name("entry.py"))
pytestmark = pytest.mark.slow


def write_cfg(root, out, batch, strategy="ddp", backbone=None) -> Path:
    cfg = tiny_config(root)
    if backbone is not None:
        backbone(cfg.model)
    cfg.datasets = {"fake": fake_dataset_config()}
    cfg.model.llm.lora.dropout = 0.0
    for key, value in dict(num_workers=0, output_dir=str(out), batch_size_train=batch, max_epoch=1,
                           iters_per_epoch=3, init_lr=1e-3, warmup_steps=0, log_every=1, tensorboard=False,
                           distributed_strategy=strategy, grad_clip=0.0).items():
        setattr(cfg.run, key, value)
    path = out.with_suffix(".yaml")
    path.write_text(to_yaml(cfg))
    return path


def run(args, env_extra=None):
    env = {**os.environ, "OMP_NUM_THREADS": "1", **(env_extra or {})}
    # Own process group, so a hung run is killed with its workers instead of leaving them behind.
    proc = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
                            start_new_session=True)
    try:
        out, err = proc.communicate(timeout=300)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        out, err = proc.communicate()
        pytest.fail("torchrun did not finish in 300 s:\n" + out[-3000:] + err[-3000:])
    assert proc.returncode == 0, out[-3000:] + err[-3000:]


def final_weights(out):
    return load_file(str(out / "checkpoint_final.safetensors"))


@pytest.fixture(scope="module")
def single(tiny_root, tmp_path_factory):
    out = tmp_path_factory.mktemp("single") / "run"
    run([sys.executable, ENTRY, "--cfg-path", str(write_cfg(tiny_root, out, batch=8))])
    return final_weights(out)


@pytest.mark.parametrize("strategy", ["ddp", "fsdp"])
def test_two_ranks_match_one_process_on_the_same_global_batch(strategy, single, tiny_root, tmp_path):
    out = tmp_path / "run"
    cfg = write_cfg(tiny_root, out, batch=4, strategy=strategy)
    torchrun = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2"]
    run(torchrun + [ENTRY, "--cfg-path", str(cfg)])
    got = final_weights(out)
    assert got.keys() == single.keys()
    for name, want in single.items():
        torch.testing.assert_close(got[name], want, rtol=1e-4, atol=2e-6, msg=name)


def qwen_siglip_mlp(directory: Path):
    """A config edit: a tiny Qwen2 + SigLIP + MLP backbone saved under `directory` (once)."""
    from backbones import save_llm, save_tower

    if not (directory / "qwen").exists():
        save_llm("qwen2", directory / "qwen", vocab_size=512)
        save_tower("siglip", directory / "siglip")

    def edit(m):
        m.llm.family, m.llm.hf_config, m.llm.weights = "auto", str(directory / "qwen"), str(directory / "qwen")
        m.vision.kind, m.vision.hf_config = "siglip", str(directory / "siglip")
        m.vision.weights, m.vision.ln_vision, m.connector.kind = str(directory / "siglip"), False, "mlp"
    return edit


@pytest.mark.parametrize("strategy", ["ddp", "fsdp"])
def test_any_backbone_two_ranks_match_one_process(strategy, tiny_root, tmp_path):
    edit = qwen_siglip_mlp(tmp_path / "hf")
    run([sys.executable, ENTRY, "--cfg-path", str(write_cfg(tiny_root, tmp_path / "single", 8, backbone=edit))])
    cfg = write_cfg(tiny_root, tmp_path / "run", batch=4, strategy=strategy, backbone=edit)
    torchrun = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2"]
    run(torchrun + [ENTRY, "--cfg-path", str(cfg)])
    single, got = final_weights(tmp_path / "single"), final_weights(tmp_path / "run")
    assert got.keys() == single.keys() and any(k.startswith("llm.") for k in got)
    for name, want in single.items():
        torch.testing.assert_close(got[name], want, rtol=1e-4, atol=2e-6, msg=name)
