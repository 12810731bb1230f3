"""train.py under hostile input: a run that diverges stops at its first non-finite step and writes
nothing after it; every file it writes is strict JSON; and every bad input below is one line on
stderr naming the file / key, exit status 2, never a traceback."""
from __future__ import annotations

import io
import json
import tarfile
from pathlib import Path

import pytest
import yaml

from fakes import fake_dataset_config
from tiny import tiny_config
from tinygpt import training
from tinygpt.common.config import DatasetConfig, ProcessorConfig, to_yaml


def write_config(root, tmp_path, name="cfg", **run):
    """A tiny run on the in-memory fake dataset as a YAML file; `run` overrides run.* keys."""
    cfg = tiny_config(root)
    cfg.datasets = {"fake": fake_dataset_config()}
    cfg.run.num_workers, cfg.run.tensorboard = 0, False
    cfg.run.output_dir = str(tmp_path / name)
    cfg.run.iters_per_epoch, cfg.run.batch_size_train, cfg.run.log_every = 3, 4, 1
    for key, value in run.items():
        setattr(cfg.run, key, value)
    path = tmp_path / f"{name}.yaml"
    path.write_text(to_yaml(cfg))
    return str(path)


def strict_json(text: str):
    def refuse(constant):
        raise AssertionError(f"not strict JSON: {constant}")

    return json.loads(text, parse_constant=refuse)


def one_line_error(capsys, *words: str) -> str:
    err = capsys.readouterr().err.strip().splitlines()
    assert err and err[-1].startswith("train.py: error: "), err
    assert "Traceback" not in "\n".join(err)
    for word in words:
        assert word in err[-1], err[-1]
    return err[-1]


def test_a_diverging_run_stops_at_its_first_non_finite_step_naming_the_last_good_checkpoint(tiny_root, tmp_path,
                                                                                            capsys):
    # A finite but absurd learning rate: step 1's update is finite (a checkpoint is written), step 2's
    # loss is NaN.  log_every 100: the check does not wait for a log line to name the step.
    path = write_config(tiny_root, tmp_path, init_lr=1e30, warmup_lr=1e30, min_lr=1e30, warmup_steps=0,
                        iters_per_epoch=6, log_every=100, save_every=1)
    assert training.main(["--cfg-path", path]) == 2
    out = tmp_path / "cfg"
    line = one_line_error(capsys, "step 2 has a loss of nan",
                          f"the last good checkpoint is {out / 'checkpoint_step0000001.pt'}")
    assert "run.init_lr" in line
    assert sorted(p.name for p in out.iterdir()) == ["checkpoint_step0000001.pt", "config.yaml"]


def test_resuming_from_the_last_checkpoint_writes_a_strict_summary(tiny_root, tmp_path):
    first = write_config(tiny_root, tmp_path)
    assert training.main(["--cfg-path", first]) == 0
    last = tmp_path / "cfg" / "checkpoint_step0000003.pt"
    # The rows a kill cut short while they were appended: dropped at the resume, not a traceback.
    with open(tmp_path / "cfg" / "metrics.jsonl", "a") as f:
        f.write('{"step": 4, "lo')
    with open(tmp_path / "cfg" / "metrics.csv", "a") as f:
        f.write("4,0.5")
    again = write_config(tiny_root, tmp_path, resume_ckpt_path=str(last))
    assert training.main(["--cfg-path", again]) == 0  # nothing left to train
    summary = strict_json((tmp_path / "cfg" / "train_summary.json").read_text())
    assert summary["steps"] == 3 and summary["final_loss"] is None
    rows = [strict_json(line) for line in (tmp_path / "cfg" / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == [1, 2, 3]
    assert [line.split(",")[0] for line in (tmp_path / "cfg" / "metrics.csv").read_text().splitlines()] == \
        ["step", "1", "2", "3"]


# ----------------------------------------------------------------------------- bad input: one line, exit 2
def _garbage_images(tmp_path, n=8):
    """A coco_caption dataset whose every image file exists but is not an image."""
    images = tmp_path / "images"
    images.mkdir()
    for i in range(n):
        (images / f"{i}.jpg").write_bytes(b"not a jpeg" * 10)
    ann = tmp_path / "ann.json"
    ann.write_text(json.dumps([{"image": f"train2014/{i}.jpg", "caption": "a red circle"} for i in range(n)]))
    return DatasetConfig(builder="coco_caption", storage=[str(ann)], image_root=str(images),
                         vis_processor=ProcessorConfig(name="blip2_image_train", image_size=28, min_scale=1.0))


def _shard(tmp_path, members: dict[str, bytes]) -> str:
    path = tmp_path / "00000.tar"
    with tarfile.open(path, "w") as tar:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return str(path)


def _laion(storage):
    return DatasetConfig(builder="laion", storage=[storage],
                         vis_processor=ProcessorConfig(name="blip2_image_train", image_size=28, min_scale=1.0))


def every_image_unreadable(cfg, tmp_path):
    cfg.datasets = {"coco": _garbage_images(tmp_path)}
    return ["datasets.coco: a whole epoch without one readable sample", "8 x unreadable image", "images/"]


def missing_prompts_file(cfg, tmp_path):
    cfg.datasets = {"coco": _garbage_images(tmp_path)}
    cfg.datasets["coco"].prompts_path = str(tmp_path / "nowhere.txt")
    return ["datasets.coco.prompts_path", "nowhere.txt", "does not exist"]


def prompts_file_without_a_prompt(cfg, tmp_path):
    cfg.datasets = {"coco": _garbage_images(tmp_path)}
    (tmp_path / "prompts.txt").write_text("# only a comment\n\n")
    cfg.datasets["coco"].prompts_path = str(tmp_path / "prompts.txt")
    return ["datasets.coco.prompts_path", "prompts.txt", "holds no prompt"]


def shard_of_random_bytes(cfg, tmp_path):
    shard = tmp_path / "00000.tar"
    shard.write_bytes(bytes(range(256)) * 40)
    cfg.datasets = {"laion": _laion(str(shard))}
    return ["datasets.laion: a whole epoch without one readable sample", "corrupt or unreadable shard", "00000.tar"]


def shard_of_corrupt_images(cfg, tmp_path):
    members = {}
    for i in range(6):
        members[f"{i:05d}.jpg"] = b"garbage"
        members[f"{i:05d}.txt"] = b"a caption"
    cfg.datasets = {"laion": _laion(_shard(tmp_path, members))}
    return ["datasets.laion:", "6 x unreadable image", "00000.tar"]


def resume_from_a_missing_file(cfg, tmp_path):
    cfg.run.resume_ckpt_path = str(tmp_path / "gone.pt")
    return ["run.resume_ckpt_path", "gone.pt does not exist"]


def resume_from_a_text_file(cfg, tmp_path):
    (tmp_path / "notes.pt").write_text("these are not weights\n")
    cfg.run.resume_ckpt_path = str(tmp_path / "notes.pt")
    return ["run.resume_ckpt_path", "notes.pt", "not a tinygpt training checkpoint"]


def resume_from_a_checkpoint_with_a_negative_step(cfg, tmp_path):
    import torch

    from tinygpt.common.checkpoint import FORMAT

    torch.save({"format": FORMAT, "model": {}, "optimizer": {}, "scheduler": {}, "step": -3, "data": {}, "rng": [],
                "config": ""}, tmp_path / "forged.pt")
    cfg.run.resume_ckpt_path = str(tmp_path / "forged.pt")
    return ["run.resume_ckpt_path", "forged.pt", "'step' is -3; it must be >= 0"]


def output_dir_is_a_file(cfg, tmp_path):
    (tmp_path / "taken").write_text("a file")
    cfg.run.output_dir = str(tmp_path / "taken" / "run")
    return ["run.output_dir", "taken is a file"]


def _llm_config_with(cfg, tmp_path, **changes):
    values = {**json.loads(Path(cfg.model.llm.hf_config).read_text()), **changes}
    (tmp_path / "llm.json").write_text(json.dumps(values))
    cfg.model.llm.hf_config = str(tmp_path / "llm.json")


def llm_config_not_json(cfg, tmp_path):
    (tmp_path / "llm.json").write_text("{not json")
    cfg.model.llm.hf_config = str(tmp_path / "llm.json")
    return ["llm.json: not a readable Hugging Face LLM config"]


def llm_config_with_zero_heads(cfg, tmp_path):
    _llm_config_with(cfg, tmp_path, num_attention_heads=0)
    return ["llm.json: 'num_attention_heads' is 0; it must be >= 1"]


def llm_config_with_a_string_for_a_size(cfg, tmp_path):
    _llm_config_with(cfg, tmp_path, hidden_size="big")
    return ["llm.json: not a readable Hugging Face LLM config", "hidden_size"]


def tokenizer_is_a_text_file(cfg, tmp_path):
    (tmp_path / "tok.txt").write_text("not a tokenizer")
    cfg.model.llm.tokenizer = str(tmp_path / "tok.txt")
    return ["model.llm.tokenizer", "tok.txt", "not a readable Hugging Face tokenizer"]


@pytest.mark.parametrize("case", [every_image_unreadable, missing_prompts_file, prompts_file_without_a_prompt,
                                  shard_of_random_bytes, shard_of_corrupt_images, resume_from_a_missing_file,
                                  resume_from_a_text_file, resume_from_a_checkpoint_with_a_negative_step,
                                  output_dir_is_a_file, llm_config_not_json,
                                  llm_config_with_zero_heads, llm_config_with_a_string_for_a_size,
                                  tokenizer_is_a_text_file], ids=lambda f: f.__name__)
def test_bad_input_is_one_line_naming_it(tiny_root, tmp_path, capsys, case):
    cfg = tiny_config(tiny_root)
    cfg.datasets = {"fake": fake_dataset_config()}
    cfg.run.num_workers, cfg.run.tensorboard = 0, False
    cfg.run.output_dir = str(tmp_path / "run")
    cfg.run.iters_per_epoch, cfg.run.batch_size_train = 2, 4
    words = case(cfg, tmp_path)
    path = tmp_path / "cfg.yaml"
    path.write_text(to_yaml(cfg))
    assert training.main(["--cfg-path", str(path)]) == 2
    line = one_line_error(capsys, *words)
    assert "nothing skipped" not in line
    assert not (tmp_path / "run" / "checkpoint_final.safetensors").exists()


def test_resuming_another_models_checkpoint_names_what_differs(tiny_root, tmp_path, capsys):
    first = write_config(tiny_root, tmp_path, iters_per_epoch=1)
    assert training.main(["--cfg-path", first]) == 0
    capsys.readouterr()
    other = yaml.safe_load(Path(first).read_text())
    other["model"]["max_txt_len"] = 16
    other["run"]["resume_ckpt_path"] = str(tmp_path / "cfg" / "checkpoint_step0000001.pt")
    path = tmp_path / "other.yaml"
    path.write_text(yaml.safe_dump(other))
    assert training.main(["--cfg-path", str(path)]) == 2
    one_line_error(capsys, "run.resume_ckpt_path", "different model config (model.max_txt_len)")
