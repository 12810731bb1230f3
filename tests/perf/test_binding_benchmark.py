"""benchmarks/binding.py: its generated questions match the scenes, its scorer ranks answers by loss,
and a short run writes a learning curve per arm."""
from __future__ import annotations

import json

import pytest
import torch

from benchmarks import binding
from tinygpt.conversation.boxes import parse_box
from tinygpt.datasets.synthetic.scenes import CELL_CLASSES

STAGE1 = "train_configs/tiny/stage1.yaml"


def test_single_object_questions_name_the_only_shape_and_its_cell():
    images, prompts, answers, cells = binding.make_split(6, max_objects=1, task="where", size=48, seed=3)
    assert images.shape == (6, 3, 48, 48) and cells.shape == (6, 9)
    # one object: exactly one non-empty cell, the one the answer names, holding the named shape
    for prompt, place, row in zip(prompts, answers, cells.tolist()):
        assert [k for k, c in enumerate(row) if c] == [binding.PLACES.index(place)]
        assert prompt.endswith(f"where is the {CELL_CLASSES[max(row)]}?")
    assert all(p.startswith("<Img><ImageHere></Img> where is the ") for p in prompts)
    assert all(a in binding.PLACES for a in answers)
    _, first, same, _ = binding.make_split(6, max_objects=1, task="where", size=48, seed=3, question_first=True)
    assert same == answers and [p.split("? ")[0] for p in first] == [p.split("> ")[1][:-1] for p in prompts]
    assert all(p.endswith("? <Img><ImageHere></Img>") for p in first)
    _, refer_prompts, boxes, _ = binding.make_split(6, max_objects=1, task="refer", size=48, seed=3)
    # same seed, same scenes: the box of the named object lies in the cell the "where" answer names
    for place, box in zip(answers, boxes):
        x1, y1, x2, y2 = parse_box(box)
        row, col = divmod(binding.PLACES.index(place), 3)
        assert row * 33 - 1 <= (y1 + y2) / 2 <= (row + 1) * 34 and col * 33 - 1 <= (x1 + x2) / 2 <= (col + 1) * 34


class _Oracle:
    """A model whose answer loss is 0 for the right place and 1 otherwise (or the reverse)."""

    def __init__(self, answers, invert=False):
        self.answers, self.invert, self.training = answers, invert, True

    def eval(self):
        self.training = False

    def train(self):
        self.training = True

    def answer_losses(self, images, prompts, candidates):  # one batch holds the whole split here
        return torch.tensor([float((a == c) == self.invert) for a, c in zip(self.answers, candidates)])


def test_where_accuracy_ranks_the_nine_places_by_loss():
    split = binding.make_split(5, max_objects=3, task="where", size=48, seed=4)
    for invert, expected in ((False, 1.0), (True, 0.0)):
        oracle = _Oracle(split[2], invert)
        assert binding.accuracy(oracle, split, "where", batch=100) == expected
        assert oracle.training  # left in training mode


def test_short_run_writes_one_curve_per_arm(tmp_path, tiny_root):
    out = tmp_path / "binding.json"
    options = [f"model.llm.hf_config={tiny_root / 'phi.json'}", f"model.llm.tokenizer={tiny_root / 'tokenizer'}"]
    assert binding.main(["--cfg-path", STAGE1, "--objects", "1", "2", "--steps", "4", "--eval-every", "2",
                         "--train-images", "8", "--eval-images", "4", "--out", str(out), "--options", *options]) == 0
    payload = json.loads(out.read_text())
    assert payload["benchmark"] == "binding" and payload["task"] == "where"
    assert [arm["max_objects"] for arm in payload["arms"]] == [1, 2]
    for arm in payload["arms"]:
        assert [p["step"] for p in arm["curve"]] == [2, 4]
        assert all(0.0 <= p["accuracy"] <= 1.0 and p["loss"] > 0 for p in arm["curve"])


def test_the_stages_cell_loss_trains_its_head_and_can_be_turned_off(tmp_path, tiny_root, monkeypatch):
    """Stage 1's config has the Q-Former cell head: the benchmark feeds it each scene's cell labels."""
    options = [f"model.llm.hf_config={tiny_root / 'phi.json'}", f"model.llm.tokenizer={tiny_root / 'tokenizer'}"]
    built, build = [], binding.tinygpt.build_model

    def keep(*a, **kw):
        built.append(build(*a, **kw))
        return built[-1]

    monkeypatch.setattr(binding.tinygpt, "build_model", keep)
    common = ["--cfg-path", STAGE1, "--objects", "3", "--steps", "2", "--train-images", "8", "--eval-images", "4"]
    assert binding.main(common + ["--out", str(tmp_path / "on.json"), "--options", *options]) == 0
    assert binding.main(common + ["--out", str(tmp_path / "off.json"), "--options", *options,
                                  "model.qformer.cell_classes=0"]) == 0
    with_head, without = built
    assert with_head.cell_head.out_features == len(CELL_CLASSES) == 19
    assert with_head.cell_head.weight.grad is not None and with_head.cell_head.weight.grad.abs().sum() > 0
    assert without.cell_head is None
    assert json.loads((tmp_path / "on.json").read_text())["cell_classes"] == 19
    assert json.loads((tmp_path / "off.json").read_text())["cell_classes"] == 0
    with pytest.raises(SystemExit):  # fewer queries than grid cells: a clear argparse error
        binding.main(["--steps", "1", "--options", *options, "model.qformer.num_query_tokens=4"])


def test_pretrained_starts_from_the_configs_checkpoint(tmp_path, tiny_root, monkeypatch):
    """--pretrained builds the model with the config's model.ckpt loaded; the default ignores it."""
    from tinygpt.models.weights.native import save_trainable

    options = [f"model.llm.hf_config={tiny_root / 'phi.json'}", f"model.llm.tokenizer={tiny_root / 'tokenizer'}"]
    cfg = binding.tinygpt.load_config(STAGE1, options + ["model.ckpt=[]"])
    source = binding.tinygpt.build_model(cfg, torch.device("cpu"), load_weights=False)
    ckpt = tmp_path / "stage.safetensors"
    save_trainable(source, str(ckpt))
    built, build = [], binding.tinygpt.build_model

    def recording_build(cfg, device, load_weights=True, **kw):
        built.append((list(cfg.model.ckpt), load_weights))
        return build(cfg, device, load_weights=load_weights, **kw)

    monkeypatch.setattr(binding.tinygpt, "build_model", recording_build)
    common = ["--cfg-path", STAGE1, "--objects", "1", "--steps", "1", "--train-images", "4", "--eval-images", "2"]
    tail = ["--options", *options, f"model.ckpt=[{ckpt}]"]
    assert binding.main(common + ["--pretrained", "--out", str(tmp_path / "a.json")] + tail) == 0
    assert binding.main(common + ["--out", str(tmp_path / "b.json")] + tail) == 0
    (pre_ckpt, pre_load), (scratch_ckpt, scratch_load) = built
    assert (pre_ckpt, pre_load) == ([str(ckpt)], True) and (scratch_ckpt, scratch_load) == ([], False)
    assert json.loads((tmp_path / "a.json").read_text())["pretrained"] is True
