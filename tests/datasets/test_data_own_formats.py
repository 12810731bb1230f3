"""The formats users bring (docs/own-data.md), as registered dataset types: records read lazily,
bad records skipped and counted (never a crash mid-epoch), samples made by the existing builders'
record -> sample path."""
from __future__ import annotations

import json

import pytest
import torch

from own_data import QUESTION, vis, write_images, write_vqa_jsonl
from tinygpt.common.config import ConfigError, DatasetConfig, ProcessorConfig
from tinygpt.common.registry import registry
from tinygpt.datasets import skips
from tinygpt.datasets.base import PROBE
from tinygpt.datasets.loader import build_loader


def dataset_config(storage, image_root=None, **kw) -> DatasetConfig:
    cfg = DatasetConfig(storage=[str(s) for s in storage], image_root=image_root and str(image_root), **kw)
    cfg.vis_processor = ProcessorConfig(**vis())
    return cfg


def build(kind: str, cfg: DatasetConfig, name: str = "mine"):
    import tinygpt.datasets  # noqa: F401  (registers the builders)

    return registry.get("dataset", kind)(cfg, name=name, seed=0).build()


def drain_epoch(ds, batch_size: int = 2):
    """Every batch of one epoch as the training loader collates it, and what it skipped."""
    counter = skips.SkipCounter()
    batches = [counter.absorb(b) for b in build_loader(ds, batch_size, shuffle=False, drop_last=False)]
    return [b for b in batches if b], counter


def test_vqa_jsonl_skips_and_counts_bad_lines_and_serves_the_rest(tmp_path):
    images = write_images(tmp_path, 2)
    write_vqa_jsonl(tmp_path / "train.jsonl", images)
    ds = build("vqa_jsonl", dataset_config([tmp_path / "train.jsonl"]))  # image_root: the file's folder
    assert len(ds) == 8 + 3
    batches, counter = drain_epoch(ds)
    answers = [a for b in batches for a in b["answer"]]
    assert sorted(answers) == sorted(colour for _, colour in images)
    assert all(b["image"].shape[1:] == (3, 28, 28) for b in batches)
    assert counter.counts() == {"mine": {"malformed record": 2, "missing image": 1}}


def test_vqa_jsonl_makes_coco_vqas_sample_from_the_same_record(tmp_path):
    images = write_images(tmp_path, 1)
    rel, colour = images[0]
    (tmp_path / "train.jsonl").write_text(json.dumps({"image": rel, "question": QUESTION,
                                                      "answer": [colour, colour, "pink"]}) + "\n")
    (tmp_path / "vqa.json").write_text(json.dumps([{"question_id": 1, "image": rel, "question": QUESTION,
                                                   "answer": [colour, colour, "pink"]}]))
    ours = build("vqa_jsonl", dataset_config([tmp_path / "train.jsonl"]))
    theirs = build("coco_vqa", dataset_config([tmp_path / "vqa.json"], tmp_path), name="mine")
    for epoch in range(4):
        ours.set_epoch(epoch)
        theirs.set_epoch(epoch)
        a, b = ours[0], theirs[0]
        assert a.keys() == b.keys() and a["answer"] == b["answer"] and a["instruction_input"] == b["instruction_input"]
        assert torch.equal(a["image"], b["image"])


def test_vqa_jsonl_reads_lines_only_when_the_epoch_reaches_them(tmp_path, monkeypatch):
    write_vqa_jsonl(tmp_path / "train.jsonl", write_images(tmp_path, 8), awkward=False)
    from tinygpt.datasets import jsonl_vqa

    parsed = []
    real = jsonl_vqa.parse_line
    monkeypatch.setattr(jsonl_vqa, "parse_line", lambda line: parsed.append(line[1]) or real(line))
    ds = build("vqa_jsonl", dataset_config([tmp_path / "train.jsonl"]))
    assert len(ds) == 32 and parsed == list(range(1, PROBE + 1))  # the build probes a few images only
    parsed.clear()
    ds[5]
    assert parsed == [6]


def test_a_record_that_turns_bad_between_build_and_epoch_is_a_skip_not_a_crash(tmp_path):
    images = write_images(tmp_path, 1)
    write_vqa_jsonl(tmp_path / "train.jsonl", images, awkward=False)
    ds = build("vqa_jsonl", dataset_config([tmp_path / "train.jsonl"]))
    (tmp_path / images[2][0]).write_bytes(b"not a png")
    skips.drain()
    assert ds[2] is None
    assert [(k, d.split(" (")[0]) for _, k, d in skips.drain()] == [("unreadable image", str(tmp_path / images[2][0]))]
    assert ds[1]["answer"] == images[1][1]


def test_llava_mix_serves_image_records_multi_turn_and_leaves_text_only_ones_to_llava_mix_text(tmp_path):
    from own_data import write_llava_mix

    expect = write_llava_mix(tmp_path / "mix.json", tmp_path)
    images = build("llava_mix", dataset_config([tmp_path / "mix.json"], tmp_path))
    texts = build("llava_mix_text", dataset_config([tmp_path / "mix.json"]), name="mine")
    assert (len(images), len(texts)) == (5 + 2, 2)
    batches, counter = drain_epoch(images, batch_size=3)
    got = [(q, a) for b in batches for q, a in zip(b["instruction_input"], b["answer"])]
    assert got == expect["image"]
    assert all(sym == "!@#" for b in batches for sym in b["connect_sym"])
    assert counter.counts() == {"mine": {"malformed record": 1, "missing image": 1}}
    batches, counter = drain_epoch(texts)
    assert [(q, a) for b in batches for q, a in zip(b["instruction_input"], b["answer"])] == expect["text"]
    assert all("image" not in b for b in batches) and counter.total() == 0


def test_sharegpt4v_captions_in_both_shapes(tmp_path):
    from own_data import write_llava_mix

    write_llava_mix(tmp_path / "mix.json", tmp_path)
    records = [{"id": "sa_1", "image": "coco/train2017/0.jpg", "caption": "A Red square.\n\nNothing else."},
               {"id": 2, "image": "gqa/images/1.jpg", "conversations": [
                   {"from": "human", "value": "<image>\nWhat do you see happening in this image?"},
                   {"from": "gpt", "value": "A Green square."}, {"from": "human", "value": "more?"},
                   {"from": "gpt", "value": "no"}]},
               {"id": 3, "caption": "no image"}]
    (tmp_path / "share.json").write_text(json.dumps(records))
    ds = build("sharegpt4v", dataset_config([tmp_path / "share.json"], tmp_path))
    first, second, third = ds[0], ds[1], ds[2]
    from tinygpt.datasets.templates import ALIGNMENT

    assert first["answer"] == "A Red square.\n\nNothing else."  # verbatim, like cc_sbu_align
    assert first["instruction_input"] in [f"<Img><ImageHere></Img> {p}" for p in ALIGNMENT]
    assert (second["instruction_input"], second["answer"]) == (
        "<Img><ImageHere></Img> what do you see happening in this image? ", "A Green square.")  # first exchange
    assert third is None
    assert [k for _, k, _ in skips.drain()] == ["malformed record"]


@pytest.fixture()
def hf_cache(tmp_path, monkeypatch):
    """The `datasets` library's cache in the test's folder (it converts parquet/imagefolder there)."""
    import datasets

    monkeypatch.setattr(datasets.config, "HF_DATASETS_CACHE", str(tmp_path / "hf_cache"))


def answers_of(ds, batch_size=3):
    batches, counter = drain_epoch(ds, batch_size)
    return sorted(a for b in batches for a in b["answer"]), batches, counter


def test_parquet_with_image_bytes_skips_the_corrupt_rows(tmp_path, hf_cache):
    from own_data import write_parquet

    expect = write_parquet(tmp_path / "train.parquet")
    ds = build("parquet", dataset_config([tmp_path / "*.parquet"]))
    assert len(ds) == 8
    got, batches, counter = answers_of(ds)
    assert got == sorted(expect)
    assert all(q.endswith(QUESTION + " ") and "<ImageHere>" in q for b in batches for q in b["instruction_input"])
    assert counter.counts() == {"mine": {"malformed record": 1, "unreadable image": 1}}
    assert len(ds.lengths) == 8  # bucketing's length proxy from the text columns


def test_arrow_files_and_a_saved_dataset_folder(tmp_path, hf_cache):
    import datasets
    from own_data import write_parquet

    expect = write_parquet(tmp_path / "train.parquet", corrupt=False)
    table = datasets.load_dataset("parquet", data_files=str(tmp_path / "train.parquet"), split="train")
    table.save_to_disk(str(tmp_path / "saved"))
    arrow_file = sorted((tmp_path / "saved").glob("*.arrow"))
    for storage in ([tmp_path / "saved"], arrow_file):
        got, _, counter = answers_of(build("arrow", dataset_config(storage)))
        assert got == sorted(expect) and counter.total() == 0, storage


def test_imagefolder_with_conversations_in_metadata_jsonl(tmp_path, hf_cache):
    from own_data import write_imagefolder

    expect = write_imagefolder(tmp_path / "folder", "jsonl")
    ds = build("imagefolder", dataset_config([tmp_path / "folder"]))
    got, batches, counter = answers_of(ds)
    assert got == sorted(expect) and counter.total() == 0
    # llava_mix's sample: multi-turn layout (connect_sym), the image placed before the question
    assert {q for b in batches for q in b["instruction_input"]} == {f"<Img><ImageHere></Img> {QUESTION} "}
    assert all(b["connect_sym"] for b in batches)


def test_imagefolder_with_captions_in_metadata_csv(tmp_path, hf_cache):
    from own_data import write_imagefolder
    from tinygpt.datasets.templates import CAPTION

    expect = write_imagefolder(tmp_path / "folder", "csv")
    ds = build("imagefolder", dataset_config([tmp_path / "folder"]))
    assert len(ds) == len(expect) + 1
    got, batches, counter = answers_of(ds)
    assert got == sorted(expect)  # coco_caption's sample: a [caption] prompt, the caption cleaned
    assert {q for b in batches for q in b["instruction_input"]} <= {f"<Img><ImageHere></Img> {p} " for p in CAPTION}
    assert counter.counts() == {"mine": {"missing image": 1}}


def test_a_table_without_usable_columns_is_a_config_error_naming_the_key(tmp_path, hf_cache):
    import pyarrow as pa
    import pyarrow.parquet as pq

    pq.write_table(pa.table({"image": [b"x"], "label": [1]}), tmp_path / "t.parquet")
    with pytest.raises(ConfigError, match=r"datasets\.mine\.storage: .*t\.parquet needs 'question' \+ 'answer'"):
        build("parquet", dataset_config([tmp_path / "t.parquet"]))


def test_a_turn_holding_the_turn_separator_or_a_text_record_marking_an_image_is_skipped(tmp_path):
    records = [{"id": 1, "conversations": [{"from": "human", "value": "what is !@# in bash?"},
                                           {"from": "gpt", "value": "nothing"}]},
               {"id": 2, "conversations": [{"from": "human", "value": "<ImageHere> hi"}, {"from": "gpt", "value": "x"}]},
               {"id": 3, "conversations": [{"from": "human", "value": "hi"}, {"from": "gpt", "value": "hello"}]}]
    (tmp_path / "mix.json").write_text(json.dumps(records))
    ds = build("llava_mix_text", dataset_config([tmp_path / "mix.json"]))
    batches, counter = drain_epoch(ds)
    assert [b["answer"] for b in batches] == [["hello"]]  # the training step would split "!@#" as a turn
    assert counter.counts() == {"mine": {"malformed record": 2}}
