"""COCO captioning metrics through `pycocoevalcap`: BLEU-1..4, METEOR, ROUGE-L, CIDEr (+ SPICE).

We call pycocoevalcap's own tokenizer and scorers (the numbers everyone publishes come from
them) on {image_id: [captions]} dicts, which is what its `COCOEvalCap` does internally; this keeps
pycocotools out of the path.  Scores are reported x100 (CIDEr 1.172 -> 117.2), `overall` = CIDEr.

The PTB tokenizer, METEOR and SPICE are Java programs: without a `java` on PATH we stop with a
message saying to install a JRE rather than a FileNotFoundError from deep inside subprocess.
SPICE (`spice=True`) first downloads Stanford CoreNLP models (~1 GB) into the pycocoevalcap
install and wants a Java 8 runtime; offline or on a newer JVM it fails.  That failure becomes a
note in the result, and the other metrics are still returned.


"""
from __future__ import annotations

import contextlib
import io
import shutil
from collections import defaultdict
from typing import Any

from tinygpt.common.errors import UserError
from tinygpt.common.registry import registry
from tinygpt.evaluation.formats import EvalInputError, expect_list, load_json, require, source_name
from tinygpt.evaluation.metrics.base import Scorer
from tinygpt.evaluation.questions import Question, Source, Split, cut, question_reader
from tinygpt.evaluation.questions import coco_image_names


def read_predictions(pred: Any, ann: Any) -> tuple[dict, dict]:
    """COCO caption annotations `{"images": [...], "annotations": [{"image_id", "caption", "id"}]}`
    and results `[{"image_id", "caption"}]`, one per image.

    Returns (gts, res): {image_id: [captions]}.  Every annotated image needs exactly one result
    (the official loader would quietly score a subset; a silent subset is how wrong numbers get
    published), and a result for an image without references is an error.
    """
    ann_name, pred_name = source_name(ann, "annotations"), source_name(pred, "results")
    anns = expect_list(load_json(ann, "annotations"), ann_name, "annotations")
    gts: dict = defaultdict(list)
    for i, a in enumerate(anns):
        gts[require(a, "image_id", ann_name, i, (int, str))].append(
            require(a, "caption", ann_name, i, str))
    preds = expect_list(load_json(pred, "results"), pred_name)
    res = {}
    for i, p in enumerate(preds):
        image_id = require(p, "image_id", pred_name, i, (int, str))
        if image_id in res:
            raise EvalInputError(f"{pred_name}: more than one caption for image_id {image_id!r}")
        if image_id not in gts:
            raise EvalInputError(f"{pred_name}: result for unknown image_id {image_id!r} "
                                 "(no reference captions)")
        res[image_id] = [require(p, "caption", pred_name, i, str)]
    missing = next((k for k in gts if k not in res), None)
    if missing is not None:
        raise EvalInputError(f"{pred_name}: no caption for image_id {missing!r}")
    return dict(gts), res


@question_reader
def questions_to_ask(src: Source) -> Split:
    """COCO captions {"images": [{"id", "file_name"?}], "annotations": [{"image_id", "caption"}]}
    (captions_val2014.json, or the Karpathy test split's coco_karpathy_test_gt.json): one question
    per image that has reference captions.  Images: file_name, else COCO_val2014_<id:012d>.jpg."""
    path, data = src.load("annotations", fallback="questions", what="annotations")
    anns = expect_list(data, path, "annotations")
    images = expect_list(data["images"], path) if "images" in data else []
    annotated: dict = {}
    for i, a in enumerate(anns):
        annotated.setdefault(require(a, "image_id", path, i, (int, str)), None)
    # the images list gives the order; annotated images missing from it go last
    ids = list(dict.fromkeys([img.get("id") for img in images if img.get("id") in annotated] + list(annotated)))
    ids = cut(ids, src.bench.max_samples)
    file_names = {img.get("id"): img.get("file_name") for img in images if isinstance(img.get("file_name"), str)}
    questions = [Question(str(i), "", {"image_id": i},
                          ([file_names[i]] if i in file_names else []) + coco_image_names(i, "val2014"))
                 for i in ids]
    src.find_images(questions)
    if src.bench.max_samples <= 0:
        return Split(questions, path)
    keep = set(ids)
    return Split(questions, {"images": [img for img in images if img.get("id") in keep],
                             "annotations": [a for a in anns if a["image_id"] in keep]})


class MissingToolError(UserError):
    """An external program a metric needs (here: java) is not installed."""


def require_java() -> None:
    if shutil.which("java") is None:
        raise MissingToolError(
            "caption metrics need Java (pycocoevalcap's PTB tokenizer, METEOR and SPICE are Java "
            "programs) but `java` is not on PATH: install a JRE, e.g. `apt-get install "
            "default-jre-headless`, then retry")


def caption_metrics(gts: dict, res: dict, spice: bool = False) -> tuple[dict[str, float], list[str], dict]:
    """({metric: score x100, 2 decimals}, notes, {image_id: {metric: score x100}}) for references
    `gts` and one caption per image `res` -- the corpus figures and, as COCOEvalCap's `evalImgs`,
    each image's own.  `gts` / `res`: {image_id: [caption, ...]} with the same keys.
    """
    require_java()
    from pycocoevalcap.bleu.bleu import Bleu
    from pycocoevalcap.cider.cider import Cider
    from pycocoevalcap.meteor.meteor import Meteor
    from pycocoevalcap.rouge.rouge import Rouge
    from pycocoevalcap.tokenizer.ptbtokenizer import PTBTokenizer

    tokenizer = PTBTokenizer()
    gts_tok = tokenizer.tokenize({k: [{"caption": c} for c in v] for k, v in gts.items()})
    res_tok = tokenizer.tokenize({k: [{"caption": c} for c in v] for k, v in res.items()})
    # An empty caption may vanish in tokenization; the scorers need every image present.
    res_tok = {k: res_tok.get(k, [""]) for k in gts_tok}

    scores: dict[str, float] = {}
    per_image: dict[str, list] = {}  # metric -> one score per image, in the order of gts_tok
    notes: list[str] = []
    with contextlib.redirect_stdout(io.StringIO()):  # the BLEU scorer prints its length stats
        bleu, bleu_images = Bleu(4).compute_score(gts_tok, res_tok)
    for n, (value, images) in enumerate(zip(bleu, bleu_images), 1):
        scores[f"Bleu_{n}"], per_image[f"Bleu_{n}"] = value, images
    meteor = Meteor()
    try:
        scores["METEOR"], per_image["METEOR"] = meteor.compute_score(gts_tok, res_tok)
    finally:
        del meteor  # its __del__ stops the java subprocess
    scores["ROUGE_L"], per_image["ROUGE_L"] = Rouge().compute_score(gts_tok, res_tok)
    scores["CIDEr"], per_image["CIDEr"] = Cider().compute_score(gts_tok, res_tok)
    if spice:
        try:
            from pycocoevalcap.spice.spice import Spice
            with contextlib.redirect_stdout(io.StringIO()):
                scores["SPICE"], spice_images = Spice().compute_score(gts_tok, res_tok)
                per_image["SPICE"] = [item["All"]["f"] for item in spice_images]
        except Exception as e:  # noqa: BLE001 - any SPICE failure must not cost the other metrics
            msg = (f"SPICE skipped ({type(e).__name__}: {e}). SPICE downloads Stanford CoreNLP "
                   "3.6.0 models on first use (needs internet) and runs best on Java 8; the other "
                   "metrics are unaffected.")
            notes.append(msg)
    images = {str(image_id): {metric: round(100 * float(values[i]), 2) for metric, values in per_image.items()}
              for i, image_id in enumerate(gts_tok)}
    return {k: round(100 * float(v), 2) for k, v in scores.items()}, notes, images


@registry.register("benchmark", "coco_caption")
class CocoCaptionScorer(Scorer):
    """COCO captions (e.g. the Karpathy test split): CIDEr overall, the rest in the breakdown."""

    family = "caption"
    mode, field, lower, asks_question = "generate", "caption", False, False
    questions_to_ask = staticmethod(questions_to_ask)

    name = "coco_caption"
    metric = "cider"

    def __init__(self, spice: bool = False) -> None:
        self.spice = spice

    def _score(self, pred: Any, ann: Any, ques: Any, compat: str | None) -> dict:
        gts, res = read_predictions(pred, ann)
        scores, notes, per_image = caption_metrics(gts, res, spice=self.spice)
        return {"overall": scores["CIDEr"], "n": len(res), "breakdown": scores, "per_image": per_image,
                "notes": notes}
