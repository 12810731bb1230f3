"""The evaluation runner: benchmark files -> model answers -> official prediction files -> scores.

    splits = prepare(cfg, select_benchmarks(cfg))        # reads every file, checks every image
    model = tinygpt.build_model(cfg, device, training=False)   # inference: LoRA merged, frozen
    report = EvaluationRunner(cfg, model, device, splits, compat="tinygptv").run()
    print(report.table)                                   # also in <output_dir>/results.md

One interface for every benchmark.  Per `evaluation.benchmarks.<label>` (the scorer is the label
unless `scorer:` says otherwise) the runner asks each question as
`<Img><ImageHere></Img> <prompt with {} = question>` (the model wraps it in its stage template;
a prompt holding the placeholder puts the image where it says, `model.image_after_question` last),
in batches, and turns the answers into the record the scorer reads (each benchmark module's
`mode`, `field`, `lower`; evaluation/benchmarks/):

    generate  greedy/beam text (vqav2, okvqa, gqa, vizwiz, vsr, refcoco*, coco_caption)
    rank      the candidate with the lowest answer loss (iconqa)
    yes_no    P("yes") from the next-token logits, plus the generated text (hateful_memes)

Distributed: under torchrun each rank answers a strided shard of the questions not yet answered
and appends every batch to `<label>/predictions.rank<R>.jsonl`; rank 0 then merges all rank files
(so the output directory must be one all ranks see, as on one node) into `<label>/predictions.json`
in the official format and scores it.  A re-run resumes: answered questions are skipped, whatever
the number of ranks was before.  `<label>/settings.json` records what produced the answers
(prompt, template, generation options, weights); resuming with different settings is refused.
"""
from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
from dataclasses import dataclass, field
from typing import Optional

import torch
from PIL import Image

from tinygpt.common import atomic
from tinygpt.common import device as devices
from tinygpt.common import dist, jsonfile
from tinygpt.common.config import BenchmarkConfig, Config, ConfigError
from tinygpt.common.registry import registry
from tinygpt.datasets.loader import worker_settings
from tinygpt.evaluation import EvalInputError, MissingToolError, Scorer, get_scorer, markdown_table
from tinygpt.evaluation.probabilities import candidate_losses, yes_probability
from tinygpt.evaluation.questions import Question, Source, Split

log = logging.getLogger(__name__)


def benchmark(name: str):
    """The registered benchmark class (evaluation/benchmarks/): how it is asked and scored."""
    return registry.get("benchmark", name)


def family_members(family: Optional[str]) -> tuple[str, ...]:
    """Benchmarks a thin eval script runs (vqa / ref / caption), or every one."""
    names = registry.names("benchmark")
    return tuple(n for n in names if not family or benchmark(n).family == family)


# TinyGPT-V's own names for two benchmarks, accepted on the command line.
ALIASES = {"hm": "hateful_memes", "iconvqa": "iconqa"}


# ============================================================================ start-up checks
def _scorer_compat_modes(name: str) -> tuple[str, ...]:
    return tuple(registry.get("benchmark", name).compat_modes)


def check_benchmark(cfg: Config, label: str, bench: BenchmarkConfig) -> None:
    """Config-level checks of one entry (no file access); ConfigError names the key."""
    where = f"{cfg.source}: key 'evaluation.benchmarks.{label}"
    known = registry.names("benchmark")
    if bench.scorer not in known:
        raise ConfigError(f"{where}': unknown benchmark {bench.scorer!r}; known benchmarks: {', '.join(known)}"
                          + ("" if label == bench.scorer else " (set 'scorer:' to one of them)"))
    if benchmark(bench.scorer).questions_to_ask is None:
        raise ConfigError(f"{where}': the runner cannot ask {bench.scorer!r} questions (it has no question reader)")
    if benchmark(bench.scorer).asks_question and "{}" not in bench.prompt:
        raise ConfigError(f"{where}.prompt' is {bench.prompt!r}; it needs a '{{}}' where the question goes")
    for name in ("max_new_tokens", "num_beams", "batch_size"):
        if getattr(bench, name) < 1:
            raise ConfigError(f"{where}.{name}' must be at least 1")
    if bench.max_samples < 0:
        raise ConfigError(f"{where}.max_samples' must be 0 (all) or positive")
    if bench.compat is not None and bench.compat not in _scorer_compat_modes(bench.scorer):
        modes = ", ".join(_scorer_compat_modes(bench.scorer)) or "none"
        raise ConfigError(f"{where}.compat' is {bench.compat!r}; {bench.scorer} has compat modes: {modes}")


def select_benchmarks(cfg: Config, names: Optional[list[str]] = None, family: Optional[str] = None) -> list[str]:
    """The labels to run: `names` (config keys, scorer names or TinyGPT-V aliases), else every
    configured benchmark (of `family`, for the thin eval scripts).  Checks every configured entry."""
    configured = cfg.evaluation.benchmarks
    for label, bench in configured.items():
        check_benchmark(cfg, label, bench)
    members = family_members(family)
    if not names:
        labels = [label for label, bench in configured.items() if bench.scorer in members]
        if not labels:
            what = f"{family}-family benchmarks ({', '.join(members)})" if family else "benchmarks"
            raise ConfigError(f"{cfg.source}: no {what} under 'evaluation.benchmarks'")
        return labels
    labels = []
    for name in names:
        label = name if name in configured else ALIASES.get(name, name)
        if label not in configured:
            known = registry.names("benchmark")
            if label in known:
                raise ConfigError(f"{cfg.source}: benchmark {name!r} is not configured (no "
                                  f"'evaluation.benchmarks.{label}' entry); configured: "
                                  f"{', '.join(configured) or 'none'}")
            raise ConfigError(f"unknown benchmark {name!r}; known benchmarks: {', '.join(known)}"
                              f"; configured in {cfg.source}: {', '.join(configured) or 'none'}")
        if configured[label].scorer not in members:
            raise ConfigError(f"{name!r} is not a {family}-family benchmark ({', '.join(members)}); "
                              "run it with eval_scripts/evaluate.py")
        if label not in labels:
            labels.append(label)
    return labels


def prepare(cfg: Config, labels: list[str]) -> dict[str, Split]:
    """Read every selected benchmark's files and find its images (before any model is built)."""
    splits = {}
    for label in labels:
        bench = cfg.evaluation.benchmarks[label]
        splits[label] = benchmark(bench.scorer).questions_to_ask(Source(label, bench, cfg.source))
    return splits


def compat_for(bench: BenchmarkConfig, requested: Optional[str]) -> Optional[str]:
    """The compat rule to score with besides the official one: the entry's own, else the command
    line's where this scorer defines it (VQAv2, RefCOCO and captions have none)."""
    if bench.compat:
        return bench.compat
    if requested and requested in _scorer_compat_modes(bench.scorer):
        return requested
    return None


# ============================================================================ partial results
def _rank_files(directory: str) -> list[str]:
    if not os.path.isdir(directory):
        return []
    return sorted(os.path.join(directory, n) for n in os.listdir(directory)
                  if n.startswith("predictions.rank") and n.endswith(".jsonl"))


def read_answers(directory: str) -> dict[str, dict]:
    """{question key: prediction record} from every rank's JSONL in `directory` (first one wins).

    A line cut short by a crash mid-write is ignored: that question is simply asked again.
    """
    answers: dict[str, dict] = {}
    for path in _rank_files(directory):
        with open(path, encoding="utf-8") as f:
            for line in f:
                try:
                    row = json.loads(line)
                except json.JSONDecodeError:
                    continue
                if isinstance(row, dict) and "key" in row and isinstance(row.get("record"), dict):
                    answers.setdefault(str(row["key"]), row["record"])
    return answers


def _file_stamp(path: Optional[str]) -> Optional[str]:
    """A checkpoint's content digest: the same weights copied or moved elsewhere match, a retrained
    file does not (file times and paths would say the opposite)."""
    if not path or not os.path.isfile(path):
        return None
    digest = hashlib.blake2b(digest_size=16)
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 22), b""):
            digest.update(block)
    return "blake2b:" + digest.hexdigest()


def settings_of(cfg: Config, bench: BenchmarkConfig) -> dict:
    """What determines the answers: a resumed run must match it (batch size and max_samples do not)."""
    m = cfg.model
    return {
        "scorer": bench.scorer, "prompt": bench.prompt, "max_new_tokens": bench.max_new_tokens,
        "num_beams": bench.num_beams, "questions": bench.questions, "annotations": bench.annotations,
        "prompt_template": m.prompt_template, "end_sym": m.end_sym, "image_placeholder": m.image_placeholder,
        "image_after_question": m.image_after_question, "image_size": m.vision.image_size, "llm_weights": m.llm.weights,
        "ckpt": [_file_stamp(p) or os.path.basename(p) for p in m.ckpt],
    }


# ============================================================================ the runner
@dataclass
class Report:
    """What a run produced.  results: row label -> scorer result (official rows under the
    benchmark label, compat rows under '<label> (<rule>)'); errors: label -> message."""
    output_dir: str
    results: dict[str, dict] = field(default_factory=dict)
    errors: dict[str, str] = field(default_factory=dict)
    predictions: dict[str, str] = field(default_factory=dict)
    unscored: list[str] = field(default_factory=list)
    table: str = ""
    results_json: str = ""
    results_md: str = ""


class _Images(torch.utils.data.Dataset):
    def __init__(self, questions: list[Question], processor):
        self.questions, self.processor = questions, processor

    def __len__(self) -> int:
        return len(self.questions)

    def __getitem__(self, i: int):
        path = self.questions[i].image
        try:
            with Image.open(path) as img:
                return i, self.processor(img.convert("RGB"))
        except OSError as exc:
            raise EvalInputError(f"cannot read image {path}: {exc}") from None


class EvaluationRunner:
    """Asks, resumes, merges and scores the prepared benchmarks; see the module docstring.

    model: a TinyGPT-V model on `device` (eval mode is set here).  splits: `prepare(cfg, labels)`.
    compat: also score with this compat rule where the benchmark defines it.  restart: discard
    earlier partial answers instead of resuming.  progress: a tqdm bar on rank 0.
    """

    def __init__(self, cfg: Config, model, device: torch.device, splits: dict[str, Split], *,
                 compat: Optional[str] = None, restart: bool = False, progress: bool = True):
        from tinygpt.processors.build import eval_processor

        self.cfg, self.model, self.device, self.splits = cfg, model.eval(), torch.device(device), splits
        self.compat, self.restart, self.progress = compat, restart, progress
        self.output_dir = cfg.evaluation.output_dir
        self.amp_dtype = devices.autocast_dtype(self.device, cfg.run.precision)
        self.processor = eval_processor(cfg.model)

    # ------------------------------------------------------------------ top level
    def run(self) -> Report:
        report = Report(self.output_dir)
        if dist.is_main():  # only rank 0 writes files atomically here, and it has not started yet
            for stale in atomic.remove_stale_temps(self.output_dir, recursive=True):
                log.info("removed %s, left by a write that was interrupted", stale)
        for label, split in self.splits.items():
            self.answer_all(label, split)
            dist.barrier()  # every rank's JSONL is complete
            if dist.is_main():
                self.merge_and_score(label, split, report)
        if dist.is_main():
            self.write_results(report)
        dist.barrier()  # nobody leaves (and tears the process group down) before the results exist
        return report

    def bench_dir(self, label: str) -> str:
        return os.path.join(self.output_dir, label)

    # ------------------------------------------------------------------ asking
    def answer_all(self, label: str, split: Split) -> None:
        """Every rank: answer its shard of the unanswered questions, appending to its JSONL."""
        bench = self.cfg.evaluation.benchmarks[label]
        directory = self.bench_dir(label)
        if self.restart and dist.is_main() and os.path.isdir(directory):
            shutil.rmtree(directory)
        dist.barrier()
        answered = read_answers(directory)
        settings = settings_of(self.cfg, bench)
        settings_path = os.path.join(directory, "settings.json")
        if answered and os.path.exists(settings_path):
            with open(settings_path, encoding="utf-8") as f:
                before = json.load(f)
            changed = sorted(k for k in set(before) | set(settings) if before.get(k) != settings.get(k))
            if changed:
                raise ConfigError(f"{directory} holds answers made with different settings "
                                  f"({', '.join(changed)}); pass --restart to discard them, or set "
                                  "evaluation.output_dir to a new directory")
        dist.barrier()  # every rank has read the same files before anyone appends to them
        os.makedirs(directory, exist_ok=True)
        if dist.is_main():
            atomic.write_json(settings_path, settings)
        todo = [q for q in split.questions if q.key not in answered]
        mine = todo[dist.rank()::dist.world_size()]
        if dist.is_main():
            log.info("%s: %d questions, %d already answered, %d to ask on %d rank(s)", label,
                     len(split.questions), len(split.questions) - len(todo), len(todo), dist.world_size())
        if not mine:
            return
        from tqdm.auto import tqdm

        loader = torch.utils.data.DataLoader(
            _Images(mine, self.processor), batch_size=bench.batch_size, shuffle=False,
            **worker_settings(self.cfg.run.num_workers, self.device))
        path = os.path.join(directory, f"predictions.rank{dist.rank()}.jsonl")
        bar = tqdm(total=len(mine), desc=label, unit="q", disable=not (self.progress and dist.is_main()))
        with open(path, "a", encoding="utf-8") as out, bar:
            if out.tell() and not _ends_with_newline(path):
                out.write("\n")  # end a line cut short by a crash, so it cannot swallow the next record
            for index, images in loader:
                batch = [mine[i] for i in index.tolist()]
                records = self.answer_batch(bench, batch, images.to(self.device))
                out.write("".join(jsonfile.dumps({"key": q.key, "record": r}) + "\n" for q, r in zip(batch, records)))
                out.flush()
                os.fsync(out.fileno())  # a crash loses at most the batch being asked
                bar.update(len(batch))

    def instruction(self, bench: BenchmarkConfig, q: Question) -> str:
        """`<Img><ImageHere></Img> <prompt>` with the question in the prompt's `{}` (str.format
        would trip over other braces, e.g. a box `{<x1><y1><x2><y2>}` in a prompt); a prompt that
        places the image itself is kept as is, and `model.image_after_question` (the tiny recipe's
        question-first order) puts it after the text."""
        return self.model.style.place_image(bench.prompt.replace("{}", q.text, 1))

    def answer_batch(self, bench: BenchmarkConfig, batch: list[Question], images: torch.Tensor) -> list[dict]:
        """The prediction records for one batch, in the scorer's format."""
        protocol = benchmark(bench.scorer)
        instructions = [self.instruction(bench, q) for q in batch]
        with torch.no_grad(), devices.autocast(self.device, self.amp_dtype):
            if protocol.mode == "rank":
                losses = candidate_losses(self.model, images, instructions, [q.candidates for q in batch])
                return [{**q.record, protocol.field: min(range(len(ls)), key=ls.__getitem__)}
                        for q, ls in zip(batch, losses)]
            texts = self.model.generate(images, instructions, max_new_tokens=bench.max_new_tokens,
                                        num_beams=bench.num_beams)
            answers = [self.clean(t, protocol) for t in texts]
            records = [{**q.record, protocol.field: a} for q, a in zip(batch, answers)]
            if protocol.mode == "yes_no":
                for record, p in zip(records, yes_probability(self.model, images, instructions).tolist()):
                    record.update(proba=round(p, 6), label=int(p >= 0.5))
            return records

    @staticmethod
    def clean(text: str, protocol: type[Scorer]) -> str:
        """The model already cut the end marker; drop stray <unk>, spaces and (VQA-style) case."""
        text = text.replace("<unk>", "").strip()
        return text.lower() if protocol.lower else text

    # ------------------------------------------------------------------ merging and scoring
    def merge_and_score(self, label: str, split: Split, report: Report) -> None:
        """Rank 0: every rank's answers -> predictions.json (official format, question order) -> scores."""
        bench = self.cfg.evaluation.benchmarks[label]
        directory = self.bench_dir(label)
        answers = read_answers(directory)
        missing = [q.key for q in split.questions if q.key not in answers]
        if missing:
            report.errors[label] = (f"{len(missing)} questions have no answer (e.g. {missing[0]!r}); "
                                    "run again to resume")
            return
        pred_path = os.path.join(directory, "predictions.json")
        atomic.write_json(pred_path, [answers[q.key] for q in split.questions])
        report.predictions[label] = pred_path
        if not split.scorable:
            report.unscored.append(label)
            return
        rules = [None] + [c for c in [compat_for(bench, self.compat)] if c]
        for rule in rules:
            row = label if rule is None else f"{label} ({rule})"
            try:
                result = get_scorer(bench.scorer).score(pred_path, ann=split.ann, ques=split.ques, compat=rule)
            except (EvalInputError, MissingToolError) as exc:
                report.errors[row] = str(exc)
                continue
            result.update(label=label, predictions=pred_path, questions=len(split.questions),
                          subset=bench.max_samples > 0)
            atomic.write_json(os.path.join(directory, "score.json" if rule is None else f"score.{rule}.json"),
                              result)
            report.results[row] = result

    def write_results(self, report: Report) -> None:
        """results.json (every result in full) and results.md (the table and what it means)."""
        os.makedirs(self.output_dir, exist_ok=True)
        report.table = markdown_table(report.results) if report.results else ""
        notes = []
        if any(r.get("compat") for r in report.results.values()):
            notes.append("Rows marked '(<rule> compat)' use TinyGPT-V's lenient scoring rules, kept only for "
                         "comparison with the TinyGPT-V paper; every other row is the benchmark's official metric.")
        else:
            notes.append("Every row is the benchmark's official metric.")
        subsets = [f"{r['label']} (first {self.cfg.evaluation.benchmarks[r['label']].max_samples})"
                   for r in report.results.values() if r.get("subset") and not r.get("compat")]
        if subsets:
            notes.append("Scored on a subset (max_samples), not comparable to published numbers: "
                         + ", ".join(subsets) + ".")
        for label in report.unscored:
            notes.append(f"{label}: no public annotations; predictions for the official server are in "
                         f"{report.predictions[label]}.")
        for row, message in report.errors.items():
            notes.append(f"{row}: FAILED: {message}")
        text = "\n".join(f"- {n}" for n in notes)
        md = f"# Evaluation results\n\nConfig: `{self.cfg.source}`\n\n{report.table}\n{text}\n"
        report.results_json = os.path.join(self.output_dir, "results.json")
        report.results_md = os.path.join(self.output_dir, "results.md")
        atomic.write_json(report.results_json, {
            "config": self.cfg.source, "results": report.results, "errors": report.errors,
            "predictions": report.predictions, "unscored": report.unscored,
        })
        atomic.write_text(report.results_md, md)


def _ends_with_newline(path: str) -> bool:
    with open(path, "rb") as f:
        f.seek(-1, os.SEEK_END)
        return f.read(1) == b"\n"


