"""device.py and dist.py on fake hardware.

Hardware is faked at the probe boundary only (`device._npu_available` & co. plus `_activate`, the
one side effect); everything above it -- resolution, dtype and backend tables, error messages -- is
the real code.  `torch.device("npu")` only parses after torch's privateuse1 backend is renamed, an
irreversible process-wide change that torch_npu makes on import; so the tests that need an npu
device object run in a child pytest process (`test_npu_cases_in_their_own_process`), never here.
"""
from __future__ import annotations

import importlib.abc
import importlib.machinery
import os
import socket
import subprocess
import sys
import types

import pytest
import torch
from torch import nn

from tinygpt.common import device as D
from tinygpt.common import dist as T

NPU_SANDBOX = os.environ.get("TINYGPT_NPU_SANDBOX") == "1"


# ============================================================================ fake hardware
class FakeHardware:
    """What the probes report, plus a log of the side effects device.py performed."""

    def __init__(self, monkeypatch, npu=0, cuda=0, npu_name="Ascend910B3", capability=(8, 0)):
        self.activated: list[torch.device] = []
        self.compile_mode: list[dict] = []
        npu_ns = types.SimpleNamespace(
            set_compile_mode=lambda **kw: self.compile_mode.append(kw),
            config=types.SimpleNamespace(allow_internal_format=True))
        self.npu = npu_ns
        fake_module = types.SimpleNamespace(__version__="2.13.0", npu=npu_ns)

        def load():
            if npu == 0:
                raise ModuleNotFoundError("No module named 'torch_npu'", name="torch_npu")
            return fake_module

        for name, value in {
            "_load_torch_npu": load,
            "_npu_available": lambda: npu > 0,
            "_npu_device_count": lambda: npu,
            "_npu_name": lambda index=0: npu_name,
            "_cuda_available": lambda: cuda > 0,
            "_cuda_device_count": lambda: cuda,
            "_cuda_capability": lambda index=0: capability,
            "_cuda_name": lambda index=0: "FakeGPU",
            "_activate": self.activated.append,
        }.items():
            monkeypatch.setattr(D, name, value)


@pytest.fixture
def hw(monkeypatch):
    D._reset_probes()
    monkeypatch.delenv("LOCAL_RANK", raising=False)
    yield lambda **kw: FakeHardware(monkeypatch, **kw)
    D._reset_probes()


# ============================================================================ resolution
def test_no_accelerator_auto_is_cpu(hw):
    fake = hw()
    assert D.resolve_device() == torch.device("cpu")
    assert D.resolve_device("cpu") == torch.device("cpu")
    assert fake.activated == [torch.device("cpu"), torch.device("cpu")]


@pytest.mark.parametrize("requested", ["cuda", "npu", "cuda:0"])
def test_absent_device_is_an_error_not_a_fallback(hw, requested):
    hw()
    with pytest.raises(D.DeviceError, match="not available"):
        D.resolve_device(requested)


def test_absent_npu_message_says_how_to_install(hw):
    hw()
    with pytest.raises(D.DeviceError, match=r"pip install torch-npu==2\.13"):
        D.resolve_device("npu")


def test_cuda_only(hw):
    fake = hw(cuda=2)
    assert D.resolve_device() == torch.device("cuda", 0)
    assert D.resolve_device("cuda", local_rank=1) == torch.device("cuda", 1)
    assert fake.activated[-1] == torch.device("cuda", 1)
    with pytest.raises(D.DeviceError, match="only 2 cuda device"):
        D.resolve_device("cuda", local_rank=2)
    with pytest.raises(D.DeviceError):
        D.resolve_device("npu")
    assert fake.compile_mode == []  # NPU settings never touched on a GPU box


def test_index_sources_explicit_then_local_rank_then_env(hw, monkeypatch):
    hw(cuda=4)
    monkeypatch.setenv("LOCAL_RANK", "3")
    assert D.resolve_device("cuda") == torch.device("cuda", 3)  # torchrun's env
    assert D.resolve_device("cuda", local_rank=1) == torch.device("cuda", 1)
    assert D.resolve_device("cuda:2", local_rank=1) == torch.device("cuda", 2)


@pytest.mark.parametrize("bad", ["tpu", "cuda:x", "gpu"])
def test_unknown_device_name(hw, bad):
    hw(cuda=1)
    with pytest.raises(ValueError, match="unknown device"):  # DeviceError is a ValueError
        D.resolve_device(bad)


class _BrokenTorchNpu(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    """Makes `import torch_npu` fail the way it does when CANN's libraries are not on the path."""

    def find_spec(self, name, path=None, target=None):
        return importlib.machinery.ModuleSpec(name, self) if name == "torch_npu" else None

    def create_module(self, spec):
        return None

    def exec_module(self, module):
        raise OSError("libascendcl.so: cannot open shared object file: No such file or directory")


def test_cann_import_failure_message(monkeypatch, caplog):
    D._reset_probes()
    monkeypatch.setattr(sys, "meta_path", [_BrokenTorchNpu(), *sys.meta_path])
    monkeypatch.delitem(sys.modules, "torch_npu", raising=False)
    try:
        with pytest.raises(D.DeviceError) as err:
            D.resolve_device("npu")
        msg = str(err.value)
        assert "libascendcl" in msg and "source /usr/local/Ascend/ascend-toolkit/set_env.sh" in msg
        assert D._npu_available() is False
        assert "set_env.sh" in D.describe()["npu_status"]
        if not torch.cuda.is_available():  # auto falls back, but says torch_npu is broken
            assert D.resolve_device("auto") == torch.device("cpu")
            assert "set_env.sh" in caplog.text
    finally:
        D._reset_probes()


def test_real_probes_on_this_machine():
    """No accelerator and no torch_npu here: the real probes must say so without raising."""
    D._reset_probes()
    assert D.device_count("cpu") == 1
    if not torch.cuda.is_available():
        assert D.device_count("cuda") == 0
    assert D.device_count("npu") == 0 or D._npu_available()
    with pytest.raises(D.DeviceError):
        D.device_count("tpu")


# ============================================================================ tables
@pytest.mark.parametrize("capability, auto, bf16_ok", [
    ((7, 0), torch.float16, False),  # V100
    ((7, 5), torch.float16, False),  # T4
    ((8, 0), torch.bfloat16, True),  # A100
    ((9, 0), torch.bfloat16, True),  # H100
])
def test_cuda_dtype_table(hw, capability, auto, bf16_ok):
    hw(cuda=1, capability=capability)
    dev = torch.device("cuda", 0)
    assert D.autocast_dtype(dev) is auto
    assert D.frozen_dtype(dev) is auto
    assert D.autocast_dtype(dev, "fp16") is torch.float16
    assert D.autocast_dtype(dev, "fp32") is None
    assert D.frozen_dtype(dev, "fp32") is torch.float32
    if bf16_ok:
        assert D.autocast_dtype(dev, "bf16") is torch.bfloat16
    else:
        with pytest.raises(D.DeviceError, match=r"bf16 is not supported on FakeGPU \(compute capability 7"):
            D.autocast_dtype(dev, "bf16")
        with pytest.raises(D.DeviceError):
            D.frozen_dtype(dev, "bf16")


def test_cpu_dtype_table():
    assert D.autocast_dtype("cpu") is None
    assert D.frozen_dtype("cpu") is torch.float32
    assert D.autocast_dtype("cpu", "bf16") is torch.bfloat16  # allowed when asked: CPU autocast does bf16
    with pytest.raises(D.DeviceError, match="expected one of auto, fp32, bf16, fp16"):
        D.autocast_dtype("cpu", "fp8")


def test_backend_table_cpu_cuda():
    assert D.dist_backend("cpu") == "gloo"
    assert D.dist_backend(torch.device("cuda", 3)) == "nccl"
    with pytest.raises(D.DeviceError):
        D.dist_backend("meta")


def test_autocast_and_scaler():
    with D.autocast("cpu", None):
        assert not torch.is_autocast_enabled("cpu")
    with D.autocast("cpu", torch.bfloat16):
        assert (torch.ones(2, 2) @ torch.ones(2, 2)).dtype is torch.bfloat16
    assert D.grad_scaler("cpu", None) is None
    assert D.grad_scaler("cpu", torch.bfloat16) is None  # bf16 has fp32's range: no scaling
    assert isinstance(D.grad_scaler("cpu", torch.float16), torch.amp.GradScaler)


def test_describe_fake_gpu_box(hw):
    hw(cuda=2, capability=(7, 5))
    info = D.describe()
    assert [d["type"] for d in info["devices"]] == ["cuda", "cuda"]
    assert info["devices"][0]["capability"] == "7.5" and info["devices"][0]["bf16"] is False
    assert (info["device"], info["backend"], info["autocast_dtype"]) == ("cuda:0", "nccl", "fp16")
    assert D.describe("cuda", "bf16")["error"].startswith("precision bf16 is not supported")


def test_describe_here_is_json_and_cpu():
    import json

    D._reset_probes()
    info = json.loads(json.dumps(D.describe("cpu")))
    assert (info["device"], info["backend"], info["autocast_dtype"], info["frozen_dtype"]) == \
        ("cpu", "gloo", "fp32", "fp32")
    assert info["torch"] == torch.__version__


def test_cann_version_from_toolkit_home(tmp_path, monkeypatch):
    import platform

    arch = platform.machine().lower()
    (tmp_path / f"{arch}-linux").mkdir()
    (tmp_path / f"{arch}-linux" / "ascend_toolkit_install.info").write_text(
        "package_name=Ascend-cann-toolkit\nversion=8.1.RC1\ninnerversion=V100R001C21\n")
    monkeypatch.setenv("ASCEND_TOOLKIT_HOME", str(tmp_path))
    assert D._cann_version() == "8.1.RC1"


# ============================================================================ NPU (own process)
@pytest.mark.skipif(NPU_SANDBOX, reason="this is the child process")
def test_npu_cases_in_their_own_process():
    """Runs the TestNpu cases below in a child pytest, where renaming privateuse1 is harmless."""
    env = dict(os.environ, TINYGPT_NPU_SANDBOX="1")
    proc = subprocess.run([sys.executable, "-m", "pytest", __file__, "-q", "-p", "no:cacheprovider",
                           "-k", "TestNpu"], env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-2000:]
    assert " passed" in proc.stdout and " skipped" not in proc.stdout, proc.stdout[-2000:]


class _NpuCases:  # collected as TestNpu in the child process only (see the end of this section)
    @pytest.fixture(autouse=True)
    def _npu_type(self):
        if torch._C._get_privateuse1_backend_name() != "npu":
            torch.utils.rename_privateuse1_backend("npu")  # what importing torch_npu does

    def test_npu_only(self, hw):
        fake = hw(npu=8)
        assert D.resolve_device() == torch.device("npu", 0)
        assert D.resolve_device("npu", local_rank=7) == torch.device("npu", 7)
        assert fake.activated == [torch.device("npu", 0), torch.device("npu", 7)]
        # start-up settings for dynamic shapes: applied once, on first NPU resolution
        assert fake.compile_mode == [{"jit_compile": False}]
        assert fake.npu.config.allow_internal_format is False
        with pytest.raises(D.DeviceError, match="only 8 npu"):
            D.resolve_device("npu", local_rank=8)
        with pytest.raises(D.DeviceError):
            D.resolve_device("cuda")

    def test_both_prefers_npu_unless_asked(self, hw):
        fake = hw(npu=2, cuda=2)
        assert D.resolve_device() == torch.device("npu", 0)
        assert D.resolve_device("cuda") == torch.device("cuda", 0)
        assert [d["type"] for d in D.describe()["devices"]] == ["npu", "npu", "cuda", "cuda"]
        assert len(fake.compile_mode) == 1

    def test_cuda_request_does_not_apply_npu_settings(self, hw):
        fake = hw(npu=1, cuda=1)
        D.resolve_device("cuda")
        assert fake.compile_mode == []

    @pytest.mark.parametrize("name, bf16", [
        ("Ascend910B1", True), ("Ascend910B2C", True), ("Ascend910B3", True), ("Ascend910B4", True),
        ("Ascend910_9392", True),  # Atlas A3
        ("Ascend910A", False), ("Ascend910ProB", False), ("Ascend910PremiumA", False),
        ("Ascend910B", False),  # first-generation name without a model digit
        ("Ascend310P3", False), ("Ascend310B4", False),
    ])
    def test_npu_dtype_table(self, hw, name, bf16):
        hw(npu=1, npu_name=name)
        dev = torch.device("npu", 0)
        half = torch.bfloat16 if bf16 else torch.float16
        assert D.autocast_dtype(dev) is half
        assert D.frozen_dtype(dev) is half
        assert D.autocast_dtype(dev, "fp16") is torch.float16
        if not bf16:
            with pytest.raises(D.DeviceError, match=name):
                D.autocast_dtype(dev, "bf16")

    def test_npu_backend_and_version(self, hw):
        hw(npu=1)
        assert D.dist_backend(torch.device("npu", 0)) == "hccl"
        assert D.describe()["torch_npu_version"] == "2.13.0"


if NPU_SANDBOX:
    TestNpu = _NpuCases


# ============================================================================ generic accelerator API
def test_accelerator_module_is_the_generic_torch_module():
    assert D.accelerator_module("cpu") is None
    assert D.accelerator_module(torch.device("cuda", 0)) is torch.cuda  # no GPU needed to look it up
    with pytest.raises(D.DeviceError):
        D.accelerator_module("meta")


# ============================================================================ dist: one process
class Block(nn.Module):
    """A frozen base weight next to trainable low-rank ones: the LoRA mix FSDP must shard."""

    def __init__(self):
        super().__init__()
        self.base = nn.Linear(8, 8).requires_grad_(False)
        self.a = nn.Linear(8, 2, bias=False)
        self.b = nn.Linear(2, 8, bias=False)

    def forward(self, x):
        return x + torch.tanh(self.base(x) + self.b(self.a(x)))


class Tiny(nn.Module):
    """A frozen bf16 stem outside any block (left unsharded by FSDP), blocks, a trainable head."""

    def __init__(self):
        super().__init__()
        self.stem = nn.Linear(8, 8).to(torch.bfloat16).requires_grad_(False)
        self.blocks = nn.ModuleList(Block() for _ in range(2))
        self.head = nn.Linear(8, 1)

    def forward(self, x):
        x = self.stem(x.to(torch.bfloat16)).float()
        for block in self.blocks:
            x = block(x)
        return self.head(x).pow(2).mean()


def _batch(step: int, rank: int) -> torch.Tensor:
    return torch.randn(4, 8, generator=torch.Generator().manual_seed(1000 * step + rank))


def _optimizer(model: nn.Module) -> torch.optim.Optimizer:
    # momentum gives the optimizer per-parameter state, which FSDP shards and a resume must restore
    return torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=0.1, momentum=0.9)


def _train(model: nn.Module, opt, rank: int, world: int, steps) -> None:
    """Steps on rank-local batches; the reference (rank=-1, one process) sees every rank's batch."""
    for step in steps:
        if rank >= 0:
            loss = model(_batch(step, rank))
        else:  # mean of the per-rank means == what DDP/FSDP gradient averaging computes
            loss = sum(model(_batch(step, r)) for r in range(world)) / world
        loss.backward()
        opt.step()
        opt.zero_grad()


def test_single_process_dist(monkeypatch):
    for key in ("WORLD_SIZE", "RANK", "LOCAL_RANK"):
        monkeypatch.delenv(key, raising=False)
    info = T.init_distributed(torch.device("cpu"))
    assert info == T.DistInfo(rank=0, local_rank=0, world_size=1, is_main=True)
    assert T.is_main() and T.world_size() == 1
    t = torch.tensor([1.0, 3.0])
    out = T.all_reduce_mean(t)
    assert torch.equal(out, t) and out is not t
    T.barrier()
    model = Tiny()
    assert T.wrap_model(model, "fsdp", torch.device("cpu")) is model
    assert T.unwrap(model) is model
    sd = T.trainable_state_dict(model)
    assert sorted(sd) == ["blocks.0.a.weight", "blocks.0.b.weight", "blocks.1.a.weight",
                          "blocks.1.b.weight", "head.bias", "head.weight"]
    opt = _optimizer(model)
    _train(model, opt, 0, 1, range(1))
    saved = T.optimizer_state_dict(model, opt)
    fresh = _optimizer(model)
    T.load_optimizer_state_dict(model, fresh, saved)
    assert torch.equal(fresh.state_dict()["state"][0]["momentum_buffer"],
                       opt.state_dict()["state"][0]["momentum_buffer"])
    with pytest.raises(ValueError, match="expected one of ddp, fsdp"):
        T.wrap_model(model, "zero3", torch.device("cpu"))
    T.cleanup()


def test_fsdp_units_are_trainable_blocks_and_do_not_nest():
    model = Tiny()
    assert T._fsdp_units(model) == list(model.blocks)
    outer = nn.ModuleList([nn.Sequential(nn.Linear(2, 2), nn.ModuleList([nn.Linear(2, 2)]))])
    assert T._fsdp_units(outer) == [outer[0]]
    containers = nn.ModuleList([nn.ModuleDict({"x": nn.Linear(2, 2)})])
    assert T._fsdp_units(containers) == []  # no forward() to hook


# ============================================================================ dist: two processes
def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _worker(rank: int, world: int, port: int, out_dir: str) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank),
                      LOCAL_RANK=str(rank), WORLD_SIZE=str(world))
    torch.set_num_threads(1)
    device = D.resolve_device("cpu")
    info = T.init_distributed(device)
    assert info == T.DistInfo(rank=rank, local_rank=rank, world_size=world, is_main=rank == 0)
    result = {"mean": T.all_reduce_mean(torch.tensor([float(rank), 10.0 * rank]))}
    T.barrier()
    for strategy in ("ddp", "fsdp"):
        torch.manual_seed(0)
        model = Tiny()
        wrapped = T.wrap_model(model, strategy, device)
        assert T.unwrap(wrapped) is model
        if strategy == "fsdp":  # blocks and root sharded; the frozen stem replicated (ignored)
            kinds = {n: type(p).__name__ for n, p in model.named_parameters()}
            assert kinds["blocks.0.a.weight"] == kinds["head.weight"] == "DTensor"
            assert kinds["stem.weight"] == "Parameter"
        opt = _optimizer(wrapped)
        _train(wrapped, opt, rank, world, range(3))
        weights = T.trainable_state_dict(wrapped, rank0_only=False)
        opt_state = T.optimizer_state_dict(wrapped, opt, rank0_only=False)
        result[strategy] = weights
        result[strategy + "_rank0_only"] = T.trainable_state_dict(wrapped)
        result[strategy + "_opt_rank0_only"] = T.optimizer_state_dict(wrapped, opt)
        # resume: same frozen weights (seed 0), trainable ones + optimizer state from the gathered copies
        torch.manual_seed(0)
        fresh = Tiny()
        fresh.load_state_dict(weights, strict=False)
        fresh_wrapped = T.wrap_model(fresh, strategy, device)
        fresh_opt = _optimizer(fresh_wrapped)
        T.load_optimizer_state_dict(fresh_wrapped, fresh_opt, opt_state)
        _train(wrapped, opt, rank, world, [3])
        _train(fresh_wrapped, fresh_opt, rank, world, [3])
        result[strategy + "_continued"] = T.trainable_state_dict(wrapped, rank0_only=False)
        result[strategy + "_resumed"] = T.trainable_state_dict(fresh_wrapped, rank0_only=False)
    torch.save(result, os.path.join(out_dir, f"rank{rank}.pt"))
    T.cleanup()


def test_two_process_gloo_ddp_and_fsdp_match_single_process(tmp_path):
    world = 2
    torch.multiprocessing.spawn(_worker, args=(world, _free_port(), str(tmp_path)), nprocs=world)
    results = [torch.load(tmp_path / f"rank{r}.pt", weights_only=True) for r in range(world)]
    for res in results:
        assert res["mean"].tolist() == [0.5, 5.0]
    torch.manual_seed(0)
    reference = Tiny()
    _train(reference, _optimizer(reference), -1, world, range(3))
    expected = T.trainable_state_dict(reference)
    for strategy in ("ddp", "fsdp"):
        assert results[1][strategy + "_rank0_only"] == {} and results[1][strategy + "_opt_rank0_only"] == {}
        opt_state = results[0][strategy + "_opt_rank0_only"]
        assert sorted(opt_state["state"]) == sorted(expected)  # keyed by parameter name
        for name, value in expected.items():  # gathered in full, not this rank's shard
            assert opt_state["state"][name]["momentum_buffer"].shape == value.shape
        for res in results:  # resuming from gathered weights + optimizer state == never stopping
            for name, value in res[strategy + "_continued"].items():
                torch.testing.assert_close(res[strategy + "_resumed"][name], value, rtol=0, atol=0)
        for res in results:
            got = res[strategy]
            assert sorted(got) == sorted(expected)
            for name, value in expected.items():
                torch.testing.assert_close(got[name], value, rtol=1e-5, atol=1e-6, msg=f"{strategy} {name}")
            assert torch.equal(res[strategy]["head.weight"], results[0][strategy + "_rank0_only"]["head.weight"])
