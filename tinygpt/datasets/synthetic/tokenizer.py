"""A small byte-level BPE in Phi-2's style, trained on the synthetic corpus and the prompt templates.

Byte-level means any text round-trips (decode(encode(s)) == s); `<|endoftext|>` is bos, eos, unk
and pad, as in Phi-2.  The directory is a Hugging Face tokenizer that
`transformers.AutoTokenizer.from_pretrained(dir)` loads offline.
"""
from __future__ import annotations

import json
import os
from typing import Iterable

from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

from tinygpt.conversation.protocol import IMAGE_TEXT, TASK_TAGS, TEMPLATES
from tinygpt.datasets.templates import all_templates

EOS = "<|endoftext|>"


def template_corpus() -> list[str]:
    """Prompt scaffolding every model input contains: chat templates, placeholder, tags, boxes, digits."""
    boxes = [f"{{<{a}><{b}><{(a + 37) % 100}><{(b + 53) % 100}>}}" for a in range(100) for b in (0, 50, 99)]
    lines = [t.replace("{}", "") for t in TEMPLATES] + ["###", IMAGE_TEXT, " ".join(TASK_TAGS)]
    lines += [f"{IMAGE_TEXT} {t.replace('{}', 'the red circle')}" for t in all_templates()]
    lines += boxes + [" ".join(str(i) for i in range(100))]
    return lines


def train_tokenizer(texts: Iterable[str], out_dir: str, vocab_size: int = 1500) -> str:
    """Train on `texts` + `template_corpus()`; write tokenizer.json, tokenizer_config.json and
    special_tokens_map.json to `out_dir` (created).  Returns `out_dir`."""
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, min_frequency=2, special_tokens=[EOS],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    corpus = list(texts)
    # The scaffolding is repeated so its merges win over one-off words of the corpus.
    tok.train_from_iterator(corpus + template_corpus() * 20, trainer)
    os.makedirs(out_dir, exist_ok=True)
    tok.save(os.path.join(out_dir, "tokenizer.json"))
    special = {"bos_token": EOS, "eos_token": EOS, "unk_token": EOS, "pad_token": EOS}
    # Written by hand (not save_pretrained) so the files do not depend on the transformers version.
    config = dict(special, tokenizer_class="PreTrainedTokenizerFast", model_max_length=2048,
                  clean_up_tokenization_spaces=False, add_bos_token=False, add_eos_token=False)
    for name, obj in (("tokenizer_config.json", config), ("special_tokens_map.json", special)):
        with open(os.path.join(out_dir, name), "w", encoding="utf-8") as f:
            json.dump(obj, f, indent=2, sort_keys=True)
            f.write("\n")
    return out_dir
