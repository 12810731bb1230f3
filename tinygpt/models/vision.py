"""The vision tower: images [B, 3, S, S] -> patch features [B, N, D_vision].  Three kinds
(`model.vision.kind`):

* `eva_vit_g` -- EVA ViT-g/14 as BLIP-2 uses it, on transformers' `Blip2VisionModel`.
  transformers' BLIP-2 vision tower *is* LAVIS's EVA ViT-g (fused qkv with q/v biases, GELU MLP,
  pre-norm blocks, eps 1e-6); its defaults are the 39-block, width-1408 tower.  BLIP-2 applies
  `ln_vision` (a separate LayerNorm, eps 1e-5) to the tower output, so the model owns that norm and
  the tower's own `post_layernorm` is replaced by an identity.  Its shape comes from VisionConfig's
  width / depth / heads / mlp_dim (LAVIS files carry no config).
* `clip` / `siglip` -- transformers' `CLIPVisionModel` / `SiglipVisionModel`, shaped by the HF config at
  `model.vision.hf_config` (a full CLIPModel / SiglipModel config.json, whose `vision_config` is taken,
  or a vision-only one); weights from HF files (weights/hf_vision.py).
* `hf` -- any transformers vision model that takes `pixel_values` [B, 3, S, S] and returns hidden
  states [B, N, D] (ViT, DeiT, DINOv2 with or without registers, AIMv2, I-JEPA, BEiT, CLIP, SigLIP,
  ...): `AutoModel` from the config.json at `hf_config` (a full model's `vision_config` taken).  Its
  features are `hidden_states[feature_layer]` (never `last_hidden_state`, which some kinds normalise),
  and `keep_cls: false` drops every token in front of the patch grid (CLS, DeiT's distillation token,
  DINOv2's registers), counted once on the meta device (`prefix_tokens`).

Features are LLaVA's `mm_vision_select_layer`: hidden state `feature_layer` (-1 the last block's
output, -2 the penultimate), with or without the CLS token (LLaVA's "patch" drops it; SigLIP has
none).  No kind applies a final norm to them: every tower's `post_layernorm` is an identity, and
SigLIP's attention-pooling head is not built, so `last_hidden_state` *is* hidden state -1.
The image normalisation each kind was trained with: processors/image.py's `IMAGE_STATS`.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn
from transformers import (
    AutoConfig,
    AutoModel,
    Blip2VisionConfig,
    Blip2VisionModel,
    CLIPVisionConfig,
    CLIPVisionModel,
    PreTrainedModel,
    SiglipVisionConfig,
    SiglipVisionModel,
)

from ..common.config import ConfigError, VisionConfig, require_file

LN_VISION_EPS = 1e-5  # LAVIS builds ln_vision with nn.LayerNorm's default eps


@dataclass(frozen=True)
class TowerKind:
    """What differs between the kinds: whether the token sequence starts with a CLS token, and, for
    HF towers, their config / model classes and the `model_type`s a config.json may name."""

    has_cls: bool
    config_class: type | None = None
    model_class: type | None = None
    model_types: tuple[str, ...] = ()  # (full model, vision-only)


TOWERS = {
    "eva_vit_g": TowerKind(has_cls=True),
    "clip": TowerKind(True, CLIPVisionConfig, CLIPVisionModel, ("clip", "clip_vision_model")),
    "siglip": TowerKind(False, SiglipVisionConfig, SiglipVisionModel, ("siglip", "siglip_vision_model")),
}


AUTO_KIND = "hf"  # any transformers vision model (build_auto_tower)


def build_vision_tower(cfg: VisionConfig, source: str = "<config>") -> PreTrainedModel:
    """The tower of `cfg.kind`; `source` (the YAML) is named in config errors.  Its width D_vision is
    `tower.config.hidden_size`."""
    if cfg.kind == "eva_vit_g":
        return build_eva_vit(cfg)
    if cfg.kind == AUTO_KIND:
        return build_auto_tower(cfg, source)
    return build_hf_tower(cfg, source)


def build_eva_vit(cfg: VisionConfig) -> Blip2VisionModel:
    """images [B, 3, S, S] -> hidden states [B, 1 + (S/patch)^2, width] (257 tokens at 224 px)."""
    config = Blip2VisionConfig(
        hidden_size=cfg.width,
        intermediate_size=cfg.mlp_dim,
        num_hidden_layers=cfg.depth,
        num_attention_heads=cfg.heads,
        image_size=cfg.image_size,
        patch_size=cfg.patch_size,
        qkv_bias=True,
        layer_norm_eps=1e-6,
        attention_dropout=0.0,
        # transformers' BLIP-2 default is 1e-10 (its towers are always loaded from a checkpoint); a
        # tower trained from scratch (the tiny recipe) needs a real init: timm/EVA use std 0.02.
        initializer_range=0.02,
    )
    config._attn_implementation = "sdpa"
    tower = Blip2VisionModel(config)
    tower.post_layernorm = nn.Identity()
    # With std 0.02 the position signal is ~25x weaker than the patch content, and a Q-Former trained
    # from scratch then pools the patches position-blind (a linear probe of its outputs could not
    # tell which grid cells hold a shape); the tiny recipe starts it at the content's scale.
    nn.init.trunc_normal_(tower.embeddings.position_embedding, std=cfg.pos_embed_std,
                          a=-2 * cfg.pos_embed_std, b=2 * cfg.pos_embed_std)
    return tower


def load_tower_config(kind: str, path: str, source: str = "<config>"):
    """The vision config of an HF CLIP / SigLIP config.json (file or directory): a full model's
    `vision_config`, or a vision-only config as it is."""
    spec = TOWERS[kind]
    try:
        values, _ = spec.config_class.get_config_dict(path)
    except (OSError, ValueError) as exc:
        raise ConfigError(f"{source}: key 'model.vision.hf_config': {path} is not a readable config.json "
                          f"({str(exc).splitlines()[0]})") from None
    model_type = values.get("model_type")
    if model_type not in spec.model_types:
        raise ConfigError(f"{source}: key 'model.vision.hf_config': {path} describes a {model_type!r} model, "
                          f"not a {kind} tower (model_type {' or '.join(spec.model_types)})")
    if model_type == spec.model_types[0]:
        values = values["vision_config"]
    return spec.config_class.from_dict(values)


def build_hf_tower(cfg: VisionConfig, source: str = "<config>") -> PreTrainedModel:
    """A CLIP / SigLIP tower from `cfg.hf_config`: images [B, 3, S, S] -> hidden states
    [B, (1 +) (S/patch)^2, hidden_size] (CLIP ViT-L/14 at 336 px: 577 tokens; SigLIP so400m at 384 px:
    729).  `model.vision.image_size` / `patch_size` must be the config's: the position embeddings are
    sized by it (and the processors and the prompt style read image_size)."""
    spec = TOWERS[cfg.kind]
    path = require_file(source, "model.vision.hf_config", cfg.hf_config)
    config = load_tower_config(cfg.kind, path, source)
    _check_sizes(cfg, config, path, source)
    if cfg.kind == "siglip":
        config.vision_use_head = False  # the pooling head reads the post-norm output we never use
    config._attn_implementation = "sdpa"
    tower = spec.model_class(config)
    tower.post_layernorm = nn.Identity()  # see the module docstring: features are pre-norm hidden states
    return tower


def _check_sizes(cfg: VisionConfig, config, path: str, source: str) -> None:
    """`model.vision.image_size` / `patch_size` must be the tower config's: the position embeddings are
    sized by it (and the processors and the prompt style read image_size)."""
    for key in ("image_size", "patch_size"):
        ours, theirs = getattr(cfg, key), getattr(config, key, None)
        if theirs is not None and ours != theirs:
            raise ConfigError(f"{source}: key 'model.vision.{key}' is {ours} but the {cfg.kind} tower at {path} "
                              f"has {theirs}; set model.vision.{key}: {theirs}")


def load_auto_tower_config(path: str, source: str = "<config>"):
    """The vision config of any HF config.json (file or directory): a full model's `vision_config`
    (CLIP, SigLIP, AIMv2, ...), or a vision model's own config as it is (ViT, DINOv2, ...)."""
    try:
        config = AutoConfig.from_pretrained(path)
    except (OSError, ValueError, KeyError) as exc:
        raise ConfigError(f"{source}: key 'model.vision.hf_config': {path} is not a readable config.json "
                          f"({str(exc).splitlines()[0]})") from None
    return getattr(config, "vision_config", None) or config


def build_auto_tower(cfg: VisionConfig, source: str = "<config>") -> PreTrainedModel:
    """Any transformers vision model from `cfg.hf_config` (module docstring): images [B, 3, S, S] ->
    hidden states [B, prefix + (S/patch)^2, hidden_size]; `tower.prefix_tokens` is its prefix."""
    path = require_file(source, "model.vision.hf_config", cfg.hf_config)
    config = load_auto_tower_config(path, source)
    _check_sizes(cfg, config, path, source)
    try:
        tower = AutoModel.from_config(config, attn_implementation="sdpa")
    except ValueError as exc:
        if "attention implementation" not in str(exc) and "sdpa" not in str(exc).lower():
            raise ConfigError(f"{source}: key 'model.vision.hf_config': {path} describes a {config.model_type!r} "
                              f"model transformers cannot build as a tower ({str(exc).splitlines()[0]})") from None
        tower = AutoModel.from_config(config, attn_implementation="eager")  # a kind without an SDPA path
    tower.prefix_tokens = _prefix_tokens(config, cfg.image_size, cfg.patch_size, path, source)
    return tower


def _prefix_tokens(config, image_size: int, patch_size: int, path: str, source: str) -> int:
    """Tokens in front of the patch grid (CLS, distillation, registers): the hidden states' length,
    from a forward on the meta device (no memory, no compute), less the (S // patch)^2 grid."""
    try:
        with torch.device("meta"):
            outputs = AutoModel.from_config(config)(pixel_values=torch.empty(1, 3, image_size, image_size),
                                                    output_hidden_states=True)
    except (TypeError, ValueError, RuntimeError) as exc:  # e.g. an LLM's config, or SigLIP2's patch input
        raise ConfigError(f"{source}: key 'model.vision.hf_config': the {config.model_type!r} model at {path} does "
                          f"not take images as pixel_values [B, 3, S, S] ({str(exc).splitlines()[0]})") from None
    hidden = getattr(outputs, "hidden_states", None)
    if not hidden or hidden[-1].dim() != 3:
        raise ConfigError(f"{source}: key 'model.vision.hf_config': the {config.model_type!r} model at {path} does "
                          f"not return hidden states [B, N, D] (a hierarchical or convolutional tower?)")
    prefix = hidden[-1].shape[1] - (image_size // patch_size) ** 2
    if prefix < 0:
        raise ConfigError(f"{source}: key 'model.vision.patch_size' is {patch_size} but the {config.model_type!r} "
                          f"tower at {path} gives {hidden[-1].shape[1]} tokens at {image_size} px")
    return prefix


def is_auto_tower(tower: nn.Module) -> bool:
    """Built by `build_auto_tower` (transformers' model whole, final norm and head included)."""
    return hasattr(tower, "prefix_tokens")


def prefix_tokens(tower: nn.Module, kind: str) -> int:
    """Tokens in front of a built tower's patch grid (EVA, CLIP: the CLS token; SigLIP: none)."""
    return tower.prefix_tokens if kind == AUTO_KIND else int(TOWERS[kind].has_cls)


def n_patch_tokens(kind: str, image_size: int, patch_size: int, keep_cls: bool = True, prefix: int | None = None) -> int:
    """Tokens per image that `tower_features` gives: the (S // patch)^2 grid, plus the CLS token
    where the kind has one and it is kept (EVA at 224 px: 257; CLIP-L/14 at 336 px without CLS: 576;
    SigLIP so400m at 384 px: 729); an `hf` tower's `prefix` tokens (prefix_tokens) where kept."""
    prefix = int(TOWERS[kind].has_cls) if prefix is None else prefix
    return (image_size // patch_size) ** 2 + (prefix if keep_cls else 0)


def select_features(outputs, layer: int, keep_cls: bool, has_cls: bool = True) -> torch.Tensor:
    """A tower's outputs -> features [B, N, D_vision]: hidden state `layer` (-1 = `last_hidden_state`,
    which needs no `output_hidden_states`; any other index reads `outputs.hidden_states`, where 0 is
    the embedding output), the first token dropped when the tower has a CLS token and `keep_cls` is
    False."""
    if layer == -1:
        feats = outputs.last_hidden_state
    else:
        hidden = outputs.hidden_states
        if hidden is None:
            raise ValueError(f"feature layer {layer} needs the tower called with output_hidden_states=True")
        if not -len(hidden) <= layer < len(hidden):
            raise ConfigError(f"key 'model.vision.feature_layer' is {layer}, but the tower has {len(hidden)} "
                              f"hidden states (the embeddings and {len(hidden) - 1} blocks)")
        feats = hidden[layer]
    return feats[:, 1:] if has_cls and not keep_cls else feats


def tower_features(tower: nn.Module, cfg: VisionConfig, images: torch.Tensor) -> torch.Tensor:
    """images [B, 3, S, S] (already in the tower's dtype) -> features [B, N, D_vision],
    N = n_patch_tokens(cfg.kind, S, patch, cfg.keep_cls, prefix_tokens(tower, cfg.kind))."""
    if cfg.kind == AUTO_KIND:  # hidden states only: some kinds normalise last_hidden_state
        hidden = tower(pixel_values=images, output_hidden_states=True).hidden_states
        if not -len(hidden) <= cfg.feature_layer < len(hidden):
            raise ConfigError(f"key 'model.vision.feature_layer' is {cfg.feature_layer}, but the tower has "
                              f"{len(hidden)} hidden states (the embeddings and {len(hidden) - 1} blocks)")
        feats = hidden[cfg.feature_layer]
        return feats if cfg.keep_cls else feats[:, tower.prefix_tokens:]
    outputs = tower(pixel_values=images, output_hidden_states=cfg.feature_layer != -1)
    return select_features(outputs, cfg.feature_layer, cfg.keep_cls, TOWERS[cfg.kind].has_cls)
