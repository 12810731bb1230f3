"""What the tiny model can learn per training step: held-out accuracy curves on generated scenes.

    python -m benchmarks.binding                          # "where is the X?" on 1 object, then on 1-3
    python -m benchmarks.binding --task refer --steps 1000 --objects 1
    python -m benchmarks.binding --objects 3 --steps 1000 --question-first   # binding: 0.89-0.97 at 1000
    python -m benchmarks.binding --objects 3 --options model.qformer.cell_classes=0   # without the cell loss

Why it exists: the quickstart used to miss its accuracy targets on questions about *where* a shape is
(docs/quickstart.md).  This separates the two skills such questions need.  With one object per scene
the answer depends only on which cell is not background (position); with up to three it also needs
the named object picked out of several (binding).  Each arm trains a fresh model of the stage's
architecture (from scratch, or from the config's `model.ckpt` with `--pretrained`) on one task
only, with the stage's optimizer, LR schedule and Q-Former cell loss (stage 1's
`model.qformer.cell_classes`; the train loss includes it), and reports held-out accuracy every
`--eval-every` steps:

    where   "<image> where is the red circle?" -> "top left"; accuracy = the lowest-loss answer of
            the nine, on held-out scenes
    refer   "<image> [refer] give me the location of the red circle" -> "{<x1><y1><x2><y2>}";
            accuracy = greedy answer's IoU > 0.5 (RefCOCO's Acc@0.5)

Chance for `where`: 1/9 with one object; a model that finds the occupied cells but cannot tell
which object is named scores about 0.61 with 1-3 objects (mean of 1, 1/2, 1/3).
"""
from __future__ import annotations

import argparse
import random
import time

import torch

import tinygpt
from tinygpt.common.optim import build_optimizer
from tinygpt.common.schedulers import build_scheduler
from tinygpt.conversation.boxes import box_from_pixels, parse_box
from tinygpt.conversation.protocol import place_image
from tinygpt.datasets.synthetic.scenes import COLS, ROWS, Scene, cell_labels, render, sample_scene
from tinygpt.evaluation.benchmarks.refcoco import iou_xyxy
from tinygpt.processors.image import Blip2ImageEvalProcessor
from tinygpt.tasks.image_text import ImageTextTask

from . import _common as C

PLACES = [f"{r} {c}" for r in ROWS for c in COLS]


def make_split(n: int, max_objects: int, task: str, size: int, seed: int, question_first: bool = False):
    """n scenes of 1..max_objects objects, each with one question about a random object (after the
    image, as in every TinyGPT-V template, or before it with `question_first`)."""
    rng = random.Random(seed)
    process = Blip2ImageEvalProcessor(size)
    images, prompts, answers, cells = [], [], [], []
    for i in range(n):
        scene = sample_scene(rng, i, size)
        scene = Scene(scene.image_id, size, scene.background, scene.objects[:max_objects])
        target = rng.choice(scene.objects)
        images.append(process(render(scene)))
        cells.append(cell_labels(scene))
        if task == "refer":
            question = f"[refer] give me the location of the {target.noun}"
            answers.append(box_from_pixels(target.box, size, size))
        else:
            question = f"where is the {target.noun}?"
            answers.append(f"{ROWS[target.row]} {COLS[target.col]}")
        prompts.append(place_image(question, after=question_first))
    return torch.stack(images), prompts, answers, torch.tensor(cells)


@torch.no_grad()
def accuracy(model, split, task: str, batch: int = 100) -> float:
    images, prompts, answers = split[:3]
    model.eval()
    try:
        if task == "where":  # rank the nine places by answer loss
            losses = torch.stack([torch.cat([model.answer_losses(images[i:i + batch], prompts[i:i + batch],
                                                                 [place] * len(prompts[i:i + batch]))
                                             for i in range(0, len(prompts), batch)])
                                  for place in PLACES], 1)
            return sum(PLACES[k] == a for k, a in zip(losses.argmin(1).tolist(), answers)) / len(answers)
        hits = 0
        for i in range(0, len(prompts), batch):
            for text, answer in zip(model.generate(images[i:i + batch], prompts[i:i + batch], max_new_tokens=12),
                                    answers[i:i + batch]):
                box = parse_box(text)
                hits += box is not None and iou_xyxy(box, parse_box(answer)) > 0.5
        return hits / len(answers)
    finally:
        model.train()


def run_arm(cfg, args, max_objects: int) -> dict:
    torch.manual_seed(args.seed)
    size = cfg.model.vision.image_size
    train = make_split(args.train_images, max_objects, args.task, size, args.seed + 1, args.question_first)
    held_out = make_split(args.eval_images, max_objects, args.task, size, args.seed + 2, args.question_first)
    model = tinygpt.build_model(cfg, torch.device("cpu"), load_weights=args.pretrained)
    model.train()
    cfg.run.iters_per_epoch, cfg.run.max_epoch = args.steps, 1
    optimizer = build_optimizer(model, cfg.run)
    schedule = build_scheduler(optimizer, cfg.run)
    task = ImageTextTask(cfg)  # the stage's loss: reduction and the cell loss's weight
    params = [p for p in model.parameters() if p.requires_grad]
    order = torch.Generator().manual_seed(args.seed)
    curve, start = [], time.perf_counter()
    for step in range(args.steps):
        idx = torch.randint(0, len(train[1]), (cfg.run.batch_size_train,), generator=order).tolist()
        schedule.step(step)
        # cell_labels: the stage's cell loss, when its config has a cell head (ignored otherwise)
        step_loss = task.train_step(model, {"image": train[0][idx], "instruction_input": [train[1][i] for i in idx],
                                            "answer": [train[2][i] for i in idx], "cell_labels": train[3][idx]})
        loss = step_loss.total / step_loss.units.clamp(min=1)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if cfg.run.grad_clip:
            torch.nn.utils.clip_grad_norm_(params, cfg.run.grad_clip)
        optimizer.step()
        if (step + 1) % args.eval_every == 0 or step + 1 == args.steps:
            acc = accuracy(model, held_out, args.task)
            curve.append({"step": step + 1, "loss": loss.item(), "accuracy": acc,
                          "seconds": time.perf_counter() - start})
            print(f"  objects 1-{max_objects}  step {step + 1:5d}  loss {loss.item():.3f}  "
                  f"held-out accuracy {acc:.3f}", flush=True)
    return {"task": args.task, "max_objects": max_objects, "curve": curve}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cfg-path", default="train_configs/tiny/stage1.yaml",
                        help="the architecture, optimizer and LR schedule to use")
    parser.add_argument("--task", choices=("where", "refer"), default="where")
    parser.add_argument("--objects", type=int, nargs="+", default=[1, 3], help="arms: at most N objects per scene")
    parser.add_argument("--pretrained", action="store_true",
                        help="start from the config's `model.ckpt` (e.g. stage 3's: the stage-2 checkpoint) "
                             "with its LoRA, instead of from scratch")
    parser.add_argument("--question-first", action="store_true",
                        help="put the question before the image, so the visual tokens can attend to it")
    parser.add_argument("--steps", type=int, default=1500)
    parser.add_argument("--eval-every", type=int, default=250)
    parser.add_argument("--train-images", type=int, default=4000)
    parser.add_argument("--eval-images", type=int, default=300)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--options", nargs="*", default=[])
    C.add_output_args(parser)
    args = parser.parse_args(argv)
    if any(n not in (1, 2, 3) for n in args.objects):
        parser.error("--objects takes 1, 2 or 3 (the generator puts at most 3 objects in a scene)")

    scratch = [] if args.pretrained else ["model.ckpt=[]", "model.llm.lora.r=0"]
    cfg = tinygpt.load_config(args.cfg_path, args.options + scratch)
    q = cfg.model.qformer
    if q.cell_classes and q.num_query_tokens < 9:
        parser.error(f"the cell loss (model.qformer.cell_classes: {q.cell_classes}) needs one query per grid "
                     f"cell: num_query_tokens >= 9, {args.cfg_path} has {q.num_query_tokens}")
    arms = [run_arm(cfg, args, n) for n in args.objects]
    rows = [{"objects": f"1-{a['max_objects']}", **point} for a in arms for point in a["curve"]]
    print(C.table(rows, [("objects", "objects", "s"), ("step", "step", "d"), ("loss", "train loss", ".3f"),
                         ("accuracy", "held-out accuracy", ".3f"), ("seconds", "s", ".0f")]))
    payload = {"benchmark": "binding", "machine": C.machine(), "device": "cpu", "dtype": "fp32",
               "torch": torch.__version__, "config": args.cfg_path, "options": args.options,
               "task": args.task, "question_first": args.question_first, "pretrained": args.pretrained,
               "cell_classes": cfg.model.qformer.cell_classes, "steps": args.steps,
               "train_images": args.train_images, "eval_images": args.eval_images, "seed": args.seed, "arms": arms}
    path = C.write_json(C.result_path(args, f"binding_{args.task}.json"), payload)
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
