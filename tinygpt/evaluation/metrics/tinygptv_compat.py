"""TinyGPT-V's own lenient scoring (`--compat tinygptv`), re-implemented from its eval_scripts/eval_vqa.py.

Use it only to compare with numbers in the TinyGPT-V paper; the official metrics are stricter.
Each benchmark module (`evaluation/benchmarks/<name>.py`) holds its own compat rule; this module
holds the cleaning they share.
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


def generated(raw: str) -> str:
    """TinyGPT-V's `MiniGPTBase.generate` post-processing of the decoded text."""
    return raw.split("</s>")[0].replace("<s>", "").split("[/INST]")[-1].strip()


def chat_answer(raw: str) -> str:
    """VizWiz's and Hateful Memes' cut: at the stop sign, then after the role prefix."""
    return generated(raw).split("###")[0].split("Assistant:")[-1].strip()
