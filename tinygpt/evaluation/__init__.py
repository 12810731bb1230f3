"""Benchmark scoring: official metrics (and TinyGPT-V's lenient compat rules) on written predictions.

Importing this package registers every benchmark (`evaluation/benchmarks/`, one module each):

    from tinygpt.common.registry import registry
    import tinygpt.evaluation
    result = registry.get("benchmark", "vqav2")().score("preds.json", ann="annotations.json")
"""
from __future__ import annotations

from tinygpt.common.registry import registry
from tinygpt.evaluation import benchmarks  # noqa: F401  (registration)
from tinygpt.evaluation.benchmarks.coco_caption import MissingToolError
from tinygpt.evaluation.formats import EvalInputError
from tinygpt.evaluation.metrics.base import COMPAT_MODES, Scorer
from tinygpt.evaluation.metrics.table import markdown_table


def benchmark_names() -> list[str]:
    """Every registered benchmark name, sorted."""
    return list(registry.names("benchmark"))


def get_scorer(name: str, **options) -> Scorer:
    """A scorer instance by benchmark name; options (e.g. spice=True) go to its constructor."""
    return registry.get("benchmark", name)(**options)


__all__ = ["COMPAT_MODES", "EvalInputError", "MissingToolError", "Scorer", "benchmark_names", "get_scorer",
           "markdown_table"]
