"""What every benchmark scorer promises, and the small helpers they share.

A scorer is a class registered under a benchmark name (see `tinygpt.evaluation`).  It is built
with no arguments (or benchmark options such as `spice=True`) and scores with

    scorer.score(pred, ann=..., ques=None, compat=None) -> dict

`pred`, `ann` and `ques` are paths to the official files or the already-loaded JSON objects.
The returned dict always has:

    benchmark  the registered name
    metric     what `overall` measures ("vqa_accuracy", "auroc", "acc@0.5", "cider", ...)
    overall    the headline figure, in percent (x100), rounded to 2 decimals
    n          how many items were scored
    breakdown  {name: number, or {sub-name: number}}; same units as `overall`
    compat     None, or the name of the compatibility rule used ("tinygptv")
    notes      list of human-readable remarks (e.g. "SPICE skipped: ...")
"""
from __future__ import annotations

from decimal import ROUND_HALF_UP, Decimal
from typing import Any, ClassVar

from tinygpt.evaluation.formats import EvalInputError

COMPAT_MODES = ("tinygptv",)


def py2_round(value: float, digits: int = 2) -> float:
    """Python 2's `round`: half away from zero, applied to the exact binary value (3.125 -> 3.13,
    2.675 -> 2.67 because that float is 2.67499...); Python 3's rounds half to even (3.12)."""
    return float(Decimal(value).quantize(Decimal(1).scaleb(-digits), rounding=ROUND_HALF_UP))


def percent(values: list[float], py2: bool = False) -> float:
    """Mean of per-item scores in [0, 1], as a percentage rounded to 2 decimals.

    Written as round(100 * sum / n, 2), the order of operations the official VQA code uses, so
    that floating-point ties round the same way as published numbers; `py2` rounds as the
    official Python 2 scripts do (VQAv2, OK-VQA, VizWiz), otherwise as Python 3.
    """
    if not values:
        return 0.0
    value = 100 * float(sum(values)) / len(values)
    return py2_round(value, 2) if py2 else round(value, 2)


def grouped_percent(groups: dict[str, list[float]], py2: bool = False) -> dict[str, float]:
    """{group: percent(scores)}, groups in sorted order for stable output."""
    return {k: percent(groups[k], py2) for k in sorted(groups)}


class Scorer:
    """One benchmark (a module of `evaluation/benchmarks/`, registered under `name`): how it is
    asked and how it is scored.  Subclasses set the class attributes and implement `_score`.

    Asking (the evaluation runner): `questions_to_ask(source) -> Split` reads the benchmark's
    files; `mode` is "generate" (greedy/beam text), "rank" (the candidate with the lowest answer
    loss) or "yes_no" (P("yes") and the text); `field` is the answer's key in the prediction
    record; `lower` lower-cases generated answers (VQA-style); `asks_question`: the prompt needs
    a `{}` for the question; `family` is the eval_scripts/ script that runs it (vqa/ref/caption).
    """

    name: ClassVar[str] = ""
    metric: ClassVar[str] = ""
    compat_modes: ClassVar[tuple[str, ...]] = ()  # compatibility rules this benchmark knows
    family: ClassVar[str] = ""
    mode: ClassVar[str] = "generate"
    field: ClassVar[str] = "answer"
    lower: ClassVar[bool] = False
    asks_question: ClassVar[bool] = True
    questions_to_ask: ClassVar[Any] = None  # staticmethod(Source -> Split)

    def score(self, pred: Any, *, ann: Any, ques: Any = None, compat: str | None = None) -> dict:
        """Score predictions against the official annotation file(s); see the module docstring."""
        if compat is not None and compat not in self.compat_modes:
            known = ", ".join(self.compat_modes) or "none"
            raise EvalInputError(
                f"--compat {compat} is not defined for {self.name} (its compat modes: {known})")
        result = self._score(pred, ann, ques, compat)
        result.setdefault("notes", [])
        return {"benchmark": self.name, "metric": result.pop("metric", self.metric),
                "compat": compat, **result}

    def _score(self, pred: Any, ann: Any, ques: Any, compat: str | None) -> dict:
        """Return {"overall", "n", "breakdown"[, "metric", "notes"]}."""
        raise NotImplementedError
