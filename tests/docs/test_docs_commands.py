"""The README and docs/*.md cannot rot: every command they show names a script or module that exists
and only flags it accepts, every repository path they name exists, and every Python block runs
(against a tiny random model standing in for the quickstart's, served or exported where the block
needs it).  The commands that train, evaluate and export for real run in the tests of their own
features (and docs/own-data.md's, verbatim, in tests/training/test_own_data_guide.py)."""
from __future__ import annotations

import contextlib
import functools
import re
import shlex
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
FENCE = re.compile(r"^```(\w*)\n(.*?)^```", re.S | re.M)
PYTHONS = {"python", "python3", ".venv/bin/python"}
OURS = {"tinygpt", "benchmarks"}  # packages whose commands are checked (others' tools are only documented)
# The quickstart's outputs, which a fresh clone (and CI) does not have: a Python block's paths to
# them are pointed at the fixture's.
QUICKSTART_STAGE = "output/tiny/stage4"
DEMO_ADDRESS = "127.0.0.1:7860"  # `python demo.py`'s default
EXPORTED_HF = "exported/tiny-hf"  # docs/export.md's `--format hf` directory


def blocks(path: Path, lang: str) -> list[tuple[int, str]]:
    text = path.read_text(encoding="utf-8")
    return [(text[: m.start()].count("\n") + 1, m.group(2)) for m in FENCE.finditer(text) if m.group(1) == lang]


def commands(block: str) -> list[str]:
    """Shell lines of a block: continuations joined, comments and prompts dropped, `a && b` split."""
    out = []
    for line in block.replace("\\\n", " ").splitlines():
        line = line.strip().removeprefix("$ ")
        if not line or line.startswith("#"):
            continue
        for part in re.split(r"\s*(?:&&|;|\|)\s*", line):
            if part:
                out.append(part)
    return out


def invocation(command: str):
    """(target, flags) of a `python script.py ...` / `python -m module ...` / `torchrun ... train.py` /
    `bash script.sh` command, or None for other tools (pip, curl, git, ...)."""
    try:
        words = shlex.split(command, comments=True)
    except ValueError:
        return None
    while words and re.match(r"^[A-Z_]+=", words[0]):  # VAR=value prefixes
        words = words[1:]
    if not words:
        return None
    if words[0] == "bash" and len(words) > 1 and words[1].endswith(".sh"):
        return ("file", words[1]), [w.split("=")[0] for w in words[2:] if w.startswith("--")]
    if words[0] == "torchrun":
        words = ["python"] + [w for w in words[1:] if not w.startswith("--nproc") and not w.startswith("--nnodes")]
    if words[0] not in PYTHONS or len(words) < 2:
        return None
    if words[1] == "-m" and words[2].split(".")[0] in OURS:
        # A subcommand (`python -m tinygpt.datasets check ...`) has its own --help.
        sub = []
        while len(words) > 3 + len(sub) and not words[3 + len(sub)].startswith("-") and words[3 + len(sub)].isidentifier():
            sub.append(words[3 + len(sub)])
        target = ("module", " ".join([words[2], *sub]))
        rest = words[3 + len(sub):]
    elif words[1].endswith(".py") and (ROOT / words[1].split("/")[0]).exists():
        target = ("script", words[1])
        rest = words[2:]
    else:
        return None  # another project's tool (vLLM, SGLang, llama.cpp's converter): documented, not ours to check
    flags = []
    for w in rest:
        if w == "--options":  # what follows are KEY=VALUE overrides, not flags
            break
        if w.startswith("--"):
            flags.append(w.split("=")[0])
    return target, flags


def all_commands():
    for path in DOCS:
        for line, block in blocks(path, "bash") + blocks(path, "sh") + blocks(path, "console"):
            for command in commands(block):
                found = invocation(command)
                if found:
                    yield pytest.param(path.name, command, *found, id=f"{path.name}:{line}:{command[:40]}")


@functools.lru_cache(maxsize=None)
def help_text(kind: str, name: str) -> str:
    argv = [sys.executable, "-m", *name.split()] if kind == "module" else [sys.executable, str(ROOT / name)]
    proc = subprocess.run(argv + ["--help"], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, f"{' '.join(argv)} --help failed: {proc.stderr[-2000:]}"
    return proc.stdout


@pytest.mark.slow
@pytest.mark.parametrize("doc, command, target, flags", list(all_commands()))
def test_every_command_names_what_exists_with_flags_it_accepts(doc, command, target, flags):
    kind, name = target
    if kind == "file":
        assert (ROOT / name).is_file(), f"{doc}: `{command}` names {name}, which does not exist"
        return
    if kind == "script":
        assert (ROOT / name).is_file(), f"{doc}: `{command}` names {name}, which does not exist"
    text = help_text(kind, name)
    unknown = [f for f in flags if f not in text]
    assert not unknown, f"{doc}: `{command}`: {name} has no {', '.join(unknown)}"


# A path that a brace range, a placeholder or a glob continues (`stage{1..4}.yaml`, `stage<N>`) is a pattern.
REPO_PATH = re.compile(r"(?<![\w/.-])((?:train_configs|eval_configs|eval_scripts|docs|benchmarks|dataset|scripts|tinygpt)"
                       r"/[\w./-]*[\w])(?![\w{<\[*])")


@pytest.mark.parametrize("doc", DOCS, ids=lambda p: p.name)
def test_every_repository_path_named_exists(doc):
    text = doc.read_text(encoding="utf-8")
    missing = sorted({p for p in REPO_PATH.findall(text) if not re.search(r"[a-z]N(\.|$)", p)  # stageN.yaml
                      and not (ROOT / p).exists() and not (ROOT / p.rstrip(".")).exists()})
    assert not missing, f"{doc.name} names paths that do not exist: {missing}"


@pytest.fixture(scope="module")
def stand_in_stage(tiny_root, tmp_path_factory):
    """A stage folder like the quickstart's stage 4 (config.yaml + checkpoint_final), tiny random weights."""
    import torch

    import tinygpt
    from tiny import tiny_config
    from tinygpt.common.config import to_yaml
    from tinygpt.models.weights import save_trainable

    stage = tmp_path_factory.mktemp("docs") / "stage4"
    stage.mkdir()
    cfg = tiny_config(tiny_root)
    cfg.model.prompt_template, cfg.model.end_sym, cfg.model.image_after_question = "[INST] {} [/INST]", "###", True
    cfg.model.llm.train = cfg.model.vision.train = cfg.model.qformer.train = True
    torch.manual_seed(0)
    save_trainable(tinygpt.build_model(cfg, "cpu", load_weights=False), str(stage / "checkpoint_final.safetensors"))
    (stage / "config.yaml").write_text(to_yaml(cfg))
    cfg.model.ckpt = [str(stage / "checkpoint_final.safetensors")]
    (stage.parent / "serve.yaml").write_text(to_yaml(cfg))  # what `demo.py --cfg-path` serves for the API blocks
    return stage


@contextlib.contextmanager
def demo_server(cfg_path: Path):
    """`demo.py --api-only` on a free port, ready (GET /health answers); yields its address."""
    import httpx

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    proc = subprocess.Popen([sys.executable, str(ROOT / "demo.py"), "--api-only", "--cfg-path", str(cfg_path),
                             "--port", str(port)], cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    address = f"127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline:
            assert proc.poll() is None, f"demo.py exited: {proc.stderr.read().decode()[-2000:]}"
            try:
                if httpx.get(f"http://{address}/health", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                time.sleep(0.5)
        yield address
    finally:
        proc.terminate()
        proc.wait(timeout=60)


@pytest.fixture(scope="module")
def stand_in_export(stand_in_stage):
    """The stand-in exported as docs/export.md's `exported/tiny-hf` (the remote-code target)."""
    out = stand_in_stage.parent / "tiny-hf"
    if not out.exists():
        from tinygpt.export import main as export_main

        assert export_main(["--format", "hf", "--no-verify", "--cfg-path", str(stand_in_stage.parent / "serve.yaml"),
                            "--out", str(out)]) == 0
    return out


PYTHON_BLOCKS = [pytest.param(doc, line, code, id=f"{doc.name}:{line}") for doc in DOCS
                 for line, code in blocks(doc, "python")]


@pytest.mark.slow
@pytest.mark.parametrize("doc, line, code", PYTHON_BLOCKS)
def test_every_python_block_runs(doc, line, code, stand_in_stage, request, tmp_path):
    script = tmp_path / "block.py"
    with contextlib.ExitStack() as stack:
        if DEMO_ADDRESS in code:  # a client of `python demo.py`: run against one serving the stand-in
            code = code.replace(DEMO_ADDRESS, stack.enter_context(demo_server(stand_in_stage.parent / "serve.yaml")))
        if EXPORTED_HF in code:
            code = code.replace(EXPORTED_HF, str(request.getfixturevalue("stand_in_export")))
        script.write_text(code.replace(QUICKSTART_STAGE, str(stand_in_stage)))
        proc = subprocess.run([sys.executable, str(script)], cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, f"{doc.name} line {line}: the block fails:\n{proc.stderr[-3000:]}"
