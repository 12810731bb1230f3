"""`python -m tinygpt.datasets check`: the figures it prints for a small generated dataset with bad
records, the problems that make it exit non-zero, and that its rendering is the training step's
own layout (same function: tinygpt.conversation.protocol.encode_all)."""
from __future__ import annotations

import re
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

import tinygpt
from own_data import QUESTION, vis, write_images, write_stage, write_vqa_jsonl
from tinygpt.conversation import protocol
from tinygpt.conversation.protocol import STYLE_KEY, PromptStyle
from tinygpt.datasets.__main__ import main as datasets_main
from tinygpt.datasets.check import Checker, main as check
from tinygpt.datasets.loader import build_train_loader
from tinygpt.models import tinygpt_v


@pytest.fixture()
def jsonl_stage(tmp_path, tiny_root) -> Path:
    data = tmp_path / "data"
    images = write_images(data, 3)  # 12 images, 4 colours
    write_vqa_jsonl(data / "train.jsonl", images)  # + 3 bad records
    return write_stage(tmp_path / "stage.yaml", tiny_root,
                       {"mine": {"builder": "vqa_jsonl", "storage": [str(data / "train.jsonl")],
                                 "sample_ratio": 3, "vis_processor": vis()},
                        "again": {"builder": "vqa_jsonl", "storage": [str(data / "train.jsonl")],
                                  "sample_ratio": 1, "vis_processor": vis()}})


def test_check_prints_records_shares_skips_lengths_and_rendered_samples(jsonl_stage, capsys):
    assert check(["--cfg-path", str(jsonl_stage), "--samples", "2"]) == 0
    out = capsys.readouterr().out
    rows = {m[0]: m[1:] for m in re.findall(r"^  (\w+) +vqa_jsonl +(\d+) records  share +([\d.]+)%.*\((\d+) of (\d+) read usable\)",
                                           out, re.M)}
    assert rows == {"mine": ("15", "75.0", "12", "15"), "again": ("15", "25.0", "12", "15")}
    data = jsonl_stage.parent / "data"
    for line in (f"mine: malformed record: {data}/train.jsonl: line 2 is not JSON",
                 f"mine: malformed record: {data}/train.jsonl: record line 3 has no 'answer' field",
                 f"mine: missing image: {data}/train/red/missing.png"):
        assert line in out
    assert "truncation: 0.0% of samples cut at max_txt_len 32, 0.0% at max_context_len 3800" in out
    assert re.search(r"token lengths .*: p50 \d+  p90 \d+  p99 \d+  max \d+", out)
    samples = re.findall(r"^<\|endoftext\|>\[INST\] <Img><image x4></Img> \[vqa\] .*" + re.escape(QUESTION)
                         + r"  \[/INST\]\[\[(\w+)###\]\]$", out, re.M)  # TinyGPT-V's wrap: two spaces
    assert len(samples) == 4 and set(samples) <= {"red", "green", "blue", "yellow"}  # 2 per entry
    assert out.count("end marker '###' closes each answer's labels") == 4
    assert "ok: nothing found that would make training wrong" in out


def test_the_rendered_layout_is_the_one_the_training_step_computes_its_loss_on(jsonl_stage, monkeypatch):
    cfg = tinygpt.load_config(jsonl_stage)
    model = tinygpt.build_model(cfg, "cpu")
    batch = next(build_train_loader(cfg))
    seen = []
    real = tinygpt_v.encode_all
    monkeypatch.setattr(tinygpt_v, "encode_all", lambda *a: seen.append(real(*a)) or seen[-1])
    model(batch)  # the training forward
    checker = Checker(cfg, model.tokenizer, model.style, model.n_visual_tokens)
    (trained,) = seen
    assert checker.layouts(batch) == trained
    # ... and the rendering shows exactly those labels as supervised.
    for layout in trained:
        supervised = model.tokenizer.decode([t for t in layout.labels if t != protocol.IGNORE])
        assert re.findall(r"\[\[(.*?)\]\]", checker.render(layout)) == [supervised]


def _checkpoint_with_style(path: Path, **style) -> str:
    save_file({"x": torch.zeros(1)}, str(path), metadata={STYLE_KEY: PromptStyle(**style).record()})
    return str(path)


@pytest.mark.parametrize("change, problem", [
    ({"end_sym": "<|endoftext|>"}, r"datasets\.mine: 12 sample\(s\) lack the end marker '<\|endoftext\|>' in their labels"),
    ({"max_txt_len": 2}, r"datasets\.mine: 12 sample\(s\) lack the end marker '###' in their labels"),
    ({"vision_size": 56}, r"datasets\.mine\.vis_processor\.image_size gives 56 px images but model\.vision\.image_size is 28"),
    ({"ckpt": "stage3"}, r"model\.prompt_template is '\[INST\] \{\} \[/INST\]' but .*base\.safetensors was trained "
                         r"with '###Human: \{\} ###Assistant: '"),
])
def test_what_would_make_training_wrong_exits_1_with_one_line_each(tmp_path, tiny_root, capsys, change, problem):
    data = tmp_path / "data"
    data.mkdir()
    write_vqa_jsonl(data / "train.jsonl", write_images(data, 3), awkward=False)
    options = dict(change)
    size = options.pop("vision_size", 28)
    if options.pop("ckpt", None):
        options["ckpt"] = [_checkpoint_with_style(tmp_path / "base.safetensors", template="###Human: {} ###Assistant: ")]
    stage = write_stage(tmp_path / "stage.yaml", tiny_root,
                        {"mine": {"builder": "vqa_jsonl", "storage": [str(data / "train.jsonl")], "vis_processor": vis(size)}},
                        **options)
    assert check(["--cfg-path", str(stage), "--samples", "1"]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("problem: ") and re.search(problem, err[0]), err


def test_a_style_change_on_purpose_passes_with_new_style(tmp_path, tiny_root, capsys):
    data = tmp_path / "data"
    data.mkdir()
    write_vqa_jsonl(data / "train.jsonl", write_images(data, 2), awkward=False)
    base = _checkpoint_with_style(tmp_path / "base.safetensors", template="###Human: {} ###Assistant: ")
    stage = write_stage(tmp_path / "stage.yaml", tiny_root,
                        {"mine": {"builder": "vqa_jsonl", "storage": [str(data / "train.jsonl")], "vis_processor": vis()}},
                        ckpt=[base])
    assert check(["--cfg-path", str(stage), "--new-style", "--samples", "0"]) == 0


def test_a_config_that_does_not_build_is_one_line_and_exit_2(tmp_path, tiny_root, capsys):
    stage = write_stage(tmp_path / "stage.yaml", tiny_root,
                        {"mine": {"builder": "vqa_jsonl", "storage": [str(tmp_path / "nope.jsonl")]}})
    assert datasets_main(["check", "--cfg-path", str(stage)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [f"python -m tinygpt.datasets check: error: datasets.mine.storage: file {tmp_path}/nope.jsonl does not exist"]
    assert datasets_main([]) == 2  # no subcommand: usage



def test_check_of_a_llava_mix_file_in_two_entries(tmp_path, tiny_root, capsys):
    from own_data import write_llava_mix

    write_llava_mix(tmp_path / "mix.json", tmp_path)
    entry = {"storage": [str(tmp_path / "mix.json")], "batch_size": 2, "vis_processor": vis()}
    stage = write_stage(tmp_path / "stage.yaml", tiny_root,
                        {"mix": {**entry, "builder": "llava_mix", "image_root": str(tmp_path), "sample_ratio": 5},
                         "mix_text": {**entry, "builder": "llava_mix_text", "sample_ratio": 1}},
                        max_txt_len=64)
    assert check(["--cfg-path", str(stage), "--samples", "4"]) == 0
    out = capsys.readouterr().out
    assert re.search(r"^  mix +llava_mix +7 records  share +83\.3%.*\(5 of 7 read usable\)", out, re.M)
    assert re.search(r"^  mix_text +llava_mix_text +2 records  share +16\.7%.*\(2 of 2 read usable\)", out, re.M)
    assert "mix: malformed record: " in out and "expected a 'human' turn, got 'gpt'" in out
    assert f"mix: missing image: {tmp_path}/coco/train2017/missing.jpg" in out
    # A multi-turn sample: both answers supervised, the second question (after the BOS text) masked.
    assert re.search(r"\[\[\w+###\]\]<\|endoftext\|>\[INST\] is it dark\?  \[/INST\]\[\[no###\]\]$", out, re.M)
    assert re.search(r"^<\|endoftext\|>\[INST\] say \d \[/INST\]\[\[\d###\]\]$", out, re.M)  # text only: no image


def test_check_of_parquet_and_imagefolder_entries(tmp_path, tiny_root, capsys, monkeypatch):
    import datasets
    from own_data import write_imagefolder, write_parquet

    monkeypatch.setattr(datasets.config, "HF_DATASETS_CACHE", str(tmp_path / "hf_cache"))
    write_parquet(tmp_path / "train.parquet")
    write_imagefolder(tmp_path / "folder", "csv")
    stage = write_stage(tmp_path / "stage.yaml", tiny_root,
                        {"table": {"builder": "parquet", "storage": [str(tmp_path / "train.parquet")],
                                   "vis_processor": vis()},
                         "folder": {"builder": "imagefolder", "storage": [str(tmp_path / "folder")],
                                    "vis_processor": vis()}})
    assert check(["--cfg-path", str(stage), "--samples", "1"]) == 0
    out = capsys.readouterr().out
    assert re.search(r"^  table +parquet +8 records  share +50\.0%.*\(6 of 8 read usable\)", out, re.M)
    assert re.search(r"^  folder +imagefolder +9 records  share +50\.0%.*\(8 of 9 read usable\)", out, re.M)
    assert f"table: unreadable image: {tmp_path}/train.parquet: row 1: OSError: Truncated File Read" in out
    assert f"table: malformed record: {tmp_path}/train.parquet: record row 2 field 'question' is NoneType" in out
    assert f"folder: missing image: {tmp_path}/folder: row 8: {tmp_path}/folder/photos/red/missing.png" in out
    assert re.search(r"^<\|endoftext\|>\[INST\] <Img><image x4></Img> \[caption\] .* \[/INST\]\[\[a \w+ square###\]\]$",
                     out, re.M)
