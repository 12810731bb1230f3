"""The prompt style a checkpoint file records (conversation/protocol.py's `PromptStyle` fields).

* ours (`checkpoint_final.safetensors`): the header's `prompt_style` metadata (JSON);
* our runner's training checkpoints (`checkpoint_stepN.pt`): the resolved config they carry;
* TinyGPT-V's `TinyGPT-V_for_StageN.pth`: the run config MiniGPT-4's runner saved beside the
  weights (`config.model`), read with MiniGPT-4's defaults: no `prompt_template` = no template,
  except MiniGPT-v2's arch (stage 4), whose default is `[INST] {} [/INST]`; no `end_sym` = "\\n".

Returns None when the file records nothing usable (e.g. a config pickled as an OmegaConf object,
which files.py reads as an inert placeholder).
"""
from __future__ import annotations

from typing import Optional

import yaml

from ...common.checkpoint import FORMAT
from ...conversation.protocol import STYLE_KEY, PromptStyle
from .files import open_weights
from .report import WeightLoadError

# MiniGPT-4 / MiniGPT-v2 `from_config` defaults, per TinyGPT-V `arch`.
_ORIGINAL_TEMPLATES = {"minigpt4": "", "minigpt_v2": "[INST] {} [/INST]"}
_ORIGINAL_END = "\n"


def recorded_style(path: str) -> Optional[dict]:
    """The PromptStyle fields `path` records (a subset of PromptStyle.RECORDED), or None.  A record
    that is not JSON / YAML, holds a value of the wrong type (`prompt_template: 123`) or describes no
    valid style is a WeightLoadError naming the file and the field."""
    try:
        with open_weights(path) as source:
            if STYLE_KEY in source.metadata:
                return _checked(PromptStyle.read_record(source.metadata[STYLE_KEY], path), path)
            config = source.extras.get("config")
            if source.extras.get("format") == FORMAT and isinstance(config, str):
                return _checked(_runner_style(yaml.safe_load(config)), path)
            if isinstance(config, dict) and isinstance(config.get("model"), dict):
                return _checked(_tinygptv_style(config["model"]), path)
    except WeightLoadError:
        raise
    except (ValueError, TypeError, yaml.YAMLError) as exc:  # read_record's messages name the file already
        text = " ".join(str(exc).split())
        raise WeightLoadError(text if text.startswith(path) else f"{path}: the recorded prompt style: {text}") from None
    return None


# The type of each recorded field (PromptStyle's own annotations, as runtime types).
_FIELD_TYPES = {"template": str, "end_sym": str, "image": str, "image_after_question": bool, "image_size": int}


def _checked(fields: Optional[dict], path: str) -> Optional[dict]:
    """`fields` if each has its field's type and together they make a PromptStyle."""
    if not fields:
        return fields
    for name, value in fields.items():
        want = _FIELD_TYPES[name]
        if name == "image_size" and value is None:
            continue
        if not isinstance(value, want) or (want is int and isinstance(value, bool)) or \
                (name == "image_size" and value < 1):
            raise WeightLoadError(f"{path}: the recorded prompt style's {name!r} is {str(value)[:80]!r} "
                                  f"({type(value).__name__}); expected {'a positive ' if want is int else 'a '}"
                                  f"{want.__name__}")
    try:
        PromptStyle(**fields)  # one `{}` in the template, the image slot in the placeholder
    except ValueError as exc:
        raise WeightLoadError(f"{path}: the recorded prompt style is not usable: {exc}") from None
    return fields


def _runner_style(config) -> Optional[dict]:
    model = config.get("model") if isinstance(config, dict) else None
    if not isinstance(model, dict):
        return None
    vision = model.get("vision") if isinstance(model.get("vision"), dict) else {}
    fields = {field: model.get(key) for field, key in PromptStyle.CONFIG_KEYS.items()}
    fields["image_size"] = vision.get("image_size")
    return {k: v for k, v in fields.items() if v is not None} or None


def _tinygptv_style(model: dict) -> dict:
    arch = model.get("arch", "minigpt4")
    template = model.get("prompt_template") or _ORIGINAL_TEMPLATES.get(arch, "")
    fields = {"template": template, "end_sym": model.get("end_sym", _ORIGINAL_END), "image_after_question": False}
    if isinstance(model.get("image_size"), int):
        fields["image_size"] = model["image_size"]
    return fields
