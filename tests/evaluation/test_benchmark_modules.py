"""One module per benchmark: each registered benchmark declares, in its own module under
tinygpt/evaluation/benchmarks/, everything the runner and the scorer need."""
from __future__ import annotations

import inspect

from tinygpt.evaluation import benchmark_names
from tinygpt.evaluation.metrics.base import COMPAT_MODES, Scorer
from tinygpt.evaluation.runner import benchmark, family_members


def test_every_benchmark_is_one_complete_module():
    names = benchmark_names()
    assert set(names) == {"vqav2", "okvqa", "gqa", "vizwiz", "iconqa", "vsr", "hateful_memes",
                          "refcoco", "refcoco+", "refcocog", "coco_caption", "vqa_jsonl"}
    for name in names:
        cls = benchmark(name)
        assert issubclass(cls, Scorer) and cls.name == name
        assert cls.__module__.startswith("tinygpt.evaluation.benchmarks."), (name, cls.__module__)
        module = inspect.getmodule(cls)
        # its question reader and its prediction reader live beside it
        assert cls.questions_to_ask is module.questions_to_ask and callable(module.read_predictions)
        assert cls.mode in ("generate", "rank", "yes_no") and isinstance(cls.field, str) and cls.field
        assert cls.family in ("vqa", "ref", "caption") and set(cls.compat_modes) <= set(COMPAT_MODES)
    # the thin eval scripts' families partition the benchmarks
    families = [set(family_members(f)) for f in ("vqa", "ref", "caption")]
    assert set().union(*families) == set(names) and sum(map(len, families)) == len(names)
