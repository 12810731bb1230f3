"""COCO captions through the real pycocoevalcap (Java), the missing-Java error, SPICE offline."""
import json

import pytest

import tinygpt.evaluation.benchmarks.coco_caption as captions
from tinygpt.evaluation import MissingToolError, get_scorer

ANN = {"images": [{"id": 1}, {"id": 2}], "annotations": [
    {"image_id": 1, "id": 10, "caption": "A brown dog runs across the green grass."},
    {"image_id": 1, "id": 11, "caption": "A dog running on a lawn."},
    {"image_id": 2, "id": 20, "caption": "Two people ride bicycles down a city street."},
    {"image_id": 2, "id": 21, "caption": "Cyclists on a busy road in town."},
]}
EXACT = [{"image_id": 1, "caption": "A brown dog runs across the green grass."},
         {"image_id": 2, "caption": "Two people ride bicycles down a city street."}]
WRONG = [{"image_id": 1, "caption": "A plate of food on a table."},
         {"image_id": 2, "caption": "A cat sleeping."}]


def test_caption_metrics_with_pycocoevalcap(tmp_path):
    ann = tmp_path / "coco_karpathy_test_gt.json"
    ann.write_text(json.dumps(ANN))
    exact = get_scorer("coco_caption").score(EXACT, ann=str(ann))
    b = exact["breakdown"]
    assert set(b) == {"Bleu_1", "Bleu_2", "Bleu_3", "Bleu_4", "METEOR", "ROUGE_L", "CIDEr"}
    # a caption identical to a reference: every n-gram matches and the LCS is the whole sentence
    assert b["Bleu_4"] == 100.0 and b["ROUGE_L"] == 100.0
    assert 90.0 < b["METEOR"] <= 100.0  # METEOR keeps a small fragmentation penalty
    assert exact["overall"] == b["CIDEr"] > 0 and exact["n"] == 2 and exact["metric"] == "cider"
    wrong = get_scorer("coco_caption").score(WRONG, ann=str(ann))["breakdown"]
    assert wrong["Bleu_4"] < 1.0 and wrong["CIDEr"] < b["CIDEr"] / 10 and wrong["METEOR"] < 30.0
    # Per image (COCOEvalCap's evalImgs), beside the corpus figures: one right caption, one wrong.
    mixed = get_scorer("coco_caption").score([EXACT[0], WRONG[1]], ann=str(ann))
    images = mixed["per_image"]
    assert set(images) == {"1", "2"} and set(images["1"]) == set(b)
    assert images["1"]["ROUGE_L"] == 100.0 and images["2"]["ROUGE_L"] < 50.0
    assert images["1"]["CIDEr"] > images["2"]["CIDEr"]
    assert mixed["breakdown"]["CIDEr"] == pytest.approx((images["1"]["CIDEr"] + images["2"]["CIDEr"]) / 2, abs=0.01)


def test_missing_java_is_a_clear_error(monkeypatch):
    monkeypatch.setattr(captions.shutil, "which", lambda name: None)
    with pytest.raises(MissingToolError, match="install a JRE"):
        get_scorer("coco_caption").score(EXACT, ann=ANN)


def test_spice_failure_keeps_the_other_metrics(monkeypatch):
    import pycocoevalcap.spice.spice as spice_module

    def offline():
        raise OSError("Name or service not known")

    monkeypatch.setattr(spice_module, "get_stanford_models", offline)
    r = get_scorer("coco_caption", spice=True).score(EXACT, ann=ANN)
    assert "SPICE" not in r["breakdown"] and r["breakdown"]["Bleu_4"] == 100.0
    assert any("SPICE skipped" in n and "Name or service not known" in n for n in r["notes"])
