"""Count a config's parameters per component on the meta device (seconds, no memory), and name the
LLM's Linears that carry LoRA and why they were chosen (models/lora.py).

    python -m tinygpt.inspect --cfg-path train_configs/tinygptv_stage2.yaml [--json]
"""
from __future__ import annotations

import argparse
import json
import sys

import tinygpt
from tinygpt.common.errors import entry_point
from tinygpt.models import components


def row_of(model, name: str) -> str:
    """A parameter's row: its component (models/components.py), LoRA adapters apart."""
    return "llm_lora" if components.is_lora(name) else components.component_of(model, name).attribute


def count_parameters(model) -> dict:
    """{component: {"total": n, "trainable": n}} plus an "all" row."""
    rows: dict[str, dict[str, int]] = {}
    for name, p in model.named_parameters():
        row = rows.setdefault(row_of(model, name), {"total": 0, "trainable": 0})
        row["total"] += p.numel()
        row["trainable"] += p.numel() if p.requires_grad else 0
    rows["all"] = {k: sum(r[k] for r in rows.values()) for k in ("total", "trainable")}
    return rows


@entry_point("python -m tinygpt.inspect")
def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tinygpt.inspect", description=__doc__.splitlines()[0])
    parser.add_argument("--cfg-path", required=True)
    parser.add_argument("--options", nargs="*", default=[])
    parser.add_argument("--json", action="store_true", help="print JSON instead of a table")
    args = parser.parse_args(argv)
    cfg = tinygpt.load_config(args.cfg_path, args.options)
    model = tinygpt.build_model(cfg, "meta")
    rows = count_parameters(model)
    lora = model.lora_targets
    if args.json:
        targets = {"modules": list(lora.modules), "origin": lora.origin} if lora else None
        print(json.dumps({"config": args.cfg_path, "parameters": rows, "lora_targets": targets}, indent=2))
        return 0
    print(f"{'component':<16}{'total':>16}{'trainable':>16}")
    for name, row in rows.items():
        print(f"{name:<16}{row['total']:>16,}{row['trainable']:>16,}")
    print(f"LoRA targets: {', '.join(lora.modules)} ({lora.origin})" if lora else "LoRA targets: none (model.llm.lora.r is 0)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
