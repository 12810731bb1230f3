"""Every foreign weight format, written exactly as its source writes it from a reference model, then
loaded into a fresh model: nothing left unplaced, same outputs.

The writers below are the inverse maps, written from the formats' facts (LAVIS / TinyGPT-V / HF key
names and layouts), independently of tinygpt.models.weights.
"""
from __future__ import annotations

import copy
import json
import re

import pytest
import torch
from safetensors.torch import save_file

from tiny import tiny_model_config
import tinygpt.models.tinygpt_v  # noqa: F401  (registers the "tinygpt_v" arch)
from tinygpt.models import weights
from tinygpt.models.build import build_model
from tinygpt.models.weights import WeightLoadError

# ----------------------------------------------------------------------------- models


def make_model(root, seed=0, **cfg_kwargs):
    """A tiny model with every parameter moved off its init (norms != 1, LoRA B != 0)."""
    cfg = tiny_model_config(root, **cfg_kwargs)
    torch.manual_seed(seed)  # the init itself, before the perturbation
    model = build_model(cfg, "cpu", load_weights=False).eval()
    randomise(model, seed)
    return model


@torch.no_grad()
def randomise(model, seed):
    gen = torch.Generator().manual_seed(seed)
    for _, p in sorted(model.named_parameters()):
        p.add_(torch.randn(p.shape, generator=gen) * 0.05)


def identity_phi_norms(model):
    """Phi-2 files carry no q/k/post norms: a model loaded from one has them at identity."""
    with torch.no_grad():
        for layer in model.llm.model.layers:
            for norm in (layer.self_attn.q_layernorm, layer.self_attn.k_layernorm, layer.post_layernorm):
                norm.weight.fill_(1.0)
                if getattr(norm, "bias", None) is not None:
                    norm.bias.zero_()


def zero_k_bias(model):
    """EVA has no k bias: the reference's fused qkv bias must hold zeros there."""
    width = model.visual_encoder.config.hidden_size
    with torch.no_grad():
        for layer in model.visual_encoder.encoder.layers:
            layer.self_attn.qkv.bias[width:2 * width].zero_()


def images(model, n=2, seed=1):
    size = model.cfg.vision.image_size
    return torch.randn(n, 3, size, size, generator=torch.Generator().manual_seed(seed))


@torch.no_grad()
def logits(model, seed=1):
    """Full forward (image -> ViT -> Q-Former -> projector -> Phi) on a fixed prompt."""
    visual = model.encode_images(images(model, seed=seed))
    prompts = ["<Img><ImageHere></Img> what colour is the circle?"] * visual.shape[0]
    embeds, mask, _ = model.embed_inputs(prompts, visual)
    return model.llm(inputs_embeds=embeds, attention_mask=mask).logits


def state(model, prefix=""):
    return {k: v.detach().clone() for k, v in model.state_dict().items() if k.startswith(prefix)}


def assert_same_params(a, b, prefix):
    sa, sb = state(a, prefix), state(b, prefix)
    assert sa.keys() == sb.keys() and sa
    for k in sa:
        torch.testing.assert_close(sa[k], sb[k], rtol=0, atol=0, msg=k)


def assert_complete(report, file_keys):
    """Nothing left unplaced: every file key consumed or deliberately ignored, no errors."""
    assert report.ok, report.summary()
    assert set(report.consumed) | set(report.ignored) == set(file_keys)
    assert not set(report.consumed) & set(report.ignored)


# ----------------------------------------------------------------------------- foreign writers
def eva_state_dict(model, extra_block=True):
    ve, sd = model.visual_encoder, {}
    width = ve.config.hidden_size
    sd["cls_token"] = ve.embeddings.class_embedding
    sd["pos_embed"] = ve.embeddings.position_embedding
    sd["patch_embed.proj.weight"] = ve.embeddings.patch_embedding.weight
    sd["patch_embed.proj.bias"] = ve.embeddings.patch_embedding.bias
    layers = list(ve.encoder.layers)
    if extra_block:  # EVA-CLIP-g has one block more than BLIP-2 uses
        layers.append(layers[0])
    for i, layer in enumerate(layers):
        a = layer.self_attn
        sd[f"blocks.{i}.norm1.weight"], sd[f"blocks.{i}.norm1.bias"] = layer.layer_norm1.weight, layer.layer_norm1.bias
        sd[f"blocks.{i}.attn.qkv.weight"] = a.qkv.weight
        sd[f"blocks.{i}.attn.q_bias"] = a.qkv.bias[:width]
        sd[f"blocks.{i}.attn.v_bias"] = a.qkv.bias[2 * width:]
        sd[f"blocks.{i}.attn.proj.weight"], sd[f"blocks.{i}.attn.proj.bias"] = a.projection.weight, a.projection.bias
        sd[f"blocks.{i}.norm2.weight"], sd[f"blocks.{i}.norm2.bias"] = layer.layer_norm2.weight, layer.layer_norm2.bias
        for fc in ("fc1", "fc2"):
            sd[f"blocks.{i}.mlp.{fc}.weight"] = getattr(layer.mlp, fc).weight
            sd[f"blocks.{i}.mlp.{fc}.bias"] = getattr(layer.mlp, fc).bias
    if extra_block:
        sd["norm.weight"] = torch.ones(width)
        sd["norm.bias"] = torch.zeros(width)
    return {k: v.detach().clone() for k, v in sd.items()}


def blip2_state_dict(model):
    sd = {}
    for name, p in model.named_parameters():
        if name.startswith("qformer."):
            key = name.replace("qformer.layernorm.", "qformer.embeddings.LayerNorm.")
            key = key.replace(".attention.attention.", ".attention.self.")
            key = key.replace(".crossattention.attention.", ".crossattention.self.")
            sd["Qformer.bert." + key[len("qformer."):]] = p
        elif name == "query_tokens" or name.startswith("ln_vision."):
            sd[name] = p
    width = model.qformer.config.hidden_size
    extras = {  # what LAVIS saves and TinyGPT-V does not use
        "Qformer.bert.embeddings.word_embeddings.weight": torch.randn(30, width),
        "Qformer.bert.embeddings.position_embeddings.weight": torch.randn(16, width),
        "Qformer.bert.embeddings.position_ids": torch.arange(16)[None],
        "Qformer.cls.predictions.bias": torch.randn(30),
        "Qformer.cls.predictions.transform.dense.weight": torch.randn(width, width),
        "t5_proj.weight": torch.randn(8, width), "t5_proj.bias": torch.randn(8),
        "vision_proj.weight": torch.randn(4, width), "text_proj.weight": torch.randn(4, width),
        "itm_head.weight": torch.randn(2, width), "temp": torch.tensor(0.07),
    }
    for i in range(len(model.qformer.encoder.layer)):
        extras[f"Qformer.bert.encoder.layer.{i}.intermediate.dense.weight"] = torch.randn(64, width)
        extras[f"Qformer.bert.encoder.layer.{i}.output.dense.weight"] = torch.randn(width, 64)
        extras[f"Qformer.bert.encoder.layer.{i}.output.LayerNorm.bias"] = torch.randn(width)
    sd = {k: v.detach().clone() for k, v in sd.items()}
    return sd, extras


def phi_base(model):
    """Our LLM's base weights under HF Phi names (no LoRA, no TinyGPT-V norms), fused QKV ours."""
    out = {}
    for name, p in model.llm.named_parameters():
        if "lora_" in name or any(n in name for n in ("q_layernorm", "k_layernorm", "post_layernorm")):
            continue
        out[name.replace(".base_layer.", ".")] = p.detach().clone()
    return out


def phi_split(model):
    sd = {}
    for name, t in phi_base(model).items():
        if ".query_key_value." in name:
            for part, chunk in zip("qkv", t.chunk(3)):
                sd[name.replace("query_key_value", f"{part}_proj")] = chunk.clone()
        else:
            sd[name] = t
    return sd


def to_legacy_rows(t, n_heads):
    """Our [q; k; v] rows -> TinyGPT-V's per-head (q, k, v) blocks (it splits with view(.., heads, 3, d))."""
    return t.reshape(3, n_heads, -1, *t.shape[1:]).transpose(0, 1).reshape(t.shape).clone()


def phi_legacy(model):
    n_heads = model.llm.config.num_attention_heads
    return {k: to_legacy_rows(t, n_heads) if ".query_key_value." in k else t for k, t in phi_base(model).items()}


def phi_microsoft(model):
    sd = {}
    for name, t in phi_base(model).items():
        name = name.replace("model.embed_tokens.", "transformer.embd.wte.")
        name = name.replace("model.final_layernorm.", "lm_head.ln.").replace("lm_head.weight", "lm_head.linear.weight")
        name = name.replace("lm_head.bias", "lm_head.linear.bias").replace("model.layers.", "transformer.h.")
        name = name.replace("input_layernorm", "ln").replace("self_attn.query_key_value", "mixer.Wqkv")
        name = name.replace("self_attn.dense", "mixer.out_proj")
        sd[name] = t  # Microsoft's Wqkv is "(three h d)": already [q; k; v]
    return sd


def tinygptv_state_dict(model, *, peft_prefix=True, default=True, lora=True):
    """TinyGPT-V's trainable keys (what MiniGPT-4's runner saves) for our reference model."""
    pre = "llama_model.base_model.model." if peft_prefix else "llama_model."
    ad = ".default" if default else ""
    n_heads = model.llm.config.num_attention_heads
    sd = {"llama_proj.weight": model.projector.fc1.weight, "llama_proj.bias": model.projector.fc1.bias,
          "llama_proj2.weight": model.projector.fc2.weight, "llama_proj2.bias": model.projector.fc2.bias}
    for i, layer in enumerate(model.llm.model.layers):
        a = layer.self_attn
        sd[f"{pre}model.layers.{i}.input_layernorm.weight"] = layer.input_layernorm.weight
        sd[f"{pre}model.layers.{i}.post_layernorm.weight"] = layer.post_layernorm.weight
        sd[f"{pre}model.layers.{i}.self_attn.q_layernorm.weight"] = a.q_layernorm.weight
        sd[f"{pre}model.layers.{i}.self_attn.k_layernorm.weight"] = a.k_layernorm.weight
        if lora:
            qkv, dense = a.query_key_value, a.dense
            sd[f"{pre}model.layers.{i}.self_attn.query_key_value.lora_A{ad}.weight"] = qkv.lora_A["default"].weight
            sd[f"{pre}model.layers.{i}.self_attn.query_key_value.lora_B{ad}.weight"] = \
                to_legacy_rows(qkv.lora_B["default"].weight, n_heads)
            sd[f"{pre}model.layers.{i}.self_attn.dense.lora_A{ad}.weight"] = dense.lora_A["default"].weight
            sd[f"{pre}model.layers.{i}.self_attn.dense.lora_B{ad}.weight"] = dense.lora_B["default"].weight
    sd[f"{pre}model.final_layernorm.weight"] = model.llm.model.final_layernorm.weight
    # MiniGPT-4's runner keeps persistent buffers of frozen modules too.
    sd["Qformer.bert.embeddings.position_ids"] = torch.arange(16)[None]
    return {k: v.detach().clone() for k, v in sd.items()}


def tinygptv_file(path, sd, wrapper=True, config=None):
    obj = sd
    if wrapper:
        obj = {"model": sd, "optimizer": {"state": {}, "param_groups": [{"lr": 1e-4, "betas": (0.9, 0.999),
                                                                          "params": [0, 1]}]},
               "config": config if config is not None else {"model": {"arch": "minigpt4", "lora_r": 64}},
               "scaler": {"scale": 65536.0, "growth_factor": 2.0}, "epoch": 3}
    torch.save(obj, path)
    return path


def fresh_copy(model, seed=7):
    """Same base weights, trainable ones moved elsewhere (what a checkpoint must restore)."""
    other = copy.deepcopy(model)
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for _, p in sorted(other.named_parameters()):
            if p.requires_grad:
                p.copy_(torch.randn(p.shape, generator=gen) * 0.05)
    return other


# ----------------------------------------------------------------------------- fixtures
@pytest.fixture(scope="module")
def reference(tiny_root):
    model = make_model(tiny_root)
    zero_k_bias(model)
    identity_phi_norms(model)  # so Phi-2 files (which lack these norms) reproduce it exactly
    return model


@pytest.fixture(scope="module")
def reference_logits(reference):
    return logits(reference)


# ----------------------------------------------------------------------------- EVA ViT
def test_eva_vit_loads_every_key_and_ignores_the_40th_block(tmp_path, tiny_root, reference):
    sd = eva_state_dict(reference)
    torch.save(sd, tmp_path / "eva_vit_g.pth")
    model = make_model(tiny_root, seed=3)
    report = weights.load_eva_vit(model, str(tmp_path / "eva_vit_g.pth"))
    assert_complete(report, sd)
    assert report.format == "lavis-eva-vit"
    assert any(k.startswith("blocks.2.") for k in report.ignored) and "norm.weight" in report.ignored
    assert_same_params(model, reference, "visual_encoder.")
    with torch.no_grad():
        x = images(model)
        torch.testing.assert_close(model.visual_encoder(pixel_values=x).last_hidden_state,
                                   reference.visual_encoder(pixel_values=x).last_hidden_state)


def test_eva_pos_embed_interpolated_for_a_larger_image(tmp_path, tiny_root, reference):
    torch.save(eva_state_dict(reference), tmp_path / "eva.pth")
    model = make_model(tiny_root, seed=3, image_size=56)  # 2x2 -> 4x4 patches, like 224 -> 448 px
    weights.load_eva_vit(model, str(tmp_path / "eva.pth"))
    pos, ref = model.visual_encoder.embeddings.position_embedding, reference.visual_encoder.embeddings.position_embedding
    assert pos.shape == (1, 17, ref.shape[-1])
    torch.testing.assert_close(pos[:, :1], ref[:, :1])  # class token kept as is
    grid = ref[:, 1:].reshape(1, 2, 2, -1).permute(0, 3, 1, 2)
    want = torch.nn.functional.interpolate(grid, size=(4, 4), mode="bicubic", align_corners=False)
    torch.testing.assert_close(pos[:, 1:], want.permute(0, 2, 3, 1).reshape(1, 16, -1))
    assert model.encode_images(images(model)).shape == (2, 4, 64)


def test_interpolation_224_to_448_gives_1025_tokens():
    pos = torch.randn(1, 257, 8)
    assert weights.interpolate_pos_embed(pos, 1025).shape == (1, 1025, 8)
    assert weights.interpolate_pos_embed(pos, 257) is pos


# ----------------------------------------------------------------------------- BLIP-2 Q-Former
def test_blip2_qformer_with_unused_keys(tmp_path, tiny_root, reference):
    sd, extras = blip2_state_dict(reference)
    eva = {f"visual_encoder.{k}": v for k, v in eva_state_dict(reference, extra_block=False).items()}
    torch.save({"model": {**sd, **extras, **eva}}, tmp_path / "blip2_pretrained_flant5xxl.pth")
    model = make_model(tiny_root, seed=3)
    report = weights.load_blip2_qformer(model, str(tmp_path / "blip2_pretrained_flant5xxl.pth"))
    assert_complete(report, {**sd, **extras, **eva})
    assert set(report.ignored) == set(extras) | set(eva)
    assert_same_params(model, reference, "qformer.")
    assert_same_params(model, reference, "ln_vision.")
    torch.testing.assert_close(model.query_tokens, reference.query_tokens)


# ----------------------------------------------------------------------------- Phi-2
def _phi_dir_single(tmp_path, model):
    d = tmp_path / "phi-2"
    d.mkdir()
    sd = phi_split(model)
    save_file(sd, str(d / "model.safetensors"))
    return d, sd


def _phi_dir_sharded(tmp_path, model):
    d = tmp_path / "phi-2-sharded"
    d.mkdir()
    sd = phi_split(model)
    keys = sorted(sd)
    shards = {"model-00001-of-00002.safetensors": keys[::2], "model-00002-of-00002.safetensors": keys[1::2]}
    weight_map = {}
    for file, names in shards.items():
        save_file({k: sd[k] for k in names}, str(d / file))
        weight_map.update({k: file for k in names})
    (d / "model.safetensors.index.json").write_text(json.dumps({"metadata": {}, "weight_map": weight_map}))
    return d, sd


def _phi_legacy_bin(tmp_path, model):
    sd = phi_legacy(model)
    torch.save(sd, tmp_path / "pytorch_model.bin")
    return tmp_path / "pytorch_model.bin", sd


def _phi_microsoft_dir(tmp_path, model):
    d = tmp_path / "phi-2-microsoft"
    d.mkdir()
    sd = phi_microsoft(model)
    save_file(sd, str(d / "model.safetensors"))
    return d, sd


@pytest.mark.parametrize("writer, layout", [
    (_phi_dir_single, "hf-phi-split"), (_phi_dir_sharded, "hf-phi-split"),
    (_phi_legacy_bin, "hf-phi-fused-legacy"), (_phi_microsoft_dir, "microsoft-phi"),
])
def test_phi_layouts_give_the_reference_logits(tmp_path, tiny_root, reference, reference_logits, writer, layout):
    path, sd = writer(tmp_path, reference)
    model = copy.deepcopy(reference)
    randomise(model, seed=5)  # everything off, LLM included
    for part in ("visual_encoder.", "ln_vision.", "qformer.", "query_tokens", "projector."):
        with torch.no_grad():
            for (n, p), (_, q) in zip(model.named_parameters(), reference.named_parameters()):
                if n.startswith(part) or ("lora_" in n):
                    p.copy_(q)
    report = weights.load_phi(model, str(path))
    assert report.format == layout
    assert_complete(report, sd)
    # q/k LayerNorms and post_layernorm are not in Phi-2 files: identity, reported.
    n_layers = len(model.llm.model.layers)
    assert len(report.initialised) == 5 * n_layers
    assert all(("q_layernorm" in n or "k_layernorm" in n or "post_layernorm" in n) for n in report.initialised)
    torch.testing.assert_close(logits(model), reference_logits)


def test_fused_legacy_and_split_give_identical_logits(tmp_path, tiny_root, reference):
    a, b = make_model(tiny_root, seed=8), make_model(tiny_root, seed=8)
    weights.load_phi(a, str(_phi_dir_single(tmp_path, reference)[0]))
    weights.load_phi(b, str(_phi_legacy_bin(tmp_path, reference)[0]))
    assert torch.equal(logits(a), logits(b))


def test_legacy_layout_matches_tinygptv_head_split(reference):
    """TinyGPT-V splits its fused output with view(B, T, heads, 3, head_dim); the legacy rows we
    write (and read back) must give the same q, k, v as our [q; k; v] module, LoRA included."""
    attn = reference.llm.model.layers[0].self_attn
    qkv, n_heads, d = attn.query_key_value, attn.num_heads, attn.head_dim
    scale = qkv.scaling["default"]
    x = torch.randn(2, 5, qkv.in_features)
    w = to_legacy_rows(qkv.base_layer.weight, n_heads)
    b = to_legacy_rows(qkv.base_layer.bias, n_heads)
    lora_b = to_legacy_rows(qkv.lora_B["default"].weight, n_heads)
    lora_a = qkv.lora_A["default"].weight
    with torch.no_grad():
        fused = x @ w.T + b + scale * (x @ lora_a.T) @ lora_b.T
        theirs = fused.view(2, 5, n_heads, 3, d)
        ours = qkv(x).view(2, 5, 3, n_heads, d)
    for i in range(3):
        torch.testing.assert_close(theirs[..., i, :], ours[:, :, i], atol=1e-5, rtol=1e-5)
    # and the loader's permutation inverts the writer's
    assert torch.equal(weights.legacy_qkv_to_ours(w, n_heads), qkv.base_layer.weight)


def test_phi_file_without_lm_head_is_an_error(tmp_path, tiny_root, reference):
    sd = phi_split(reference)
    del sd["lm_head.weight"]
    save_file(sd, str(tmp_path / "phi.safetensors"))
    model = make_model(tiny_root, seed=3)
    before = state(model)
    with pytest.raises(WeightLoadError, match=r"(?s)phi\.safetensors.*llm\.lm_head\.weight"):
        weights.load_phi(model, str(tmp_path / "phi.safetensors"))
    assert all(torch.equal(before[k], v) for k, v in state(model).items())  # untouched


# ----------------------------------------------------------------------------- TinyGPT-V checkpoints
@pytest.mark.parametrize("peft_prefix, default", [(True, True), (True, False), (False, True)])
def test_tinygptv_stage2_checkpoint_reproduces_the_fused_lora(tmp_path, reference, reference_logits,
                                                             peft_prefix, default):
    sd = tinygptv_state_dict(reference, peft_prefix=peft_prefix, default=default)
    path = tinygptv_file(tmp_path / "TinyGPT-V_for_Stage3.pth", sd)
    model = fresh_copy(reference)
    assert not torch.allclose(logits(model), reference_logits, atol=1e-3)
    report = weights.load_checkpoint(model, str(path))
    assert report.format == "tinygptv-checkpoint"
    assert_complete(report, sd)
    assert report.kept == []
    assert "Qformer.bert.embeddings.position_ids" in report.ignored
    torch.testing.assert_close(logits(model), reference_logits, atol=1e-5, rtol=1e-5)


def test_tinygptv_stage1_checkpoint_into_stage1_and_stage2_models(tmp_path, tiny_root, reference):
    stage1 = make_model(tiny_root, seed=11, lora_r=0)
    sd = tinygptv_state_dict(stage1, peft_prefix=False, lora=False)
    path = tinygptv_file(tmp_path / "TinyGPT-V_for_Stage1.pth", sd)

    target1 = fresh_copy(stage1)
    report = weights.load_checkpoint(target1, str(path))
    assert_complete(report, sd)
    torch.testing.assert_close(logits(target1), logits(stage1))

    # A stage-2 (LoRA) model: norms and projector load, LoRA is reported as kept at initialisation.
    stage2 = make_model(tiny_root, seed=12)
    lora_before = {k: v for k, v in state(stage2).items() if "lora_" in k}
    report = weights.load_checkpoint(stage2, str(path))
    assert report.kept == ["llm lora"]
    assert all(torch.equal(v, state(stage2)[k]) for k, v in lora_before.items())
    torch.testing.assert_close(stage2.llm.model.layers[1].post_layernorm.weight,
                               stage1.llm.model.layers[1].post_layernorm.weight)
    torch.testing.assert_close(stage2.projector.fc2.weight, stage1.projector.fc2.weight)


def test_tinygptv_checkpoint_without_wrapper_and_with_an_omegaconf_config(tmp_path, reference, reference_logits):
    from omegaconf import OmegaConf

    sd = tinygptv_state_dict(reference)
    bare = tinygptv_file(tmp_path / "bare.pth", sd, wrapper=False)
    model = fresh_copy(reference)
    weights.load_checkpoint(model, str(bare))
    torch.testing.assert_close(logits(model), reference_logits, atol=1e-5, rtol=1e-5)

    cfg = OmegaConf.create({"model": {"arch": "minigpt4", "lora_r": 64, "targets": ["query_key_value", "dense"]},
                            "run": {"init_lr": 1e-4, "output_dir": None}})
    path = tinygptv_file(tmp_path / "omegaconf.pth", sd, config=cfg)
    model = fresh_copy(reference)
    report = weights.load_checkpoint(model, str(path))
    assert report.ok
    torch.testing.assert_close(logits(model), reference_logits, atol=1e-5, rtol=1e-5)


def test_tinygptv_checkpoints_carry_the_prompt_style_they_were_trained_with(tmp_path, reference):
    sd = tinygptv_state_dict(reference)
    # Stage 4 (MiniGPT-v2's arch: `[INST] {} [/INST]` by default), ending answers in "###", 448 px.
    stage4 = tinygptv_file(tmp_path / "TinyGPT-V_for_Stage4.pth", sd, config={
        "model": {"arch": "minigpt_v2", "end_sym": "###", "image_size": 448, "chat_template": True}})
    assert weights.recorded_style(str(stage4)) == {"template": "[INST] {} [/INST]", "end_sym": "###",
                                                   "image_after_question": False, "image_size": 448}
    # Stage 3 states its template; stages 1-2 state none and end with MiniGPT-4's "\n".
    stage3 = tinygptv_file(tmp_path / "s3.pth", sd, config={"model": {
        "arch": "minigpt4", "prompt_template": "###Human: {} ###Assistant: ", "end_sym": "###", "image_size": 224}})
    assert weights.recorded_style(str(stage3))["template"] == "###Human: {} ###Assistant: "
    stage1 = tinygptv_file(tmp_path / "s1.pth", sd, config={"model": {"arch": "minigpt4", "image_size": 224}})
    assert weights.recorded_style(str(stage1)) == {"template": "", "end_sym": "\n", "image_after_question": False,
                                                   "image_size": 224}
    # A bare state dict records nothing.
    assert weights.recorded_style(str(tinygptv_file(tmp_path / "bare.pth", sd, wrapper=False))) is None


@pytest.mark.parametrize("record, message", [
    ("not json{", "prompt_style metadata is not JSON"),
    ('{"template": 123}', "'template' is '123' (int); expected a str"),
    ('{"image_after_question": "yes"}', "'image_after_question' is 'yes' (str); expected a bool"),
    ('{"image_size": 0}', "'image_size' is '0' (int); expected a positive int"),
    ('{"template": "no slot here"}', "prompt style is not usable: a prompt template must contain exactly one"),
    ('["template"]', "must be an object"),
])
def test_a_bad_prompt_style_record_is_one_error_naming_the_file(tmp_path, reference, record, message):
    from safetensors.torch import load_file

    weights.save_trainable(reference, str(tmp_path / "full.safetensors"))
    path = tmp_path / "styled.safetensors"
    save_file(load_file(str(tmp_path / "full.safetensors")), str(path), metadata={"prompt_style": record})
    with pytest.raises(WeightLoadError, match=re.escape(message)) as err:
        weights.recorded_style(str(path))
    assert str(err.value).startswith(str(path))


def test_a_tinygptv_checkpoint_whose_config_has_a_number_for_template_is_an_error(tmp_path, reference):
    path = tinygptv_file(tmp_path / "s3.pth", tinygptv_state_dict(reference),
                         config={"model": {"arch": "minigpt4", "prompt_template": 123, "end_sym": "###"}})
    with pytest.raises(WeightLoadError, match=r"s3\.pth: the recorded prompt style's 'template' is '123' \(int\)"):
        weights.recorded_style(str(path))
    arch = tinygptv_file(tmp_path / "arch.pth", tinygptv_state_dict(reference), config={"model": {"arch": [1]}})
    with pytest.raises(WeightLoadError, match=r"arch\.pth"):
        weights.recorded_style(str(arch))


# ----------------------------------------------------------------------------- our own checkpoints
def test_save_trainable_round_trip(tmp_path, reference, reference_logits):
    path = tmp_path / "out" / "checkpoint_final.safetensors"
    names = weights.save_trainable(reference, str(path))
    assert names == sorted(n for n, p in reference.named_parameters() if p.requires_grad)
    assert not list(path.parent.glob(".tmp-*"))
    model = fresh_copy(reference)
    report = weights.load_checkpoint(model, str(path))
    assert report.format == "tinygpt-trainable" and report.loaded == names and report.kept == []
    assert weights.recorded_style(str(path))["template"] == reference.style.template
    torch.testing.assert_close(logits(model), reference_logits)


def test_runner_checkpoint(tmp_path, reference, reference_logits):
    trainable = {n: p.detach().clone() for n, p in reference.named_parameters() if p.requires_grad}
    torch.save({"format": "tinygpt-train-1", "model": trainable, "optimizer": {"state": {}, "param_groups": []},
                "config": "model:\n  arch: tinygpt_v\n", "step": 12, "rng": {"torch": torch.get_rng_state()}},
               tmp_path / "checkpoint_step0000012.pt")
    model = fresh_copy(reference)
    report = weights.load_checkpoint(model, str(tmp_path / "checkpoint_step0000012.pt"))
    assert report.format == "tinygpt-runner"
    assert weights.recorded_style(str(tmp_path / "checkpoint_step0000012.pt")) is None  # its config sets none
    assert_complete(report, trainable)
    torch.testing.assert_close(logits(model), reference_logits)


# ----------------------------------------------------------------------------- errors
def test_shape_mismatch_is_an_error_and_leaves_the_model_untouched(tmp_path, reference):
    sd = tinygptv_state_dict(reference)
    sd["llama_proj.weight"] = torch.randn(4096, 32)  # a projector for another width
    path = tinygptv_file(tmp_path / "bad.pth", sd)
    model = fresh_copy(reference)
    before = state(model)
    with pytest.raises(WeightLoadError, match=r"(?s)bad\.pth.*shape mismatch.*projector\.fc1\.weight.*\[4096, 32\]"):
        weights.load_checkpoint(model, str(path))
    assert all(torch.equal(before[k], v) for k, v in state(model).items())


def _our_file_with(tmp_path, reference, key, change):
    from safetensors.torch import load_file

    weights.save_trainable(reference, str(tmp_path / "full.safetensors"))
    sd = load_file(str(tmp_path / "full.safetensors"))
    sd[key] = change(sd[key])
    save_file(sd, str(tmp_path / "bad.safetensors"))
    return str(tmp_path / "bad.safetensors")


@pytest.mark.parametrize("change, message", [
    (lambda t: t.to(torch.int32), r"dtype mismatch: projector\.fc1\.weight: file projector\.fc1\.weight int32, model float32"),
    (lambda t: t.bool(), r"dtype mismatch: projector\.fc1\.weight: file projector\.fc1\.weight bool, model float32"),
    (lambda t: t[:, :-1].contiguous(), r"shape mismatch: projector\.fc1\.weight: file projector\.fc1\.weight \[48, 31\]"),
], ids=["int32", "bool", "shape"])
def test_a_weight_of_another_kind_or_shape_is_refused_naming_key_file_and_both(tmp_path, reference, change, message):
    path = _our_file_with(tmp_path, reference, "projector.fc1.weight", change)
    model = fresh_copy(reference)
    before = state(model)
    with pytest.raises(WeightLoadError, match=r"(?s)bad\.safetensors.*" + message):
        weights.load_checkpoint(model, path)
    assert all(torch.equal(before[k], v) for k, v in state(model).items())


def test_half_precision_files_still_load_into_float32_models(tmp_path, reference):
    path = _our_file_with(tmp_path, reference, "projector.fc1.weight", lambda t: t.to(torch.bfloat16))
    weights.load_checkpoint(fresh_copy(reference), path)


def test_an_integer_weight_in_a_phi_file_is_refused(tmp_path, reference):
    path, sd = _phi_dir_single(tmp_path, reference)
    key = next(k for k in sd if k.endswith("fc1.weight"))
    sd[key] = sd[key].to(torch.int32)
    save_file(sd, str(path / "model.safetensors"))
    with pytest.raises(WeightLoadError, match=rf"(?s)dtype mismatch: .*fc1\.weight: file {re.escape(key)} int32"):
        weights.load_phi(fresh_copy(reference), str(path))


def test_partial_group_is_an_error(tmp_path, reference):
    sd = tinygptv_state_dict(reference)
    dropped = "llama_model.base_model.model.model.layers.1.self_attn.dense.lora_B.default.weight"
    del sd[dropped]
    path = tinygptv_file(tmp_path / "partial.pth", sd)
    with pytest.raises(WeightLoadError, match=r"(?s)missing.*llm\.model\.layers\.1\.self_attn\.dense\.lora_B"):
        weights.load_checkpoint(fresh_copy(reference), str(path))


def test_partial_projector_is_an_error(tmp_path, reference):
    names = weights.save_trainable(reference, str(tmp_path / "full.safetensors"))
    from safetensors.torch import load_file

    sd = load_file(str(tmp_path / "full.safetensors"))
    del sd["projector.fc2.bias"]
    save_file(sd, str(tmp_path / "partial.safetensors"))
    assert "projector.fc2.bias" in names
    with pytest.raises(WeightLoadError, match="projector.fc2.bias"):
        weights.load_checkpoint(fresh_copy(reference), str(tmp_path / "partial.safetensors"))


def test_lora_checkpoint_into_a_model_without_lora_is_an_error(tmp_path, tiny_root, reference):
    path = tinygptv_file(tmp_path / "stage3.pth", tinygptv_state_dict(reference))
    with pytest.raises(WeightLoadError, match=r"(?s)no place for.*lora_A"):
        weights.load_checkpoint(make_model(tiny_root, lora_r=0), str(path))


def test_unknown_checkpoint_format_is_an_error(tmp_path, reference):
    torch.save({"encoder.weight": torch.zeros(2)}, tmp_path / "other.pth")
    with pytest.raises(WeightLoadError, match=r"other\.pth: not a checkpoint format"):
        weights.load_checkpoint(reference, str(tmp_path / "other.pth"))


class Payload:
    """Stands for anything that is not tensors and plain containers."""

    def __reduce__(self):
        return (print, ("this would have run at load time",))


def test_files_needing_pickle_are_refused(tmp_path, reference):
    torch.save({"model": tinygptv_state_dict(reference), "hook": Payload()}, tmp_path / "evil.pth")
    with pytest.raises(WeightLoadError) as err:
        weights.load_checkpoint(reference, str(tmp_path / "evil.pth"))
    msg = str(err.value)
    assert "evil.pth" in msg and "arbitrary Python objects" in msg and "refusing" in msg
    assert "builtins.print" in msg and "safetensors" in msg


def test_missing_file_is_an_error(tmp_path, reference):
    with pytest.raises(WeightLoadError, match="no such file"):
        weights.load_eva_vit(reference, str(tmp_path / "nope.pth"))
    (tmp_path / "empty").mkdir()
    with pytest.raises(WeightLoadError, match="model.safetensors"):
        weights.load_phi(reference, str(tmp_path / "empty"))


def test_report_summary_is_one_paragraph(tmp_path, tiny_root, reference):
    torch.save(eva_state_dict(reference), tmp_path / "eva.pth")
    report = weights.load_eva_vit(make_model(tiny_root, seed=3), str(tmp_path / "eva.pth"))
    text = report.summary()
    assert "\n" not in text and "eva.pth" in text and "ViT block beyond" in text


# ----------------------------------------------------------------------------- through build_model
def test_build_model_loads_every_file_the_config_names(tmp_path, tiny_root, reference, reference_logits):
    torch.save(eva_state_dict(reference), tmp_path / "eva_vit_g.pth")
    sd, extras = blip2_state_dict(reference)
    torch.save({"model": {**sd, **extras}}, tmp_path / "blip2.pth")
    phi_dir, _ = _phi_dir_sharded(tmp_path, reference)
    stage3 = {"model": {"arch": "minigpt4", "prompt_template": "###Human: {} ###Assistant: ", "end_sym": "###"}}
    tinygptv_file(tmp_path / "TinyGPT-V_for_Stage3.pth", tinygptv_state_dict(reference), config=stage3)

    cfg = tiny_model_config(tiny_root)  # no prompt style set: the stage-3 file's is used
    cfg.vision.weights, cfg.qformer.weights = str(tmp_path / "eva_vit_g.pth"), str(tmp_path / "blip2.pth")
    cfg.llm.weights, cfg.ckpt = str(phi_dir), [str(tmp_path / "TinyGPT-V_for_Stage3.pth")]
    model = build_model(cfg, "cpu").eval()
    assert (model.style.template, model.style.end_sym) == ("###Human: {} ###Assistant: ", "###")
    torch.testing.assert_close(logits(model), reference_logits, atol=1e-5, rtol=1e-5)
