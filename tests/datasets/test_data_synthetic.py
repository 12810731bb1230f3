"""The synthetic corpus: reproducible bytes, formats the real builders and evaluators read, tokenizer."""
import filecmp
import importlib.util
import json
import os
from pathlib import Path

import pytest
import torch

import tinygpt.datasets  # noqa: F401
from tinygpt.common.config import Config, DatasetConfig, ProcessorConfig
from tinygpt.common.registry import registry
from tinygpt.conversation.boxes import box_from_pixels, parse_box
from tinygpt.conversation.protocol import TASK_TAGS, TEMPLATES
from tinygpt.datasets import build_train_loader, skips
from tinygpt.datasets.synthetic import generate
from tinygpt.datasets.synthetic.scenes import CELL_CLASSES
from tinygpt.datasets.templates import all_templates

ROOT = Path(__file__).resolve().parents[2]
SMALL = dict(train_images=40, eval_images=10, image_size=56, shard_size=16, vocab_size=600)


def load_script(name):
    spec = importlib.util.spec_from_file_location(name, ROOT / "dataset" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    out = tmp_path_factory.mktemp("synthetic")
    assert load_script("make_synthetic").main(["--out", str(out), "--train-images", "40", "--eval-images", "10",
                                               "--image-size", "56", "--shard-size", "16", "--vocab-size", "600"]) == 0
    return out


def tree(root):
    return sorted(str(p.relative_to(root)) for p in Path(root).rglob("*") if p.is_file())


def test_same_seed_same_bytes_other_seed_other_data(corpus, tmp_path):
    generate(str(tmp_path / "again"), seed=0, **SMALL)
    files = tree(corpus)
    assert files == tree(tmp_path / "again")
    _, mismatch, errors = filecmp.cmpfiles(corpus, tmp_path / "again", files, shallow=False)
    assert not mismatch and not errors
    generate(str(tmp_path / "other"), seed=1, **SMALL)
    assert (corpus / "vqa" / "vqa_train.json").read_bytes() != (tmp_path / "other" / "vqa" / "vqa_train.json").read_bytes()


def _build(name, corpus, **kw):
    vis = ProcessorConfig(name="blip2_image_train", image_size=28, min_scale=1.0)
    return registry.get("dataset", name)(DatasetConfig(builder=name, vis_processor=vis, **kw), name=name).build()


def test_training_formats_load_with_the_real_builders(corpus):
    shards = _build("cc_sbu", corpus, storage=[str(corpus / "train")])
    caps = [s["answer"] for s in shards]
    assert len(caps) == 40 and all(c and c == c.lower() for c in caps)
    # every shard sample carries its 9 cells' classes: 1-3 objects, one per referring-expression entry
    cells = torch.stack([s["cell_labels"] for s in shards])
    assert cells.shape == (40, 9) and int(cells.max()) < len(CELL_CLASSES)
    assert all(1 <= n <= 3 for n in (cells > 0).sum(1).tolist())
    n_refs = len(json.loads((corpus / "refcoco" / "refcoco_synthetic.json").read_text())["refs"])
    assert int((cells > 0).sum()) == n_refs
    align = _build("cc_sbu_align", corpus, storage=[str(corpus / "align")])
    assert len(align) == 40 and align[0]["answer"].startswith("The image shows")
    for name in ("coco_vqa", "ok_vqa"):
        vqa = _build(name, corpus, storage=[str(corpus / "vqa" / "vqa_train.json")], image_root=str(corpus / "images"))
        assert len(vqa) == 160 and len(vqa[0]["answer"].split()) == 1
    refs = json.loads((corpus / "refcoco" / "refcoco_synthetic.json").read_text())["refs"]
    ref = _build("refcoco", corpus, storage=[str(corpus / "refcoco" / "refcoco_synthetic.json")],
                 image_root=str(corpus / "images"))
    assert len(ref) == len(refs)
    assert ref[0]["answer"] == box_from_pixels(refs[0]["bbox"], 56, 56)
    inv = _build("invrefcoco", corpus, storage=[str(corpus / "refcoco" / "refcoco_synthetic.json")],
                 image_root=str(corpus / "images"))
    assert inv[0]["answer"] in refs[0]["sentences"]
    assert skips.drain() == []  # nothing skipped


def test_eval_files_follow_the_official_formats(corpus):
    ev = corpus / "eval"
    qs = json.loads((ev / "vqav2" / "questions.json").read_text())["questions"]
    anns = json.loads((ev / "vqav2" / "annotations.json").read_text())["annotations"]
    assert [q["question_id"] for q in qs] == [a["question_id"] for a in anns] and len(qs) == 40
    for q, a in zip(qs, anns):
        assert set(q) == {"question_id", "image_id", "question"}
        assert {"question_type", "answer_type", "multiple_choice_answer"} <= set(a)
        assert [x["answer"] for x in a["answers"]] == [a["multiple_choice_answer"]] * 10
        assert a["answer_type"] in ("yes/no", "number", "other") and " " not in a["multiple_choice_answer"]
        assert (ev / "images" / f"COCO_val2014_{q['image_id']:012d}.jpg").is_file()
    ref = json.loads((ev / "refcoco" / "refcoco_val.json").read_text())
    assert ref and {"img_id", "sents", "bbox", "height", "width"} <= set(ref[0])
    for item in ref:
        assert (ev / "refcoco_images" / f"{item['img_id'][:27]}.jpg").is_file()
        x, y, w, h = item["bbox"]
        assert 0 <= x and x + w <= item["width"] and 0 <= y and y + h <= item["height"] and w >= 56 / 3 * 0.5
    caps = json.loads((ev / "coco_caption" / "captions_val.json").read_text())
    assert len(caps["images"]) == 10 and len(caps["annotations"]) == 50
    assert {a["image_id"] for a in caps["annotations"]} == {i["id"] for i in caps["images"]}
    assert all((ev / "images" / i["file_name"]).is_file() for i in caps["images"])


def test_tokenizer_round_trips_templates_and_boxes(corpus):
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(str(corpus / "tokenizer"), local_files_only=True)
    assert tok.eos_token == tok.bos_token == tok.pad_token == tok.unk_token == "<|endoftext|>"
    assert 300 < len(tok) <= 600
    texts = [t.format("<Img><ImageHere></Img> " + p.format("the red circle")) for t in TEMPLATES
             for p in all_templates()]
    texts += [" ".join(TASK_TAGS), "{<0><7><42><99>}", "###Human: what is it? ###Assistant: 3###<|endoftext|>"]
    for text in texts:
        assert tok.decode(tok.encode(text)) == text
    assert tok.encode("<|endoftext|>") == [tok.eos_token_id]
    assert parse_box(tok.decode(tok.encode("x {<12><3><45><67>}"))) == (12, 3, 45, 67)
    assert sorted(os.listdir(corpus / "tokenizer")) == ["special_tokens_map.json", "tokenizer.json",
                                                         "tokenizer_config.json"]


def test_a_run_config_over_the_corpus_yields_batches(corpus):
    vis = ProcessorConfig(name="blip2_image_train", image_size=28, min_scale=1.0)
    cfg = Config()
    cfg.run.batch_size_train, cfg.run.num_workers = 4, 0
    cfg.datasets = {
        "cc_sbu": DatasetConfig(builder="cc_sbu", storage=[str(corpus / "train" / "shard-{00000..00002}.tar")],
                                vis_processor=vis),
        "coco_vqa": DatasetConfig(builder="coco_vqa", storage=[str(corpus / "vqa" / "vqa_train.json")],
                                  image_root=str(corpus / "images"), vis_processor=vis, sample_ratio=2, batch_size=2),
    }
    loader = build_train_loader(cfg)
    seen = set()
    for _ in range(8):
        name, batch = loader.next_with_source()
        seen.add(name)
        assert batch["image"].shape == (len(batch["answer"]), 3, 28, 28)
        assert torch.isfinite(batch["image"]).all()
    assert seen == {"cc_sbu", "coco_vqa"}
