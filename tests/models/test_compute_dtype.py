"""Compute dtype per device: the policy (common/device.compute_policy, its probe faked) and the
mechanism (models/compute_dtype.py) on the tiny model with bf16 weights."""
from __future__ import annotations

import copy
import threading

import pytest
import torch
from torch import nn

from tiny import tiny_model_config
from tinygpt.common import device as devices
from tinygpt.models import compute_dtype
from tinygpt.models.build import build_model

ROWS = (1, 4, 16, 64)


def probe_slow_from(rows: int | None):
    """A fake `_matmul_probe`: from `rows` on, bf16 is 10x slower than fp32 with the upcast (None: never)."""
    def probe(dtype):
        slow = [m for m in ROWS if rows is not None and m >= rows]
        return {m: {"native_ms": 10.0 if m in slow else 1.0, "upcast_ms": 1.0 if m in slow else 2.0} for m in ROWS}
    return probe


@pytest.fixture
def slow_bf16(monkeypatch):
    """A CPU without bf16 matmul units, as the probe sees it: fp32 wins from 4 rows (the tiny model's
    image gives its tower 5 rows and its Q-Former 4)."""
    monkeypatch.setattr(devices, "_matmul_probe", probe_slow_from(4))


def bf16_model(tiny_root, compute: str = "storage"):
    cfg = tiny_model_config(tiny_root)
    cfg.llm.dtype = cfg.vision.dtype = "bf16"
    cfg.compute_dtype = compute
    torch.manual_seed(0)
    return build_model(cfg, "cpu", load_weights=False, training=False), cfg


def images(batch: int = 2) -> torch.Tensor:
    return torch.randn(batch, 3, 28, 28, generator=torch.Generator().manual_seed(1))


def no_probe(dtype):
    raise AssertionError("the probe ran")


# ----------------------------------------------------------------------------- policy
def test_policy_upcasts_from_the_rows_where_the_probe_says_bf16_is_slow(monkeypatch):
    monkeypatch.setattr(devices, "_matmul_probe", probe_slow_from(16))
    policy = devices.compute_policy("cpu", torch.bfloat16)
    assert policy.upcast_rows == 16 and "slow" in policy.reason
    assert [policy.dtype(m) for m in (1, 15, 16, 1025)] == [torch.bfloat16] * 2 + [torch.float32] * 2
    monkeypatch.setattr(devices, "_matmul_probe", probe_slow_from(None))  # e.g. AVX512-BF16 / AMX
    assert devices.compute_policy("cpu", torch.bfloat16).upcast_rows is None


def test_policy_needs_a_clear_win_at_every_larger_row_count(monkeypatch):
    figures = {1: (1.0, 2.0), 4: (1.0, 0.5), 16: (1.0, 0.9), 64: (10.0, 1.0)}  # 16 rows: a near tie
    monkeypatch.setattr(devices, "_matmul_probe", lambda dtype: {
        m: {"native_ms": n, "upcast_ms": u} for m, (n, u) in figures.items()})
    assert devices.compute_policy("cpu", torch.float16).upcast_rows == 64


def test_policy_without_a_probe(monkeypatch):
    monkeypatch.setattr(devices, "_matmul_probe", no_probe)
    assert devices.compute_policy("cpu", torch.float32).upcast_rows is None  # nothing to upcast
    assert devices.compute_policy("cpu", torch.bfloat16, "storage").upcast_rows is None
    assert devices.compute_policy("cpu", torch.bfloat16, "fp32").upcast_rows == 1
    monkeypatch.setattr(devices, "_cuda_capability", lambda index=0: (9, 0))
    monkeypatch.setattr(devices, "_cuda_name", lambda index=0: "FakeGPU")
    gpu = devices.compute_policy(torch.device("cuda", 0), torch.bfloat16)
    assert gpu.upcast_rows is None and "FakeGPU" in gpu.reason
    with pytest.raises(devices.DeviceError, match="compute dtype 'fp64'"):
        devices.compute_policy("cpu", torch.bfloat16, "fp64")


def test_the_real_probe_times_both_ways():
    probe = devices._matmul_probe(torch.bfloat16)
    assert set(probe) == set(devices._PROBE_ROWS)
    assert all(f["native_ms"] > 0 and f["upcast_ms"] > 0 for f in probe.values())
    assert devices._matmul_probe(torch.bfloat16) is probe  # once per process


# ----------------------------------------------------------------------------- model
def test_upcast_compute_matches_an_fp32_model(tiny_root, slow_bf16):
    model, _ = bf16_model(tiny_root)
    reference = copy.deepcopy(model).float()  # the same (bf16-representable) weights, all in fp32
    x = images()
    with torch.no_grad():
        expected, native = reference.encode_images(x), model.encode_images(x).float()
        compute_dtype.apply(model, "cpu")
        visual = model.encode_images(x)
        assert visual.dtype == torch.float32
        torch.testing.assert_close(visual, expected, rtol=1e-5, atol=1e-6)
        assert (native - expected).abs().max() > 100 * (visual - expected).abs().max()  # bf16 compute was not

        embeds = torch.randn(2, 12, model.llm.config.hidden_size, generator=torch.Generator().manual_seed(2))
        logits = model.llm(inputs_embeds=embeds.bfloat16()).logits  # prefill: 12 rows per sequence
        ref_logits = reference.llm(inputs_embeds=embeds.bfloat16().float()).logits
    # Between the Linears the LLM's activations stay bf16: bf16-sized differences.
    torch.testing.assert_close(logits.float(), ref_logits, rtol=0.05, atol=0.05)


def test_weights_stay_in_their_storage_dtype(tiny_root, slow_bf16, monkeypatch):
    model, _ = bf16_model(tiny_root, compute="auto")  # build_model applies the policy
    layer = model.visual_encoder.encoder.layers[0]
    fc1, weight = layer.mlp.fc1, layer.mlp.fc1.weight
    seen = []
    fc1.register_forward_hook(lambda m, args, out: seen.append((m.weight.dtype, args[0].dtype)))
    rows = []
    real = compute_dtype.upcast_linear
    monkeypatch.setattr(compute_dtype, "upcast_linear",
                        lambda x, *a: rows.append(x.numel() // x.shape[-1]) or real(x, *a))
    model.generate(images(1), ["<Img><ImageHere></Img> what?"], max_new_tokens=3, min_new_tokens=3)

    assert seen == [(torch.float32, torch.float32)]  # the block computed in fp32 ...
    assert fc1.weight is weight and weight.dtype == torch.bfloat16  # ... and its weight is stored as before
    blocks = [*model.visual_encoder.encoder.layers, *model.qformer.encoder.layer]
    assert all(p.dtype == torch.bfloat16 and isinstance(p, nn.Parameter) for b in blocks for p in b.parameters())
    linears = [m for m in model.llm.modules() if isinstance(m, nn.Linear)]
    assert linears and all(type(m) is compute_dtype.WideUpcastLinear and m.weight.dtype == torch.bfloat16
                           for m in linears)
    # Only the prefill (prompt rows >= 4) was upcast; the decoding steps (1 row) ran in bf16.
    assert rows and min(rows) >= 4
    # The small parts at the component boundaries are held in fp32 (the casts to their dtype pick it).
    assert model.visual_encoder.embeddings.patch_embedding.weight.dtype == torch.float32
    assert model.projector.fc1.weight.dtype == model.query_tokens.dtype == torch.float32


def test_remove_restores_the_model_exactly(tiny_root, slow_bf16):
    model, _ = bf16_model(tiny_root)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    applied = compute_dtype.apply(model, "cpu")
    model.generate(images(1), ["<Img><ImageHere></Img> what?"], max_new_tokens=2, min_new_tokens=2)
    applied.remove()
    after = model.state_dict()
    assert all(after[k].dtype == v.dtype and torch.equal(after[k], v) for k, v in before.items())
    assert not any(m._forward_pre_hooks or m._forward_hooks for m in model.visual_encoder.modules())
    assert not any(isinstance(m, compute_dtype.WideUpcastLinear) for m in model.modules())


def test_a_copy_computes_on_its_own(tiny_root, slow_bf16):
    model, _ = bf16_model(tiny_root, compute="auto")
    twin = copy.deepcopy(model)
    x = images(1)
    torch.testing.assert_close(twin.encode_images(x), model.encode_images(x), rtol=0, atol=0)
    assert all(p.dtype == torch.bfloat16 for p in twin.visual_encoder.encoder.parameters())


def test_plan_says_what_apply_does(tiny_root, slow_bf16):
    model, cfg = bf16_model(tiny_root)
    cfg.compute_dtype = "auto"
    choices = compute_dtype.apply(model, "cpu").choices
    assert compute_dtype.plan(cfg, "cpu") == choices
    by_name = {c.component: c.compute for c in choices}
    assert by_name["visual_encoder"] == by_name["qformer"] == "fp32"
    assert by_name["llm"].startswith("fp32 from 4 rows") and "bf16 below" in by_name["llm"]


def test_threads_share_the_upcast_layers(tiny_root, slow_bf16):
    model, _ = bf16_model(tiny_root, compute="auto")
    x = images(1)
    expected = model.encode_images(x)
    results = [None] * 4

    def encode(i):
        results[i] = model.encode_images(x)

    threads = [threading.Thread(target=encode, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert all(torch.equal(r, expected) for r in results)
    assert all(isinstance(p, nn.Parameter) and p.dtype == torch.bfloat16
               for p in model.visual_encoder.encoder.parameters())


def test_layers_take_turns_with_one_set_of_upcast_buffers(tiny_root, slow_bf16):
    model, _ = bf16_model(tiny_root, compute="auto")
    layers = model.visual_encoder.encoder.layers
    seen = []
    for layer in layers:  # the weight fc1 computes with, inside each block (kept: no address reuse)
        layer.mlp.fc1.register_forward_hook(lambda m, args, out: seen.append(m.weight))
    with torch.no_grad():
        first, second = model.encode_images(images(1)), model.encode_images(images(1))
    assert len(seen) == 2 * len(layers) >= 4
    assert seen[0].dtype == torch.float32 and all(w is seen[0] for w in seen)  # one buffer, every block, every call
    torch.testing.assert_close(first, second, rtol=0, atol=0)
    pooled = seen[0]
    seen.clear()
    model.visual_encoder(pixel_values=images(1))  # autograd on: fresh copies, which a backward may keep
    assert len({id(w) for w in seen}) == len(layers) and not any(w is pooled for w in seen)


def test_upcast_linear_in_slices_equals_one_matmul(monkeypatch):
    gen = torch.Generator().manual_seed(0)
    weight, bias = torch.randn(50, 16, generator=gen).bfloat16(), torch.randn(50, generator=gen).bfloat16()
    x = torch.randn(3, 7, 16, generator=gen).bfloat16()
    expected = nn.functional.linear(x.float(), weight.float(), bias.float())
    monkeypatch.setattr(compute_dtype, "SLICE_BYTES", 16 * 4 * 8)  # 8 output features at a time: 7 slices
    torch.testing.assert_close(compute_dtype.upcast_linear(x, weight, bias, torch.float32), expected)
