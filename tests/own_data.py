"""Small generated datasets in the formats users bring (docs/own-data.md), with the awkward cases
each format has, and a stage YAML around the tiny test model (tests/tiny.py) that reads them.

Images are flat colour squares whose colour is the answer, so a few dozen steps learn something.
"""
from __future__ import annotations

import io
import json
from pathlib import Path

from omegaconf import OmegaConf
from PIL import Image

from tiny import tiny_model_config

COLOURS = {"red": (220, 30, 30), "green": (30, 200, 30), "blue": (30, 30, 220), "yellow": (230, 220, 20)}
QUESTION = "what colour is the image?"


def write_images(root: Path, per_colour: int, folder: str = "train", size: int = 28) -> list[tuple[str, str]]:
    """(relative path, colour) of `per_colour` images of each colour under root/<folder>/<colour>/."""
    out = []
    for colour, rgb in COLOURS.items():
        (root / folder / colour).mkdir(parents=True, exist_ok=True)
        for k in range(per_colour):
            rel = f"{folder}/{colour}/{k}.png"
            Image.new("RGB", (size, size), tuple(max(0, c - 7 * k) for c in rgb)).save(root / rel)
            out.append((rel, colour))
    return out


def write_vqa_jsonl(path: Path, images: list[tuple[str, str]], awkward: bool = True) -> None:
    """One {"image", "question", "answer"} line per image; with `awkward`, also a line that is not
    JSON, a record without an answer and a record whose image does not exist (3 skips)."""
    lines = [json.dumps({"image": rel, "question": QUESTION, "answer": colour, "id": i})
             for i, (rel, colour) in enumerate(images)]
    if awkward:
        lines[1:1] = ['{"image": "train/red/0.png", "question": ',  # cut short
                      json.dumps({"image": images[0][0], "question": QUESTION})]
        lines.append(json.dumps({"image": "train/red/missing.png", "question": QUESTION, "answer": "red"}))
    path.write_text("\n".join(lines) + "\n")


def write_stage(path: Path, root: Path, datasets: dict, *, template: str = "[INST] {} [/INST]", end_sym: str = "###",
                ckpt: tuple = (), run: dict | None = None, **model) -> Path:
    """A stage YAML: the tiny test model (tokenizer + Phi config under `root`), `datasets`, `run`."""
    model_cfg = OmegaConf.to_container(OmegaConf.structured(tiny_model_config(root)))
    model_cfg.update(prompt_template=template, end_sym=end_sym, ckpt=list(ckpt), **model)
    model_cfg["llm"]["lora"]["dropout"] = 0.0
    run_cfg = {"device": "cpu", "num_workers": 0, "batch_size_train": 4, "iters_per_epoch": 4, "max_epoch": 1,
               "warmup_steps": 1, "log_every": 1, "tensorboard": False, "seed": 0,
               "output_dir": str(path.parent / "output" / path.stem)}
    run_cfg.update(run or {})
    path.write_text(OmegaConf.to_yaml({"model": model_cfg, "datasets": datasets, "run": run_cfg}))
    return path


def vis(size: int = 28) -> dict:
    """A resize-only image processor (a crop could cut the colour out: not here, but keep it whole)."""
    return {"name": "blip2_image_train", "image_size": size, "min_scale": 1.0}


def write_llava_mix(path: Path, root: Path) -> dict:
    """A llava_v1_5_mix665k-shaped file under `root` with what real mix files hold: images in
    sub-folders of different sources, ids of every type, `<image>` before or after the question,
    multi-turn records, text-only ShareGPT records, and (counted skips) a record whose first turn
    is the model's and one whose image is missing.  Returns what each builder should make of it."""
    sources = ["coco/train2017", "gqa/images", "ocr_vqa/images", "textvqa/train_images", "vg/VG_100K"]
    records, expect = [], {"image": [], "text": [], "bad": 2}
    for k, (source, (colour, rgb)) in enumerate(zip(sources, list(COLOURS.items()) * 2)):
        (root / source).mkdir(parents=True, exist_ok=True)
        Image.new("RGB", (28, 28), rgb).save(root / source / f"{k}.jpg")
        first = f"<image>\n{QUESTION}" if k % 2 else f"{QUESTION}\n<image>"
        turns = [("human", first), ("gpt", colour)]
        if k % 2:
            turns += [("human", "is it dark?"), ("gpt", "no")]
        records.append({"id": [k, f"{k:012d}", f"ocr_{k}"][k % 3], "image": f"{source}/{k}.jpg",
                        "conversations": [{"from": who, "value": text} for who, text in turns]})
        # TinyGPT-V's conversation text: the first question wrapped with a trailing space, later ones + " "
        expect["image"].append((f"<Img><ImageHere></Img> {QUESTION} " + ("!@#is it dark? " if k % 2 else ""),
                                colour + ("!@#no" if k % 2 else "")))
    for k in range(2):
        records.append({"id": f"i6IyJda_{k}", "model": "",
                        "conversations": [{"from": "human", "value": f"say {k}"}, {"from": "gpt", "value": f"{k}"}]})
        expect["text"].append((f"say {k}", f"{k}"))
    records.append({"id": 99, "image": "coco/train2017/0.jpg",
                    "conversations": [{"from": "gpt", "value": "red"}, {"from": "human", "value": "?"}]})
    records.append({"id": 100, "image": "coco/train2017/missing.jpg",
                    "conversations": [{"from": "human", "value": "<image>\nwhat?"}, {"from": "gpt", "value": "x"}]})
    path.write_text(json.dumps(records))
    return expect


def png(rgb) -> bytes:
    out = io.BytesIO()
    Image.new("RGB", (28, 28), rgb).save(out, format="PNG")
    return out.getvalue()


def write_imagefolder(folder: Path, metadata: str = "jsonl") -> list[str]:
    """A Hugging Face imagefolder: images in sub-folders + metadata.jsonl (`file_name`,
    `conversations`) or metadata.csv (`file_name`, `text`, with one row naming a missing image).
    Returns the answers (jsonl) or captions (csv) of the usable rows."""
    images = write_images(folder, 2, folder="photos")  # not "train/": the library reads that as a split
    if metadata == "jsonl":
        rows = [{"file_name": rel, "conversations": [{"from": "human", "value": f"<image>\n{QUESTION}"},
                                                     {"from": "gpt", "value": colour}]} for rel, colour in images]
        (folder / "metadata.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
        return [colour for _, colour in images]
    lines = ["file_name,text"] + [f"{rel},a {colour} square" for rel, colour in images]
    lines.append("photos/red/missing.png,a red square")
    (folder / "metadata.csv").write_text("\n".join(lines) + "\n")
    return [f"a {colour} square" for _, colour in images]


def write_parquet(path: Path, rows: int = 8, corrupt: bool = True) -> list[str]:
    """Parquet with image bytes in `{"bytes", "path"}` cells, `question`, `answer`; with `corrupt`,
    a row whose bytes are not an image and a row whose question is null (2 skips).  Returns the
    usable rows' answers."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    colours = [list(COLOURS)[k % len(COLOURS)] for k in range(rows)]
    cells = [{"bytes": png(COLOURS[c]), "path": None} for c in colours]
    questions = [QUESTION] * rows
    if corrupt:
        cells[1] = {"bytes": b"\x89PNG\r\n\x1a\n garbage", "path": None}
        questions[2] = None
    pq.write_table(pa.table({"image": cells, "question": questions, "answer": colours}), path)
    return [c for k, c in enumerate(colours) if not (corrupt and k in (1, 2))]
