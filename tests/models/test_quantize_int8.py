"""`model.{llm,vision}.quantize: int8` (torch's dynamic quantized Linear on CPU): close to the float
model, smaller, built by config for every inference consumer, refused clearly where it cannot work."""
from __future__ import annotations

import copy
import gc
import weakref

import pytest
import torch
from torch import nn

import tinygpt.models.tinygpt_v  # noqa: F401  (registers the "tinygpt_v" arch)
from tiny import tiny_model_config
from tinygpt.common.config import ConfigError, load_config
from tinygpt.models.build import build_model
from tinygpt.models.llm import embedding_dtype
from tinygpt.models.quantize import (ONEDNN_INT8, Int8Embedding, Int8Linear, Int8LinearManyRows, QuantizationError,
                                     quantize_int8)


def make(tiny_root, **kwargs):
    torch.manual_seed(0)
    model = build_model(tiny_model_config(tiny_root, **kwargs), "cpu", load_weights=False, training=False)
    gen = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for _, p in sorted(model.named_parameters()):
            p.add_(torch.randn(p.shape, generator=gen) * 0.05)
    return model


def quantized_copy(model, parts=("llm", "vision")):
    twin = copy.deepcopy(model)
    for part in parts:
        getattr(twin.cfg, part).quantize = "int8"
    return twin, quantize_int8(twin)


def linear_bytes(module):
    """Weight bytes of the Linear layers: float parameters, or the int8 packed weights."""
    total = 0
    for m in module.modules():
        if type(m) is nn.Linear:
            total += m.weight.numel() * m.weight.element_size()
        elif isinstance(m, Int8Linear):
            total += m.int8_weight().numel()
    return total


@torch.no_grad()
def prompt_logits(model, images):
    ids = model.tokenizer(["what colour is the circle?"], return_tensors="pt").input_ids
    embed = model.llm.get_input_embeddings()
    embeds = torch.cat([model.encode_images(images).to(embedding_dtype(model.llm)), embed(ids)], dim=1)
    return model.llm(inputs_embeds=embeds).logits[0].float(), embeds


def test_int8_logits_and_greedy_match_the_float_model(tiny_root):
    model = make(tiny_root)
    images = torch.randn(1, 3, 28, 28, generator=torch.Generator().manual_seed(1))
    want, embeds = prompt_logits(model, images)
    twin, done = quantized_copy(model)
    n_layers = len(model.llm.model.layers)
    qformer_linears = sum(isinstance(m, nn.Linear) for m in model.qformer.modules())
    assert qformer_linears > 0
    # qkv/dense/fc1/fc2 per block and lm_head; `vision` also covers the Q-Former
    assert done == {"llm": 4 * n_layers + 1, "vision": 4 * model.cfg.vision.depth + qformer_linears}
    assert type(twin.llm.model.layers[0].mlp.fc1) is Int8Linear  # one row per decode step: fbgemm
    # the image side's many rows: oneDNN's kernel where it runs (VNNI), its MLPs' GELU fused into fc1
    block = twin.visual_encoder.encoder.layers[0]
    assert isinstance(block.self_attn.qkv, Int8Linear)
    assert isinstance(block.self_attn.qkv, Int8LinearManyRows) == ONEDNN_INT8
    assert isinstance(block.mlp.activation_fn, nn.Identity) == ONEDNN_INT8
    assert not any(isinstance(m, nn.Linear) for m in twin.qformer.modules())
    assert type(twin.projector.fc2) is nn.Linear  # the projector makes the visual tokens: float
    assert isinstance(twin.llm.lm_head, Int8Linear)  # the vocabulary projection too (untied)
    assert isinstance(twin.llm.get_input_embeddings(), Int8Embedding)  # and the input table
    got, _ = prompt_logits(twin, images)
    cosine = nn.functional.cosine_similarity(got, want, dim=-1)  # per position
    # 8-bit activations (7 bits of range: torch's default for AVX2 safety) on a 64-wide model; the
    # full-size figure (2560 wide) is benchmarks.chat --arms auto int8's quality check
    assert cosine.min() > 0.998, cosine
    assert linear_bytes(twin.llm.model) <= 0.25 * linear_bytes(model.llm.model)  # int8 vs fp32 (lm_head aside)

    with torch.no_grad():
        kwargs = dict(inputs_embeds=embeds, max_new_tokens=16, min_new_tokens=16, do_sample=False,
                      pad_token_id=0, eos_token_id=0)
        float_ids, int8_ids = model.llm.generate(**kwargs), twin.llm.generate(**kwargs)
    agree = (float_ids == int8_ids).float().mean().item()
    assert agree >= 0.9, (float_ids, int8_ids)


def test_int8_drops_into_a_bf16_model_and_the_compute_policy(tiny_root):
    """bf16 activations in, bf16 out, through the build's compute-dtype policy (which leaves the int8
    layers alone: they are not nn.Linear)."""
    cfg = tiny_model_config(tiny_root)
    cfg.llm.dtype = cfg.vision.dtype = "bf16"
    cfg.llm.quantize = cfg.vision.quantize = "int8"
    model = build_model(cfg, "cpu", load_weights=False, training=False)
    assert isinstance(model.llm.model.layers[0].self_attn.query_key_value, Int8Linear)
    assert isinstance(model.llm.lm_head, Int8Linear) and isinstance(model.llm.get_input_embeddings(), Int8Embedding)
    assert embedding_dtype(model.llm) == torch.bfloat16
    images = torch.randn(2, 3, 28, 28)
    with torch.no_grad():
        visual = model.encode_images(images)
        out = model.llm(inputs_embeds=visual.to(torch.bfloat16)).logits
    assert out.dtype == torch.bfloat16 and torch.isfinite(out.float()).all()


def test_int8_is_refused_where_it_cannot_work(tiny_root):
    cfg = tiny_model_config(tiny_root)
    cfg.llm.quantize = "int8"
    with pytest.raises(QuantizationError, match="device is 'cuda'"):
        build_model(cfg, "cuda", load_weights=False, training=False)
    with pytest.raises(QuantizationError, match="for inference"):
        build_model(cfg, "cpu", load_weights=False, training=True)
    cfg.llm.load_in_8bit = True
    with pytest.raises(QuantizationError, match="choose one"):
        build_model(cfg, "cpu", load_weights=False, training=False)


def test_quantize_choice_is_validated_with_file_and_key(tmp_path, tiny_root):
    path = tmp_path / "bad.yaml"
    path.write_text(f"model:\n  llm:\n    hf_config: {tiny_root / 'phi.json'}\n    quantize: int4\n")
    with pytest.raises(ConfigError, match=r"bad.yaml: key 'model.llm.quantize' is 'int4'; expected one of none, int8"):
        load_config(str(path))
    path.write_text(f"model:\n  llm:\n    hf_config: {tiny_root / 'phi.json'}\n  vision:\n    quantize: int8\n")
    assert load_config(str(path)).model.vision.quantize == "int8"


def float_target_weights(model) -> int:
    """Float (non-meta) weights alive at the places `quantize: int8` makes int8."""
    from tinygpt.models.quantize import int8_targets

    return sum(1 for *_, linear in int8_targets(model) if not linear.weight.is_meta)


def test_an_int8_build_never_holds_the_float_layers_at_once(tiny_root, monkeypatch):
    """Quantized as created: while each layer is quantized, at most that one layer has a float weight
    (building the float model first would hold all of them: the full-size peak went 7.8 GB -> int8)."""
    from tinygpt.models import quantize

    seen, model_of, quantized = [], {}, []
    materialize, int8_linear = quantize.materialize, quantize.int8_linear

    def spy_materialize(model):
        model_of["model"] = model
        return materialize(model)

    def spy_int8_linear(linear, part="llm"):
        gc.collect()
        alive = sum(1 for ref in quantized if ref() is not None)  # float layers already quantized, still held
        seen.append(float_target_weights(model_of["model"]) + alive)
        quantized.append(weakref.ref(linear))
        return int8_linear(linear, part)

    monkeypatch.setattr(quantize, "materialize", spy_materialize)
    monkeypatch.setattr(quantize, "int8_linear", spy_int8_linear)
    cfg = tiny_model_config(tiny_root)
    cfg.llm.quantize = cfg.vision.quantize = "int8"
    model = build_model(cfg, "cpu", load_weights=False, training=False)
    n_layers = len(model.llm.model.layers)
    qformer_linears = sum(isinstance(m, Int8Linear) for m in model.qformer.modules())
    assert len(seen) == 4 * n_layers + 1 + 4 * cfg.vision.depth + qformer_linears and max(seen) == 1
    assert float_target_weights(model) == 0
    assert isinstance(model.llm.get_input_embeddings(), Int8Embedding)
    # everything else is real and initialised as a float build's: LoRA merged away, Q-Former finite
    assert not any(p.is_meta for p in model.parameters())
    # initialised as construction does (Hugging Face's normal(0, initializer_range)), not left empty
    std = model.llm.config.initializer_range
    head = model.llm.lm_head.packed._weight_bias()[0].dequantize()
    assert isinstance(model.llm.lm_head, Int8Linear) and abs(head.std().item() - std) < 0.2 * std
    assert all(torch.isfinite(p).all() for p in model.qformer.parameters())
    assert all(m.int8_weight().any() for m in int8_layers(model.qformer))  # the Q-Former's, initialised too


def test_int8_quantized_while_loading_matches_the_loaded_float_model(tiny_root, tmp_path):
    """Weights from a checkpoint with LoRA (B off zero) go into the int8 layers as they load, and the
    adapters merge into the int8 base: the same model as the float build, within int8's error."""
    from exports import layout_config, trained_checkpoint

    cfg = trained_checkpoint(layout_config("full", tiny_root), tmp_path)
    images = torch.randn(1, 3, 28, 28, generator=torch.Generator().manual_seed(1))
    reference = build_model(cfg, "cpu", training=False)
    want, _ = prompt_logits(reference, images)
    cfg.model.llm.quantize = cfg.model.vision.quantize = "int8"
    model = build_model(cfg, "cpu", training=False)
    assert isinstance(model.llm.model.layers[0].self_attn.query_key_value, Int8Linear)  # LoRA merged into int8
    got, _ = prompt_logits(model, images)
    cosine = nn.functional.cosine_similarity(got, want, dim=-1)
    assert cosine.min() > 0.998, cosine
    twin, _ = quantized_copy(reference)  # the float model quantized after loading: the same int8 values
    for a, b in zip(int8_layers(model), int8_layers(twin)):
        assert (a.int8_weight().int() - b.int8_weight().int()).abs().max() <= 1  # merge rounds once more


def int8_layers(model):
    return [m for m in model.modules() if isinstance(m, Int8Linear)]


def test_int8_auto_dtypes_keep_what_stays_float_where_it_costs_least(tiny_root):
    """`quantize: int8` with `dtype: auto` on CPU: the LLM's float tensors (embeddings, norms) in
    bf16, the image side's float rest (tower, Q-Former, query tokens) in fp32, the dtype its int8
    kernel takes and returns; an explicit dtype is kept."""
    cfg = tiny_model_config(tiny_root)
    cfg.llm.quantize = cfg.vision.quantize = "int8"
    model = build_model(cfg, "cpu", load_weights=False, training=False)
    assert embedding_dtype(model.llm) == torch.bfloat16  # what the int8 table dequantizes to
    assert model.llm.model.final_layernorm.weight.dtype == torch.float32  # TinyGPT-V's fp32 norms
    assert model.llm.lm_head(torch.randn(1, model.llm.config.hidden_size, dtype=torch.bfloat16)).dtype == torch.bfloat16
    image_side = [*model.visual_encoder.parameters(), *model.qformer.parameters(), model.query_tokens]
    assert image_side and all(p.dtype == torch.float32 for p in image_side)
    logits, _ = prompt_logits(model, torch.randn(1, 3, 28, 28))
    assert torch.isfinite(logits).all()
    # the doctor's plan (compute_dtype.plan) reads the same storage rule as the build
    from tinygpt.models.compute_dtype import plan

    stored = {c.component: c.storage for c in plan(cfg, "cpu")}
    assert stored == {"visual_encoder": torch.float32, "ln_vision": torch.float32, "qformer": torch.float32,
                      "query_tokens": torch.float32, "projector": torch.bfloat16, "llm": torch.bfloat16}
    explicit = tiny_model_config(tiny_root)
    explicit.llm.quantize = explicit.vision.quantize = "int8"
    explicit.llm.dtype = explicit.vision.dtype = "fp32"
    model = build_model(explicit, "cpu", load_weights=False, training=False)
    assert embedding_dtype(model.llm) == torch.float32
    # without int8, auto on CPU stays fp32 everywhere
    plain = build_model(tiny_model_config(tiny_root), "cpu", load_weights=False, training=False)
    assert {p.dtype for p in plain.parameters()} == {torch.float32}



def test_a_tied_lm_head_stays_with_its_float_embedding(tiny_root):
    """A head that shares the input embedding's weight (tie_word_embeddings: Gemma, small Qwen2) is
    not quantized, nor is the table it shares: both stay float."""
    from tinygpt.models.quantize import int8_targets

    model = make(tiny_root)
    assert any(linear is model.llm.lm_head for *_, linear in int8_targets(model))  # untied: int8
    model.llm.lm_head.weight = model.llm.get_input_embeddings().weight
    assert not any(linear is model.llm.lm_head for *_, linear in int8_targets(model))
    twin, done = quantized_copy(model)
    assert type(twin.llm.lm_head) is nn.Linear and twin.llm.lm_head.weight is twin.llm.get_input_embeddings().weight
    assert type(twin.llm.get_input_embeddings()) is nn.Embedding
    assert done["llm"] == 4 * len(model.llm.model.layers)


def test_int8_embedding_rows_and_loading():
    """One scale per token row: a lookup returns the float table's rows within int8's step, in the
    table's dtype; a weight file's value goes in through load_float, checked by shape like a Linear's."""
    gen = torch.Generator().manual_seed(0)
    table = nn.Embedding(300, 48, dtype=torch.bfloat16)
    with torch.no_grad():
        table.weight.copy_(torch.randn(300, 48, generator=gen) * torch.linspace(0.01, 3, 300)[:, None])
    q = Int8Embedding.from_embedding(table)
    ids = torch.tensor([[0, 7, 299], [150, 150, 1]])
    got, want = q(ids), table(ids)
    assert got.shape == want.shape and got.dtype == torch.bfloat16
    step = want.float().abs().amax(-1, keepdim=True) / 127  # each row's own scale, small rows too
    assert ((got.float() - want.float()).abs() <= 0.5 * step + 0.01 * want.float().abs()).all()
    assert q.float_weights()["weight"].shape == (300, 48) and q.values.dtype == torch.int8
    other = torch.randn(300, 48)
    q.load_float("weight", other)
    assert torch.allclose(q(ids).float(), other[ids], atol=float(other.abs().max()) / 127)


@pytest.mark.parametrize("activation", [None, nn.GELU(), nn.GELU(approximate="tanh")])
def test_int8_many_rows_kernel_is_the_per_call_kernel_in_onednn(activation):
    """Int8LinearManyRows (oneDNN, the image side's kernel) quantizes as Int8Linear (fbgemm) does and
    gives its outputs up to the order of the int32 sums, for 2-D and 3-D inputs, with a fused GELU
    (erf and tanh) equal to the GELU after it; LoRA's add_float, deepcopy and a module-wide .to(dtype)
    keep it whole.  Tested on any x86 CPU: the class runs without VNNI too (where a build does not
    choose it)."""
    from tinygpt.models.quantize import _gelu_algorithm

    gen = torch.Generator().manual_seed(0)
    linear = nn.Linear(96, 160)
    with torch.no_grad():
        linear.weight.copy_(torch.randn(160, 96, generator=gen) * 0.1)
        linear.bias.copy_(torch.randn(160, generator=gen))
    fbgemm, onednn = Int8Linear.from_linear(linear), Int8LinearManyRows.from_linear(linear)
    assert torch.equal(fbgemm.int8_weight(), onednn.int8_weight())
    assert torch.allclose(fbgemm._stored()[1], onednn._stored()[1])
    x = torch.randn(2, 37, 96, generator=gen)
    if activation is not None:
        onednn.activation = ("gelu", _gelu_algorithm(activation))
    for inputs in (x, x[0]):  # (one input scale per call: each call's own)
        expected = fbgemm(inputs) if activation is None else activation(fbgemm(inputs))
        got = onednn(inputs)
        assert got.shape == expected.shape and got.dtype == torch.float32
        assert torch.allclose(got, expected, atol=1e-4, rtol=1e-4), (got - expected).abs().max()
    assert not torch.allclose(onednn(x), fbgemm(x), atol=1e-2) or activation is None  # the GELU is there

    update = torch.randn(160, 96, generator=gen) * 0.01
    fbgemm.add_float(lambda rows: update[rows])
    onednn.add_float(lambda rows: update[rows])
    assert torch.equal(fbgemm.int8_weight(), onednn.int8_weight())
    copy_ = copy.deepcopy(onednn).to(torch.bfloat16)  # scales and packed weight are not module tensors
    assert copy_.scales.dtype == torch.float32
    assert torch.equal(copy_(x.bfloat16()), onednn(x.bfloat16())) and copy_(x.bfloat16()).dtype == torch.bfloat16


def test_only_gelu_mlps_of_int8_towers_are_fused(tiny_root):
    """fuse_activations touches the vision tower's fc1 -> GELU -> fc2 MLPs whose fc1 is the oneDNN
    kernel, and nothing else; the fused tower computes what the unfused one does."""
    from tinygpt.models.quantize import fuse_activations

    model = make(tiny_root)
    assert fuse_activations(model) == []  # float layers: nothing to fuse into
    block = model.visual_encoder.encoder.layers[0]
    for mlp in (layer.mlp for layer in model.visual_encoder.encoder.layers):
        mlp.fc1, mlp.fc2 = (Int8LinearManyRows.from_linear(linear) for linear in (mlp.fc1, mlp.fc2))
    hidden = torch.randn(1, 17, block.mlp.fc1.in_features)
    with torch.no_grad():
        want = block.mlp(hidden)
    fused = fuse_activations(model)
    assert len(fused) == len(model.visual_encoder.encoder.layers)
    assert all(isinstance(mlp.activation_fn, nn.Identity) and mlp.fc1.activation == ("gelu", "none")
               for mlp, *_ in fused)
    with torch.no_grad():
        assert torch.allclose(block.mlp(hidden), want, atol=1e-5)
    assert fuse_activations(model) == []  # an identity is not fused twice
    assert not any(isinstance(m, Int8LinearManyRows) for m in model.qformer.modules())


@pytest.mark.parametrize("kind,act,fused", [("siglip", "gelu_pytorch_tanh", ("gelu", "tanh")),
                                            ("clip", "quick_gelu", None), ("clip", "gelu", ("gelu", "none"))])
def test_hf_towers_quantize_and_fuse_what_onednn_computes(kind, act, fused):
    """CLIP and SigLIP towers (`model.vision.kind`): every block Linear int8, the MLP's GELU fused
    into fc1 where oneDNN has it (erf, tanh; not CLIP's quick_gelu), the same outputs as unfused;
    nn.MultiheadAttention's out_proj (SigLIP's pooling head), whose parent reads `.weight`, stays float."""
    from transformers import CLIPVisionConfig, CLIPVisionModel, SiglipVisionConfig, SiglipVisionModel

    from tinygpt.models.quantize import fuse_activations, int8_linear, int8_targets

    torch.manual_seed(0)
    shape = dict(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
                 image_size=56, patch_size=14, hidden_act=act)
    config_class, model_class = {"siglip": (SiglipVisionConfig, SiglipVisionModel),
                                 "clip": (CLIPVisionConfig, CLIPVisionModel)}[kind]
    holder = nn.Module()
    holder.visual_encoder, holder.qformer = model_class(config_class(**shape)).eval(), None
    images = torch.randn(1, 3, 56, 56, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        want = holder.visual_encoder(pixel_values=images).last_hidden_state
        for parent, child, linear in int8_targets(holder, ("vision",)):
            setattr(parent, child, int8_linear(linear, "vision"))
        unfused = holder.visual_encoder(pixel_values=images).last_hidden_state
        done = fuse_activations(holder)
        got = holder.visual_encoder(pixel_values=images).last_hidden_state
    blocks = [m for m in holder.visual_encoder.modules() if hasattr(m, "fc1")]
    assert blocks and all(isinstance(m.fc1, Int8Linear) for m in blocks)
    heads = [m for m in holder.visual_encoder.modules() if isinstance(m, nn.MultiheadAttention)]
    assert all(type(m.out_proj) is nn.modules.linear.NonDynamicallyQuantizableLinear for m in heads)
    assert ((got - want).norm() / want.norm()) < 0.03  # int8's error, nothing more
    if ONEDNN_INT8:  # fused only on the oneDNN layers a VNNI CPU builds
        assert len(done) == (len(blocks) if fused else 0)
        assert all(m.fc1.activation == fused for m in blocks) if fused else not done
    assert torch.equal(got, unfused)  # oneDNN's GELU post-op is the GELU it replaces, bit for bit
