"""benchmarks/lora_fold.py on a tiny stage whose LLM trains beside LoRA: both arms timed on the real
training step, the JSON row complete."""
from __future__ import annotations

import json

from benchmarks import lora_fold
from fakes import fake_dataset_config
from tiny import tiny_config
from tinygpt.common.config import to_yaml


def test_both_arms_time_the_stage(tiny_root, tmp_path):
    cfg = tiny_config(tiny_root)
    cfg.datasets = {"fake": fake_dataset_config()}
    cfg.model.llm.train, cfg.model.llm.lora.dropout = True, 0.0  # where the fold applies
    cfg.run.num_workers, cfg.run.tensorboard, cfg.run.batch_size_train = 0, False, 4
    stage = tmp_path / "stage.yaml"
    stage.write_text(to_yaml(cfg))
    out = tmp_path / "fold.json"
    assert lora_fold.main(["--cfg-path", str(stage), "--steps", "2", "--rounds", "2", "--warmup", "1",
                           "--out", str(out)]) == 0
    result = json.loads(out.read_text())
    assert result["benchmark"] == "lora_fold" and len(result["commit"]) == 40 and result["machine"]["cpu"]
    (row,) = result["rows"]
    assert row["lora_layers"] == 4 and row["batch"] == 4 and len(row["rounds_x"]) == 2
    assert row["peft_sps"] > 0 and row["folded_sps"] > 0 and row["x"] > 0
