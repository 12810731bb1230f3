"""YAML -> typed dataclasses.

Layering: dataclass defaults < the YAML file < `--options key=value` overrides.  OmegaConf's
structured configs reject unknown keys and wrong types; we re-raise those as `ConfigError` naming
the file and the dotted key so a user never sees a stack trace from inside omegaconf.
Defaults live here and only here: code reads `cfg.run.init_lr`, never `cfg.get("init_lr", 1e-4)`.
"""
from __future__ import annotations

import dataclasses
import os

import yaml
from dataclasses import dataclass, field
from typing import Optional

from omegaconf import MISSING, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from ..conversation.chat_template import FROM_TOKENIZER
from ..conversation.protocol import IMAGE_SLOT, IMAGE_TEXT, check_template
from .errors import UserError
from .numbers import number_problem, shown


class ConfigError(UserError):
    """A config file or override is wrong; the message names the file and the key."""


def ranged(default, low=None, high=None, *, above=False, below=False):
    """A dataclass field whose value must lie in [low, high] (`above`: > low, `below`: < high);
    None bounds are open and a None value (where the type allows it) is not checked.  Checked by
    `load_config` (`_check_ranges`, which also refuses NaN / infinite floats and integers beyond
    64 bits in every field, ranged or not), naming the key and the file."""
    return field(default=default, metadata={"range": (low, high, above, below)})


# ----------------------------------------------------------------------------- model
@dataclass
class VisionConfig:
    """The vision tower (models/vision.py).  `eva_vit_g` (the default): EVA ViT-g/14 as BLIP-2 uses it
    (39 of EVA-CLIP-g's 40 blocks), or a tiny stand-in, shaped by width/depth/heads/mlp_dim here;
    `clip` / `siglip`: transformers' towers shaped by the config.json at `hf_config`; `hf`: any
    transformers vision model returning hidden states (ViT, DINOv2, AIMv2, ...) by that config.json."""
    kind: str = "eva_vit_g"  # eva_vit_g | clip | siglip | hf
    hf_config: Optional[str] = None  # clip / siglip / hf: a config.json (full model or vision-only), or its directory
    image_size: int = ranged(224, 1)  # clip / siglip / hf: must equal the hf_config's
    patch_size: int = ranged(14, 1)
    # Features: hidden state `feature_layer` (-1 last block, -2 penultimate: LLaVA's
    # mm_vision_select_layer), CLS token kept or dropped (LLaVA's "patch"; SigLIP has none).
    feature_layer: int = -1
    keep_cls: bool = True
    # The image statistics (processors/image.py IMAGE_STATS entry: eva_vit_g, clip, siglip, imagenet)
    # images are normalised with; null = the kind's own.  Required for `hf`: the one whose mean/std
    # its preprocessor_config.json gives (DINOv2, DeiT, BEiT: imagenet).
    normalization: Optional[str] = None
    ln_vision: bool = True  # BLIP-2's LayerNorm on the tower output: only the EVA recipe has it
    width: int = ranged(1408, 1)
    depth: int = ranged(39, 1)
    heads: int = ranged(16, 1)
    mlp_dim: int = ranged(6144, 1)
    weights: Optional[str] = None  # LAVIS eva_vit_g.pth
    train: bool = False
    dtype: str = "auto"  # auto: half precision on accelerators when frozen, fp32 on CPU (and with quantize: int8)
    # int8: the tower's block Linears and the Q-Former's in int8 for inference on CPU (models/quantize.py),
    # their float rest in `dtype`; none: as `dtype`
    quantize: str = "none"
    grad_checkpointing: bool = False
    # Init std of the learned position embedding of a tower trained from scratch (weights replace it).
    pos_embed_std: float = ranged(0.02, 0.0)


@dataclass
class QFormerConfig:
    """BLIP-2 Q-Former (BERT-base width, cross-attention every 2nd layer) and its query tokens."""
    num_query_tokens: int = ranged(32, 1)
    width: int = ranged(768, 1)
    depth: int = ranged(12, 1)
    heads: int = ranged(12, 1)
    mlp_dim: int = ranged(3072, 1)
    cross_attention_freq: int = ranged(2, 1)
    weights: Optional[str] = None  # LAVIS blip2_pretrained_flant5xxl.pth: Qformer.*, query_tokens, ln_vision.*
    train: bool = False
    # Init std of the Q-Former's weights when trained from scratch (BERT's 0.02; weights replace it).
    init_std: float = ranged(0.02, 0.0)
    # Auxiliary cell loss for from-scratch Q-Formers on the synthetic 3x3 grid (0 classes = off): a
    # linear head makes query k predict the content class of cell k from a batch's `cell_labels`
    # [B, C] (the synthetic shards carry them), so the queries separate the objects instead of
    # mixing them -- a stand-in for BLIP-2's Q-Former pre-training (docs/quickstart.md).  The head
    # is a training aid: resumable checkpoints keep it, checkpoint_final leaves it out.
    cell_classes: int = ranged(0, 0)
    cell_loss_weight: float = ranged(1.0, 0.0)


@dataclass
class ConnectorConfig:
    """What turns vision features into the LLM's visual tokens (models/connectors.py).  `qformer`
    (the default): BLIP-2's Q-Former (`model.qformer`) + TinyGPT-V's two linear layers
    (`model.proj_mid_dim`); `mlp`: LLaVA-1.5's Linear-GELU-Linear; `linear`: one Linear; `resampler`:
    `num_queries` learned queries cross-attending to the features in `depth` layers of `heads` heads."""
    kind: str = "qformer"  # qformer | mlp | linear | resampler
    num_queries: int = ranged(64, 1)  # resampler: visual tokens per image
    depth: int = ranged(2, 1)
    heads: int = ranged(8, 1)


@dataclass
class LoRAConfig:
    r: int = ranged(0, 0)  # 0 = no LoRA (TinyGPT-V stage 1)
    alpha: int = ranged(16, 0, above=True)
    dropout: float = ranged(0.05, 0.0, 1.0, below=True)
    # Linear names to adapt; null = the defaults (models/lora.py): TinyGPT-V's Phi: query_key_value,
    # dense (+ fc1, fc2 with `mlp`); any other LLM: peft's default for its model_type, else (and with
    # `mlp: true`) every Linear but the LM head (peft's all-linear: attention and MLP blocks).
    targets: Optional[list[str]] = None
    mlp: bool = False


@dataclass
class LLMConfig:
    """The language model (models/llm.py).  `family: tinygptv_phi` (the default): Phi-2 with TinyGPT-V's
    norms; `family: auto`: any Hugging Face causal LM (Qwen2, Llama, Phi-3, Gemma-2, StableLM, ...)
    by its config.json.  Dimensions come from the HF config.json at `hf_config`."""
    family: str = "tinygptv_phi"  # tinygptv_phi | auto
    hf_config: str = MISSING  # a config.json, or a directory holding one
    # HF directory / .safetensors / .bin (Phi-2: split or legacy fused QKV; auto: the family's own keys)
    weights: Optional[str] = None
    tokenizer: Optional[str] = None  # HF tokenizer directory (tokenizer.json)
    lora: LoRAConfig = field(default_factory=LoRAConfig)
    train: bool = False  # full fine-tune of the base weights (tiny recipe only)
    train_norms: bool = True  # TinyGPT-V: input/q/k/post/final norm weights train, kept in fp32
    load_in_8bit: bool = False  # bitsandbytes LLM.int8() (CUDA/CPU); see `quantize` for torch's CPU kernels
    # int8: the LLM's Linears and input embeddings in int8 for inference on CPU (a tied lm_head and its table
    # stay float; models/quantize.py); none: as `dtype`
    quantize: str = "none"
    # auto: half precision on accelerators when frozen, fp32 on CPU; bf16 on CPU with quantize: int8
    # (what stays float: models/build.py)
    dtype: str = "auto"
    grad_checkpointing: bool = False
    attn_implementation: str = "sdpa"


@dataclass
class ModelConfig:
    arch: str = "tinygpt_v"
    vision: VisionConfig = field(default_factory=VisionConfig)
    qformer: QFormerConfig = field(default_factory=QFormerConfig)
    connector: ConnectorConfig = field(default_factory=ConnectorConfig)
    llm: LLMConfig = field(default_factory=LLMConfig)
    proj_mid_dim: int = ranged(4096, 1)  # llama_proj 768->4096, llama_proj2 4096->D_llm
    train_projection: bool = True
    # The prompt style (conversation/protocol.py).  Unset (null) = what the last `model.ckpt` file
    # records it was trained with (every checkpoint_final does; TinyGPT-V's .pth carry their YAML),
    # else the protocol's default (`###Human: {} ###Assistant: `, `###`, image first).  A value
    # that disagrees with the checkpoint's is used, with a warning, when building for inference.
    # One `{}` for the instruction; "" = no template; "chat_template" = the tokenizer's own, with its
    # end-of-turn token as end_sym (conversation/chat_template.py).
    prompt_template: Optional[str] = None
    end_sym: Optional[str] = None  # what every answer ends with in training; generation stops there
    image_placeholder: str = IMAGE_TEXT
    # Where a chat's image goes in its first turn: before the question (every TinyGPT-V template) or
    # after it (the tiny recipe, which trains question-first; see train_configs/tiny/prompts/).
    image_after_question: Optional[bool] = None
    max_txt_len: int = ranged(160, 1)  # answer tokens (+ end marker) kept per sample; multi-turn: the whole tail
    max_context_len: int = ranged(3800, 1)  # condition (template + image) tokens kept; TinyGPT-V's default
    # What the answer loss averages over.  "token": every answer token of the global batch weighs the
    # same (TinyGPT-V, MiniGPT-4, LLaVA), so a mixed batch is steered by its long answers (a box is
    # 10 tokens, a VQA word 2).  "sample": each sample's token mean, then the mean over samples, so
    # every sample weighs the same whatever its answer's length.
    loss_reduction: str = "token"
    ckpt: list[str] = field(default_factory=list)  # loaded in order after the base weights
    # Cached Q-Former outputs of frozen towers (tasks/feature_cache.py): "auto" = on where exact
    # (frozen towers, deterministic image transforms) in <run.output_dir>/../feature_cache; a
    # directory = there; null = off.
    feature_cache: Optional[str] = "auto"
    # Inference builds: the dtype matmuls compute in, whatever the weights are stored in
    # (models/compute_dtype.py).  auto: per device (common/device.compute_policy: fp32 where half
    # precision is slow, e.g. a CPU without bf16 matmul units); storage: the weights' dtype; fp32.
    compute_dtype: str = "auto"


# ----------------------------------------------------------------------------- data
@dataclass
class ProcessorConfig:
    name: str = MISSING
    image_size: int = ranged(224, 1)
    # Image statistics of a vision tower kind (processors/image.py IMAGE_STATS); null = the model's
    # own tower (model.vision.kind), which is what a run should almost always use.
    normalization: Optional[str] = None
    min_scale: float = ranged(0.5, 0.0, 1.0, above=True)
    max_scale: float = ranged(1.0, 0.0, 1.0, above=True)
    max_words: int = ranged(50, 1)
    prompt: str = ""


@dataclass
class DatasetConfig:
    """One entry of `datasets:`; the YAML key is the builder name unless `builder` says otherwise."""
    builder: str = ""
    storage: list[str] = field(default_factory=list)  # shards / annotation files / directories
    image_root: Optional[str] = None
    prompts_path: Optional[str] = None  # instruction templates, one per line
    sample_ratio: float = ranged(1.0, 0.0, above=True)
    batch_size: Optional[int] = ranged(None, 1)  # None: run.batch_size_train
    vis_processor: ProcessorConfig = field(default_factory=lambda: ProcessorConfig(name="blip2_image_train"))
    text_processor: ProcessorConfig = field(default_factory=lambda: ProcessorConfig(name="blip_caption"))
    split: str = "train"
    # Grounding builders write boxes as TinyGPT-V does (int(100 * x / width), unclamped: a box on the
    # border reads <100>); true keeps every coordinate in 0..99, the range a model's answer is read in.
    clamp_boxes: bool = False
    # One instruction for the whole batch (true) or one per sample (false); null = the builder's
    # default, TinyGPT-V's: per batch for cc_sbu_align (its stage-3 prompt list), per sample elsewhere.
    one_instruction_per_batch: Optional[bool] = None


# ----------------------------------------------------------------------------- run
@dataclass
class RunConfig:
    task: str = "image_text_pretrain"
    runner: str = "runner_iter"
    lr_sched: str = "linear_warmup_cosine_lr"
    init_lr: float = ranged(1e-4, 0.0, above=True)
    min_lr: float = ranged(8e-5, 0.0)
    warmup_lr: float = ranged(1e-6, 0.0)
    warmup_steps: int = ranged(0, 0)  # counted in global optimizer steps (TinyGPT-V restarted it every epoch)
    weight_decay: float = ranged(0.05, 0.0)
    beta2: float = ranged(0.999, 0.0, 1.0, below=True)
    max_epoch: int = ranged(1, 1)
    iters_per_epoch: int = ranged(100, 1)  # optimizer steps per epoch (each of accum_grad_iters batches)
    batch_size_train: int = ranged(8, 1)
    batch_size_eval: int = ranged(8, 1)  # validation batches (valid_datasets)
    valid_every: int = ranged(0, 0)  # steps between held-out losses on valid_datasets; 0 = never
    accum_grad_iters: int = ranged(1, 1)
    grad_clip: float = ranged(1.0, 0.0)  # 0 disables clipping
    num_workers: Optional[int] = ranged(None, 0)  # DataLoader workers per dataset; None = by device (datasets/loader)
    group_by_length: bool = True  # bucket map-style datasets' batches by text length (less padding)
    # Pack several samples into rows of at most this many tokens (block-diagonal causal mask,
    # positions restarting per sample: the same loss, conversation/packing.py); 0 = one padded row
    # per sample.  A dense mask costs pack_length^2 per row: worth it when lengths spread widely.
    pack_length: int = ranged(0, 0)
    seed: int = ranged(42, 0, 2**32 - 1)  # numpy's seed range; the data order derives its seeds from it
    output_dir: str = "output/run"
    device: str = "auto"  # auto | cpu | cuda | npu
    precision: str = "auto"  # auto | fp32 | bf16 | fp16
    distributed_strategy: str = "ddp"  # ddp | fsdp
    resume_ckpt_path: Optional[str] = None
    save_every: int = ranged(0, 0)  # iterations; 0 = only at the end of each epoch
    log_every: int = ranged(10, 1)
    keep_last: int = ranged(2, 0)
    compile: bool = False
    tensorboard: bool = True


# ----------------------------------------------------------------------------- evaluation
@dataclass
class BenchmarkConfig:
    """One entry of `evaluation.benchmarks:`; the key is the scorer name unless `scorer` says otherwise."""
    scorer: str = ""
    questions: Optional[str] = None  # official questions file (VQAv2 questions.json, GQA, ...)
    annotations: Optional[str] = None  # official annotations / ground truth
    image_root: Optional[str] = None
    prompt: str = "[vqa] {}"  # instruction after the image placeholder; {} = question / phrase
    max_new_tokens: int = ranged(20, 1)
    num_beams: int = ranged(1, 1)
    batch_size: int = ranged(8, 1)
    max_samples: int = ranged(0, 0)  # 0 = all
    compat: Optional[str] = None  # "tinygptv" = TinyGPT-V's lenient scoring


@dataclass
class EvalConfig:
    output_dir: str = "output/eval"
    benchmarks: dict[str, BenchmarkConfig] = field(default_factory=dict)


@dataclass
class Config:
    model: ModelConfig = field(default_factory=ModelConfig)
    datasets: dict[str, DatasetConfig] = field(default_factory=dict)
    # Held-out data for the validation loss (run.valid_every): read once per validation, in order.
    valid_datasets: dict[str, DatasetConfig] = field(default_factory=dict)
    run: RunConfig = field(default_factory=RunConfig)
    evaluation: EvalConfig = field(default_factory=EvalConfig)
    source: str = ""  # the YAML file this came from (for error messages)


def _error(path: str, exc: Exception) -> ConfigError:
    key = getattr(exc, "full_key", None)
    msg = getattr(exc, "msg", None) or str(exc)
    msg = msg.split("\n")[0]
    where = f"{path}: key '{key}'" if key else path
    return ConfigError(f"{where}: {msg}")


def load_config(path: str | os.PathLike, options: list[str] | None = None) -> Config:
    """Read a stage YAML, apply `key=value` overrides, validate types and keys.

    Raises ConfigError naming the file and the offending key on any problem.
    """
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise ConfigError(f"config file not found: {path}")
    schema = OmegaConf.structured(Config)
    try:
        raw = OmegaConf.load(path)
    except Exception as exc:  # yaml syntax errors come in several types
        raise ConfigError(f"{path}: not valid YAML: {exc}") from None
    if not isinstance(raw, type(OmegaConf.create({}))):
        raise ConfigError(f"{path}: top level must be a mapping with model/datasets/run")
    for section in ("datasets", "valid_datasets"):
        for name, entry in (raw.get(section) or {}).items():
            if entry is None:
                raw[section][name] = {}
    try:
        merged = OmegaConf.merge(schema, raw)
    except OmegaConfBaseException as exc:
        raise _error(path, exc) from None
    for opt in options or []:
        if "=" not in opt:
            raise ConfigError(f"--options {opt!r}: expected key=value")
        key, value = opt.split("=", 1)
        try:
            # Values are YAML: `run.max_epoch=3`, `model.ckpt=[a.safetensors,b.pth]`, `x=null`.
            OmegaConf.update(merged, key, yaml.safe_load(value) if value else value, merge=False)
            OmegaConf.to_object(merged)
        except OmegaConfBaseException as exc:
            # Only a problem at or below the option's own key is the option's; anything else (a
            # mandatory key the file lacks) is the file's, reported below.
            if str(getattr(exc, "full_key", None) or key).startswith(key):
                raise ConfigError(f"--options {key}: {str(getattr(exc, 'msg', exc)).splitlines()[0]}") from None
        except (yaml.YAMLError, ValueError) as exc:  # ValueError: an integer of over 4300 digits
            raise ConfigError(f"--options {key}: the value is not valid YAML ({str(exc).splitlines()[0]})") from None
    try:
        cfg: Config = OmegaConf.to_object(merged)
    except OmegaConfBaseException as exc:
        if not raw:
            raise ConfigError(f"{path}: the file is empty (expected model/datasets/run sections)") from None
        raise _error(path, exc) from None
    cfg.source = path
    for name, ds in (*cfg.datasets.items(), *cfg.valid_datasets.items()):
        ds.builder = ds.builder or name
    for name, bench in cfg.evaluation.benchmarks.items():
        bench.scorer = bench.scorer or name
    _check_choices(cfg, {opt.split("=", 1)[0] for opt in options or []})
    return cfg


_CHOICES = {
    "run.device": ("auto", "cpu", "cuda", "npu"),
    "run.precision": ("auto", "fp32", "bf16", "fp16"),
    "run.distributed_strategy": ("ddp", "fsdp"),
    "model.loss_reduction": ("token", "sample"),
    "model.vision.kind": ("eva_vit_g", "clip", "siglip", "hf"),
    "model.llm.family": ("tinygptv_phi", "auto"),
    "model.connector.kind": ("qformer", "mlp", "linear", "resampler"),
    "model.vision.dtype": ("auto", "fp32", "bf16", "fp16"),
    "model.llm.dtype": ("auto", "fp32", "bf16", "fp16"),
    "model.compute_dtype": ("auto", "storage", "fp32"),
    "model.vision.quantize": ("none", "int8"),
    "model.llm.quantize": ("none", "int8"),
}


def _check_choices(cfg: Config, overridden: set[str] = frozenset()) -> None:
    for dotted, allowed in _CHOICES.items():
        value = OmegaConf.select(OmegaConf.structured(cfg), dotted)
        if value not in allowed:
            raise ConfigError(f"{cfg.source}: key '{dotted}' is {value!r}; expected one of {', '.join(allowed)}")
    vision = cfg.model.vision
    if vision.normalization not in (None, *_STATS):
        raise ConfigError(f"{cfg.source}: key 'model.vision.normalization' is {vision.normalization!r}; expected one "
                          f"of {', '.join(_STATS)}")
    if vision.kind == "hf" and vision.normalization is None:
        raise ConfigError(f"{cfg.source}: key 'model.vision.normalization' must be set for model.vision.kind hf: "
                          f"the image statistics its preprocessor_config.json gives ({', '.join(_STATS)})")
    _check_ranges(cfg, "", cfg.source, overridden)
    if cfg.model.prompt_template not in (None, FROM_TOKENIZER):
        try:
            check_template(cfg.model.prompt_template)
        except ValueError as exc:
            raise ConfigError(f"{cfg.source}: key 'model.prompt_template': {exc}") from None
    if IMAGE_SLOT not in cfg.model.image_placeholder:
        raise ConfigError(f"{cfg.source}: key 'model.image_placeholder' must contain {IMAGE_SLOT}; "
                          f"got {cfg.model.image_placeholder!r}")


_STATS = ("eva_vit_g", "clip", "siglip", "imagenet")  # processors/image.py IMAGE_STATS' entries (config stays torch-free)


def image_statistics(vision: VisionConfig) -> str:
    """The IMAGE_STATS entry a model's images are normalised with (`model.vision.normalization`)."""
    return vision.normalization or vision.kind


def _check_ranges(obj, prefix: str, source: str, overridden: set[str] = frozenset()) -> None:
    """Every number of `obj` and of the dataclasses (or dicts of them) below it: finite, 64-bit, and
    within its field's `ranged` bounds; a key in `overridden` is said to come from --options."""
    if isinstance(obj, dict):
        for name, value in obj.items():
            _check_ranges(value, f"{prefix}{name}.", source, overridden)
        return
    if not dataclasses.is_dataclass(obj):
        return
    for f in dataclasses.fields(obj):
        value, key = getattr(obj, f.name), prefix + f.name
        bounds = f.metadata.get("range") or (None, None, False, False)
        is_number = isinstance(value, (int, float)) and not isinstance(value, bool)  # types are OmegaConf's
        problem = is_number and number_problem(value, bounds[0], bounds[1], above=bounds[2], below=bounds[3])
        if problem:
            origin = " (set by --options)" if key in overridden else ""
            raise ConfigError(f"{source}: key '{key}' is {shown(value)}; {problem}{origin}")
        _check_ranges(value, key + ".", source, overridden)


def to_yaml(cfg: Config) -> str:
    """The resolved config, as stored in checkpoints and run directories."""
    return OmegaConf.to_yaml(OmegaConf.structured(cfg))


def from_yaml(text: str, source: str = "<checkpoint>") -> Config:
    merged = OmegaConf.merge(OmegaConf.structured(Config), OmegaConf.create(text))
    cfg: Config = OmegaConf.to_object(merged)
    cfg.source = source
    return cfg


def require_file(cfg_source: str, key: str, path: Optional[str]) -> str:
    """Return `path` if it exists; otherwise a ConfigError naming the key that pointed at it."""
    if not path:
        raise ConfigError(f"{cfg_source}: key '{key}' is not set")
    if not os.path.exists(path):
        raise ConfigError(f"{cfg_source}: key '{key}' points at {path}, which does not exist")
    return path


def require_writable_dir(cfg_source: str, key: str, path: str) -> str:
    """Return `path` if it is, or can be made, a writable directory (checked without creating it);
    otherwise a ConfigError naming the key: a file in its place or on its way, or no permission."""
    probe = os.path.abspath(path)
    while not os.path.exists(probe):
        probe = os.path.dirname(probe)
    if not os.path.isdir(probe):
        raise ConfigError(f"{cfg_source}: key '{key}' is {path}, but {probe} is a file, not a directory")
    if not os.access(probe, os.W_OK | os.X_OK):
        raise ConfigError(f"{cfg_source}: key '{key}' is {path}, but {probe} is not writable")
    return path
