"""Reading each benchmark's official files into the questions the evaluation runner asks.

A reader turns one `evaluation.benchmarks.<label>` entry into a `Split`: the questions in file
order (stable across runs, which is what makes resuming by key safe) and what the scorer needs as
`ann=` / `ques=`.  When `max_samples` cuts the split, those are the in-memory subsets, so the
scorer scores exactly the questions that were asked.

Every image a split needs is looked up at start-up (one directory listing per folder, not one
`stat` per question): a missing image is a `ConfigError` naming the `image_root` key, never a
crash an hour into a run.  The file formats are the official ones (eval_scripts/EVAL_README.md).
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any, Callable, Optional

from tinygpt.common.config import BenchmarkConfig, ConfigError
from tinygpt.evaluation.formats import EvalInputError, expect_list, load_json, require


@dataclass
class Question:
    """One thing to ask the model about one image.

    key: unique within the split, stable across runs (resume and sharding use it).
    text: what replaces `{}` in the benchmark prompt ("" for captions).
    record: the identifying fields of the prediction record the scorer expects ({"question_id": 1}).
    names: the image's possible file names under image_root, most likely first.
    candidates: the answers to rank (IconQA), else None.
    image: the image file found among `names` (set by the reader).
    """
    key: str
    text: str
    record: dict
    names: list[str]
    candidates: Optional[list[str]] = None
    image: str = ""


@dataclass
class Split:
    questions: list[Question]
    ann: Any  # the scorer's `ann=`: a path, or the in-memory subset when max_samples cuts the split
    ques: Any = None  # the scorer's `ques=`
    scorable: bool = True  # False: no public answers (VQAv2 test-dev); predictions only


@dataclass
class Source:
    """Where a benchmark's files are, with the config keys that named them (for error messages)."""
    label: str
    bench: BenchmarkConfig
    config_file: str
    _listings: dict = field(default_factory=dict)

    def key(self, name: str) -> str:
        return f"evaluation.benchmarks.{self.label}.{name}"

    def error(self, name: str, message: str) -> ConfigError:
        return ConfigError(f"{self.config_file}: key '{self.key(name)}' {message}")

    def path(self, name: str, *, fallback: str | None = None, required: bool = True) -> Optional[str]:
        """The file `bench.<name>` (or `bench.<fallback>` when unset) names, checked to exist."""
        used = name if getattr(self.bench, name) or not fallback else fallback
        value = getattr(self.bench, used)
        if not value:
            if not required:
                return None
            also = f" (nor '{self.key(fallback)}')" if fallback else ""
            raise self.error(name, f"is not set{also}")
        if not os.path.exists(value):
            raise self.error(used, f"points at {value}, which does not exist")
        return value

    def load(self, name: str, *, fallback: str | None = None, what: str = "file") -> tuple[str, Any]:
        path = self.path(name, fallback=fallback)
        try:
            return path, load_json(path, what)
        except EvalInputError as exc:
            raise ConfigError(f"{self.config_file}: key '{self.key(name)}': {exc}") from None

    def image_root(self) -> str:
        root = self.bench.image_root
        if not root:
            raise self.error("image_root", "is not set (the folder holding this benchmark's images)")
        if not os.path.isdir(root):
            raise self.error("image_root", f"points at {root}, which is not a directory")
        return root

    def find_images(self, questions: list[Question]) -> None:
        """Set each question's image to the first of its `names` (relative to image_root) that exists.

        Raises ConfigError naming image_root, how many are missing and the first one.
        """
        root = self.image_root()
        missing = []
        for q in questions:
            found = next((n for n in q.names if self._exists(root, n)), None)
            if found is None:
                missing.append(os.path.join(root, q.names[0]))
            else:
                q.image = os.path.join(root, found)
        if missing:
            raise self.error("image_root", f"is {root}, where {len(missing)} of {len(questions)} images are "
                                           f"missing, e.g. {missing[0]}")

    def _exists(self, root: str, name: str) -> bool:
        folder = os.path.normpath(os.path.join(root, os.path.dirname(name)))
        if folder not in self._listings:
            try:
                self._listings[folder] = set(os.listdir(folder))
            except OSError:
                self._listings[folder] = set()
        return os.path.basename(name) in self._listings[folder]


def _check_unique(questions: list[Question], src: Source, what: str) -> None:
    seen = set()
    for q in questions:
        if q.key in seen:
            raise ConfigError(f"{src.config_file}: key '{src.key(what)}': duplicate entry {q.key!r}")
        seen.add(q.key)


def _cut(items: list, limit: int) -> list:
    return items[:limit] if limit > 0 else items


def _wrap(fn: Callable[[Source], Split]) -> Callable[[Source], Split]:
    """Malformed official files raise EvalInputError in the helpers; re-raise as ConfigError."""
    def reader(src: Source) -> Split:
        try:
            split = fn(src)
        except EvalInputError as exc:
            raise ConfigError(f"{src.config_file}: evaluation.benchmarks.{src.label}: {exc}") from None
        if not split.questions:
            raise ConfigError(f"{src.config_file}: evaluation.benchmarks.{src.label}: no questions to ask")
        return split
    reader.__doc__ = fn.__doc__
    reader.__name__ = fn.__name__
    return reader


# ============================================================================ readers
def _coco_image_names(image_id: Any, subset: str) -> list[str]:
    """COCO's file names for an image id: the official `COCO_val2014_000000123456.jpg`, then the
    bare `000000123456.jpg` some preprocessed copies (TinyGPT-V's OK-VQA folder) use."""
    try:
        number = int(image_id)
    except (TypeError, ValueError):
        return [f"{image_id}.jpg", str(image_id)]
    return [f"COCO_{subset}_{number:012d}.jpg", f"{number:012d}.jpg"]


@_wrap
def read_vqa(src: Source) -> Split:
    """VQAv2 / OK-VQA: `questions` {"questions": [...], "data_subtype"}, `annotations` (optional:
    without them, e.g. VQAv2 test-dev, predictions are written for EvalAI but not scored).
    Images: COCO_<data_subtype>_<image_id:012d>.jpg under image_root."""
    path, ques = src.load("questions", what="questions")
    rows = _cut(expect_list(ques, path, "questions"), src.bench.max_samples)
    # test-dev2015 questions are about COCO test2015 images
    subset = str(ques.get("data_subtype", "val2014")).replace("test-dev", "test")
    questions = []
    for i, q in enumerate(rows):
        qid = require(q, "question_id", path, i, int)
        image_id = require(q, "image_id", path, i, (int, str))
        questions.append(Question(str(qid), require(q, "question", path, i, str), {"question_id": qid},
                                  _coco_image_names(image_id, subset)))
    _check_unique(questions, src, "questions")
    src.find_images(questions)
    ann_path = src.path("annotations", required=False)
    if ann_path is None:
        return Split(questions, None, None, scorable=False)
    if src.bench.max_samples <= 0:
        return Split(questions, ann_path, path)
    keep = {q.record["question_id"] for q in questions}
    _, ann = src.load("annotations", what="annotations")
    ann_rows = [a for a in expect_list(ann, ann_path, "annotations") if a.get("question_id") in keep]
    return Split(questions, {**ann, "annotations": ann_rows}, {**ques, "questions": rows})


@_wrap
def read_gqa(src: Source) -> Split:
    """GQA: the questions file {questionId: {"imageId", "question", "answer", "isBalanced"}} (it is
    also the scorer's annotations; `annotations`, when `questions` is set, is the choices file).  Only balanced questions are asked, as only they are scored.
    Images: <imageId>.jpg under image_root."""
    path, data = src.load("questions", fallback="annotations", what="questions")
    if not isinstance(data, dict):
        raise EvalInputError(f"{path}: expected a JSON object {{questionId: question}}")
    items = [(str(qid), q) for qid, q in data.items() if not isinstance(q, dict) or q.get("isBalanced", True)]
    items = _cut(items, src.bench.max_samples)
    questions = []
    for qid, q in items:
        if not isinstance(q, dict):
            raise EvalInputError(f"{path}: question {qid} is not an object")
        where = f"for question {qid!r}"
        image = str(require(q, "imageId", path, where, (str, int)))
        questions.append(Question(qid, require(q, "question", path, where, str), {"questionId": qid},
                                  [f"{image}.jpg", image]))
    src.find_images(questions)
    # With `questions` set, `annotations` may name the choices file (val_choices.json): validity and
    # plausibility.  testdev has none.
    choices = src.bench.annotations if src.bench.questions else None
    return Split(questions, path if src.bench.max_samples <= 0 else dict(items), choices)


@_wrap
def read_vizwiz(src: Source) -> Split:
    """VizWiz-VQA: val.json [{"image", "question", "answers", ...}]; images <image> under image_root."""
    path, data = src.load("annotations", fallback="questions", what="annotations")
    rows = _cut(expect_list(data, path), src.bench.max_samples)
    questions = []
    for i, a in enumerate(rows):
        image = require(a, "image", path, i, str)
        questions.append(Question(image, require(a, "question", path, i, str), {"image": image}, [image]))
    _check_unique(questions, src, "annotations")
    src.find_images(questions)
    return Split(questions, path if src.bench.max_samples <= 0 else rows)


@_wrap
def read_iconqa(src: Source) -> Split:
    """IconQA choose_txt: `annotations` problems.json + `questions` pid_splits.json (the
    choose_txt_test problems), or `annotations` a pre-filtered list [{"question_id" | "image_id",
    "question", "choices", "answer"}].  Images: <pid>/image.png under image_root."""
    path, data = src.load("annotations", what="problems")
    full_ques = None
    if isinstance(data, dict):
        full_ques, splits = src.load("questions", what="pid_splits")
        pids = splits.get("choose_txt_test") if isinstance(splits, dict) else None
        if not isinstance(pids, list):
            raise EvalInputError(f"{full_ques}: no 'choose_txt_test' list of problem ids")
        rows = []
        for pid in pids:
            if str(pid) not in data:
                raise EvalInputError(f"{path}: problem {pid} (listed in {full_ques}) is missing")
            rows.append(dict(data[str(pid)], question_id=str(pid)))
    else:
        rows = [dict(r, question_id=str(r.get("question_id", r.get("image_id")))) for r in expect_list(data, path)]
    rows = _cut(rows, src.bench.max_samples)
    questions = []
    for r in rows:
        where = f"for problem {r['question_id']!r}"
        choices = require(r, "choices", path, where, list)
        if not choices or not all(isinstance(c, str) for c in choices):
            raise EvalInputError(f"{path}: entry {where} 'choices' must be a non-empty list of strings")
        questions.append(Question(r["question_id"], require(r, "question", path, where, str),
                                  {"question_id": r["question_id"]},
                                  [os.path.join(r["question_id"], "image.png")], candidates=list(choices)))
    _check_unique(questions, src, "annotations")
    src.find_images(questions)
    if src.bench.max_samples <= 0:
        return Split(questions, path, full_ques)
    return Split(questions, [{"question_id": r["question_id"], "choices": r["choices"], "answer": r.get("answer")}
                             for r in rows])


@_wrap
def read_vsr(src: Source) -> Split:
    """VSR: test.jsonl lines {"image", "caption", "label"}; images <image> under image_root, or
    under its train2017/ or val2017/ folders (COCO 2017 as downloaded)."""
    path, data = src.load("annotations", fallback="questions", what="annotations")
    rows = _cut(expect_list(data, path), src.bench.max_samples)
    questions = []
    for i, a in enumerate(rows):
        image, caption = require(a, "image", path, i, str), require(a, "caption", path, i, str)
        # (image, caption) may repeat, so the line number is the stable key
        questions.append(Question(f"#{i}", caption, {"image": image, "caption": caption},
                                  [image, os.path.join("train2017", image), os.path.join("val2017", image)]))
    src.find_images(questions)
    return Split(questions, path if src.bench.max_samples <= 0 else rows)


@_wrap
def read_hateful_memes(src: Source) -> Split:
    """Hateful Memes: dev_seen.jsonl lines {"id", "img": "img/01235.png", "text", "label"};
    images <img> under image_root (the dataset's data/ folder)."""
    path, data = src.load("annotations", fallback="questions", what="annotations")
    rows = _cut(expect_list(data, path), src.bench.max_samples)
    questions = []
    for i, a in enumerate(rows):
        meme, img = require(a, "id", path, i, (int, str)), require(a, "img", path, i, str)
        questions.append(Question(str(meme), require(a, "text", path, i, str), {"id": meme},
                                  [img, os.path.basename(img)]))
    _check_unique(questions, src, "annotations")
    src.find_images(questions)
    return Split(questions, path if src.bench.max_samples <= 0 else rows)


def _refcoco_image_names(img_id: Any) -> list[str]:
    if isinstance(img_id, int) or str(img_id).isdigit():
        return [f"COCO_train2014_{int(img_id):012d}.jpg"]
    # MiniGPT-v2's files suffix the COCO file stem (27 characters) with the ref's index
    return [f"{str(img_id)[:27]}.jpg", f"{img_id}.jpg"]


@_wrap
def read_refcoco(src: Source) -> Split:
    """RefCOCO/+/g in MiniGPT-v2's eval format [{"img_id", "sents", "bbox", "height", "width", "id"?}];
    images <img_id[:27]>.jpg (COCO_train2014_<012d>.jpg) under image_root."""
    path, data = src.load("annotations", fallback="questions", what="annotations")
    rows = _cut(expect_list(data, path), src.bench.max_samples)
    by_id = all("id" in a for a in rows)  # the scorer then matches predictions by id
    questions = []
    for i, a in enumerate(rows):
        img_id = require(a, "img_id", path, i, (int, str))
        sents = require(a, "sents", path, i, (str, list))
        phrase = sents if isinstance(sents, str) else (sents[0] if sents else "")
        if not isinstance(phrase, str):
            raise EvalInputError(f"{path}: entry {i} field 'sents' must be a string or a list of strings")
        record = {"id": a["id"]} if by_id else {"img_id": img_id, "sents": sents}
        questions.append(Question(str(a["id"]) if by_id else f"#{i}", phrase, record,
                                  _refcoco_image_names(img_id)))
    _check_unique(questions, src, "annotations")
    src.find_images(questions)
    return Split(questions, path if src.bench.max_samples <= 0 else rows)


@_wrap
def read_coco_caption(src: Source) -> Split:
    """COCO captions {"images": [{"id", "file_name"?}], "annotations": [{"image_id", "caption"}]}
    (captions_val2014.json, or the Karpathy test split's coco_karpathy_test_gt.json): one question
    per image that has reference captions.  Images: file_name, else COCO_val2014_<id:012d>.jpg."""
    path, data = src.load("annotations", fallback="questions", what="annotations")
    anns = expect_list(data, path, "annotations")
    images = expect_list(data["images"], path) if "images" in data else []
    annotated: dict = {}
    for i, a in enumerate(anns):
        annotated.setdefault(require(a, "image_id", path, i, (int, str)), None)
    # the images list gives the order; annotated images missing from it go last
    ids = list(dict.fromkeys([img.get("id") for img in images if img.get("id") in annotated] + list(annotated)))
    ids = _cut(ids, src.bench.max_samples)
    file_names = {img.get("id"): img.get("file_name") for img in images if isinstance(img.get("file_name"), str)}
    questions = [Question(str(i), "", {"image_id": i},
                          ([file_names[i]] if i in file_names else []) + _coco_image_names(i, "val2014"))
                 for i in ids]
    src.find_images(questions)
    if src.bench.max_samples <= 0:
        return Split(questions, path)
    keep = set(ids)
    return Split(questions, {"images": [img for img in images if img.get("id") in keep],
                             "annotations": [a for a in anns if a["image_id"] in keep]})
