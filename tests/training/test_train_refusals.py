"""train.py under hostile input: a run that diverges stops at its first non-finite step and writes
nothing after it; every file it writes is strict JSON; and every bad input below is one line on
stderr naming the file / key, exit status 2, never a traceback."""
from __future__ import annotations

import json

from fakes import fake_dataset_config
from tiny import tiny_config
from tinygpt import training
from tinygpt.common.config import to_yaml


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
    again = write_config(tiny_root, tmp_path, resume_ckpt_path=str(last))
    assert training.main(["--cfg-path", again]) == 0  # nothing left to train
    summary = strict_json((tmp_path / "cfg" / "train_summary.json").read_text())
    assert summary["steps"] == 3 and summary["final_loss"] is None
    for line in (tmp_path / "cfg" / "metrics.jsonl").read_text().splitlines():
        strict_json(line)
