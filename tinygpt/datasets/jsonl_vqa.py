"""The simplest fine-tuning set a user holds: one JSON object per line,

    {"image": "photos/0001.jpg", "question": "What colour is the car?", "answer": "red"}

`answer` may also be a list of human answers (one is drawn per sample, weighted by how many gave
it, as for VQAv2); other fields (`id`, ...) are ignored.  `image` is relative to `image_root`
(default: the folder of the first annotation file), sub-folders allowed.

Sample: exactly coco_vqa's (`vqa.py`: the `[vqa] {}` pool or `prompts_path`, the question and answer
through text_processor), so a model tuned on it answers the way TinyGPT-V stage 4 was taught.

Lines are parsed when the epoch reaches them, not at start-up: a malformed line (not JSON, a field
missing) is skipped and counted ("malformed record", file and line), never the end of a run.
"""
from __future__ import annotations

import json
import os
import random
from collections import Counter

from tinygpt.common.registry import registry
from tinygpt.datasets.base import BadRecord, DataError, first_existing, require
from tinygpt.datasets.vqa import _VQABuilder


def read_lines(paths: list[str]) -> list[tuple[str, int, str]]:
    """(file, line number, text) of every non-blank line: what a lazily parsed record is."""
    out = []
    for path in paths:
        try:
            with open(path, encoding="utf-8") as f:
                out += [(path, n, line) for n, line in enumerate(f, 1) if line.strip()]
        except UnicodeDecodeError as e:
            raise DataError(f"{path}: not UTF-8 text (byte {e.start}: {e.reason}); save the file as UTF-8") from None
    return out


def parse_line(line: tuple[str, int, str]) -> tuple[dict, str]:
    """The JSON object of one line and how messages name it ("file: line n"); BadRecord otherwise."""
    path, n, text = line
    where = f"line {n}"
    try:
        obj = json.loads(text)
    except ValueError as e:
        raise BadRecord(f"{path}: {where} is not JSON ({getattr(e, 'msg', e)})") from None
    if not isinstance(obj, dict):
        raise BadRecord(f"{path}: {where} is {type(obj).__name__}, expected an object")
    return obj, where


def vqa_fields(obj: dict, path: str, where: str) -> tuple[str, tuple]:
    """(question, ((answer, weight), ...)) of a record; BadRecord naming file, record and field."""
    try:
        question = require(obj, "question", path, where, str)
        answers = require(obj, "answer", path, where, (str, list))
    except DataError as e:
        raise BadRecord(str(e)) from None
    answers = [answers] if isinstance(answers, str) else answers
    if not answers or not all(isinstance(a, str) and a.strip() for a in answers):
        raise BadRecord(f"{path}: record {where} field 'answer' must be a non-empty string or list of them")
    return question, tuple(Counter(answers).items())


@registry.register("dataset", "vqa_jsonl")
class JsonlVQABuilder(_VQABuilder):
    """storage: one or more .jsonl files; image_root: where `image` paths start (default: the
    first file's folder)."""

    def build(self):
        paths = self.storage("file")
        self.root = self.image_root(os.path.dirname(os.path.abspath(paths[0])))
        self.pool = self.prompts()
        lines = read_lines(paths)
        self.probe_parsed(lines, self.parse, self.locate)
        return self.dataset(lines, self.sample)

    def parse(self, line) -> tuple[str, str, tuple]:
        """One line -> coco_vqa's record (image, question, ((answer, weight), ...))."""
        obj, where = parse_line(line)
        try:
            image = require(obj, "image", line[0], where, str)
        except DataError as e:
            raise BadRecord(str(e)) from None
        return (image, *vqa_fields(obj, line[0], where))

    def locate(self, rec) -> str:
        # Exactly the given path: a user's folders may reuse a file name (cat/1.jpg, dog/1.jpg).
        return first_existing(self.root, [rec[0]])

    def sample(self, line, rng: random.Random) -> dict:
        return super().sample(self.parse(line), rng)

