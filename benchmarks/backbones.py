"""Which causal-LM families work as `model.llm` (family `auto`) and which vision models as an `hf`
tower: a measured count, not a promise.

    python -m benchmarks.backbones                          # every causal-LM type, then the towers
    python -m benchmarks.backbones --only llm --families qwen3 mistral
    python -m benchmarks.backbones --record                 # results JSON + the tables in docs/backbones.md
    python -m benchmarks.backbones --only onnx --record     # which of them export to ONNX (docs/export.md)

LLMs: every model type in transformers' `MODEL_FOR_CAUSAL_LM_MAPPING_NAMES`, as a tiny random config
of its own config class (`tiny_config`: every size field shrunk, sub-configs too, nothing
downloaded), saved with `save_pretrained` as a user brings it, joined to a tiny EVA tower through the
MLP connector, LoRA injected with the defaults (models/lora.py), a few optimizer steps through the
task on one fixed batch (loss finite and falling), the trainable weights saved, an inference model
rebuilt from the saved files (its loss on the batch equal to the trained one's), and a generation.
Towers (`TOWER_TYPES`): each tiny vision model saved the same way, read as `model.vision.kind: hf`
by a model over a tiny Llama, its features checked against transformers' own hidden states, then
the same stages.  A type fails at the first stage that breaks, and its row says which and why (the
exception's first line).
ONNX (`--only onnx`): every type the LLM table says works, its tiny model (the same config and tower)
built for inference, exported with `--format onnx`'s writer and held to its parity check
(tinygpt/export/onnx_check.py: onnxruntime's logits < 1e-4 and the same greedy tokens as torch's).

Writes JSON to --out (default output/benchmarks/, untracked); `--record` writes
benchmarks/results/backbones_{llm,towers,onnx}.json and the tables between the markers of
docs/backbones.md (docs/export.md for ONNX).
tests/training/test_backbone_walk.py runs every type and holds it to the recorded tables.
"""
from __future__ import annotations

import argparse
import contextlib
import io
import json
import logging
import math
import tempfile
import time
import traceback
import warnings
from pathlib import Path

import torch

from . import _common as C

DOC = C.ROOT / "docs" / "backbones.md"
MAX_PARAMS = 20_000_000  # a "tiny" LLM above this kept a size field the shrinking does not know
STEPS, LR = 4, 1e-2

# Standard config fields (vocab: the benchmark word tokenizer has 1,001 tokens) (the config's attribute_map renames them per family: n_embd, n_layer, ...).
SMALL = dict(vocab_size=1024, hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
             num_key_value_heads=2, head_dim=8, max_position_embeddings=256, pad_token_id=0, bos_token_id=1,
             eos_token_id=2, is_decoder=True)
# Any other int field of the default config larger than this whose name holds the fragment (first match).
SHRINK = {"vocab": 1024, "experts_per_tok": 2, "expert": 4, "moe_intermediate_size": 32, "ffn": 64,
          "kv_lora_rank": 16, "q_lora_rank": 16, "rope_head_dim": 8, "nope_head_dim": 8, "v_head_dim": 8,
          "d_model": 32, "image_size": 28, "patch_size": 14, "_layers": 2, "intermediate": 64, "hidden_size": 32,
          "embed_dim": 32, "_dim": 32, "num_heads": 4, "attention_heads": 4, "kv_heads": 2}


def tiny_config(config_class):
    """A small instance of a transformers config class: SMALL's fields where the class has them, every
    larger int size field shrunk by SHRINK, sub-configs (text / vision) made tiny the same way; a
    field that is a read-only property of the class is left to it."""
    default = config_class()
    names = set(default.to_dict()) | set(getattr(config_class, "attribute_map", {}))
    kwargs = {k: v for k, v in SMALL.items() if k in names}
    for key, value in default.to_dict().items():
        if isinstance(value, int) and not isinstance(value, bool) and key not in kwargs:
            small = next((s for fragment, s in SHRINK.items() if fragment in key), None)
            if small is not None and value > small:
                kwargs[key] = small
    for key, sub in (getattr(config_class, "sub_configs", None) or {}).items():
        if isinstance(sub, type):
            with contextlib.suppress(Exception):  # a sub-config that cannot be made tiny keeps its default
                kwargs[key] = tiny_config(sub)
    while True:
        try:
            return config_class(**kwargs)
        except AttributeError as exc:  # e.g. Falcon's head_dim is a property: drop what it names
            named = [k for k in kwargs if f"'{k}'" in str(exc)]
            if not named:
                raise
            for key in named:
                kwargs.pop(key)


def _model_config(workdir: Path, llm_dir: Path):
    """The tinygpt model over the saved LLM: a tiny EVA tower (28 px, 2 x 2 patches + CLS, width 32),
    the MLP connector, LoRA r 4 with the defaults, the benchmark word tokenizer."""
    cfg = C.preset("tiny", workdir)
    cfg.vision.ln_vision, cfg.connector.kind = False, "mlp"
    cfg.llm.family, cfg.llm.hf_config, cfg.llm.weights = "auto", str(llm_dir), str(llm_dir)
    cfg.llm.lora.dropout = 0.0
    # The end marker is the tokenizer's EOS: transformers' stop-string matcher needs a BPE vocabulary.
    cfg.prompt_template, cfg.end_sym, cfg.max_txt_len = "###Human: {} ###Assistant: ", "<|endoftext|>", 16
    cfg.feature_cache = None
    return cfg


def _batch() -> dict:
    g = torch.Generator().manual_seed(0)
    return {"image": torch.randn(2, 3, 28, 28, generator=g), "answer": ["w5 w6 w7", "w8 w9"],
            "instruction_input": ["<Img><ImageHere></Img> w1 w2", "<Img><ImageHere></Img> w3"]}


def _loss(task, model, batch) -> float:
    step = task.valid_step(model, batch)
    return float(step.total / step.units)


def _first_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split()) or "(no message)"
    return f"{type(exc).__name__}: {text[:240]}"


def _row(name: str) -> dict:
    return {"family": name, "works": False, "stage": None, "why": None, "lora": None, "origin": None,
            "params": None, "seconds": None}


@contextlib.contextmanager
def _stages(row: dict):
    """Times the row; an exception ends it at `row["stage"]` with the error's first line as why."""
    started = time.perf_counter()
    try:
        yield
        row.update(works=True, stage="done")
    except Exception as exc:  # noqa: BLE001  (every failure is a row of the table, with its reason)
        row["why"] = _first_line(exc)
        logging.getLogger(__name__).debug("%s failed at %s:\n%s", row["family"], row["stage"], traceback.format_exc())
    row["seconds"] = round(time.perf_counter() - started, 2)


def _tiny_model(config_class, auto_class, row: dict, **sizes):
    """A tiny random model of the class (row stages "tiny config", "instantiate"), refused above MAX_PARAMS."""
    row["stage"] = "tiny config"
    config = tiny_config(config_class)
    row["stage"] = "instantiate"
    with torch.device("meta"):
        row["params"] = sum(p.numel() for p in auto_class.from_config(config).parameters())
    if row["params"] > MAX_PARAMS:
        raise ValueError(f"{row['params']:,} parameters after shrinking (a size field tiny_config does not know)")
    torch.manual_seed(0)
    return auto_class.from_config(config)


def _end_to_end(model_cfg, row: dict, ckpt: Path) -> None:
    """Build with LoRA, train on the fixed batch, save, rebuild for inference from the files (the same
    loss), generate: row stages "build + LoRA", "train", "save + reload", "generate"."""
    import tinygpt
    from tinygpt.common.config import Config
    from tinygpt.models.weights import save_trainable
    from tinygpt.tasks.image_text import ImageTextTask

    row["stage"] = "build + LoRA"
    cfg = Config(model=model_cfg)
    torch.manual_seed(0)
    model = tinygpt.build_model(cfg, "cpu").train()
    row["lora"], row["origin"] = list(model.lora_targets.modules), model.lora_targets.origin

    row["stage"] = "train"
    task, batch = ImageTextTask(cfg), _batch()
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=LR)
    losses = []
    for _ in range(STEPS):
        step = task.train_step(model, batch)
        loss = step.total / step.units
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(float(loss.detach()))
    if not all(math.isfinite(v) for v in losses) or losses[-1] >= losses[0]:
        raise ValueError(f"loss not finite and falling: {', '.join(f'{v:.3f}' for v in losses)}")
    model.eval()
    trained = _loss(task, model, batch)

    row["stage"] = "save + reload"
    save_trainable(model, str(ckpt))
    cfg.model.ckpt = [str(ckpt)]
    torch.manual_seed(0)  # a frozen random part in no file (the EVA tower) gets the same init
    infer = tinygpt.build_model(cfg, "cpu", training=False)
    reloaded = _loss(task, infer, batch)
    if not math.isclose(reloaded, trained, rel_tol=1e-3, abs_tol=1e-4):
        raise ValueError(f"the reloaded model's loss {reloaded:.5f} is not the trained one's {trained:.5f}")

    row["stage"] = "generate"
    answers = infer.generate(batch["image"], batch["instruction_input"], max_new_tokens=3)
    if len(answers) != 2 or not all(isinstance(a, str) for a in answers):
        raise ValueError(f"generate returned {answers!r}")


def walk_llm(model_type: str, workdir: Path) -> dict:
    """One causal-LM model type through every stage (module docstring) -> its row: works, or the
    stage that failed and why; with the LoRA modules chosen, the tiny LLM's size and the seconds."""
    from transformers import CONFIG_MAPPING, AutoModelForCausalLM

    row = _row(model_type)
    with _stages(row):
        llm = _tiny_model(CONFIG_MAPPING[model_type], AutoModelForCausalLM, row)
        row["stage"] = "transformers' own forward"  # the bare model on token ids: a failure here is not ours
        with torch.no_grad():
            llm(input_ids=torch.tensor([[5, 6, 7, 8]]))
        llm.save_pretrained(workdir / model_type)
        _end_to_end(_model_config(workdir, workdir / model_type), row, workdir / f"{model_type}.safetensors")
    return row


# The vision towers walked through `model.vision.kind: hf` (the ViT-style ones transformers ships,
# and three that are not ViT-style, to show what stops them).
TOWER_TYPES = ("vit", "deit", "beit", "data2vec-vision", "dinov2", "dinov2_with_registers", "dinov3_vit", "ijepa",
               "vit_msn", "pixio", "clip_vision_model", "siglip_vision_model", "aimv2_vision_model",
               "siglip2_vision_model", "vit_mae", "swin")
TOWER_LLM = "llama"


def walk_tower(model_type: str, workdir: Path) -> dict:
    """One vision model type as an `hf` tower (28 px, 14 px patches, penultimate hidden state, prefix
    tokens dropped) joined to a tiny Llama through the MLP connector: its features must be
    transformers' own hidden states, then the same stages as an LLM."""
    from transformers import CONFIG_MAPPING, AutoModel, AutoModelForCausalLM

    import tinygpt

    row = _row(model_type)
    with _stages(row):
        tower = _tiny_model(CONFIG_MAPPING[model_type], AutoModel, row).eval()
        tower_dir, llm_dir = workdir / f"tower-{model_type}", workdir / f"llm-{TOWER_LLM}"
        tower.save_pretrained(tower_dir)
        if not llm_dir.exists():
            torch.manual_seed(0)
            AutoModelForCausalLM.from_config(tiny_config(CONFIG_MAPPING[TOWER_LLM])).save_pretrained(llm_dir)
        cfg = _model_config(workdir, llm_dir)
        v = cfg.vision
        v.kind, v.hf_config, v.weights, v.keep_cls, v.feature_layer = "hf", str(tower_dir), str(tower_dir), False, -2

        row["stage"] = "features"
        model = tinygpt.build_model(cfg, "cpu", training=False)
        images = _batch()["image"]
        with torch.no_grad():
            ours = model.query_features(images)
            theirs = tower(pixel_values=images, output_hidden_states=True).hidden_states[-2]
        theirs = theirs[:, theirs.shape[1] - (28 // 14) ** 2:]
        if ours.shape != theirs.shape or not torch.allclose(ours, theirs, atol=1e-5):
            raise ValueError(f"features {list(ours.shape)} differ from transformers' hidden states {list(theirs.shape)}")
        _end_to_end(cfg, row, workdir / f"tower-{model_type}.safetensors")
    return row


def walk_onnx(model_type: str, workdir: Path) -> dict:
    """One causal-LM model type through `--format onnx` (module docstring) -> its row: exports with
    parity, or the stage that failed and why ("cache layout": the exporter's own up-front refusal)."""
    from PIL import Image
    from transformers import CONFIG_MAPPING, AutoModelForCausalLM

    import tinygpt
    from tinygpt.common.config import Config
    from tinygpt.export.onnx_check import onnx_parity
    from tinygpt.export.onnx_graphs import kv_layout, write_onnx

    row = _row(model_type)
    with _stages(row):
        llm = _tiny_model(CONFIG_MAPPING[model_type], AutoModelForCausalLM, row)
        llm.save_pretrained(workdir / model_type)
        cfg = Config(model=_model_config(workdir, workdir / model_type))
        row["stage"] = "build"
        torch.manual_seed(0)
        model = tinygpt.build_model(cfg, "cpu", training=False)
        row["stage"] = "cache layout"  # the exporter's up-front refusal
        kv_layout(model.llm)
        row["stage"] = "export"
        out = workdir / f"onnx-{model_type}"
        write_onnx(model, cfg, str(out), verify=False)  # the walk's own parity stage says how it differs
        row["stage"] = "parity"
        parity = onnx_parity(model, str(out), Image.new("RGB", (28, 28), "red"), "w1 w2 w3", max_new_tokens=6)
        row["logits_diff"] = parity.logits_diff
        if not parity.ok:
            raise ValueError(parity.summary())
    return row


def onnx_types() -> list[str]:
    """The types the recorded LLM table says work as `model.llm`."""
    return sorted(name for name, r in recorded("llm").items() if r["works"])


def causal_lm_types() -> list[str]:
    from transformers.models.auto.modeling_auto import MODEL_FOR_CAUSAL_LM_MAPPING_NAMES

    return sorted(MODEL_FOR_CAUSAL_LM_MAPPING_NAMES)


SECTIONS = {  # name: (walk, default types, recorded JSON, doc, docs markers, what a row is, what "works" is)
    "llm": (walk_llm, causal_lm_types, C.RESULTS / "backbones_llm.json", DOC, "llm-walk", "model types",
            "work end to end"),
    "towers": (walk_tower, lambda: list(TOWER_TYPES), C.RESULTS / "backbones_towers.json", DOC, "tower-walk",
               "towers", "work end to end"),
    "onnx": (walk_onnx, onnx_types, C.RESULTS / "backbones_onnx.json", C.ROOT / "docs" / "export.md", "onnx-walk",
             "model types that work as model.llm", "export to ONNX with parity"),
}


def recorded(section: str) -> dict[str, dict]:
    """The recorded rows of a section, by type."""
    return {r["family"]: r for r in json.loads(SECTIONS[section][2].read_text())["rows"]}


def table(rows: list[dict], section: str = "llm") -> str:
    """The markdown table docs/backbones.md (docs/export.md for ONNX) publishes."""
    if section == "onnx":
        lines = ["| `model_type` | exports with parity | max \\|logits diff\\| | why not (stage: first line of the error) |",
                 "|---|---|---:|---|"]
        for r in rows:
            diff = f"{r['logits_diff']:.1e}" if r.get("logits_diff") is not None else ""
            why = "" if r["works"] else f"{r['stage']}: {r['why']}".replace("|", "\\|")
            lines.append(f"| `{r['family']}` | {'yes' if r['works'] else 'no'} | {diff} | {why} |")
        return "\n".join(lines)
    lines = ["| `model_type` | works | LoRA modules (default) | why not (stage: first line of the error) |",
             "|---|---|---|---|"]
    for r in rows:
        lora = ", ".join(r["lora"]) if r["lora"] else ""
        lora += " (peft default)" if r["origin"] and r["origin"].startswith("peft's default") else ""
        why = "" if r["works"] else f"{r['stage']}: {r['why']}".replace("|", "\\|")
        lines.append(f"| `{r['family']}` | {'yes' if r['works'] else 'no'} | {lora} | {why} |")
    return "\n".join(lines)


def _write_doc(section: str, rows: list[dict], summary: str) -> None:
    doc, marker = SECTIONS[section][3:5]
    text = doc.read_text()
    start, end = (text.index(f"<!-- {marker}:{m} -->") for m in ("start", "end"))
    head = text[:start] + f"<!-- {marker}:start -->"
    doc.write_text(head + f"\n{summary}\n\n{table(rows, section)}\n" + text[end:])


def run_section(section: str, types: list[str], out: Path, record: bool, merge: bool = False) -> None:
    """Walk `types`, print a line per type and the summary, write the JSON (and with `record` the docs
    table); `merge` (with record): the new rows replace those of the same types among the recorded ones."""
    import peft
    import transformers

    walk, _, recorded_json, doc, _, what, works = SECTIONS[section]
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for name in types:
            with contextlib.redirect_stdout(io.StringIO()):  # some modeling files print at import
                rows.append(walk(name, Path(tmp)))
            r = rows[-1]
            print(f"{name:<28} {'works' if r['works'] else 'NO   '} {r['seconds']:>6.2f}s  "
                  f"{', '.join(r['lora'] or []) if r['works'] else r['stage'] + ': ' + r['why']}", flush=True)
    if merge and record and recorded_json.exists():
        rows = sorted([r for t, r in recorded(section).items() if t not in types] + rows, key=lambda r: r["family"])
    summary = (f"{sum(r['works'] for r in rows)} of {len(rows)} {what} {works} (transformers "
               f"{transformers.__version__}, peft {peft.__version__}, torch {torch.__version__}; "
               f"{sum(r['seconds'] for r in rows):.0f} s on one thread of an {C.machine()['cpu']})")
    print(summary)
    path = recorded_json if record else out.with_name(f"{out.stem}_{section}{out.suffix}")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"summary": summary, "machine": C.machine(), "commit": C.git_commit(), "rows": rows},
                               indent=1) + "\n")
    if record:
        _write_doc(section, rows, summary)
    print(f"wrote {path}" + (f" and the table in {doc}" if record else ""))


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.backbones", description=__doc__.splitlines()[0])
    parser.add_argument("--only", choices=tuple(SECTIONS),
                        help="walk only the LLMs, the towers, or the LLMs' ONNX export (default: LLMs and towers)")
    parser.add_argument("--families", nargs="*", help="model types (default: every type of the section)")
    parser.add_argument("--out", default=str(C.ROOT / "output" / "benchmarks" / "backbones.json"),
                        help="where the JSON goes (a _llm / _towers suffix is added), unless --record")
    parser.add_argument("--record", action="store_true",
                        help="write benchmarks/results/backbones_{llm,towers,onnx}.json and the tables in "
                             "docs/backbones.md and docs/export.md (with --families: only those rows change)")
    args = parser.parse_args(argv)
    logging.disable(logging.WARNING)  # a hundred families' init warnings would bury the table
    warnings.filterwarnings("ignore")
    # Tiny matmuls gain nothing from threads, and on a shared machine threads wait for each other
    # (2 threads at load 10: ~8 s a family; 1 thread: ~0.7 s).
    torch.set_num_threads(1)
    for section in [args.only] if args.only else ("llm", "towers"):
        run_section(section, args.families or SECTIONS[section][1](), Path(args.out), args.record,
                    merge=bool(args.families))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
