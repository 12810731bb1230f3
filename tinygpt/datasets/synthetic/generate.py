"""Write the synthetic corpus: every file in a released format a real builder or evaluator reads.

Scenes are drawn from random.Random("synthetic:<seed>:<split>:<i>"), so a scene depends only on
(seed, split, index) and the same arguments give byte-identical files.
"""
from __future__ import annotations

import json
import os
import random
import time

from tinygpt.datasets.synthetic import language
from tinygpt.datasets.synthetic.scenes import SHAPES, cell_labels, render, sample_scene
from tinygpt.datasets.synthetic.tokenizer import train_tokenizer
from tinygpt.datasets.synthetic.writers import ShardWriter, jpeg_bytes, write_bytes, write_json

LAYOUT = """\
<out>/
  manifest.json                  counts, arguments, and this layout
  train/shard-00000.tar ...      webdataset: <key>.jpg + <key>.json {"caption"}   -> laion / cc_sbu
  align/filter_cap.json          {"annotations": [{"image_id", "caption"}]}      -> cc_sbu_align
  align/image/<image_id>.jpg
  images/COCO_train2014_<012d>.jpg   train images for the instruction sets below (image_root)
  vqa/vqa_train.json             LAVIS COCO-VQA/OK-VQA format                     -> coco_vqa / ok_vqa
  refcoco/refcoco_synthetic.json the format dataset/convert_refcoco.py writes     -> refcoco / invrefcoco
  eval/images/COCO_val2014_<012d>.jpg                     held-out images (VQAv2 and captions)
  eval/vqav2/questions.json      {"questions": [{"question_id", "image_id", "question"}]}
  eval/vqav2/annotations.json    {"annotations": [{"question_id", "image_id", "question_type",
                                  "answer_type", "answers": [10 x {...}], "multiple_choice_answer"}]}
  eval/refcoco/refcoco_val.json  MiniGPT-v2 eval format [{"img_id", "sents", "bbox": [x,y,w,h], "height", "width", "id"}]
  eval/refcoco_images/COCO_train2014_<012d>.jpg           the same held-out scenes, named as img_id[:27] + ".jpg"
  eval/coco_caption/captions_val.json  {"images": [{"id", "file_name"}], "annotations": [{"image_id", "caption", "id"}]}
  tokenizer/                     byte-level BPE (tokenizer.json, tokenizer_config.json, special_tokens_map.json)
"""

TRAIN_ID0 = 1
EVAL_ID0 = 1_000_001
_VQA_INFO = {"description": "tinygpt synthetic shapes", "version": "1.0"}
_LICENSE = {"name": "generated", "url": ""}
# Written to manifest.json; bumped when the files change (v2: shard json "cells"), so the
# quickstart regenerates data written by an older version.
GENERATOR = "tinygpt synthetic shapes v2"


def _scenes(seed: int, split: str, count: int, first_id: int, size: int):
    for i in range(count):
        rng = random.Random(f"synthetic:{seed}:{split}:{i}")
        yield sample_scene(rng, first_id + i, size), rng


def _train(out: str, scenes, shard_size: int, questions_per_image: int, corpus: list[str]) -> dict:
    align, vqa, refs = [], [], []
    writer, shards = None, []
    for n, (scene, rng) in enumerate(scenes):
        if n % shard_size == 0:
            if writer:
                writer.close()
            writer = ShardWriter(os.path.join(out, "train", f"shard-{len(shards):05d}.tar"))
            shards.append(os.path.relpath(writer.path, out))
        jpg = jpeg_bytes(render(scene))
        name = f"COCO_train2014_{scene.image_id:012d}.jpg"
        key = f"{scene.image_id:09d}"
        caption = language.caption(scene, rng)
        writer.add(f"{key}.jpg", jpg)
        # "cells": each grid cell's content class (scenes.CELL_CLASSES), for the Q-Former cell loss.
        writer.add(f"{key}.json", _json_bytes({"caption": caption, "key": key, "width": scene.size,
                                                "height": scene.size, "cells": cell_labels(scene)}))
        write_bytes(os.path.join(out, "images", name), jpg)
        write_bytes(os.path.join(out, "align", "image", f"{scene.image_id}.jpg"), jpg)
        description = language.description(scene)
        align.append({"image_id": str(scene.image_id), "caption": description})
        corpus += [caption, description]
        for j, qa in enumerate(language.questions(scene, rng, questions_per_image)):
            vqa.append({"question_id": scene.image_id * 10 + j, "question": qa.question,
                        "answer": [qa.answer] * 10, "image": name, "dataset": "vqa"})
            corpus += [qa.question, qa.answer]
        for k, o in enumerate(scene.objects):
            phrases = language.refer_phrases(o)
            refs.append({"ref_id": scene.image_id * 10 + k, "ann_id": scene.image_id * 10 + k,
                         "image_id": scene.image_id, "file_name": name, "split": "train",
                         "category_id": SHAPES.index(o.shape) + 1, "bbox": list(o.box),
                         "width": scene.size, "height": scene.size, "sentences": phrases})
            corpus += phrases
    if writer:
        writer.close()
    write_json(os.path.join(out, "align", "filter_cap.json"), {"annotations": align})
    write_json(os.path.join(out, "vqa", "vqa_train.json"), vqa)
    write_json(os.path.join(out, "refcoco", "refcoco_synthetic.json"),
               {"dataset": "refcoco", "split_by": "synthetic", "refs": refs})
    return {"train_shards": shards, "train_images": len(align), "vqa_train_questions": len(vqa),
            "refcoco_train_refs": len(refs)}


def _eval(out: str, scenes, questions_per_image: int) -> dict:
    questions, annotations, refcoco, images, captions = [], [], [], [], []
    for scene, rng in scenes:
        jpg = jpeg_bytes(render(scene))
        name = f"COCO_val2014_{scene.image_id:012d}.jpg"
        write_bytes(os.path.join(out, "eval", "images", name), jpg)
        write_bytes(os.path.join(out, "eval", "refcoco_images", f"COCO_train2014_{scene.image_id:012d}.jpg"), jpg)
        images.append({"id": scene.image_id, "file_name": name, "width": scene.size, "height": scene.size})
        for c in language.reference_captions(scene):
            captions.append({"image_id": scene.image_id, "id": len(captions) + 1, "caption": c})
        for j, qa in enumerate(language.questions(scene, rng, questions_per_image)):
            qid = scene.image_id * 10 + j
            questions.append({"question_id": qid, "image_id": scene.image_id, "question": qa.question})
            annotations.append({
                "question_id": qid, "image_id": scene.image_id, "question_type": qa.question_type,
                "answer_type": qa.answer_type, "multiple_choice_answer": qa.answer,
                "answers": [{"answer": qa.answer, "answer_confidence": "yes", "answer_id": k} for k in range(1, 11)],
            })
        for k, o in enumerate(scene.objects):
            refcoco.append({"img_id": f"COCO_train2014_{scene.image_id:012d}_{k}", "sents": f"the {o.noun}",
                            "bbox": list(o.box), "height": scene.size, "width": scene.size,
                            "id": scene.image_id * 10 + k})
    header = {"info": _VQA_INFO, "task_type": "Open-Ended", "data_type": "mscoco", "data_subtype": "val2014",
              "license": _LICENSE}
    write_json(os.path.join(out, "eval", "vqav2", "questions.json"), dict(header, questions=questions))
    write_json(os.path.join(out, "eval", "vqav2", "annotations.json"), dict(header, annotations=annotations))
    write_json(os.path.join(out, "eval", "refcoco", "refcoco_val.json"), refcoco)
    write_json(os.path.join(out, "eval", "coco_caption", "captions_val.json"),
               {"info": _VQA_INFO, "licenses": [_LICENSE], "type": "captions", "images": images,
                "annotations": captions})
    return {"eval_images": len(images), "vqav2_questions": len(questions), "refcoco_eval_items": len(refcoco),
            "caption_references": len(captions)}


def _json_bytes(obj) -> bytes:
    return json.dumps(obj, ensure_ascii=False, separators=(",", ":")).encode("utf-8")


def generate(out_dir: str = "data/synthetic", train_images: int = 4000, eval_images: int = 200,
             image_size: int = 112, seed: int = 0, shard_size: int = 1000, questions_per_image: int = 4,
             vocab_size: int = 1500, tokenizer_dir: str | None = None) -> dict:
    """Write the corpus under `out_dir` (see LAYOUT); returns the manifest (also written)."""
    for flag, value, low in (("train_images", train_images, 1), ("eval_images", eval_images, 1),
                             ("image_size", image_size, 24), ("shard_size", shard_size, 1),
                             ("questions_per_image", questions_per_image, 1), ("vocab_size", vocab_size, 300)):
        if value < low:
            raise ValueError(f"{flag} must be at least {low}, got {value}")
    if questions_per_image > 7:
        raise ValueError(f"questions_per_image must be at most 7 (the number of question kinds), got {questions_per_image}")
    t0 = time.perf_counter()
    corpus: list[str] = []
    counts = _train(out_dir, _scenes(seed, "train", train_images, TRAIN_ID0, image_size), shard_size,
                    questions_per_image, corpus)
    counts.update(_eval(out_dir, _scenes(seed, "eval", eval_images, EVAL_ID0, image_size), questions_per_image))
    tokenizer_dir = tokenizer_dir or os.path.join(out_dir, "tokenizer")
    train_tokenizer(corpus, tokenizer_dir, vocab_size)
    manifest = {
        "generator": GENERATOR,
        "arguments": {"train_images": train_images, "eval_images": eval_images, "image_size": image_size,
                      "seed": seed, "shard_size": shard_size, "questions_per_image": questions_per_image,
                      "vocab_size": vocab_size},
        "counts": counts,
        "layout": LAYOUT,
    }
    write_json(os.path.join(out_dir, "manifest.json"), manifest)
    manifest["seconds"] = round(time.perf_counter() - t0, 2)  # not written: the files stay reproducible
    return manifest
