"""One module per benchmark, each registered under its name(s): how its questions are read and
prompted, how its prediction and annotation files are read, its metric and its compat variant.

    vqa.py (vqav2, okvqa)   gqa.py   vizwiz.py   iconqa.py   vsr.py   hateful_memes.py
    refcoco.py (refcoco, refcoco+, refcocog)   coco_caption.py   vqa_jsonl.py (a user's own split)

Adding a benchmark is adding a module here (a `Scorer` subclass with the class attributes of
`metrics/base.Scorer`, decorated with `registry.register("benchmark", name)`), listing it below,
and a test.  Importing this package registers them all.
"""
from tinygpt.evaluation.benchmarks import (  # noqa: F401  (registration)
    coco_caption, gqa, hateful_memes, iconqa, refcoco, vizwiz, vqa, vqa_jsonl, vsr,
)
