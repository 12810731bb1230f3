"""Every registered builder on a tiny fixture written in the released format."""
import random

import re

import pytest
import torch

from builder_fixtures import S, build, dump, jpg
from tinygpt.common.config import ConfigError, ProcessorConfig
from tinygpt.conversation.protocol import CONNECT_SYM, split_sample
from tinygpt.datasets import DataError, skips
from tinygpt.datasets.templates import ALIGNMENT, CAPTION, IDENTIFY, REFER, VQA


def check(sample, instruction=True, image=True):
    assert isinstance(sample["answer"], str) and sample["answer"]
    if image:
        assert sample["image"].shape == (3, S, S) and sample["image"].dtype == torch.float32
    else:
        assert "image" not in sample
    if instruction:
        assert sample["instruction_input"].startswith("<Img><ImageHere></Img> ") == image
    return sample


def test_cc_sbu_align(tmp_path):
    root = tmp_path / "cc_sbu_align"
    jpg(root / "image" / "2.jpg")
    jpg(root / "image" / "3.jpg")
    dump(root / "filter_cap.json", {"annotations": [{"image_id": "2", "caption": "A Red thing. Detailed!"},
                                                     {"image_id": "3", "caption": "Another one."}]})
    ds = build("cc_sbu_align", storage=[str(root)])
    s = check(ds[0])
    assert s["answer"] == "A Red thing. Detailed!"  # descriptions are kept verbatim
    assert s["instruction_input"] in [f"<Img><ImageHere></Img> {p}" for p in ALIGNMENT] and len(ds) == 2


def test_coco_caption_and_textcaps(tmp_path):
    img = jpg(tmp_path / "coco" / "COCO_train2014_000000000009.jpg")
    ann = dump(tmp_path / "coco_karpathy_train.json",
               [{"image": "train2014/COCO_train2014_000000000009.jpg", "caption": "A Man. Riding", "image_id": "coco_9"}])
    s = check(build("coco_caption", storage=[ann], image_root=str(img.parent))[0])
    assert s["answer"] == "a man riding" and s["instruction_input"] in [f"<Img><ImageHere></Img> {p} " for p in CAPTION]
    jpg(tmp_path / "tc" / "abc.jpg")
    ann = dump(tmp_path / "TextCaps_0.1_train.json",
               {"data": [{"image_id": "abc", "caption_str": "A sign says STOP.", "image_path": "train/abc.jpg"}]})
    for name in ("textcaps", "textcaps_caption"):
        s = check(build(name, storage=[ann], image_root=str(tmp_path / "tc"))[0])
        assert s["answer"] == "a sign says stop" and "[caption]" in s["instruction_input"]


def _llava(tmp_path, turns):
    jpg(tmp_path / "coco" / "COCO_train2014_000000033471.jpg")
    conv = []
    for i, (q, a) in enumerate(turns):
        conv += [{"from": "human", "value": ("<image>\n" if i == 0 else "") + q}, {"from": "gpt", "value": a}]
    return dump(tmp_path / "llava.json", [{"id": "000000033471", "image": "000000033471.jpg", "conversations": conv}])


@pytest.mark.parametrize("name", ["llava_detail", "llava_reason"])
def test_llava_single_turn(tmp_path, name):
    ann = _llava(tmp_path, [("What is shown?", "A bus. It is red."), ("Ignored?", "Yes.")])
    s = check(build(name, storage=[ann], image_root=str(tmp_path / "coco"))[0])
    assert s["instruction_input"] == "<Img><ImageHere></Img> what is shown? "
    assert s["answer"] == "A bus. It is red."


@pytest.mark.parametrize("name", ["llava_conversation", "multitask_conversation"])
def test_multi_turn_conversation(tmp_path, name):
    ann = _llava(tmp_path, [("What is shown?", "A bus."), ("Color?", "Red.")])
    s = check(build(name, storage=[ann], image_root=str(tmp_path / "coco"))[0])
    assert s["connect_sym"] == CONNECT_SYM
    assert split_sample(s["instruction_input"], s["answer"], s["connect_sym"]).turns == (
        ("<Img><ImageHere></Img> What is shown? ", "A bus."), ("Color? ", "Red."))
    assert s["instruction_input"].count("<ImageHere>") == 1


def test_conversation_with_wrong_roles_names_file_and_record(tmp_path):
    ann = dump(tmp_path / "bad.json", [{"id": "1", "conversations": [{"from": "gpt", "value": "x"},
                                                                    {"from": "human", "value": "y"}]}])
    (tmp_path / "coco").mkdir()
    with pytest.raises(DataError, match=r"bad\.json: record 0 conversations"):
        build("llava_conversation", storage=[ann], image_root=str(tmp_path / "coco"))


def test_unnatural_instruction_is_text_only(tmp_path):
    ann = dump(tmp_path / "u.json", [{"instances": [{"instruction_with_input": "Add 2 and 3.", "constraints": "Use digits.",
                                                     "output": "5"}]}])
    s = check(build("unnatural_instruction", storage=[ann])[0], image=False)
    assert s["instruction_input"] == "add 2 and 3 use digits" and s["answer"] == "5"


def _refs(tmp_path):
    jpg(tmp_path / "train2014" / "COCO_train2014_000000000005.jpg", size=(100, 50))
    return dump(tmp_path / "refcoco_unc.json", {"refs": [
        {"image_id": 5, "file_name": "COCO_train2014_000000000005.jpg", "split": "train",
         "bbox": [10, 5, 30, 20], "sentences": ["The Man on the left."]},
        {"image_id": 5, "split": "val", "bbox": [0, 0, 1, 1], "sentences": ["held out"]},
    ]})


@pytest.mark.parametrize("name", ["refcoco", "refcocop", "refcocog"])
def test_refcoco_refer(tmp_path, name):
    ds = build(name, storage=[_refs(tmp_path)], image_root=str(tmp_path / "train2014"))
    assert len(ds) == 1  # only split "train"
    s = check(ds[0])
    assert s["answer"] == "{<10><10><40><50>}"  # grid of the 100x50 original, not of the 28 px input
    assert s["instruction_input"] in [f"<Img><ImageHere></Img> {t.format('the man on the left')} " for t in REFER]


@pytest.mark.parametrize("name", ["invrefcoco", "invrefcocop", "invrefcocog"])
def test_refcoco_identify(tmp_path, name):
    s = check(build(name, storage=[_refs(tmp_path)], image_root=str(tmp_path / "train2014"))[0])
    assert s["answer"] == "the man on the left"
    assert s["instruction_input"] in [f"<Img><ImageHere></Img> {t.format('{<10><10><40><50>}')} " for t in IDENTIFY]


def test_grounding_refuses_a_cropping_processor(tmp_path):
    with pytest.raises(ConfigError, match=r"datasets\.refcoco\.vis_processor.*min_scale"):
        build("refcoco", storage=[_refs(tmp_path)], image_root=str(tmp_path / "train2014"),
              vis_processor=ProcessorConfig(name="lavis_blip2_image_train", image_size=S, min_scale=0.5))


def test_refvg(tmp_path):
    vg = tmp_path / "visual_genome"
    jpg(vg / "VG_100K_2" / "1.jpg", size=(200, 100))
    dump(vg / "image_data.json", [{"image_id": 1, "url": "https://cs.stanford.edu/people/rak248/VG_100K_2/1.jpg",
                                   "width": 200, "height": 100}])
    dump(vg / "region_descriptions.json", [{"id": 1, "regions": [
        {"region_id": 1, "image_id": 1, "x": 20, "y": 10, "width": 40, "height": 30, "phrase": "a red sign"},
        {"region_id": 2, "image_id": 1, "x": 0, "y": 0, "width": 200, "height": 100, "phrase": "too big"}]}])
    ds = build("refvg", storage=[str(vg)])
    assert len(ds) == 1  # regions of 16384 px^2 or more are dropped
    assert check(ds[0])["answer"] == "{<10><10><30><40>}"


@pytest.mark.parametrize("field, value, message", [
    ("x", float("nan"), "field 'x' is nan; it must be a finite number"),
    ("width", float("inf"), "field 'width' is inf; it must be a finite number"),
    ("y", True, "field 'y' is bool, expected int/float"),
])
def test_a_region_with_a_number_that_is_not_one_is_refused(tmp_path, field, value, message):
    vg = tmp_path / "visual_genome"
    jpg(vg / "VG_100K_2" / "1.jpg", size=(200, 100))
    dump(vg / "image_data.json", [{"image_id": 1, "url": "https://cs.stanford.edu/people/rak248/VG_100K_2/1.jpg",
                                   "width": 200, "height": 100}])
    region = {"region_id": 1, "image_id": 1, "x": 20, "y": 10, "width": 40, "height": 30, "phrase": "a red sign"}
    dump(vg / "region_descriptions.json", [{"id": 1, "regions": [{**region, field: value}]}])
    with pytest.raises(DataError, match=r"region_descriptions\.json: record .*" + re.escape(message)):
        build("refvg", storage=[str(vg)])


def test_flickr_sets(tmp_path):
    jpg(tmp_path / "flickr" / "123.jpg")
    root = str(tmp_path / "flickr")
    g = dump(tmp_path / "groundedcaption.json", [{"image_id": "123", "grounded_caption": "<p>a dog</p> {<1><2><3><4>} runs"}])
    c = dump(tmp_path / "captiontobbox.json", [{"image_id": 123, "caption": "a dog runs", "output": "<p>a dog</p> {<1><2><3><4>}"}])
    p = dump(tmp_path / "phrasetobbox.json", [{"image_id": "123", "phrase": "a dog", "bbox": "{<1><2><3><4>}"}])
    s = check(build("flickr_grounded_caption", storage=[g], image_root=root)[0])
    assert s["instruction_input"].startswith("<Img><ImageHere></Img> [grounding]") and "runs" in s["answer"]
    for name in ("flickr_caption_to_phrase", "flickr_CaptionToPhrase"):
        s = check(build(name, storage=[c], image_root=root)[0])
        assert s["instruction_input"] == "<Img><ImageHere></Img> [detection] a dog runs "
    for name in ("flickr_object_to_phrase", "flickr_ObjectToPhrase"):
        s = check(build(name, storage=[p], image_root=root)[0])
        assert (s["instruction_input"], s["answer"]) == ("<Img><ImageHere></Img> [detection] a dog ",
                                                        "<p>a dog</p> {<1><2><3><4>}")


@pytest.mark.parametrize("name", ["coco_vqa", "ok_vqa"])
def test_coco_style_vqa_draws_answers_by_frequency(tmp_path, name):
    jpg(tmp_path / "coco" / "COCO_train2014_000000000001.jpg")
    ann = dump(tmp_path / "vqa_train.json", [{"question_id": 1, "question": "Is it Red?", "answer": ["Yes"] * 9 + ["no"],
                                              "image": "train2014/COCO_train2014_000000000001.jpg", "dataset": "vqa"}])
    ds = build(name, storage=[ann], image_root=str(tmp_path / "coco"))
    s = check(ds[0])
    assert s["instruction_input"] in [f"<Img><ImageHere></Img> {t.format('is it red?')} " for t in VQA]
    answers = []
    for epoch in range(40):
        ds.set_epoch(epoch)
        answers.append(ds[0]["answer"])
    assert 30 <= answers.count("yes") < 40 and "no" in answers
    ds.set_epoch(3)
    assert torch.equal(ds[0]["image"], ds[0]["image"]) and ds[0]["answer"] == ds[0]["answer"]


def test_aok_vqa_and_gqa(tmp_path):
    jpg(tmp_path / "coco" / "COCO_train2014_000000000007.jpg")
    ann = dump(tmp_path / "aokvqa_v1p0_train.json", [{"question_id": "q", "question": "What?", "choices": ["a", "b"],
                                                      "direct_answers": ["bus"] * 10, "image": "train2017/000000000007.jpg"}])
    assert check(build("aok_vqa", storage=[ann], image_root=str(tmp_path / "coco"))[0])["answer"] == "bus"
    jpg(tmp_path / "gqa" / "n1.jpg")
    ann = dump(tmp_path / "train_balanced_questions.json", [{"question_id": "1", "question": "Color?", "answer": "Blue",
                                                             "image": "n1.jpg"}])
    assert check(build("gqa", storage=[ann], image_root=str(tmp_path / "gqa"))[0])["answer"] == "blue"


def test_missing_paths_name_the_dataset_key(tmp_path):
    with pytest.raises(ConfigError, match=r"datasets\.coco_vqa\.storage: file .*nope\.json does not exist"):
        build("coco_vqa", storage=[str(tmp_path / "nope.json")], image_root=str(tmp_path))
    with pytest.raises(ConfigError, match=r"datasets\.coco_vqa\.storage is empty"):
        build("coco_vqa", storage=[], image_root=str(tmp_path))
    ann = dump(tmp_path / "v.json", [])
    with pytest.raises(ConfigError, match=r"datasets\.coco_vqa\.image_root: directory .*missing does not exist"):
        build("coco_vqa", storage=[ann], image_root=str(tmp_path / "missing"))


def test_malformed_record_names_file_record_and_field(tmp_path):
    ann = dump(tmp_path / "v.json", [{"question_id": 1, "question": "q?", "image": "x.jpg"}])
    with pytest.raises(DataError, match=r"v\.json: record 0 has no 'answer' field"):
        build("coco_vqa", storage=[ann], image_root=str(tmp_path))
    ann = dump(tmp_path / "w.json", {"not": "a list"})
    with pytest.raises(DataError, match=r"w\.json: expected a JSON list"):
        build("gqa", storage=[ann], image_root=str(tmp_path))


def test_wrong_image_root_fails_at_build(tmp_path):
    ann = dump(tmp_path / "v.json", [{"question_id": 1, "question": "q?", "answer": ["a"], "image": "x.jpg"}])
    (tmp_path / "empty").mkdir()
    with pytest.raises(ConfigError, match=r"datasets\.coco_vqa\.image_root: none of the first 1 images exists"):
        build("coco_vqa", storage=[ann], image_root=str(tmp_path / "empty"))


def test_corrupt_and_missing_images_are_skipped_and_counted(tmp_path):
    root = tmp_path / "img"
    jpg(root / "good.jpg")
    (root / "bad.jpg").write_bytes(b"\xff\xd8\xff\xe0 definitely not a jpeg")
    truncated = (root / "good.jpg").read_bytes()[:60]
    (root / "trunc.jpg").write_bytes(truncated)
    records = [{"question_id": i, "question": "q?", "answer": ["a"], "image": name}
               for i, name in enumerate(["bad.jpg", "gone.jpg", "trunc.jpg", "good.jpg"])]
    ds = build("gqa", storage=[dump(tmp_path / "v.json", records)], image_root=str(root))
    assert [ds[i] for i in range(3)] == [None, None, None]  # left out of their batch by collate
    assert check(ds[3])["answer"] == "a"
    counter = skips.SkipCounter(skips.drain())
    assert counter.counts()["gqa"] == {"missing image": 1, "unreadable image": 2}  # each counted once
    assert "bad.jpg" in counter.report()


def test_prompts_path_replaces_the_pool(tmp_path):
    jpg(tmp_path / "gqa" / "n1.jpg")
    ann = dump(tmp_path / "q.json", [{"question": "Color?", "answer": "blue", "image": "n1.jpg"}])
    prompts = tmp_path / "p.txt"
    prompts.write_text("# my template\n\n[vqa] Answer briefly: {}\n")
    s = build("gqa", storage=[ann], image_root=str(tmp_path / "gqa"), prompts_path=str(prompts))[0]
    assert s["instruction_input"] == "<Img><ImageHere></Img> [vqa] Answer briefly: color? "
    prompts.write_text("no slot here\n")
    with pytest.raises(ValueError, match=r"p\.txt line 1 must contain exactly one"):
        build("gqa", storage=[ann], image_root=str(tmp_path / "gqa"), prompts_path=str(prompts))


def test_samples_are_reproducible_and_seed_dependent(tmp_path):
    root = tmp_path / "img"
    jpg(root / "a.jpg", size=(64, 48))
    ann = dump(tmp_path / "q.json", [{"question": "Q?", "answer": "x", "image": "a.jpg"}])
    crop = ProcessorConfig(name="lavis_blip2_image_train", image_size=S, min_scale=0.2)
    a = build("gqa", storage=[ann], image_root=str(root), vis_processor=crop)[0]
    b = build("gqa", storage=[ann], image_root=str(root), vis_processor=crop)[0]
    assert torch.equal(a["image"], b["image"]) and a["instruction_input"] == b["instruction_input"]
    random.seed(123)  # the global generator plays no part
    c = build("gqa", storage=[ann], image_root=str(root), vis_processor=crop)[0]
    assert torch.equal(a["image"], c["image"])


def test_a_processor_setting_the_processor_refuses_names_the_dataset_key(tmp_path):
    img = jpg(tmp_path / "coco" / "a.jpg")
    ann = dump(tmp_path / "c.json", [{"image": "train2014/a.jpg", "caption": "a red square"}])
    crossed = ProcessorConfig(name="blip2_image_train", image_size=S, min_scale=0.9, max_scale=0.5)
    with pytest.raises(ConfigError, match=r"datasets\.coco_caption\.vis_processor: .*min_scale"):
        build("coco_caption", storage=[ann], image_root=str(img.parent), vis_processor=crossed)
