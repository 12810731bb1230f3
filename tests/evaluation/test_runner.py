"""The evaluation runner end to end on a tiny random model and a small synthetic split.

A random model's answers are nonsense, so the numbers are ~0; what is tested is the plumbing:
questions read from the official formats, prompts, batching, prediction files in the format each
scorer reads, scores in range, resume, settings checks, errors that name the config key.
"""
from __future__ import annotations

import importlib.util
import json
import shutil
from pathlib import Path

import pytest
import torch
from PIL import Image

from tiny import tiny_config
from tinygpt.common.config import BenchmarkConfig, ConfigError, to_yaml
from tinygpt.evaluation.probabilities import candidate_losses, yes_probability
from tinygpt.evaluation import benchmark_names
from tinygpt.evaluation.runner import (
    EvaluationRunner,
    benchmark,
    prepare,
    read_answers,
    select_benchmarks,
)

ROOT = Path(__file__).resolve().parents[2]
HAS_JAVA = shutil.which("java") is not None


def load_script(name: str):
    spec = importlib.util.spec_from_file_location(name.replace(".py", ""), ROOT / "eval_scripts" / name)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


# ----------------------------------------------------------------------------- data
@pytest.fixture(scope="module")
def syn(tmp_path_factory) -> Path:
    """6 held-out scenes: 12 VQAv2 questions, their RefCOCO phrases, 6 captioned images."""
    from tinygpt.datasets.synthetic import generate

    out = tmp_path_factory.mktemp("syn")
    generate(str(out), train_images=2, eval_images=6, image_size=28, questions_per_image=2, vocab_size=300)
    return out


def synthetic_benchmarks(syn: Path, **common) -> dict[str, BenchmarkConfig]:
    """The three benchmarks the tiny eval config runs, on the synthetic layout."""
    ev = syn / "eval"
    benches = {
        "vqav2": BenchmarkConfig(questions=str(ev / "vqav2/questions.json"),
                                 annotations=str(ev / "vqav2/annotations.json"),
                                 image_root=str(ev / "images"), prompt="[vqa] {}"),
        "refcoco": BenchmarkConfig(annotations=str(ev / "refcoco/refcoco_val.json"),
                                   image_root=str(ev / "refcoco_images"), prompt="[refer] {}"),
    }
    if HAS_JAVA:  # pycocoevalcap's tokenizer and METEOR are Java programs
        benches["coco_caption"] = BenchmarkConfig(annotations=str(ev / "coco_caption/captions_val.json"),
                                                  image_root=str(ev / "images"), prompt="[caption]")
    for name, bench in benches.items():
        bench.scorer = name
        for key, value in dict(max_new_tokens=4, batch_size=4, **common).items():
            setattr(bench, key, value)
    return benches


@pytest.fixture(scope="module")
def official(syn, tmp_path_factory) -> dict[str, BenchmarkConfig]:
    """Small files in every other benchmark's official format, about the synthetic images."""
    d = tmp_path_factory.mktemp("official")
    ev = syn / "eval"
    vqa_q = json.loads((ev / "vqav2/questions.json").read_text())
    images = sorted(p.name for p in (ev / "images").iterdir())[:4]
    stems = [Path(n).stem for n in images]
    answers = ["red", "left", "two", "yes"]

    def ten(a):
        return [{"answer": a, "answer_confidence": "yes", "answer_id": i + 1} for i in range(10)]

    gqa = {f"g{i}": {"imageId": s, "question": f"what colour is shape {i}?", "answer": answers[i],
                     "types": {"structural": "query", "semantic": "attr"}, "isBalanced": True}
           for i, s in enumerate(stems)}
    gqa["g_unbalanced"] = dict(gqa["g0"], isBalanced=False)
    vizwiz = [{"image": n, "question": f"what is this {i}?", "answers": ten(answers[i]), "answer_type": "other",
               "answerable": 1} for i, n in enumerate(images)]
    vsr = [{"image": n, "caption": f"the circle is left of the square {i}", "label": i % 2, "relation": "left of"}
           for i, n in enumerate(images)]
    memes, icon_root = d / "memes", d / "iconqa"
    (memes / "img").mkdir(parents=True)
    hm, problems = [], {}
    for i, n in enumerate(images):
        img = Image.open(ev / "images" / n)
        img.save(memes / "img" / f"{i:05d}.png")
        hm.append({"id": 100 + i, "img": f"img/{i:05d}.png", "text": f"meme text {i}", "label": i % 2})
        (icon_root / f"{500 + i}").mkdir(parents=True)
        img.save(icon_root / f"{500 + i}" / "image.png")
        choices = ["circle", "square", "triangle"][: 2 + i % 2]
        problems[str(500 + i)] = {"question": "which shape is red?", "choices": choices, "answer": i % 2,
                                  "ques_type": "choose_txt"}
    problems["999"] = {"question": "not in the split", "choices": ["a", "b"], "answer": 0}
    files = {"gqa.json": gqa, "vizwiz.json": vizwiz, "problems.json": problems,
             "pid_splits.json": {"choose_txt_test": [str(500 + i) for i in range(4)]}}
    for name, obj in files.items():
        (d / name).write_text(json.dumps(obj))
    (d / "vsr.jsonl").write_text("".join(json.dumps(r) + "\n" for r in vsr))
    (d / "hm.jsonl").write_text("".join(json.dumps(r) + "\n" for r in hm))
    assert vqa_q["questions"]
    benches = {
        "okvqa": BenchmarkConfig(questions=str(ev / "vqav2/questions.json"),
                                 annotations=str(ev / "vqav2/annotations.json"), image_root=str(ev / "images")),
        "gqa": BenchmarkConfig(questions=str(d / "gqa.json"), image_root=str(ev / "images")),
        "vizwiz": BenchmarkConfig(annotations=str(d / "vizwiz.json"), image_root=str(ev / "images"),
                                  prompt="[vqa] The question is '{}' answer"),
        "iconqa": BenchmarkConfig(annotations=str(d / "problems.json"), questions=str(d / "pid_splits.json"),
                                  image_root=str(icon_root)),
        "vsr": BenchmarkConfig(annotations=str(d / "vsr.jsonl"), image_root=str(ev / "images"),
                               prompt="[vqa] true or false? {}"),
        "hateful_memes": BenchmarkConfig(annotations=str(d / "hm.jsonl"), image_root=str(memes),
                                         prompt="This is an image writting '{}'. Is this image hateful? Answer:"),
        "refcoco+": BenchmarkConfig(annotations=str(ev / "refcoco/refcoco_val.json"),
                                    image_root=str(ev / "refcoco_images"), prompt="[refer] {}"),
        "refcocog": BenchmarkConfig(annotations=str(ev / "refcoco/refcoco_val.json"),
                                    image_root=str(ev / "refcoco_images"), prompt="[refer] {}"),
    }
    for name, bench in benches.items():
        bench.scorer, bench.max_new_tokens, bench.batch_size, bench.max_samples = name, 3, 4, 4
    return benches


# ----------------------------------------------------------------------------- model
def eval_config(tiny_root: Path, out: Path, benchmarks: dict[str, BenchmarkConfig]):
    cfg = tiny_config(tiny_root)
    cfg.run.num_workers = 0
    cfg.evaluation.output_dir = str(out)
    cfg.evaluation.benchmarks = benchmarks
    return cfg


@pytest.fixture(scope="module")
def model(tiny_root):
    import tinygpt
    from tinygpt.common.rng import seed_everything

    seed_everything(0)
    return tinygpt.build_model(tiny_config(tiny_root), "cpu").eval()


class Calls:
    """Counts model.generate calls; raises on call number `fail_at` (a simulated crash)."""

    def __init__(self, model, monkeypatch, fail_at: int | None = None):
        self.n, self.fail_at, real = 0, fail_at, model.generate

        def generate(*args, **kwargs):
            self.n += 1
            if self.fail_at is not None and self.n == self.fail_at:
                raise KeyboardInterrupt("simulated crash")
            return real(*args, **kwargs)

        monkeypatch.setattr(model, "generate", generate)


def run(cfg, model, **kwargs):
    return EvaluationRunner(cfg, model, "cpu", prepare(cfg, select_benchmarks(cfg)), progress=False, **kwargs).run()


# ----------------------------------------------------------------------------- tests
def test_cli_end_to_end_on_the_synthetic_split(syn, tiny_root, tmp_path, capsys):
    out = tmp_path / "eval"
    cfg = eval_config(tiny_root, out, synthetic_benchmarks(syn))
    path = tmp_path / "tiny_eval.yaml"
    path.write_text(to_yaml(cfg))

    assert load_script("evaluate.py").main(["--cfg-path", str(path), "--no-progress"]) == 0
    printed = capsys.readouterr().out
    assert "| Benchmark | Metric | Score | N |" in printed
    assert f"results: {out / 'results.json'}" in printed and f"table: {out / 'results.md'}" in printed

    results = json.loads((out / "results.json").read_text())
    assert set(results["results"]) == set(cfg.evaluation.benchmarks) and not results["errors"]
    for label, r in results["results"].items():
        assert 0.0 <= r["overall"] <= 100.0, label
        assert r["compat"] is None and r["predictions"] == str(out / label / "predictions.json")
    n_refs = len(json.loads((syn / "eval/refcoco/refcoco_val.json").read_text()))
    assert results["results"]["vqav2"]["n"] == 12 and results["results"]["refcoco"]["n"] == n_refs
    if HAS_JAVA:
        assert {"Bleu_4", "METEOR", "ROUGE_L", "CIDEr"} <= set(results["results"]["coco_caption"]["breakdown"])
        captions = json.loads((out / "coco_caption/predictions.json").read_text())
        assert len(captions) == 6 and set(captions[0]) == {"image_id", "caption"}
    vqa = json.loads((out / "vqav2/predictions.json").read_text())
    assert [set(r) for r in vqa] == [{"question_id", "answer"}] * 12
    assert all(r["answer"] == r["answer"].strip().lower() for r in vqa)
    refs = json.loads((out / "refcoco/predictions.json").read_text())
    assert [set(r) for r in refs] == [{"id", "pred"}] * n_refs
    md = (out / "results.md").read_text()
    assert "| vqav2 | vqa_accuracy |" in md and "official metric" in md


def test_prompts_are_the_configured_instruction_after_the_image_unless_they_place_it(
        syn, tiny_root, tmp_path, model, monkeypatch):
    seen = []
    real = model.generate

    def generate(images, prompts, **kwargs):
        seen.extend(prompts)
        assert images.shape[1:] == (3, 28, 28) and kwargs["max_new_tokens"] == 4
        return real(images, prompts, **kwargs)

    monkeypatch.setattr(model, "generate", generate)
    benches = synthetic_benchmarks(syn, max_samples=2)
    benches = {"vqav2": benches["vqav2"]}
    benches["vqav2"].prompt = "[vqa] Based on the image, respond to this question with a short answer: {}"
    run(eval_config(tiny_root, tmp_path, benches), model)
    questions = json.loads((syn / "eval/vqav2/questions.json").read_text())["questions"]
    assert seen == [f"<Img><ImageHere></Img> [vqa] Based on the image, respond to this question with a short "
                    f"answer: {q['question']}" for q in questions[:2]]

    # a prompt that places the image itself (the tiny recipe asks the question first) is kept as is
    seen.clear()
    benches["vqav2"].prompt = "[vqa] {} <Img><ImageHere></Img>"
    run(eval_config(tiny_root, tmp_path / "question_first", benches), model)
    assert seen == [f"[vqa] {q['question']} <Img><ImageHere></Img>" for q in questions[:2]]
    # model.image_after_question (the tiny recipe) puts it after a prompt that does not place it
    seen.clear()
    benches["vqav2"].prompt = "[vqa] {}"
    monkeypatch.setattr(model.cfg, "image_after_question", True)  # the model's prompt style decides
    run(eval_config(tiny_root, tmp_path / "image_after", benches), model)
    assert seen == [f"[vqa] {q['question']} <Img><ImageHere></Img>" for q in questions[:2]]


def test_resume_skips_answered_questions(syn, tiny_root, tmp_path, model, monkeypatch):
    benches = {"vqav2": synthetic_benchmarks(syn)["vqav2"]}  # 12 questions, 3 batches of 4
    reference = eval_config(tiny_root, tmp_path / "reference", benches)
    calls = Calls(model, monkeypatch)
    run(reference, model)
    assert calls.n == 3

    cfg = eval_config(tiny_root, tmp_path / "resumed", benches)
    calls = Calls(model, monkeypatch, fail_at=2)
    with pytest.raises(KeyboardInterrupt):
        run(cfg, model)
    partial = tmp_path / "resumed/vqav2/predictions.rank0.jsonl"
    assert len(read_answers(str(partial.parent))) == 4 and not (partial.parent / "predictions.json").exists()
    with open(partial, "a") as f:
        f.write('{"key": "10000020", "rec')  # a line cut short by the crash is ignored

    (partial.parent / ".tmp-killed-merge.json").write_text("[")  # a write the kill interrupted
    calls = Calls(model, monkeypatch)
    report = run(cfg, model)
    assert calls.n == 2  # only the 8 unanswered questions were asked
    assert not list((tmp_path / "resumed").rglob(".tmp-*"))
    want = json.loads((tmp_path / "reference/vqav2/predictions.json").read_text())
    assert json.loads((tmp_path / "resumed/vqav2/predictions.json").read_text()) == want
    assert report.results["vqav2"]["n"] == 12

    calls = Calls(model, monkeypatch)
    report = run(cfg, model)  # everything answered: nothing asked, scored again
    assert calls.n == 0 and report.results["vqav2"]["n"] == 12


def test_changed_settings_refuse_to_resume_and_restart_discards(syn, tiny_root, tmp_path, model, monkeypatch):
    benches = {"vqav2": synthetic_benchmarks(syn, max_samples=4)["vqav2"]}
    run(eval_config(tiny_root, tmp_path, benches), model)
    benches["vqav2"].prompt = "[vqa] Answer: {}"
    cfg = eval_config(tiny_root, tmp_path, benches)
    with pytest.raises(ConfigError, match=r"different settings \(prompt\).*--restart"):
        run(cfg, model)
    calls = Calls(model, monkeypatch)
    run(cfg, model, restart=True)
    assert calls.n == 1
    # more questions than before: the first 4 are reused (max_samples is not a setting)
    benches["vqav2"].max_samples = 8
    calls = Calls(model, monkeypatch)
    assert run(eval_config(tiny_root, tmp_path, benches), model).results["vqav2"]["n"] == 8
    assert calls.n == 1


def test_every_benchmark_and_compat_rows(official, tiny_root, tmp_path, model):
    report = run(eval_config(tiny_root, tmp_path, official), model, compat="tinygptv")
    assert not report.errors, report.errors
    compat = {"gqa", "vizwiz", "iconqa", "vsr", "hateful_memes", "okvqa"}
    assert set(report.results) == set(official) | {f"{b} (tinygptv)" for b in compat}
    for row, r in report.results.items():
        high = 200.0 if row == "vsr (tinygptv)" else 100.0  # TinyGPT-V's VSR rule can count twice
        assert 0.0 <= r["overall"] <= high, row
        assert (r["compat"] == "tinygptv") == row.endswith("(tinygptv)")
        assert r["n"] == 4
    memes = json.loads((tmp_path / "hateful_memes/predictions.json").read_text())
    assert all(0.0 <= m["proba"] <= 1.0 and m["label"] == int(m["proba"] >= 0.5) and isinstance(m["answer"], str)
               for m in memes)
    icon = json.loads((tmp_path / "iconqa/predictions.json").read_text())
    assert [r["question_id"] for r in icon] == ["500", "501", "502", "503"]
    assert all(r["pred"] in range(2 + i % 2) for i, r in enumerate(icon))
    gqa = json.loads((tmp_path / "gqa/predictions.json").read_text())
    assert [r["questionId"] for r in gqa] == ["g0", "g1", "g2", "g3"]  # unbalanced questions are not asked
    md = (tmp_path / "results.md").read_text()
    assert "(tinygptv compat)" in md and "lenient" in md and "subset" in md


def test_candidate_losses_match_answer_losses(model):
    torch.manual_seed(0)
    images = torch.randn(2, 3, 28, 28)
    instructions = ["<Img><ImageHere></Img> [vqa] which?", "<Img><ImageHere></Img> [vqa] which shape is red?"]
    candidates = [["circle", "square"], ["a", "b", "triangle"]]
    got = candidate_losses(model, images, instructions, candidates)
    for i, cands in enumerate(candidates):
        repeated = images[i:i + 1].expand(len(cands), -1, -1, -1)
        want = model.answer_losses(repeated, [instructions[i]] * len(cands), cands)
        torch.testing.assert_close(torch.tensor(got[i]), want.float(), rtol=1e-4, atol=1e-5)


def test_yes_probability_ignores_left_padding(model):
    torch.manual_seed(0)
    images = torch.randn(2, 3, 28, 28)
    instructions = ["<Img><ImageHere></Img> short?", "<Img><ImageHere></Img> a much longer question about it?"]
    batch = yes_probability(model, images, instructions)
    alone = torch.cat([yes_probability(model, images[i:i + 1], instructions[i:i + 1]) for i in range(2)])
    assert ((batch >= 0) & (batch <= 1)).all()
    torch.testing.assert_close(batch, alone, rtol=1e-4, atol=1e-5)


# ----------------------------------------------------------------------------- errors and configs
def test_errors_name_the_config_key(syn, tiny_root, tmp_path):
    benches = synthetic_benchmarks(syn)
    benches["vqav2"].questions = str(tmp_path / "nope.json")
    cfg = eval_config(tiny_root, tmp_path, benches)
    with pytest.raises(ConfigError, match=r"evaluation\.benchmarks\.vqav2\.questions' points at .*nope\.json"):
        prepare(cfg, ["vqav2"])

    benches = synthetic_benchmarks(syn)
    benches["refcoco"].image_root = str(syn / "eval/images")  # the VQA images, not the refcoco ones
    with pytest.raises(ConfigError, match=r"refcoco\.image_root' is .* (\d+) of \1 images are missing"):
        prepare(eval_config(tiny_root, tmp_path, benches), ["refcoco"])

    benches = synthetic_benchmarks(syn)
    benches["refcoco"].prompt = "[refer] where is it?"
    with pytest.raises(ConfigError, match=r"refcoco\.prompt' .* needs a '\{\}'"):
        select_benchmarks(eval_config(tiny_root, tmp_path, benches))

    benches = synthetic_benchmarks(syn)
    benches["vqav2"].compat = "tinygptv"
    with pytest.raises(ConfigError, match=r"vqav2\.compat'.*compat modes: none"):
        select_benchmarks(eval_config(tiny_root, tmp_path, benches))

    benches = synthetic_benchmarks(syn)
    benches["textvqa"] = BenchmarkConfig(scorer="textvqa")
    with pytest.raises(ConfigError, match=r"unknown benchmark 'textvqa'; known benchmarks: .*gqa.*vqav2"):
        select_benchmarks(eval_config(tiny_root, tmp_path, benches))

    cfg = eval_config(tiny_root, tmp_path, synthetic_benchmarks(syn))
    with pytest.raises(ConfigError, match=r"'gqa' is not configured .* configured: vqav2, refcoco"):
        select_benchmarks(cfg, ["gqa"])
    with pytest.raises(ConfigError, match=r"unknown benchmark 'vqa3'; known benchmarks: .*coco_caption"):
        select_benchmarks(cfg, ["vqa3"])
    with pytest.raises(ConfigError, match=r"'refcoco' is not a vqa-family benchmark"):
        select_benchmarks(cfg, ["refcoco"], family="vqa")
    assert select_benchmarks(cfg, family="ref") == ["refcoco"]


def test_scripts_report_errors_before_loading_a_model(syn, tiny_root, tmp_path, capsys):
    benches = synthetic_benchmarks(syn)
    benches.pop("coco_caption", None)
    path = tmp_path / "cfg.yaml"
    path.write_text(to_yaml(eval_config(tiny_root, tmp_path, benches)))
    assert load_script("eval_vqa.py").main(["--cfg-path", str(path), "--dataset", "refcoco"]) == 2
    assert "eval_vqa.py: error: 'refcoco' is not a vqa-family benchmark" in capsys.readouterr().err
    assert load_script("eval_vqa.py").main(["--cfg-path", str(path), "--dataset", "hm"]) == 2
    err = capsys.readouterr().err
    assert "benchmark 'hm' is not configured (no 'evaluation.benchmarks.hateful_memes' entry)" in err
    assert load_script("eval_caption.py").main(["--cfg-path", str(path)]) == 2
    assert "no caption-family benchmarks (coco_caption)" in capsys.readouterr().err
    assert load_script("evaluate.py").main(["--cfg-path", str(path), "--options",
                                            "evaluation.benchmarks.vqav2.image_root=/nonexistent"]) == 2
    assert "key 'evaluation.benchmarks.vqav2.image_root' points at /nonexistent" in capsys.readouterr().err


@pytest.mark.parametrize("name, size", [("tinygptv_stage4.yaml", 448), ("tinygptv_stage1_3.yaml", 224)])
def test_full_size_eval_configs(name, size):
    import tinygpt

    cfg = tinygpt.load_config(ROOT / "eval_configs" / name)
    assert cfg.model.vision.image_size == size
    # The prompt style is the checkpoint's (read from TinyGPT-V's .pth config at load), not the YAML's.
    assert cfg.model.prompt_template is None and cfg.model.end_sym is None
    labels = select_benchmarks(cfg)
    scorers = {cfg.evaluation.benchmarks[label].scorer for label in labels}
    # every published benchmark the runner knows (vqa_jsonl scores a user's own split, docs/own-data.md)
    assert scorers == set(benchmark_names()) - {"vqa_jsonl"}
    b = cfg.evaluation.benchmarks
    assert b["gqa"].prompt == "[vqa] Based on the image, respond to this question with a short answer: {}"
    assert b["refcoco"].prompt == "[refer] give me the location of {}"
    assert b["vsr"].prompt == "[vqa] Based on the image, is this statement true or false? {}"
    for label in labels:
        for key in ("questions", "annotations", "image_root"):
            value = getattr(b[label], key)
            assert value is None or not Path(value).is_absolute(), (label, key)


def test_tiny_eval_config_runs_the_three_synthetic_benchmarks():
    path = ROOT / "eval_configs" / "tiny.yaml"
    if not path.exists():
        pytest.skip("eval_configs/tiny.yaml (the tiny recipe) is not in this checkout yet")
    import tinygpt

    cfg = tinygpt.load_config(path)
    labels = select_benchmarks(cfg)
    assert {cfg.evaluation.benchmarks[label].scorer for label in labels} == {"vqav2", "refcoco", "coco_caption"}
    if (ROOT / "data/synthetic/eval").is_dir():
        import os

        cwd = os.getcwd()
        os.chdir(ROOT)  # config paths are relative to the repository root
        try:
            splits = prepare(cfg, labels)
        finally:
            os.chdir(cwd)
        assert all(split.questions for split in splits.values())


def test_a_perfect_answerer_scores_100(syn, tiny_root, tmp_path, model):
    """Records reach the scorer matched to the right questions: gold answers score 100."""
    ev = syn / "eval"
    gold_vqa = {str(a["question_id"]): a["multiple_choice_answer"]
                for a in json.loads((ev / "vqav2/annotations.json").read_text())["annotations"]}
    gold_box = {}
    for r in json.loads((ev / "refcoco/refcoco_val.json").read_text()):
        x, y, w, h = r["bbox"]
        grid = [round(v * 100) for v in (x / r["width"], y / r["height"], (x + w) / r["width"], (y + h) / r["height"])]
        gold_box[str(r["id"])] = "{" + "".join(f"<{min(v, 99)}>" for v in grid) + "}"

    class Oracle(EvaluationRunner):
        def answer_batch(self, bench, batch, images):
            gold = gold_vqa if bench.scorer == "vqav2" else gold_box
            return [{**q.record, benchmark(bench.scorer).field: gold[q.key]} for q in batch]

    benches = synthetic_benchmarks(syn)
    benches.pop("coco_caption", None)
    cfg = eval_config(tiny_root, tmp_path, benches)
    report = Oracle(cfg, model, "cpu", prepare(cfg, select_benchmarks(cfg)), progress=False).run()
    assert report.results["vqav2"]["overall"] == 100.0
    assert report.results["refcoco"]["overall"] == 100.0


def test_questions_without_public_answers_are_answered_not_scored(syn, tiny_root, tmp_path, model):
    benches = {"vqav2": synthetic_benchmarks(syn, max_samples=2)["vqav2"]}
    benches["vqav2"].annotations = None  # like VQAv2 test-dev: submit predictions.json to EvalAI
    report = run(eval_config(tiny_root, tmp_path, benches), model)
    assert report.unscored == ["vqav2"] and not report.results and not report.errors
    assert len(json.loads((tmp_path / "vqav2/predictions.json").read_text())) == 2
    assert "no public annotations" in (tmp_path / "results.md").read_text()


def test_the_checkpoint_setting_is_its_content_not_its_path_or_time(tmp_path):
    import os

    from tinygpt.common.config import Config
    from tinygpt.evaluation.runner import settings_of

    first = tmp_path / "output" / "stage4" / "checkpoint_final.safetensors"
    first.parent.mkdir(parents=True)
    first.write_bytes(b"weights v1")
    copy = tmp_path / "elsewhere" / "checkpoint_final.safetensors"
    copy.parent.mkdir()
    shutil.copy(first, copy)
    os.utime(copy, (1, 1))  # copied output/ has other file times
    cfg = Config()
    bench = BenchmarkConfig(scorer="vqav2", questions="q.json", annotations="a.json")
    cfg.model.ckpt = [str(first)]
    a = settings_of(cfg, bench)
    cfg.model.ckpt = [str(copy)]
    assert settings_of(cfg, bench) == a
    copy.write_bytes(b"weights v2")  # retrained: other answers
    assert settings_of(cfg, bench)["ckpt"] != a["ckpt"]
