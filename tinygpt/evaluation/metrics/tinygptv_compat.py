"""The answer cleaning TinyGPT-V's evaluation scripts share (`--compat tinygptv`).

Each benchmark module (`evaluation/benchmarks/<name>.py`) holds its own compat rule, re-implemented
from TinyGPT-V's eval_scripts/eval_vqa.py (the table is in docs/evaluation.md); what they share is
TinyGPT-V's `generate` post-processing: cut at "</s>", drop "<s>", keep what follows the last
"[/INST]" (`generated`), and for VizWiz and Hateful Memes the chat cut (`chat_answer`).
Use compat rows only to compare with numbers in the TinyGPT-V paper; the official metrics are stricter.
"""
from __future__ import annotations


def generated(raw: str) -> str:
    """TinyGPT-V's `MiniGPTBase.generate` post-processing of the decoded text."""
    return raw.split("</s>")[0].replace("<s>", "").split("[/INST]")[-1].strip()


def chat_answer(raw: str) -> str:
    """VizWiz's and Hateful Memes' cut: at the stop sign, then after the role prefix."""
    return generated(raw).split("###")[0].split("Assistant:")[-1].strip()
