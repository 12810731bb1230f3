"""`train.py --cfg-path a.yaml b.yaml`: a recipe's stages trained one after another in one process
(what quickstart.sh does) give the weights of one process per stage, and every config is checked
before the first stage trains."""
import json

import pytest
import torch
from safetensors.torch import load_file

from fakes import fake_dataset_config
from tiny import tiny_config
from tinygpt import training
from tinygpt.common.config import to_yaml


def write_stages(root, out, tmp_path):
    """Two chained stages as YAML files: a (everything trains, LoRA dropout on) -> b (loads a)."""
    paths = []
    for name, ckpt in (("a", []), ("b", [str(out / "a" / "checkpoint_final.safetensors")])):
        cfg = tiny_config(root)
        cfg.datasets = {"fake": fake_dataset_config()}
        cfg.model.llm.lora.dropout = 0.1  # a mask drawn from the RNG: each stage must reseed as a fresh run
        cfg.model.ckpt = ckpt
        cfg.run.num_workers, cfg.run.tensorboard = 0, False
        cfg.run.output_dir = str(out / name)
        cfg.run.iters_per_epoch, cfg.run.batch_size_train, cfg.run.log_every = 3, 4, 1
        cfg.run.seed = 7 if name == "a" else 11
        path = tmp_path / f"{out.name}_{name}.yaml"
        path.write_text(to_yaml(cfg))
        paths.append(str(path))
    return paths


def test_two_stages_in_one_process_equal_one_process_each(tiny_root, tmp_path):
    together = write_stages(tiny_root, tmp_path / "together", tmp_path)
    apart = write_stages(tiny_root, tmp_path / "apart", tmp_path)
    assert training.main(["--cfg-path", *together]) == 0
    for path in apart:
        assert training.main(["--cfg-path", path]) == 0
    for stage in ("a", "b"):
        one, other = (load_file(str(tmp_path / run / stage / "checkpoint_final.safetensors"))
                      for run in ("together", "apart"))
        assert one.keys() == other.keys() and len(one) > 0
        for key in one:
            assert torch.equal(one[key], other[key]), f"stage {stage}: {key}"
        summary = json.loads((tmp_path / "together" / stage / "train_summary.json").read_text())
        assert summary["steps"] == 3 and summary["config"].endswith(f"together_{stage}.yaml")
        assert summary["wall_s"] > 0 and summary["cpu_s"] > 0
        assert summary["checkpoint"].endswith(f"{stage}/checkpoint_final.safetensors")


def test_a_bad_later_config_fails_before_the_first_stage_trains(tiny_root, tmp_path, capsys):
    first, second = write_stages(tiny_root, tmp_path / "run", tmp_path)
    with open(second, "a") as f:
        f.write("nonsense_section: {x: 1}\n")
    assert training.main(["--cfg-path", first, second]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "nonsense_section" in err[0] and second in err[0]
    assert not (tmp_path / "run" / "a").exists()


def test_two_configs_with_one_output_dir_are_refused(tiny_root, tmp_path, capsys):
    first, _ = write_stages(tiny_root, tmp_path / "run", tmp_path)
    assert training.main(["--cfg-path", first, first]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "run.output_dir" in err[0]
    assert not (tmp_path / "run" / "a").exists()


def test_a_finished_run_is_not_trained_into_unless_asked(tiny_root, tmp_path, capsys):
    first, _ = write_stages(tiny_root, tmp_path / "run", tmp_path)
    assert training.main(["--cfg-path", first]) == 0
    final = tmp_path / "run" / "a" / "checkpoint_final.safetensors"
    metrics = sorted(p.name for p in final.parent.iterdir())
    before = final.read_bytes()
    capsys.readouterr()
    assert training.main(["--cfg-path", first, "--options", "run.seed=99"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "holds a finished run" in err[0] and "--overwrite" in err[0]
    assert final.read_bytes() == before and sorted(p.name for p in final.parent.iterdir()) == metrics
    assert training.main(["--cfg-path", first, "--overwrite", "--options", "run.seed=99"]) == 0
    assert final.read_bytes() != before  # another seed: other weights, written where asked
