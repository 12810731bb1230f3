"""What every benchmark's question reader shares (each reader lives in its benchmark module,
`evaluation/benchmarks/<name>.py`, as `questions_to_ask`).

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
from tinygpt.evaluation.formats import EvalInputError, load_json


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


def check_unique(questions: list[Question], src: Source, what: str) -> None:
    seen = set()
    for q in questions:
        if q.key in seen:
            raise ConfigError(f"{src.config_file}: key '{src.key(what)}': duplicate entry {q.key!r}")
        seen.add(q.key)


def cut(items: list, limit: int) -> list:
    return items[:limit] if limit > 0 else items


def question_reader(fn: Callable[[Source], Split]) -> Callable[[Source], Split]:
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


def coco_image_names(image_id: Any, subset: str) -> list[str]:
    """COCO's file names for an image id: the official `COCO_val2014_000000123456.jpg`, then the
    bare `000000123456.jpg` some preprocessed copies (TinyGPT-V's OK-VQA folder) use."""
    try:
        number = int(image_id)
    except (TypeError, ValueError):
        return [f"{image_id}.jpg", str(image_id)]
    return [f"COCO_{subset}_{number:012d}.jpg", f"{number:012d}.jpg"]
