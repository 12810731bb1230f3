"""Checked reading of the official annotation / question / prediction files, shared by every
benchmark module (`evaluation/benchmarks/<name>.py` holds each file format's reader).

Everything here turns a path (or an already-loaded object, so an evaluation loop can score in
memory) into plain Python structures, and turns every way such a file can be wrong into an
`EvalInputError` whose one-line message names the file and the field.  Scorers never index a
raw JSON object themselves, so a malformed file can never surface as a KeyError deep in a metric.

The file formats are the official ones; see eval_scripts/EVAL_README.md for where each comes from.
"""
from __future__ import annotations

import os
from collections import defaultdict, deque
from typing import Any, Callable, Hashable, Iterable, Mapping, Sequence

from tinygpt.common.errors import UserError
from tinygpt.common.jsonfile import read_json
from tinygpt.common.numbers import number_problem, shown


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
    """`row[key]`, type-checked; a missing/mistyped field names the file, the entry and the key.
    Numbers are checked as `check_number` checks them (finite, never a boolean)."""
    if key not in row:
        raise EvalInputError(f"{name}: entry {index} has no {key!r} field")
    value = row[key]
    # bool is an int subclass; a `true` where a number belongs is a mistake, not a 1.
    numeric = any(t in (int, float) for t in _as_tuple(types))
    if not isinstance(value, types) or (numeric and isinstance(value, bool)):
        expected = " or ".join(t.__name__ for t in _as_tuple(types))
        raise EvalInputError(
            f"{name}: entry {index} field {key!r} is {type(value).__name__}, expected {expected}")
    if numeric and isinstance(value, (int, float)):
        check_number(value, f"{name}: entry {index} field {key!r}")
    return value


def check_number(value: Any, where: str, low: float | None = None, above: bool = False) -> float:
    """A number read from an input file, checked by the project's one check (common/numbers.py:
    an int or float, never a boolean, finite, >= `low` or > with `above`); otherwise an
    EvalInputError starting with `where`."""
    problem = number_problem(value, low, above=above)
    if problem:
        raise EvalInputError(f"{where} is {shown(value)[:40]}; {problem}")
    return value


def require_answers(row: Mapping, name: str, index: int | str) -> list:
    """`row["answers"]`: the human answers of a VQA-style annotation, a non-empty list of objects
    with a string "answer" (the accuracy is a mean over them)."""
    answers = require(row, "answers", name, index, list)
    if not answers:
        raise EvalInputError(f"{name}: entry {index} has no human answer ('answers' is empty)")
    for j, entry in enumerate(answers):
        if not isinstance(entry, dict) or not isinstance(entry.get("answer"), str):
            raise EvalInputError(f"{name}: entry {index} answers[{j}] has no string 'answer'")
    return answers


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
