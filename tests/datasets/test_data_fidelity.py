"""The text each TinyGPT-V dataset trains on, to the character, from facts of TinyGPT-V's own dataset
code (minigpt4/datasets/datasets/*.py): its instruction pools, its wrap
`"<Img><ImageHere></Img> {} ".format(instruction)` (trailing space included), its conversation rule
`value + " "`, its box formula `int(x / W * 100)` per corner with no clamp, and its stage-3 prompt
drawn once per batch.  Each record is drawn over many epochs and the set of (instruction, answer)
pairs must equal the set the original can produce (its random branches enumerated here).  The pools
are written out literally, not imported, so a change of ours cannot move both sides.
"""
import pytest
import torch

from builder_fixtures import build, dump, jpg
from tinygpt.conversation.protocol import CONNECT_SYM, IGNORE, Dialogue, PromptStyle, encode, split_sample
from tinygpt.datasets.base import DataError
from tinygpt.datasets.collate import collate
from tinygpt.datasets.loader import build_loader

WRAP = "<Img><ImageHere></Img> {} "  # every TinyGPT-V dataset class with an instruction
VQA = ["[vqa] {}", "[vqa] Based on the image, respond to this question with a short answer: {}"]
REFER = ["[refer] {}", "[refer] give me the location of {}", "[refer] where is {} ?",
         "[refer] from this image, tell me the location of {}", "[refer] the location of {} is",
         "[refer] could you tell me the location for {} ?", "[refer] where can I locate the {} ?"]
IDENTIFY = ["[identify] {}", "[identify] what object is in this location {}",
            "[identify] identify the object present at this location {}", "[identify] what is it in {}",
            "[identify] describe this object in {}", "[identify] this {} is", "[identify] the object in {} is"]
CAPTION = ["Briefly describe this image.", "Provide a concise depiction of this image.",
           "Present a short description of this image.", "Summarize this image in a few words.",
           "A short image caption:", "A short image description:", "A photo of ", "An image that shows ",
           "Write a short description for the image. ", "Write a description for the photo.",
           "Provide a description of what is presented in the photo.", "Briefly describe the content of the image.",
           "Can you briefly explain what you see in the image?",
           "Could you use a few words to describe what you perceive in the photo?",
           "Please provide a short depiction of the picture.", "Using language, provide a short account of the image.",
           "Use a few words to illustrate what is happening in the picture."]
GROUNDING = ["[grounding] please describe this image in details", "[grounding] describe this image as detailed as possible",
             "[grounding] summarize this image in details",
             "[grounding] give a thorough description of what you see in this image"]
ALIGNMENT = ["<Img><ImageHere></Img> Describe this image in detail.",  # MiniGPT-4's prompts/alignment.txt
             "<Img><ImageHere></Img> Take a look at this image and describe what you notice.",
             "<Img><ImageHere></Img> Please provide a detailed description of the picture.",
             "<Img><ImageHere></Img> Could you describe the contents of this image for me?"]


def produced(ds, epochs=120):
    """Every (instruction, answer) the dataset gives over `epochs` epochs of all its records."""
    out = set()
    for epoch in range(epochs):
        ds.set_epoch(epoch)
        for i in range(len(ds)):
            s = ds[i]
            out.add((s.get("instruction_input"), s["answer"]))
    return out


def test_vqa_sets_wrap_with_the_trailing_space(tmp_path):
    jpg(tmp_path / "coco" / "COCO_train2014_000000000001.jpg")
    ann = dump(tmp_path / "vqa_train.json", [{"question_id": 1, "question": "What color is the Bus?",
                                              "answer": ["Red", "red", "blue"], "image": "train2014/COCO_train2014_000000000001.jpg"}])
    want = {(WRAP.format(t.format("what color is the bus?")), a) for t in VQA for a in ("red", "blue")}
    for name in ("coco_vqa", "ok_vqa"):
        assert produced(build(name, storage=[ann], image_root=str(tmp_path / "coco"))) == want
    ann = dump(tmp_path / "aok.json", [{"question": "What color is the Bus?", "direct_answers": ["red"] * 9 + ["blue"],
                                        "image": "val2017/000000000001.jpg"}])
    assert produced(build("aok_vqa", storage=[ann], image_root=str(tmp_path / "coco"))) == want
    jpg(tmp_path / "gqa" / "n1.jpg")
    ann = dump(tmp_path / "gqa.json", [{"question": "What color is the Bus?", "answer": "Red", "image": "n1.jpg"}])
    assert produced(build("gqa", storage=[ann], image_root=str(tmp_path / "gqa"))) == {
        ("<Img><ImageHere></Img> [vqa] what color is the bus? ", "red"),
        ("<Img><ImageHere></Img> [vqa] Based on the image, respond to this question with a short answer: "
         "what color is the bus? ", "red")}


def test_coco_vqa_sets_leave_out_records_without_their_image_at_build(tmp_path):
    jpg(tmp_path / "coco" / "COCO_train2014_000000000002.jpg")
    recs = [{"question_id": i, "question": f"Q{i}?", "answer": ["a"], "direct_answers": ["a"],
             "image": f"train2014/COCO_train2014_{i:012d}.jpg"} for i in (1, 2, 3)]
    ann = dump(tmp_path / "vqa.json", recs)
    for name in ("coco_vqa", "ok_vqa", "aok_vqa"):  # TinyGPT-V filters these when it builds them
        ds = build(name, storage=[ann], image_root=str(tmp_path / "coco"))
        assert len(ds) == 1 and ds[0]["instruction_input"].endswith(" q2? ")
    gqa = build("gqa", storage=[ann], image_root=str(tmp_path / "coco"))  # the original keeps them
    assert len(gqa) == 3 and gqa[0] is None and gqa[1] is not None


def test_ocrvqa_reads_the_training_split_of_dataset_json(tmp_path):
    jpg(tmp_path / "images" / "B01.jpg")
    ann = dump(tmp_path / "dataset.json", {
        "B01": {"imageURL": "http://x/images/I/51.jpg", "questions": ["Who wrote this book?", "Is this a Comic book?"],
                "answers": ["Jane Doe", "No"], "title": "t", "genre": "g", "split": 1},
        "B02": {"imageURL": "http://x/images/I/52.jpg", "questions": ["Q?"], "answers": ["A"], "split": 3}})
    assert produced(build("ocrvqa", storage=[ann], image_root=str(tmp_path / "images"))) == {
        (WRAP.format(t.format(q)), a) for t in VQA for q, a in (("who wrote this book?", "jane doe"),
                                                              ("is this a comic book?", "no"))}


def test_caption_pool_keeps_its_three_trailing_spaces(tmp_path):
    img = jpg(tmp_path / "coco" / "COCO_train2014_000000000009.jpg")
    jpg(tmp_path / "coco" / "COCO_val2014_000000000010.jpg")
    ann = dump(tmp_path / "karpathy.json", [{"image": "train2014/COCO_train2014_000000000009.jpg",
                                             "caption": "A Man riding.", "image_id": 9},
                                            # Karpathy's "restval": TinyGPT-V keeps only paths with "train"
                                            {"image": "val2014/COCO_val2014_000000000010.jpg",
                                             "caption": "A val image.", "image_id": 10}])
    got = produced(build("coco_caption", storage=[ann], image_root=str(img.parent)), epochs=250)
    assert got == {(f"<Img><ImageHere></Img> [caption] {p} ", "a man riding") for p in CAPTION}
    assert ("<Img><ImageHere></Img> [caption] A photo of  ", "a man riding") in got
    jpg(tmp_path / "tc" / "abc.jpg")
    ann = dump(tmp_path / "textcaps.json", {"data": [{"image_id": "abc", "caption_str": "A sign."}]})
    assert produced(build("textcaps", storage=[ann], image_root=str(tmp_path / "tc")), epochs=250) == {
        (f"<Img><ImageHere></Img> [caption] {p} ", "a sign") for p in CAPTION}


def test_coco_caption_without_train_images_names_the_rule(tmp_path):
    jpg(tmp_path / "coco" / "COCO_val2014_000000000010.jpg")
    ann = dump(tmp_path / "karpathy.json", [{"image": "val2014/COCO_val2014_000000000010.jpg", "caption": "A cat."}])
    with pytest.raises(DataError, match=r"datasets\.coco_caption\.storage: none of the 1 records has 'train'"):
        build("coco_caption", storage=[ann], image_root=str(tmp_path / "coco"))


def _refs(tmp_path, bbox, size):
    jpg(tmp_path / "train2014" / "COCO_train2014_000000000005.jpg", size=size)
    return dump(tmp_path / "refs.json", {"refs": [{"image_id": 5, "split": "train", "bbox": bbox,
                                                   "sentences": ["The Man, on the left."]}]})


@pytest.mark.parametrize("bbox,size,box", [
    ([60, 10, 40, 40], (100, 50), "{<60><20><100><100>}"),  # touches the right and bottom border: 100
    ([10, 20, 30, 94], (100, 200), "{<10><10><40><56>}"),   # 114 / 200 * 100 = 56.99999999999999 -> 56
])
def test_refcoco_boxes_are_the_originals_unclamped_formula(tmp_path, bbox, size, box):
    ann = _refs(tmp_path, bbox, size)
    refer = build("refcoco", storage=[ann], image_root=str(tmp_path / "train2014"))
    assert produced(refer) == {(WRAP.format(t.format("the man, on the left")), box) for t in REFER}
    identify = build("invrefcoco", storage=[ann], image_root=str(tmp_path / "train2014"))
    assert produced(identify) == {(WRAP.format(t.format(box)), "the man, on the left") for t in IDENTIFY}
    clamped = build("refcoco", storage=[ann], image_root=str(tmp_path / "train2014"), clamp_boxes=True)[0]["answer"]
    assert clamped == box.replace("<100>", "<99>")


def test_visual_genome_region_past_the_border(tmp_path):
    vg = tmp_path / "vg"
    jpg(vg / "VG_100K" / "7.jpg", size=(160, 120))
    dump(vg / "image_data.json", [{"image_id": 7, "url": "https://x/VG_100K/7.jpg"}])
    dump(vg / "region_descriptions.json", [{"id": 7, "regions": [
        {"image_id": 7, "x": 125, "y": 75, "width": 50, "height": 62, "phrase": "A Red Sign"}]}])
    assert produced(build("refvg", storage=[str(vg)])) == {
        (WRAP.format(t.format("a red sign")), "{<78><62><109><114>}") for t in REFER}


def test_flickr_sets(tmp_path):
    jpg(tmp_path / "f" / "1.jpg")
    root = str(tmp_path / "f")
    g = dump(tmp_path / "g.json", [{"image_id": 1, "grounded_caption": "<p>a dog</p> {<1><2><3><4>} runs"}])
    assert produced(build("flickr_grounded_caption", storage=[g], image_root=root)) == {
        (WRAP.format(t), "<p>a dog</p> {<1><2><3><4>} runs") for t in GROUNDING}
    c = dump(tmp_path / "c.json", [{"image_id": 1, "caption": "A Dog runs ", "output": "<p>A Dog</p> {<1><2><3><4>}"}])
    assert produced(build("flickr_caption_to_phrase", storage=[c], image_root=root)) == {
        ("<Img><ImageHere></Img> [detection] A Dog runs  ", "<p>A Dog</p> {<1><2><3><4>}")}
    p = dump(tmp_path / "p.json", [{"image_id": 1, "phrase": "A Dog", "bbox": "{<1><2><3><4>}"}])
    assert produced(build("flickr_object_to_phrase", storage=[p], image_root=root)) == {
        ("<Img><ImageHere></Img> [detection] A Dog ", "<p>A Dog</p> {<1><2><3><4>}")}


def _llava(tmp_path):
    jpg(tmp_path / "coco" / "COCO_train2014_000000000042.jpg")
    conv = [{"from": "human", "value": "What is in the Image?\n<image>"}, {"from": "gpt", "value": "A bus. "},
            {"from": "human", "value": " Its Color? "}, {"from": "gpt", "value": "Red."},
            {"from": "human", "value": "Why?"}, {"from": "gpt", "value": "Paint."}]
    return dump(tmp_path / "llava.json", [{"id": "000000000042", "conversations": conv}])


def test_llava_single_turn_sets(tmp_path):
    ann = _llava(tmp_path)
    for name in ("llava_detail", "llava_reason"):
        assert produced(build(name, storage=[ann], image_root=str(tmp_path / "coco")), epochs=2) == {
            ("<Img><ImageHere></Img> what is in the image? ", "A bus. ")}


def test_conversations_append_a_space_to_later_questions(tmp_path):
    ann = _llava(tmp_path)
    for name in ("llava_conversation", "multitask_conversation"):
        s = build(name, storage=[ann], image_root=str(tmp_path / "coco"))[0]
        assert s["instruction_input"] == CONNECT_SYM.join(
            ["<Img><ImageHere></Img> What is in the Image? ", " Its Color?  ", "Why? "])
        assert s["answer"] == CONNECT_SYM.join(["A bus. ", "Red.", "Paint."])


def test_stage3_alignment_prompt_is_drawn_once_per_batch(tmp_path):
    root = tmp_path / "cc_sbu_align"
    for i in range(64):
        jpg(root / "image" / f"{i}.jpg")
    dump(root / "filter_cap.json", {"annotations": [{"image_id": str(i), "caption": f"Text {i}."} for i in range(64)]})
    ds = build("cc_sbu_align", storage=[str(root)])
    assert {q for q, _ in produced(ds, epochs=3)} == set(ALIGNMENT)  # each sample's own draw: the pool
    seen = set()
    for epoch in range(2):
        ds.set_epoch(epoch)
        for batch in build_loader(ds, 8, name="cc_sbu_align", seed=epoch):
            assert len(set(batch["instruction_input"])) == 1 and len(batch["instruction_input"]) == 8
            seen.add(batch["instruction_input"][0])
    assert seen == set(ALIGNMENT)  # 16 batches: every prompt drawn (a miss has probability < 0.1)


def test_one_instruction_collate_keeps_other_datasets_per_sample():
    samples = [{"instruction_input": q, "answer": "a"} for q in ("x", "y")]
    assert collate(samples)["instruction_input"] == ["x", "y"]
    assert collate(samples, one_instruction=True)["instruction_input"] == ["x", "x"]


def test_the_spaces_reach_the_token_ids(tmp_path):
    from tiny import write_tokenizer
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(str(write_tokenizer(tmp_path / "tok")))
    style = PromptStyle(template="[INST] {} [/INST]", end_sym="###")
    jpg(tmp_path / "gqa" / "n1.jpg")
    ann = dump(tmp_path / "gqa.json", [{"question": "What color is the bus?", "answer": "red", "image": "n1.jpg"}])
    s = build("gqa", storage=[ann], image_root=str(tmp_path / "gqa"),
              prompts_path=str(_one_line(tmp_path / "p.txt", "[vqa] {}")))[0]
    layout = encode(style, tok, split_sample(s["instruction_input"], s["answer"]), n_query=4)
    ids = lambda text: tok(text, add_special_tokens=False).input_ids  # noqa: E731
    after = ids("</Img> [vqa] what color is the bus?  [/INST]")  # two spaces: TinyGPT-V's sample
    assert after != ids("</Img> [vqa] what color is the bus? [/INST]")
    head = ids("[INST] <Img>")
    assert layout.ids == [tok.bos_token_id] + head + [tok.pad_token_id] * 4 + after + ids("red###")
    assert layout.labels == [IGNORE] * (1 + len(head) + 4 + len(after)) + ids("red###")
    turns = encode(style, tok, Dialogue((("<Img><ImageHere></Img> q ", "a"), (" Its Color? ", "b")), multi_turn=True), 4)
    assert ids(tok.bos_token + "[INST]  Its Color?  [/INST]") == turns.ids[-len(ids("b###")) - len(
        ids(tok.bos_token + "[INST]  Its Color?  [/INST]")):-len(ids("b###"))]


def _one_line(path, line):
    path.write_text(line + "\n")
    return path


def test_prompt_file_lines_keep_their_spaces(tmp_path):
    jpg(tmp_path / "gqa" / "n1.jpg")
    ann = dump(tmp_path / "gqa.json", [{"question": "Q?", "answer": "a", "image": "n1.jpg"}])
    s = build("gqa", storage=[ann], image_root=str(tmp_path / "gqa"),
              prompts_path=str(_one_line(tmp_path / "p.txt", "[vqa] {}  ")))[0]
    assert s["instruction_input"] == "<Img><ImageHere></Img> [vqa] q?   "
    assert torch.is_tensor(s["image"])


def test_a_recipe_may_draw_the_stage3_prompt_per_sample(tmp_path):
    root = tmp_path / "cc_sbu_align"
    for i in range(16):
        jpg(root / "image" / f"{i}.jpg")
    dump(root / "filter_cap.json", {"annotations": [{"image_id": str(i), "caption": f"Text {i}."} for i in range(16)]})
    ds = build("cc_sbu_align", storage=[str(root)], one_instruction_per_batch=False)
    loader = build_loader(ds, 8, name="cc_sbu_align", seed=0)
    order = list(loader.sampler)
    batches = [b["instruction_input"] for b in loader]
    assert batches == [[ds[i]["instruction_input"] for i in order[k:k + 8]] for k in (0, 8)]  # each its own draw
    assert any(len(set(b)) > 1 for b in batches)
