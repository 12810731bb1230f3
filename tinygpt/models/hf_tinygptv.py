"""TinyGPT-V as transformers-native classes: the `remote-code` export target (tinygpt/export/).

    pixel_values [B, 3, S, S] -> visual_encoder -> ln_vision -> qformer(query_tokens) -> projector
        -> [B, Q, D_llm] written over the Q `<image>` tokens of input_ids -> llm (Phi-2 + TinyGPT-V's norms)

No stock transformers class holds TinyGPT-V's Phi (q/k LayerNorm, post-norm, fused QKV: phi.py), so an
export ships this module with `register_for_auto_class`: `save_pretrained` copies it and the siblings
it imports (phi.py, norms.py, projector.py -- the project's own source, not a copy of it) into the
directory, and `AutoModelForImageTextToText.from_pretrained(DIR, trust_remote_code=True)` loads it with
nothing but torch and transformers.  For that, this module and those siblings import only torch,
transformers and each other (single-dot relative imports: what transformers copies and loads).

The parts are the classes tinygpt's own model is built from (the EVA tower and Q-Former are
transformers' BLIP-2 classes), under the same attribute names, so tinygpt's inference state dict
(LoRA merged) loads as it is.  Attention goes through transformers' attention interface (phi.py), the
KV cache and `generate` are transformers' own.
"""
from __future__ import annotations

import torch
from huggingface_hub.dataclasses import strict
from torch import nn
from transformers import (
    Blip2QFormerConfig,
    Blip2QFormerModel,
    Blip2VisionConfig,
    Blip2VisionModel,
    GenerationMixin,
    PhiConfig,
    PreTrainedConfig,
    PreTrainedModel,
    ProcessorMixin,
)
from transformers.modeling_outputs import CausalLMOutputWithPast

from .phi import TinyGPTVPhiForCausalLM
from .projector import Projector


@strict
class TinyGPTVConfig(PreTrainedConfig):
    """vision_config (EVA ViT-g as Blip2VisionConfig), qformer_config, text_config (Phi-2's PhiConfig),
    the query tokens Q, the projector's middle width, `ln_vision` and the id of the `<image>` token
    (it may lie past the LM's vocabulary: its embedding is never read)."""

    model_type = "tinygpt_v"
    sub_configs_defaults = {"vision_config": Blip2VisionConfig, "qformer_config": Blip2QFormerConfig,
                            "text_config": PhiConfig}
    vision_config: dict | PreTrainedConfig | None = None
    qformer_config: dict | PreTrainedConfig | None = None
    text_config: dict | PreTrainedConfig | None = None
    num_query_tokens: int = 32
    proj_mid_dim: int = 4096
    ln_vision: bool = True
    ln_vision_eps: float = 1e-5
    image_token_id: int | None = None
    tie_word_embeddings: bool = False


class TinyGPTVPreTrainedModel(PreTrainedModel):
    config_class = TinyGPTVConfig
    base_model_prefix = ""
    supports_gradient_checkpointing = True
    _supports_sdpa = True
    _supports_flash_attn = True
    _supports_attention_backend = True
    _no_split_modules = ["Blip2EncoderLayer", "Blip2QFormerLayer", "TinyGPTVPhiDecoderLayer"]
    input_modalities = ("image", "text")


class TinyGPTVForConditionalGeneration(TinyGPTVPreTrainedModel, GenerationMixin):
    """input_ids [B, T] (Q `<image>` ids per image), pixel_values [B, 3, S, S] -> logits [B, T, vocab]."""

    def __init__(self, config: TinyGPTVConfig):
        super().__init__(config)
        self.visual_encoder = Blip2VisionModel(config.vision_config)
        self.visual_encoder.post_layernorm = nn.Identity()  # BLIP-2's ln_vision is the model's own
        width = config.vision_config.hidden_size
        self.ln_vision = nn.LayerNorm(width, eps=config.ln_vision_eps) if config.ln_vision else None
        self.qformer = Blip2QFormerModel(config.qformer_config)
        self.query_tokens = nn.Parameter(torch.zeros(1, config.num_query_tokens, config.qformer_config.hidden_size))
        self.projector = Projector(config.qformer_config.hidden_size, config.proj_mid_dim,
                                   config.text_config.hidden_size)
        self.llm = TinyGPTVPhiForCausalLM(config.text_config)
        self.post_init()

    def get_input_embeddings(self):
        return self.llm.get_input_embeddings()

    def set_input_embeddings(self, value):
        self.llm.set_input_embeddings(value)

    def get_output_embeddings(self):
        return self.llm.get_output_embeddings()

    def get_image_features(self, pixel_values: torch.Tensor) -> torch.Tensor:
        """pixel_values [B, 3, S, S] -> visual tokens [B, Q, D_llm]."""
        feats = self.visual_encoder(pixel_values=pixel_values).last_hidden_state
        if self.ln_vision is not None:
            feats = self.ln_vision(feats)
        queries = self.query_tokens.expand(feats.shape[0], -1, -1)
        return self.projector(self.qformer(query_embeds=queries, encoder_hidden_states=feats).last_hidden_state)

    def forward(self, input_ids=None, pixel_values=None, attention_mask=None, inputs_embeds=None,
                **kwargs) -> CausalLMOutputWithPast:
        """The LM's forward (cache, positions, labels, logits_to_keep pass through) with the visual tokens
        of `pixel_values` in place of the `<image>` ids (present in the prefill only)."""
        if inputs_embeds is None:
            slots = input_ids == self.config.image_token_id
            inputs_embeds = self.get_input_embeddings()(input_ids.masked_fill(slots, 0))
            if pixel_values is not None:
                visual = self.get_image_features(pixel_values.to(self.dtype)).to(inputs_embeds.dtype)
                if slots.sum() != visual.shape[0] * visual.shape[1]:
                    raise ValueError(f"{int(slots.sum())} <image> tokens in input_ids for {visual.shape[0]} image(s) "
                                     f"of {visual.shape[1]} visual tokens each (the processor expands one <image>)")
                inputs_embeds = inputs_embeds.masked_scatter(slots[..., None], visual)
        return self.llm(inputs_embeds=inputs_embeds, attention_mask=attention_mask, **kwargs)


class TinyGPTVProcessor(ProcessorMixin):
    """The image processor (BLIP's bicubic resize + the tower's statistics) and the tokenizer; each
    `<image>` in the text becomes `num_query_tokens` of them, where the trained template puts the image
    (the chat_template renders that template)."""

    def __init__(self, image_processor=None, tokenizer=None, chat_template=None, image_token="<image>",
                 num_query_tokens=32, **kwargs):
        self.image_token = image_token
        self.num_query_tokens = num_query_tokens
        self.image_token_id = tokenizer.convert_tokens_to_ids(image_token)
        super().__init__(image_processor, tokenizer, chat_template=chat_template)

    def replace_image_token(self, image_inputs: dict, image_idx: int, **kwargs) -> str:
        return self.image_token * self.num_query_tokens
