"""Visual question answering in the LAVIS-converted formats MiniGPT-v2 / TinyGPT-V train on.

coco_vqa  `vqa_train.json`, `vqa_val.json`: [{"question_id", "question", "answer": [10 answers], "image": "train2014/COCO_...jpg"}]
ok_vqa    `okvqa_train.json`: same format.
aok_vqa   `aokvqa_v1p0_train.json`: [{"question_id", "question", "direct_answers": [...], "image": ...}]
gqa       `train_balanced_questions.json` (LAVIS): [{"question_id", "question", "answer": "...", "image": "n123.jpg"}]
ocrvqa    OCR-VQA's `dataset.json`: {"<id>": {"imageURL", "questions": [...], "answers": [...], "split": 1|2|3,
          ...}}, one sample per question of the `split` ("train" = 1, "val" = 2, "test" = 3); image
          `<id><extension of imageURL>` under image_root (TinyGPT-V's XGPTv2 stage-4 set).

Sample: {"image", "instruction_input": "<Img><ImageHere></Img> [vqa] {question} ", "answer"}.  With
several human answers one is drawn with probability proportional to how many annotators gave it.
Images are looked up under image_root as given, by file name alone, and (A-OKVQA names COCO 2017
files) as COCO_train2014_/COCO_val2014_<name>, so one COCO 2014 folder serves all four.
coco_vqa, ok_vqa and aok_vqa leave out, at build time, the records whose image is not there (as
TinyGPT-V's COCOVQADataset / AOKVQADataset do, so the epoch has their length and order); the others,
like the original's, keep them and skip them when the epoch reaches them.
"""
from __future__ import annotations

import logging
import os
import random
from collections import Counter

from tinygpt.common.registry import registry
from tinygpt.datasets.base import Builder, DataError, ImageUnreadable, first_existing, load_json, require
from tinygpt.datasets.templates import VQA

log = logging.getLogger(__name__)


class _VQABuilder(Builder):
    default_prompts = VQA
    answer_field = "answer"
    drop_missing_images = False  # TinyGPT-V's COCO-image VQA sets filter them when they are built

    def build(self):
        self.root = self.image_root()
        self.pool = self.prompts()
        records = []
        for path, i, rec in self.json_records():
            image = require(rec, "image", path, i, str)
            question = require(rec, "question", path, i, str)
            answers = require(rec, self.answer_field, path, i, (list, str))
            answers = [answers] if isinstance(answers, str) else answers
            if not answers or not all(isinstance(a, str) for a in answers):
                raise DataError(f"{path}: record {i} field {self.answer_field!r} must be a string or "
                                f"a non-empty list of strings")
            # (answer, weight) pairs once at build time; the draw happens per sample.
            records.append((image, question, tuple(Counter(answers).items())))
        self.probe_images(records, self.locate)
        if self.drop_missing_images:
            records = self.with_images(records)
        return self.dataset(records, self.sample)

    def with_images(self, records: list) -> list:
        kept = []
        for rec in records:
            try:
                self.locate(rec)
            except ImageUnreadable:
                continue
            kept.append(rec)
        if len(kept) < len(records):
            log.info("%s: left out %d of %d records whose image is not under %s", self.name,
                     len(records) - len(kept), len(records), self.root)
        return kept

    def locate(self, rec) -> str:
        name = os.path.basename(rec[0])
        return first_existing(self.root, [rec[0], name, f"COCO_train2014_{name}", f"COCO_val2014_{name}"])

    def sample(self, rec, rng: random.Random) -> dict:
        answers, weights = zip(*rec[2])
        answer = rng.choices(answers, weights=weights, k=1)[0]
        return {"image": self.image(self.locate(rec), rng),
                "instruction_input": rng.choice(self.pool).format(self.text(rec[1])),
                "answer": self.text(answer)}


@registry.register("dataset", "coco_vqa")
class COCOVQABuilder(_VQABuilder):
    """storage: vqa_train.json (+ vqa_val.json); image_root: COCO 2014 images."""

    drop_missing_images = True


@registry.register("dataset", "ok_vqa")
class OKVQABuilder(_VQABuilder):
    """storage: okvqa_train.json; image_root: COCO 2014 images."""

    drop_missing_images = True


@registry.register("dataset", "aok_vqa")
class AOKVQABuilder(_VQABuilder):
    """storage: aokvqa_v1p0_train.json; image_root: COCO images."""

    drop_missing_images = True

    answer_field = "direct_answers"


@registry.register("dataset", "gqa")
class GQABuilder(_VQABuilder):
    """storage: train_balanced_questions.json (LAVIS format); image_root: gqa/images."""


@registry.register("dataset", "ocrvqa")
class OCRVQABuilder(_VQABuilder):
    """storage: OCR-VQA's dataset.json; image_root: its images folder (`<id>.jpg`, ...)."""

    splits = {"train": 1, "val": 2, "test": 3}

    def build(self):
        if self.cfg.split not in self.splits:
            raise DataError(f"{self.where('split')}: {self.cfg.split!r} is not one of {', '.join(self.splits)}")
        self.root = self.image_root()
        self.pool = self.prompts()
        records = []
        for path in self.storage("file"):
            books = load_json(path, self.name)
            if not isinstance(books, dict):
                raise DataError(f"{path}: expected a JSON object of books keyed by id, got {type(books).__name__}")
            for key, book in books.items():
                if require(book, "split", path, key, int) != self.splits[self.cfg.split]:
                    continue
                questions = require(book, "questions", path, key, list)
                answers = require(book, "answers", path, key, list)
                if len(questions) != len(answers) or not all(isinstance(t, str) for t in questions + answers):
                    raise DataError(f"{path}: record {key} needs as many string 'answers' as 'questions'")
                image = key + os.path.splitext(require(book, "imageURL", path, key, str))[1]
                records += [(image, q, ((a, 1),)) for q, a in zip(questions, answers)]
        self.probe_images(records, self.locate)
        return self.dataset(records, self.sample)

    def locate(self, rec) -> str:
        return first_existing(self.root, [rec[0]])
