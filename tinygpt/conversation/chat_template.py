"""Chat templates and prompt styles, both ways.

`chat_template_style`: a tokenizer's own chat template as a prompt style (what
`model.prompt_template: chat_template` means).  `style_chat_template`: a prompt style as a Jinja chat
template, for exported processors (tinygpt/export/), so `processor.apply_chat_template` writes what the
model was trained to read.

Chat models' Hugging Face tokenizers carry a Jinja `chat_template`.  Rendered for one user turn whose
content is a placeholder, with the generation prompt, it gives the text around an instruction: our
template with its `{}` (protocol.py).  Rendered for that turn plus an assistant answer, the text after
the answer gives the end marker: the first special token there (Qwen2.5 `<|im_end|>`, Phi-3 `<|end|>`,
Llama-3 `<|eot_id|>`, Gemma `<end_of_turn>`), or EOS when the template writes no special token there.
Training targets are then answer + that marker, and generation stops at it.

The protocol itself puts BOS in front of a training sequence (and the tokenizer adds its own when it
tokenises a generation prompt), so a BOS the template writes at its very start is left out.
Torch-free.
"""
from __future__ import annotations

import json

from ..common.errors import UserError
from .protocol import IMAGE_SLOT, SLOT, PromptStyle, check_template

FROM_TOKENIZER = "chat_template"  # the `model.prompt_template` value that selects this
_INSTRUCTION = "TINYGPT_INSTRUCTION_SLOT"  # stand-ins that no template alters (no spaces to trim)
_ANSWER = "TINYGPT_ANSWER_SLOT"


class ChatTemplateError(UserError):
    """The tokenizer has no usable chat template."""


def _special_tokens(tokenizer) -> list[str]:
    tokens = set(tokenizer.all_special_tokens)
    tokens |= {t.content for t in tokenizer.added_tokens_decoder.values() if t.special}
    return sorted(tokens, key=len, reverse=True)  # at one position the longest token wins


def chat_template_style(tokenizer) -> tuple[str, str]:
    """(prompt_template with one `{}`, end_sym) from `tokenizer.chat_template`; see the module
    docstring.  Raises ChatTemplateError when there is no template or it does not render one
    instruction slot."""
    where = getattr(tokenizer, "name_or_path", "") or "the tokenizer"
    if not getattr(tokenizer, "chat_template", None):
        raise ChatTemplateError(f"{where} has no chat_template, which model.prompt_template: "
                                f"{FROM_TOKENIZER} needs; set model.prompt_template to a template instead")
    user = [{"role": "user", "content": _INSTRUCTION}]
    prompt = tokenizer.apply_chat_template(user, tokenize=False, add_generation_prompt=True)
    bos = tokenizer.bos_token
    if bos and prompt.startswith(bos):
        prompt = prompt[len(bos):]
    if prompt.count(_INSTRUCTION) != 1 or SLOT in prompt:
        raise ChatTemplateError(f"{where}: its chat_template does not render one user message into one "
                                f"place: {prompt[:120]!r}")
    template = prompt.replace(_INSTRUCTION, SLOT)
    check_template(template)

    turn = tokenizer.apply_chat_template(user + [{"role": "assistant", "content": _ANSWER}], tokenize=False)
    after = turn.partition(_ANSWER)[2]
    found = [(after.find(token), token) for token in _special_tokens(tokenizer) if token in after]
    if found:
        return template, min(found, key=lambda hit: hit[0])[1]  # min keeps the first (longest) at a tie
    if tokenizer.eos_token:
        return template, tokenizer.eos_token
    raise ChatTemplateError(f"{where}: its chat_template writes no special token after an answer and the "
                            f"tokenizer has no EOS token, so an answer's end cannot be marked; set model.end_sym")


def style_chat_template(style: PromptStyle, image_tokens: str) -> str:
    """A Jinja chat template that renders messages as the protocol lays them out (protocol.encode):
    each user turn `place_image(question)` in the template (the image where training put it, before or
    after the question, with `image_tokens` at `<ImageHere>`; only in a turn whose content has an image
    part: transformers' `image` or OpenAI's `image_url`), the tokenizer's BOS text in front of every
    later question, each assistant turn followed by the end marker.  A string content that already holds `image_tokens` is kept as it is.  The template
    includes the text after the question, so `add_generation_prompt` adds nothing."""
    before, _, after = (style.template or SLOT).partition(SLOT)
    image = style.image.replace(IMAGE_SLOT, image_tokens)
    q = json.dumps  # a Jinja string literal (JSON's escapes are Jinja's)
    placed = (f"ns.text ~ {q(' ' + image)}" if style.image_after_question else f"{q(image + ' ')} ~ ns.text")
    return (
        "{%- for message in messages -%}"
        "{%- set ns = namespace(text='', image=false) -%}"
        "{%- if message['content'] is string -%}{%- set ns.text = message['content'] -%}"
        "{%- else -%}{%- for part in message['content'] -%}"
        "{%- if part['type'] == 'text' -%}{%- set ns.text = ns.text ~ part['text'] -%}"
        "{%- elif part['type'] in ('image', 'image_url') -%}{%- set ns.image = true -%}{%- endif -%}"
        "{%- endfor -%}{%- endif -%}"
        "{%- if message['role'] == 'user' -%}"
        "{%- set ns.text = ns.text | trim -%}"
        f"{{%- if ns.image and ns.text -%}}{{%- set ns.text = {placed} -%}}"
        f"{{%- elif ns.image -%}}{{%- set ns.text = {q(image)} -%}}{{%- endif -%}}"
        "{%- if not loop.first -%}{{ bos_token }}{%- endif -%}"
        f"{{{{ {q(before)} ~ ns.text ~ {q(after)} }}}}"
        "{%- elif message['role'] == 'assistant' -%}"
        f"{{{{ ns.text ~ {q(style.end_sym)} }}}}"
        "{%- endif -%}"
        "{%- endfor -%}"
    )
