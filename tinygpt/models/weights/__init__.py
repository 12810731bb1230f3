"""Readers and key maps for every weight file a TinyGPT-V user brings, one module per format.

    load_eva_vit(model, path)        LAVIS eva_vit_g.pth                       (eva.py)
    load_blip2_qformer(model, path)  LAVIS blip2_pretrained_flant5xxl.pth     (blip2.py)
    load_phi(model, path)            Phi-2: HF split / legacy fused / Microsoft (phi.py)
    load_hf_causal_lm(model, path)   any HF causal LM (dir / shards / file)     (hf_causal_lm.py)
    load_hf_vision(model, path)      HF CLIP / SigLIP tower, full or vision-only (hf_vision.py)
    load_checkpoint(model, path)     TinyGPT-V stage .pth, or ours              (tinygptv.py, native.py)
    save_trainable(model, path)      our trainable weights as .safetensors      (native.py)
    recorded_style(path)             the prompt style a checkpoint records      (style.py)

Each returns a LoadReport and raises WeightLoadError (a ValueError naming the file and the keys)
instead of loading anything inexactly; files are read with torch.load(weights_only=True) or
safetensors only (files.py), and copied in place without a second copy of the model (plan.py).
"""
from .blip2 import load_blip2_qformer
from .checkpoint import load_checkpoint
from .eva import interpolate_pos_embed, load_eva_vit
from .hf_causal_lm import load_hf_causal_lm
from .hf_vision import load_hf_vision
from .native import save_trainable
from .phi import legacy_qkv_to_ours, load_phi
from .report import LoadReport, WeightLoadError
from .style import recorded_style

__all__ = [
    "LoadReport", "WeightLoadError", "interpolate_pos_embed", "legacy_qkv_to_ours", "load_blip2_qformer",
    "load_checkpoint", "load_eva_vit", "load_hf_causal_lm", "load_hf_vision", "load_phi", "recorded_style",
    "save_trainable",
]
