"""Reading the official annotation / question / prediction files of every benchmark.

Everything here turns a path (or an already-loaded object, so an evaluation loop can score in
memory) into plain Python structures, and turns every way such a file can be wrong into an
`EvalInputError` whose one-line message names the file and the field.  Scorers never index a
raw JSON object themselves, so a malformed file can never surface as a KeyError deep in a metric.

The file formats are the official ones; see eval_scripts/EVAL_README.md for where each comes from.
"""
from __future__ import annotations

import os
from collections import defaultdict, deque
from dataclasses import dataclass
from typing import Any, Callable, Hashable, Iterable, Mapping, Sequence

from tinygpt.common.errors import UserError
from tinygpt.common.jsonfile import read_json


class EvalInputError(UserError):
    """An input file is missing or malformed; the message names the file and the field."""


def source_name(source: Any, what: str) -> str:
    """How messages refer to `source`: its path, or '<what (in memory)>'."""
    if isinstance(source, (str, os.PathLike)):
        return os.fspath(source)
    return f"<{what} (in memory)>"


def load_json(source: Any, what: str) -> Any:
    """Load a JSON file, or a JSON-lines file when the name ends in .jsonl.

    `source` may already be a list/dict (returned unchanged).  `what` ("predictions",
    "annotations", ...) is only used in error messages.
    """
    if not isinstance(source, (str, os.PathLike)):
        if isinstance(source, (list, dict)):
            return source
        raise EvalInputError(f"{what}: expected a path or a list/dict, got {type(source).__name__}")
    path = os.fspath(source)
    if not os.path.isfile(path):
        raise EvalInputError(f"{what} file not found: {path}")
    return read_json(path, EvalInputError)


def expect_list(obj: Any, name: str, key: str | None = None) -> list:
    """`obj` (or `obj[key]`) must be a JSON array of objects."""
    if key is not None:
        if not isinstance(obj, dict) or key not in obj:
            raise EvalInputError(f"{name}: expected a JSON object with a {key!r} list")
        obj = obj[key]
    if not isinstance(obj, list):
        where = f"{name}[{key!r}]" if key else name
        raise EvalInputError(f"{where}: expected a JSON array, got {type(obj).__name__}")
    for i, row in enumerate(obj):
        if not isinstance(row, dict):
            raise EvalInputError(f"{name}: entry {i} is {type(row).__name__}, expected an object")
    return obj


def require(row: Mapping, key: str, name: str, index: int | str, types: type | tuple = object) -> Any:
    """`row[key]`, type-checked; a missing/mistyped field names the file, the entry and the key."""
    if key not in row:
        raise EvalInputError(f"{name}: entry {index} has no {key!r} field")
    value = row[key]
    # bool is an int subclass; a `true` where a number belongs is a mistake, not a 1.
    numeric = any(t in (int, float) for t in _as_tuple(types))
    if not isinstance(value, types) or (numeric and isinstance(value, bool)):
        expected = " or ".join(t.__name__ for t in _as_tuple(types))
        raise EvalInputError(
            f"{name}: entry {index} field {key!r} is {type(value).__name__}, expected {expected}")
    return value


def _as_tuple(types: type | tuple) -> tuple:
    return types if isinstance(types, tuple) else (types,)


def index_unique(rows: Iterable[Mapping], key_fn: Callable[[Mapping, int], Hashable], name: str,
                 label: str) -> dict:
    """{key: row}; a repeated key is an error naming it (`label` is e.g. 'question_id')."""
    out: dict = {}
    for i, row in enumerate(rows):
        key = key_fn(row, i)
        if key in out:
            raise EvalInputError(f"{name}: duplicate entry for {label} {key!r}")
        out[key] = row
    return out


def match_predictions(gold: Sequence[Mapping], preds: Sequence[Mapping],
                      gold_key: Callable[[Mapping, int], Hashable],
                      pred_key: Callable[[Mapping, int], Hashable],
                      gold_name: str, pred_name: str, label: str,
                      unique: bool = True) -> list[tuple[Mapping, Mapping]]:
    """Pair every gold item with its prediction, in gold order.

    A gold item with no prediction, or a prediction for no gold item, is an error naming the key.
    With `unique=False` keys may repeat (RefCOCO's (img_id, sentence) can occur twice): the n-th
    gold item with a key takes the n-th prediction with that key.
    """
    if not gold:
        raise EvalInputError(f"{gold_name}: nothing to score (no annotated items)")
    if unique:
        index_unique(gold, gold_key, gold_name, label)
    queues: dict = defaultdict(deque)
    for i, p in enumerate(preds):
        k = pred_key(p, i)
        if unique and queues[k]:
            raise EvalInputError(f"{pred_name}: duplicate prediction for {label} {k!r}")
        queues[k].append(p)
    pairs = []
    for i, g in enumerate(gold):
        k = gold_key(g, i)
        if not queues.get(k):
            raise EvalInputError(f"{pred_name}: no prediction for {label} {k!r}")
        pairs.append((g, queues[k].popleft()))
    leftover = next((k for k, q in queues.items() if q), None)
    if leftover is not None:
        extra = "one more prediction than annotations" if not unique and leftover in \
            {gold_key(g, i) for i, g in enumerate(gold)} else "not in the annotations"
        raise EvalInputError(f"{pred_name}: prediction for unknown {label} {leftover!r} ({extra})")
    return pairs


# ============================================================================ per-benchmark readers
# Each returns a list of small records pairing one gold item with its prediction, in gold order.

@dataclass
class VQAItem:
    """One VQAv2 / OK-VQA question: its ten answer entries (dicts, as in the file) and the prediction."""
    question_id: int
    answers: list[dict]
    question_type: str
    answer_type: str
    prediction: str


def read_vqa(pred: Any, ann: Any, ques: Any = None) -> list[VQAItem]:
    """Official VQA files: annotations `{"annotations": [...]}`, questions `{"questions": [...]}`
    (optional; only checked to cover the same question ids) and results `[{"question_id", "answer"}]`.
    """
    ann_name, pred_name = source_name(ann, "annotations"), source_name(pred, "results")
    anns = expect_list(load_json(ann, "annotations"), ann_name, "annotations")
    for i, a in enumerate(anns):
        require(a, "question_id", ann_name, i, int)
        for key in ("question_type", "answer_type"):
            require(a, key, ann_name, i, str)
        answers = require(a, "answers", ann_name, i, list)
        for j, entry in enumerate(answers):
            if not isinstance(entry, dict) or not isinstance(entry.get("answer"), str):
                raise EvalInputError(f"{ann_name}: entry {i} answers[{j}] has no string 'answer'")
    if ques is not None:
        ques_name = source_name(ques, "questions")
        qs = expect_list(load_json(ques, "questions"), ques_name, "questions")
        q_ids = set(index_unique(qs, lambda q, i: require(q, "question_id", ques_name, i, int),
                                 ques_name, "question_id"))
        a_ids = {a["question_id"] for a in anns}
        stray = next(iter(sorted(a_ids ^ q_ids)), None)
        if stray is not None:
            where = ann_name if stray in a_ids else ques_name
            raise EvalInputError(f"question_id {stray} is only in {where}: the questions and "
                                 "annotations files are from different splits")
    preds = expect_list(load_json(pred, "results"), pred_name)
    pairs = match_predictions(
        anns, preds, lambda a, i: a["question_id"],
        lambda p, i: require(p, "question_id", pred_name, i, int),
        ann_name, pred_name, "question_id")
    return [VQAItem(a["question_id"], a["answers"], a["question_type"], a["answer_type"],
                    require(p, "answer", pred_name, f"for question_id {a['question_id']}", str)) for a, p in pairs]


@dataclass
class VizWizItem:
    image: str
    answers: list[dict]
    answer_type: str
    answerable: int
    prediction: str
    pred_answerable: float | None  # P(answerable) or 0/1 when the results carry it


def read_vizwiz(pred: Any, ann: Any) -> list[VizWizItem]:
    """Official VizWiz-VQA files: annotations `[{"image", "question", "answers": [{"answer",
    "answer_confidence"}], "answer_type", "answerable"}]`; results `[{"image", "answer"}]`, optionally
    with `"answerable"` (a probability or 0/1) for the answerability task."""
    ann_name, pred_name = source_name(ann, "annotations"), source_name(pred, "results")
    anns = expect_list(load_json(ann, "annotations"), ann_name)
    for i, a in enumerate(anns):
        require(a, "image", ann_name, i, str)
        require(a, "answer_type", ann_name, i, str)
        require(a, "answerable", ann_name, i, int)
        for j, entry in enumerate(require(a, "answers", ann_name, i, list)):
            if not isinstance(entry, dict) or not isinstance(entry.get("answer"), str):
                raise EvalInputError(f"{ann_name}: entry {i} answers[{j}] has no string 'answer'")
    preds = expect_list(load_json(pred, "results"), pred_name)
    pairs = match_predictions(anns, preds, lambda a, i: a["image"],
                              lambda p, i: require(p, "image", pred_name, i, str),
                              ann_name, pred_name, "image")
    items = []
    for a, p in pairs:
        answerable = p.get("answerable")
        if answerable is not None:
            answerable = float(require(p, "answerable", pred_name, f"for image {a['image']!r}",
                                         (int, float)))
        items.append(VizWizItem(a["image"], a["answers"], a["answer_type"], a["answerable"],
                                require(p, "answer", pred_name, f"for image {a['image']!r}", str),
                                answerable))
    return items


@dataclass
class GQAItem:
    question_id: str
    answer: str
    structural: str | None  # official types.structural (verify/query/choose/logical/compare)
    semantic: str | None
    prediction: str
    detailed: str | None = None  # types.detailed ("...Common..." changes the validity rule)
    group: str | None = None  # groups.global: the answer-distribution group
    text: str | None = None  # the question (eval.py's words number)
    program: list | None = None  # "semantic": the reasoning steps
    entailed: list | None = None  # questions whose answers follow from this one's


@dataclass
class GQASplit:
    """The balanced questions to score, and every question's gold answer and prediction (the
    entailed questions of consistency are mostly unbalanced)."""
    items: list[GQAItem]
    answers: dict[str, str]
    predictions: dict[str, str]


def read_gqa(pred: Any, ques: Any) -> GQASplit:
    """Official GQA questions `{qid: {"imageId", "question", "answer", "types": {...}, "isBalanced"}}`
    and predictions `[{"questionId", "prediction"}]`.

    Like the official eval.py only balanced questions are scored; a question without an
    `isBalanced` field counts as balanced (the *_balanced_questions.json files are all balanced).
    Predictions for unbalanced questions are kept aside (consistency reads them).
    """
    q_name, pred_name = source_name(ques, "questions"), source_name(pred, "predictions")
    qs = load_json(ques, "questions")
    if not isinstance(qs, dict):
        raise EvalInputError(f"{q_name}: expected a JSON object {{questionId: question}}")
    gold, unbalanced = [], set()
    for qid, q in qs.items():
        if not isinstance(q, dict):
            raise EvalInputError(f"{q_name}: question {qid} is not an object")
        if not q.get("isBalanced", True):
            unbalanced.add(str(qid))  # predictions for these are allowed and ignored
            continue
        types = q.get("types") or {}
        if not isinstance(types, dict):
            raise EvalInputError(f"{q_name}: question {qid} field 'types' is not an object")
        groups = q.get("groups") if isinstance(q.get("groups"), dict) else {}
        gold.append(GQAItem(str(qid), require(q, "answer", q_name, f"for question {qid!r}", str),
                            types.get("structural"), types.get("semantic"), "", types.get("detailed"),
                            groups.get("global"), q.get("question"), q.get("semantic"), q.get("entailed")))
    rows = expect_list(load_json(pred, "predictions"), pred_name)
    every = {str(require(p, "questionId", pred_name, i, (str, int))):
             require(p, "prediction", pred_name, f"for questionId {p.get('questionId')!r}", str)
             for i, p in enumerate(rows)}
    preds = [p for i, p in enumerate(rows) if str(p["questionId"]) not in unbalanced]
    pairs = match_predictions(gold, preds, lambda g, i: g.question_id, lambda p, i: str(p["questionId"]),
                              q_name, pred_name, "questionId")
    for g, p in pairs:
        g.prediction = p["prediction"]
    answers = {str(qid): q["answer"] for qid, q in qs.items() if isinstance(q.get("answer"), str)}
    return GQASplit([g for g, _ in pairs], answers, every)


@dataclass
class ChoiceItem:
    question_id: str
    gold: int
    pred: int
    n_choices: int


def read_iconqa(pred: Any, ann: Any, ques: Any = None, split: str = "test") -> list[ChoiceItem]:
    """IconQA choose_txt: which candidate was chosen (index) vs the gold index.

    `ann` is either the official `problems.json` ({pid: {"question", "choices", "answer": index,
    "ques_type"}}), in which case `ques` must be the official `pid_splits.json` and the pids of
    `choose_txt_<split>` are scored; or an already-filtered list `[{"question_id", "choices",
    "answer"}]` (MiniGPT-v2's eval file names the id `image_id`, accepted too).
    Predictions: `[{"question_id", "pred": index}]`.
    """
    ann_name, pred_name = source_name(ann, "annotations"), source_name(pred, "predictions")
    data = load_json(ann, "annotations")
    if isinstance(data, dict):
        if ques is None:
            raise EvalInputError(f"{ann_name} is IconQA's problems.json: also pass pid_splits.json "
                                 "(--ques) so the choose_txt test split is known")
        ques_name = source_name(ques, "pid_splits")
        splits = load_json(ques, "pid_splits")
        key = f"choose_txt_{split}"
        if not isinstance(splits, dict) or not isinstance(splits.get(key), list):
            raise EvalInputError(f"{ques_name}: no {key!r} list of problem ids")
        rows = []
        for pid in splits[key]:
            if str(pid) not in data:
                raise EvalInputError(f"{ann_name}: problem {pid} (listed in {ques_name}) is missing")
            rows.append(dict(data[str(pid)], question_id=str(pid)))
    else:
        rows = [dict(r, question_id=str(r.get("question_id", r.get("image_id"))))
                for r in expect_list(data, ann_name)]
    gold = []
    for i, r in enumerate(rows):
        if r["question_id"] == "None":
            raise EvalInputError(f"{ann_name}: entry {i} has no 'question_id' (or 'image_id') field")
        where = f"for problem {r['question_id']!r}"
        choices = require(r, "choices", ann_name, where, list)
        answer = require(r, "answer", ann_name, where, int)
        if not 0 <= answer < len(choices):
            raise EvalInputError(f"{ann_name}: entry {where} answer {answer} is not an "
                                 f"index into its {len(choices)} choices")
        gold.append(ChoiceItem(r["question_id"], answer, -1, len(choices)))
    preds = expect_list(load_json(pred, "predictions"), pred_name)
    pairs = match_predictions(gold, preds, lambda g, i: g.question_id,
                              lambda p, i: str(require(p, "question_id", pred_name, i, (str, int))),
                              ann_name, pred_name, "question_id")
    for g, p in pairs:
        g.pred = require(p, "pred", pred_name, f"for question_id {g.question_id!r}", int)
    return [g for g, _ in pairs]


@dataclass
class VSRItem:
    image: str
    caption: str
    label: int  # 1 = the caption is true of the image
    relation: str
    prediction: str


def read_vsr(pred: Any, ann: Any) -> list[VSRItem]:
    """Official VSR split file (`test.jsonl`: {"image", "caption", "label": 0/1, "relation", ...})
    and predictions `[{"image", "caption", "pred"}]` matched on (image, caption)."""
    ann_name, pred_name = source_name(ann, "annotations"), source_name(pred, "predictions")
    anns = expect_list(load_json(ann, "annotations"), ann_name)
    for i, a in enumerate(anns):
        require(a, "image", ann_name, i, str)
        require(a, "caption", ann_name, i, str)
        if require(a, "label", ann_name, i, int) not in (0, 1):
            raise EvalInputError(f"{ann_name}: entry {i} label must be 0 or 1")
    preds = expect_list(load_json(pred, "predictions"), pred_name)
    pairs = match_predictions(
        anns, preds, lambda a, i: (a["image"], a["caption"]),
        lambda p, i: (require(p, "image", pred_name, i, str), require(p, "caption", pred_name, i, str)),
        ann_name, pred_name, "(image, caption)", unique=False)
    return [VSRItem(a["image"], a["caption"], a["label"], str(a.get("relation", "")),
                    require(p, "pred", pred_name, f"for image {a['image']!r}", str)) for a, p in pairs]


@dataclass
class MemeItem:
    id: str
    label: int
    proba: float | None  # P("yes, hateful"), for AUROC
    pred_label: int | None
    answer: str | None  # the generated text, for --compat tinygptv


def read_hateful_memes(pred: Any, ann: Any) -> list[MemeItem]:
    """Official Hateful Memes split (`dev_seen.jsonl`: {"id", "img", "label", "text"}) and
    predictions `[{"id", "proba", "label"?, "answer"?}]` mirroring the challenge submission columns
    (proba = P(hateful) = P("yes"); label = the 0/1 decision) plus the generated text."""
    ann_name, pred_name = source_name(ann, "annotations"), source_name(pred, "predictions")
    anns = expect_list(load_json(ann, "annotations"), ann_name)
    for i, a in enumerate(anns):
        require(a, "id", ann_name, i, (int, str))
        if require(a, "label", ann_name, i, int) not in (0, 1):
            raise EvalInputError(f"{ann_name}: entry {i} label must be 0 or 1")
    preds = expect_list(load_json(pred, "predictions"), pred_name)
    pairs = match_predictions(anns, preds, lambda a, i: str(a["id"]),
                              lambda p, i: str(require(p, "id", pred_name, i, (int, str))),
                              ann_name, pred_name, "id")
    items = []
    for a, p in pairs:
        pid = f"for id {a['id']!r}"
        proba = p.get("proba")
        if proba is not None:
            proba = float(require(p, "proba", pred_name, pid, (int, float)))
        label = p.get("label")
        if label is not None and require(p, "label", pred_name, pid, int) not in (0, 1):
            raise EvalInputError(f"{pred_name}: entry {pid} label must be 0 or 1")
        answer = p.get("answer")
        if answer is not None:
            require(p, "answer", pred_name, pid, str)
        items.append(MemeItem(str(a["id"]), a["label"], proba, label, answer))
    return items


@dataclass
class RefItem:
    key: Hashable  # the annotation's id, or (img_id, sents)
    bbox: tuple[float, float, float, float]  # gold [x, y, w, h] in original-image pixels
    width: float
    height: float
    pred: str


def read_refcoco(pred: Any, ann: Any) -> list[RefItem]:
    """MiniGPT-v2's RefCOCO/+/g eval format: `[{"img_id", "sents", "bbox": [x, y, w, h], "height",
    "width"}]` (optionally an "id"); predictions `[{"img_id", "sents", "pred"}]`, or `[{"id", "pred"}]`
    when the annotations carry ids.  Without ids one (img_id, sents) may occur more than once; the
    n-th such annotation takes the n-th such prediction."""
    ann_name, pred_name = source_name(ann, "annotations"), source_name(pred, "predictions")
    anns = expect_list(load_json(ann, "annotations"), ann_name)
    preds = expect_list(load_json(pred, "predictions"), pred_name)
    by_id = bool(anns) and all("id" in a for a in anns) and all("id" in p for p in preds)

    def sents_key(v: Any, name: str, i: int) -> Any:
        if isinstance(v, list):
            return tuple(v)
        if not isinstance(v, str):
            raise EvalInputError(f"{name}: entry {i} field 'sents' must be a string or a list")
        return v

    def gold_key(a: Mapping, i: int) -> Hashable:
        if by_id:
            return a["id"]
        return (require(a, "img_id", ann_name, i, (int, str)),
                sents_key(require(a, "sents", ann_name, i), ann_name, i))

    def pred_key(p: Mapping, i: int) -> Hashable:
        if by_id:
            return p["id"]
        return (require(p, "img_id", pred_name, i, (int, str)),
                sents_key(require(p, "sents", pred_name, i), pred_name, i))

    for i, a in enumerate(anns):
        box = require(a, "bbox", ann_name, i, list)
        if len(box) != 4 or not all(isinstance(v, (int, float)) for v in box):
            raise EvalInputError(f"{ann_name}: entry {i} bbox must be [x, y, w, h] numbers")
        for key in ("width", "height"):
            if require(a, key, ann_name, i, (int, float)) <= 0:
                raise EvalInputError(f"{ann_name}: entry {i} {key} must be positive")
    pairs = match_predictions(anns, preds, gold_key, pred_key, ann_name, pred_name,
                              "id" if by_id else "(img_id, sents)", unique=by_id)
    items = []
    for i, (a, p) in enumerate(pairs):
        key = gold_key(a, i)
        items.append(RefItem(key, tuple(float(v) for v in a["bbox"]), float(a["width"]),
                             float(a["height"]), require(p, "pred", pred_name, f"for {key!r}", str)))
    return items


def read_coco_captions(pred: Any, ann: Any) -> tuple[dict, dict]:
    """COCO caption annotations `{"images": [...], "annotations": [{"image_id", "caption", "id"}]}`
    and results `[{"image_id", "caption"}]`, one per image.

    Returns (gts, res): {image_id: [captions]}.  Every annotated image needs exactly one result
    (the official loader would quietly score a subset; a silent subset is how wrong numbers get
    published), and a result for an image without references is an error.
    """
    ann_name, pred_name = source_name(ann, "annotations"), source_name(pred, "results")
    anns = expect_list(load_json(ann, "annotations"), ann_name, "annotations")
    gts: dict = defaultdict(list)
    for i, a in enumerate(anns):
        gts[require(a, "image_id", ann_name, i, (int, str))].append(
            require(a, "caption", ann_name, i, str))
    preds = expect_list(load_json(pred, "results"), pred_name)
    res = {}
    for i, p in enumerate(preds):
        image_id = require(p, "image_id", pred_name, i, (int, str))
        if image_id in res:
            raise EvalInputError(f"{pred_name}: more than one caption for image_id {image_id!r}")
        if image_id not in gts:
            raise EvalInputError(f"{pred_name}: result for unknown image_id {image_id!r} "
                                 "(no reference captions)")
        res[image_id] = [require(p, "caption", pred_name, i, str)]
    missing = next((k for k in gts if k not in res), None)
    if missing is not None:
        raise EvalInputError(f"{pred_name}: no caption for image_id {missing!r}")
    return dict(gts), res
