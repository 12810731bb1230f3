"""`prompt_template: chat_template` (conversation/chat_template.py): the real chat templates of
Qwen2.5-Instruct and Phi-3-mini-instruct, set on tiny tokenizers with those models' special tokens,
become a PromptStyle whose text is the template's own and whose end marker is the end-of-turn token."""
from __future__ import annotations

import pytest
from tokenizers import Tokenizer, models, pre_tokenizers, trainers
from transformers import PreTrainedTokenizerFast

from tinygpt.common.errors import UserError
from tinygpt.conversation.chat_template import chat_template_style
from tinygpt.conversation.protocol import Dialogue, PromptStyle, encode

# Qwen2.5-Instruct's tokenizer_config.json chat_template (tool calls included, as shipped).
QWEN2_5 = (
    "{%- if tools %}\n    {{- '<|im_start|>system\\n' }}\n    {%- if messages[0]['role'] == 'system' %}\n"
    "        {{- messages[0]['content'] }}\n    {%- else %}\n"
    "        {{- 'You are Qwen, created by Alibaba Cloud. You are a helpful assistant.' }}\n    {%- endif %}\n"
    "    {{- \"\\n\\n# Tools\\n\\nYou may call one or more functions to assist with the user query.\\n\\n"
    "You are provided with function signatures within <tools></tools> XML tags:\\n<tools>\" }}\n"
    "    {%- for tool in tools %}\n        {{- \"\\n\" }}\n        {{- tool | tojson }}\n    {%- endfor %}\n"
    "    {{- \"\\n</tools>\\n\\nFor each function call, return a json object with function name and arguments "
    "within <tool_call></tool_call> XML tags:\\n<tool_call>\\n{\\\"name\\\": <function-name>, \\\"arguments\\\": "
    "<args-json-object>}\\n</tool_call><|im_end|>\\n\" }}\n{%- else %}\n"
    "    {%- if messages[0]['role'] == 'system' %}\n"
    "        {{- '<|im_start|>system\\n' + messages[0]['content'] + '<|im_end|>\\n' }}\n    {%- else %}\n"
    "        {{- '<|im_start|>system\\nYou are Qwen, created by Alibaba Cloud. You are a helpful assistant."
    "<|im_end|>\\n' }}\n    {%- endif %}\n{%- endif %}\n{%- for message in messages %}\n"
    "    {%- if (message.role == \"user\") or (message.role == \"system\" and not loop.first) or "
    "(message.role == \"assistant\" and not message.tool_calls) %}\n"
    "        {{- '<|im_start|>' + message.role + '\\n' + message.content + '<|im_end|>' + '\\n' }}\n"
    "    {%- elif message.role == \"assistant\" %}\n        {{- '<|im_start|>' + message.role }}\n"
    "        {%- if message.content %}\n            {{- '\\n' + message.content }}\n        {%- endif %}\n"
    "        {%- for tool_call in message.tool_calls %}\n            {%- if tool_call.function is defined %}\n"
    "                {%- set tool_call = tool_call.function %}\n            {%- endif %}\n"
    "            {{- '\\n<tool_call>\\n{\"name\": \"' }}\n            {{- tool_call.name }}\n"
    "            {{- '\", \"arguments\": ' }}\n            {{- tool_call.arguments | tojson }}\n"
    "            {{- '}\\n</tool_call>' }}\n        {%- endfor %}\n        {{- '<|im_end|>\\n' }}\n"
    "    {%- elif message.role == \"tool\" %}\n"
    "        {%- if (loop.index0 == 0) or (messages[loop.index0 - 1].role != \"tool\") %}\n"
    "            {{- '<|im_start|>user' }}\n        {%- endif %}\n        {{- '\\n<tool_response>\\n' }}\n"
    "        {{- message.content }}\n        {{- '\\n</tool_response>' }}\n"
    "        {%- if loop.last or (messages[loop.index0 + 1].role != \"tool\") %}\n"
    "            {{- '<|im_end|>\\n' }}\n        {%- endif %}\n    {%- endif %}\n{%- endfor %}\n"
    "{%- if add_generation_prompt %}\n    {{- '<|im_start|>assistant\\n' }}\n{%- endif %}\n"
)
# Phi-3-mini-4k-instruct's: BOS first, `<|end|>` after every message, EOS after a finished conversation.
PHI3 = ("{{ bos_token }}{% for message in messages %}{{'<|' + message['role'] + '|>' + '\n' + message['content'] "
        "+ '<|end|>\n' }}{% endfor %}{% if add_generation_prompt %}{{ '<|assistant|>\n' }}{% else %}"
        "{{ eos_token }}{% endif %}")

TEXT = ["You are Qwen, created by Alibaba Cloud. You are a helpful assistant.", "what colour is the circle?",
        "red", "system user assistant"]


def tokenizer(specials: list[str], template: str | None, **roles) -> PreTrainedTokenizerFast:
    """A byte-level BPE holding `specials` as special tokens, with `template` as its chat_template."""
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    trainer = trainers.BpeTrainer(vocab_size=300, special_tokens=specials,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator(TEXT * 4, trainer)
    return PreTrainedTokenizerFast(tokenizer_object=tok, chat_template=template, **roles)


def qwen(template=QWEN2_5):
    # Qwen2.5-Instruct: no BOS, EOS = <|im_end|>, pad = <|endoftext|>.
    return tokenizer(["<|endoftext|>", "<|im_start|>", "<|im_end|>"], template,
                     eos_token="<|im_end|>", pad_token="<|endoftext|>")


def phi3():
    return tokenizer(["<unk>", "<s>", "</s>", "<|endoftext|>", "<|system|>", "<|user|>", "<|assistant|>", "<|end|>"],
                     PHI3, bos_token="<s>", eos_token="<|endoftext|>", unk_token="<unk>", pad_token="<|endoftext|>")


def test_qwen2_5_template_and_end_of_turn():
    template, end = chat_template_style(qwen())
    assert template == ("<|im_start|>system\nYou are Qwen, created by Alibaba Cloud. You are a helpful assistant."
                        "<|im_end|>\n<|im_start|>user\n{}<|im_end|>\n<|im_start|>assistant\n")
    assert end == "<|im_end|>"


def test_phi3_template_leaves_bos_to_the_protocol_and_ends_at_end_not_eos():
    template, end = chat_template_style(phi3())
    assert template == "<|user|>\n{}<|end|>\n<|assistant|>\n"
    assert end == "<|end|>"  # the first special token after an answer; the template's EOS comes later


@pytest.mark.parametrize("make", [qwen, phi3], ids=["qwen2.5", "phi-3"])
def test_the_style_writes_what_the_template_writes(make):
    tok = make()
    style = PromptStyle(*chat_template_style(tok))
    question, answer = "what colour is the circle?", "red"
    rendered = tok.apply_chat_template([{"role": "user", "content": question},
                                        {"role": "assistant", "content": answer}], tokenize=False)
    ours = (tok.bos_token or "") + style.wrap(question) + answer + style.end_sym
    assert rendered.startswith(ours)
    # Trained as one special token: the last supervised id is the end-of-turn token itself.
    layout = encode(style, tok, Dialogue.single(question, answer, has_image=False), n_query=0)
    assert [i for i in layout.labels if i >= 0][-1] == tok.convert_tokens_to_ids(style.end_sym)


def test_without_a_special_token_after_the_answer_the_end_is_eos():
    plain = ("{% for m in messages %}{{ m['role'] + ': ' + m['content'] + '\n' }}{% endfor %}"
             "{% if add_generation_prompt %}{{ 'assistant: ' }}{% endif %}")
    assert chat_template_style(qwen(plain)) == ("user: {}\nassistant: ", "<|im_end|>")


def test_no_chat_template_is_a_user_error():
    with pytest.raises(UserError, match="has no chat_template.*model.prompt_template"):
        chat_template_style(qwen(None))
