"""The data dry run: what a stage YAML's datasets give the model, before any training.

    python -m tinygpt.datasets check --cfg-path STAGE.yaml [--samples N] [--max-records N] [--options k=v ...]

Everything comes from the training path itself: `build_train_loader` (the registered builders, their
processors, `collate`, the mixing loader), the prompt style the model would resolve (config, else
the last `model.ckpt` that records one, models/build.py), and `protocol.encode_all` -- the function
the model's training step lays its token ids and labels out with -- so a rendered sample IS what
the LLM receives (tests/datasets/test_data_check.py asserts it against the model).

It reads every record of every entry (images decoded and transformed, as an epoch would) and prints
records and mixing share per entry, every skipped record (file, record, reason), N samples with the
image slot as `<image xQ>` and supervised tokens in `[[...]]` (N per entry), where the end marker falls, the
truncation rate at max_txt_len / max_context_len, token-length percentiles and steps per pass.

Exit status 1, with one `problem:` line each on stderr, when training would learn the wrong thing:
a sample with no supervised token, an answer whose labels lack the end marker (cut by max_txt_len,
or an end marker the layout masks, such as a pad token), an instruction without the image slot, no
readable record, images of another size than the tower's, or a prompt style that differs from the checkpoint being fine-tuned (pass
`--new-style` when a stage changes it on purpose, as TinyGPT-V's stage 4 does).  Exit 2: a
config that does not build (one line, as train.py would fail).
"""
from __future__ import annotations

import argparse
import copy
import logging
import math
import sys
from dataclasses import dataclass, field
from itertools import islice
from typing import Optional

from torch.utils.data import IterableDataset

import tinygpt
from tinygpt.common.errors import UserError, entry_point
from tinygpt.conversation.protocol import IGNORE, IMAGE_SLOT, Layout, PromptStyle, encode_all, sample_dialogues
from tinygpt.datasets import skips
from tinygpt.datasets.collate import collate
from tinygpt.datasets.loader import build_train_loader

PROG = "python -m tinygpt.datasets check"
SHOW_SKIPS = 10  # skipped records listed per entry (all are counted)
UNBOUNDED = 1 << 30


@dataclass
class EntryFigures:
    """What scanning one `datasets:` entry found."""
    name: str
    builder: str
    records: Optional[int]  # None: a stream (webdataset), counted while read
    ratio: float
    batch_size: int
    scanned: int = 0
    lengths: list = field(default_factory=list)
    cut_txt: int = 0
    cut_context: int = 0
    skipped: list = field(default_factory=list)  # (kind, detail)
    no_labels: list = field(default_factory=list)  # record indices
    no_end: list = field(default_factory=list)
    unencodable: list = field(default_factory=list)  # (index, reason)
    image_sizes: set = field(default_factory=set)  # what vis_processor made of the images


class Checker:
    """The stage's tokenizer, prompt style and visual-token count, and the per-record analysis."""

    def __init__(self, cfg, tokenizer, style: PromptStyle, n_query: int):
        self.cfg, self.tokenizer, self.style, self.n_query = cfg, tokenizer, style, n_query
        self.unbounded = style.replace(max_txt_len=UNBOUNDED, max_context_len=UNBOUNDED)

    def layouts(self, batch: dict, style: Optional[PromptStyle] = None) -> list[Layout]:
        """The training step's layouts of a collated batch (model.layouts: the same function)."""
        return encode_all(style or self.style, self.tokenizer, sample_dialogues(batch), self.n_query)

    def answer_spans(self, layout: Layout) -> list[tuple[int, int]]:
        """[start, end) of each run of supervised positions (one per answer)."""
        spans, start = [], None
        for i, label in enumerate(layout.labels + [IGNORE]):
            if label != IGNORE and start is None:
                start = i
            elif label == IGNORE and start is not None:
                spans.append((start, i))
                start = None
        return spans

    def ends_with_marker(self, layout: Layout) -> bool:
        """Every answer's labels end with the end marker (else the model never learns to stop)."""
        if not self.style.end_sym:
            return True
        spans = self.answer_spans(layout)
        return bool(spans) and all(self.tokenizer.decode(layout.labels[a:b]).endswith(self.style.end_sym)
                                   for a, b in spans)

    def scan(self, figures: EntryFigures, dataset, max_records: Optional[int]) -> None:
        if hasattr(dataset, "set_epoch"):
            dataset.set_epoch(0)
        if isinstance(dataset, IterableDataset):
            items = islice(iter(dataset), max_records)
        else:
            n = len(dataset) if max_records is None else min(len(dataset), max_records)
            items = (dataset[i] for i in range(n))
        for index, sample in enumerate(items):
            figures.scanned += 1
            batch = collate([sample])  # what a batch of this record is (skips ride along)
            figures.skipped += [(kind, detail) for _, kind, detail in batch.pop(skips.SKIPS_KEY, [])]
            if batch:
                if "image" in batch:
                    figures.image_sizes.add(tuple(batch["image"].shape[-2:]))
                self.measure(figures, index, batch)

    def measure(self, figures: EntryFigures, index: int, batch: dict) -> None:
        try:
            (layout,), (full,) = self.layouts(batch), self.layouts(batch, self.unbounded)
        except ValueError as exc:  # e.g. an instruction about an image without <ImageHere>
            figures.unencodable.append((index, str(exc)))
            return
        figures.lengths.append(len(layout))
        if not any(label != IGNORE for label in layout.labels):
            figures.no_labels.append(index)
        elif not self.ends_with_marker(layout):
            figures.no_end.append(index)
        spans = self.answer_spans(full)
        condition = spans[0][0] if spans else len(full)
        figures.cut_context += condition > (self.answer_spans(layout) or [(len(layout), 0)])[0][0]
        figures.cut_txt += len(full) - condition > self.style.max_txt_len

    # ------------------------------------------------------------------ display
    def render(self, layout: Layout) -> str:
        """The row as text: the visual slots as `<image xQ>`, supervised tokens in [[...]]."""
        out, i, n = [], 0, len(layout)
        while i < n:
            if i == layout.image_at:
                out.append(f"<image x{self.n_query}>")
                i += self.n_query
                continue
            supervised = layout.labels[i] != IGNORE
            j = i
            while j < n and j != layout.image_at and (layout.labels[j] != IGNORE) == supervised:
                j += 1
            text = self.tokenizer.decode(layout.ids[i:j]).replace("\n", "\\n")
            out.append(f"[[{text}]]" if supervised else text)
            i = j
        return "".join(out)

    def end_marker_note(self, layout: Layout) -> str:
        if not self.style.end_sym:
            return "no end marker configured"
        spans = self.answer_spans(layout)
        where = [f"{b - 1}" for a, b in spans
                 if self.tokenizer.decode(layout.labels[a:b]).endswith(self.style.end_sym)]
        if len(where) == len(spans) and spans:
            return (f"end marker {self.style.end_sym!r} closes each answer's labels (last supervised token at "
                    f"{', '.join(where)} of {len(layout)} tokens)")
        return f"end marker {self.style.end_sym!r} MISSING from the labels of {len(spans) - len(where)} answer(s)"


def percentiles(values: list[int]) -> str:
    if not values:
        return "no sample"
    ordered = sorted(values)
    pick = lambda q: ordered[min(len(ordered) - 1, math.ceil(q * len(ordered)) - 1)]  # noqa: E731
    return f"p50 {pick(0.5)}  p90 {pick(0.9)}  p99 {pick(0.99)}  max {ordered[-1]}"


def prompt_style(cfg, new_style: bool, problems: list[str]) -> tuple[object, PromptStyle, str]:
    """(tokenizer, the PromptStyle training would use, the checkpoint that records one or ""); a
    configured field that differs from the checkpoint's record is a problem unless `new_style`."""
    from tinygpt.models import weights
    from tinygpt.models.build import _template_from_tokenizer, load_tokenizer, resolve_prompt_style
    from tinygpt.common.config import require_file

    model_cfg, origin = cfg.model, ""
    tokenizer = load_tokenizer(require_file(cfg.source, "model.llm.tokenizer", model_cfg.llm.tokenizer))
    _template_from_tokenizer(model_cfg, tokenizer)
    for path in reversed(model_cfg.ckpt):
        recorded = weights.recorded_style(require_file(cfg.source, "model.ckpt", path))
        if not recorded:
            continue
        origin = path
        for name, key in PromptStyle.CONFIG_KEYS.items():
            value = getattr(model_cfg, key)
            if name in recorded and value is not None and value != recorded[name] and not new_style:
                problems.append(f"model.{key} is {value!r} but {path} was trained with {recorded[name]!r}: the "
                                f"fine-tune would teach a new prompt format (leave it unset to take the "
                                f"checkpoint's; --new-style if the stage changes it on purpose)")
        break
    return tokenizer, resolve_prompt_style(model_cfg, cfg.source, warn=False), origin


def run(cfg, samples: int, max_records: Optional[int], new_style: bool, out=print) -> list[str]:
    """Print the report; return the problems (one line each)."""
    problems: list[str] = []
    cfg.run.num_workers = 0  # read in this process: every skip is seen here
    # Visual tokens per image, from the architecture itself (on meta: no memory, no weights); a
    # copy, because building fills the config's unset prompt-style fields with defaults.
    n_query = tinygpt.build_model(copy.deepcopy(cfg), "meta").n_visual_tokens
    tokenizer, style, origin = prompt_style(cfg, new_style, problems)
    checker = Checker(cfg, tokenizer, style, n_query)
    out(f"check {cfg.source}")
    out(f"checkpoint to fine-tune: {origin or 'none recording a prompt style'}")
    out(f"prompt style: {style.describe()}; max_txt_len {style.max_txt_len}, max_context_len "
        f"{style.max_context_len}; {n_query} visual tokens per image")
    if style.template and IMAGE_SLOT in style.template:
        problems.append(f"model.prompt_template {style.template!r} holds {IMAGE_SLOT}: the image goes in the "
                        f"instruction, the template wraps it")

    mixed = build_train_loader(cfg)
    total_ratio = sum(mixed.ratios)
    entries = []
    for name, loader, ratio in zip(mixed.names, mixed.loaders, mixed.ratios):
        dcfg = cfg.datasets[name]
        ds = loader.dataset
        records = None if isinstance(ds, IterableDataset) else len(ds)
        figures = EntryFigures(name, dcfg.builder or name, records, ratio, loader.batch_size)
        figures.skipped += [(kind, detail) for d, kind, detail in _build_skips(mixed, name)]
        checker.scan(figures, ds, max_records)
        entries.append(figures)

    out("\ndatasets (records, mixing share, batch size, steps for one pass over the entry):")
    accum = cfg.run.accum_grad_iters
    for f in entries:
        share = f.ratio / total_ratio
        count = f.records if f.records is not None else f.scanned
        usable = f.scanned - len(f.skipped) - len(f.unencodable)
        one_pass = math.ceil(count / f.batch_size / share / accum) if count else 0
        out(f"  {f.name:<24} {f.builder:<16} {count:>8} records{' (stream: read)' if f.records is None else ''}"
            f"  share {100 * share:5.1f}%  batch {f.batch_size}  ~{one_pass} steps/pass"
            f"  ({usable} of {f.scanned} read usable)")
        if f.scanned and not usable:
            problems.append(f"datasets.{f.name}: none of the {f.scanned} records read gives a sample")
    steps = cfg.run.iters_per_epoch * cfg.run.max_epoch
    out(f"steps: run.iters_per_epoch {cfg.run.iters_per_epoch} x max_epoch {cfg.run.max_epoch} = {steps} optimizer "
        f"steps of {accum} batch(es), one entry per batch by share")

    out("\nskipped records (file, record, reason):")
    if not any(f.skipped for f in entries):
        out("  none")
    for f in entries:
        for kind, detail in f.skipped[:SHOW_SKIPS]:
            out(f"  {f.name}: {kind}: {detail}")
        if len(f.skipped) > SHOW_SKIPS:
            out(f"  {f.name}: ... and {len(f.skipped) - SHOW_SKIPS} more")

    lengths = [n for f in entries for n in f.lengths]
    out(f"\ntoken lengths (BOS + condition with the visual tokens + answers): {percentiles(lengths)}")
    for f in entries:
        out(f"  {f.name}: {percentiles(f.lengths)}")
    n = max(1, len(lengths))
    cut_txt, cut_ctx = sum(f.cut_txt for f in entries), sum(f.cut_context for f in entries)
    out(f"truncation: {100 * cut_txt / n:.1f}% of samples cut at max_txt_len {style.max_txt_len}, "
        f"{100 * cut_ctx / n:.1f}% at max_context_len {style.max_context_len}")

    for f in entries:
        for what, found in (("give no supervised token (nothing to learn)", f.no_labels),
                            (f"lack the end marker {style.end_sym!r} in their labels (cut by max_txt_len, or "
                             f"masked): the model would not learn to stop", f.no_end)):
            if found:
                problems.append(f"datasets.{f.name}: {len(found)} sample(s) {what}; e.g. record {found[0]}")
        size = cfg.model.vision.image_size
        if f.image_sizes - {(size, size)}:
            problems.append(f"datasets.{f.name}.vis_processor.image_size gives {sorted(f.image_sizes)[0][0]} px images "
                            f"but model.vision.image_size is {size}")
        if f.unencodable:
            index, reason = f.unencodable[0]
            problems.append(f"datasets.{f.name}: {len(f.unencodable)} sample(s) cannot be laid out; e.g. record "
                            f"{index}: {reason}")

    out(f"\n{samples} sample(s) per entry as the LLM receives them (the entry's training batches; "
        f"[[...]] = supervised tokens):")
    for name, loader in zip(mixed.names, mixed.loaders):
        shown = 0
        for batch in islice(loader, samples * 4):
            if shown >= samples:
                break
            batch = mixed.skips.absorb(batch)
            try:
                rows = checker.layouts(batch) if batch else []
            except ValueError:
                continue  # counted above
            for layout in rows[: samples - shown]:
                shown += 1
                out(f"--- {name} #{shown} ({len(layout)} tokens)")
                out(checker.render(layout))
                out(f"    {checker.end_marker_note(layout)}")
    return problems


def _build_skips(mixed, name: str) -> list:
    """What the builder of `name` skipped while building (merged into the loader's counter)."""
    return [(name, kind, f"{n} item(s)") for kind, n in mixed.skips.counts().get(name, {}).items()]


@entry_point(PROG)
def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog=PROG, description=__doc__.splitlines()[0])
    parser.add_argument("--cfg-path", required=True, help="the stage YAML whose datasets to check")
    parser.add_argument("--samples", type=int, default=3, help="samples to render (default 3)")
    parser.add_argument("--max-records", type=int, default=None,
                        help="read at most this many records per entry (default: all)")
    parser.add_argument("--new-style", action="store_true",
                        help="the stage changes the checkpoint's prompt style on purpose")
    parser.add_argument("--options", nargs="*", default=[], help="config overrides, as train.py's")
    args = parser.parse_args(argv)
    if args.samples < 0 or (args.max_records is not None and args.max_records <= 0):
        raise UserError("--samples must be >= 0 and --max-records > 0")
    # Skipped records are listed in the report, not warned about one by one.
    logging.getLogger(skips.__name__).setLevel(logging.ERROR)
    problems = run(tinygpt.load_config(args.cfg_path, args.options), args.samples, args.max_records,
                   args.new_style)
    if not problems:
        print("\nok: nothing found that would make training wrong")
        return 0
    print()
    for line in problems:
        print(f"problem: {line}", file=sys.stderr)
    return 1
