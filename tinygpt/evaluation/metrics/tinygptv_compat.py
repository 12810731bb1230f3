"""TinyGPT-V's own lenient scoring (`--compat tinygptv`), re-implemented from its eval_scripts/eval_vqa.py.

Use it only to compare with numbers in the TinyGPT-V paper; the official metrics are stricter.
First the raw answer is post-processed as TinyGPT-V does: its `generate` cuts at "</s>", drops
"<s>" and keeps what follows the last "[/INST]" (`generated`); then each benchmark's script:

* OK-VQA: lower-cased, "<unk>" removed, cut at "###", then split on "Assistant:" (a no-op after the
  lower-casing, kept as the script has it); scored with the official VQA accuracy.
* VizWiz, Hateful Memes: cut at "###", the text after the last "Assistant:", stripped.
* GQA: lower-cased, "<unk>" removed, stripped.  VSR: "<unk>" removed, stripped.

The rules, per benchmark, as that script applies them to the post-processed answer:

* GQA: a hit when the gold answer is a *substring* of the lower-cased prediction
  ("no" is found in "not sure"); accuracy = hits / questions.
* VSR: +1 when the gold label ("true"/"false") is a substring of the lower-cased prediction, and
  another +1 when the label is "true" and "yes" is a substring (or "false" and "no").  One
  prediction can therefore count twice ("yes, true") and the figure can exceed 100.
* IconQA: the chosen candidate index equals the gold index: identical to the official rule.
* VizWiz: the ten human answers are joined with '_' and split on '_' again (an answer containing
  '_' becomes several), then each piece counts when, case-insensitively, it equals the prediction,
  is contained in it, or contains it; min(count / 3, 1), averaged.  An empty prediction is
  contained in every answer and scores 1.
* Hateful Memes: "yes" anywhere in the lower-cased answer means hateful (1), otherwise "no"
  anywhere means not hateful (0), otherwise the answer is counted wrong; accuracy, not AUROC.
"""
from __future__ import annotations

from typing import Sequence


def generated(raw: str) -> str:
    """TinyGPT-V's `MiniGPTBase.generate` post-processing of the decoded text."""
    return raw.split("</s>")[0].replace("<s>", "").split("[/INST]")[-1].strip()


def okvqa_answer(raw: str) -> str:
    text = generated(raw).lower().replace("<unk>", "").strip().split("###")[0]
    return text.split("Assistant:")[-1].strip()


def chat_answer(raw: str) -> str:
    """VizWiz's and Hateful Memes' cut: at the stop sign, then after the role prefix."""
    return generated(raw).split("###")[0].split("Assistant:")[-1].strip()


def gqa_answer(raw: str) -> str:
    return generated(raw).lower().replace("<unk>", "").strip()


def vsr_answer(raw: str) -> str:
    return generated(raw).replace("<unk>", "").strip()


def gqa_hit(prediction: str, answer: str) -> bool:
    return answer in gqa_answer(prediction).lower()


def vsr_hits(prediction: str, label: int) -> int:
    """0, 1 or 2 (sic) hits for one VSR prediction; `label` 1 = true, 0 = false."""
    text = vsr_answer(prediction).lower()
    word, synonym = ("true", "yes") if label == 1 else ("false", "no")
    return int(word in text) + int(synonym in text)


def vizwiz_accuracy(prediction: str, answers: Sequence[str]) -> float:
    """Lenient per-question VizWiz accuracy in [0, 1]."""
    pred = chat_answer(prediction).lower()
    pieces = "_".join(answers).split("_")
    count = sum(1 for gt in (p.lower() for p in pieces) if gt == pred or gt in pred or pred in gt)
    return min(count / 3.0, 1.0)


def hateful_memes_label(answer: str) -> int | None:
    """1 / 0 / None (unmatched) from the generated text."""
    text = chat_answer(answer).lower()
    if "yes" in text:
        return 1
    if "no" in text:
        return 0
    return None
