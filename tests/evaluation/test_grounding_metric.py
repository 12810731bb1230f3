"""RefCOCO: box parsing, grid -> pixel mapping, IoU, Acc@IoU>0.5 on MiniGPT-v2's eval format."""
import json

import pytest

from tinygpt.evaluation import EvalInputError, get_scorer
from tinygpt.evaluation.benchmarks.refcoco import grid_box_to_pixels, iou_inclusive, iou_xyxy, minigptv2_box, parse_box


def test_parse_box():
    assert parse_box("{<10><20><30><40>}") == (10, 20, 30, 40)
    assert parse_box("{ <10> <20><30> < 40 > }") == (10, 20, 30, 40)
    assert parse_box("the dog {<1><2><3><4>} and {<5><6><7><8>}") == (1, 2, 3, 4)
    assert parse_box("{<10><20><30>}") is None
    assert parse_box("{<10><20><30><400>}") is None  # off the 0..99 grid
    assert parse_box("no box here") is None


def test_grid_to_pixels_and_iou():
    assert grid_box_to_pixels((10, 20, 60, 80), 200, 100) == (20.0, 20.0, 120.0, 80.0)
    assert iou_xyxy((0, 0, 10, 10), (5, 0, 15, 10)) == pytest.approx(1 / 3)
    assert iou_xyxy((0, 0, 10, 10), (20, 20, 30, 30)) == 0.0
    assert iou_xyxy((5, 5, 5, 9), (0, 0, 10, 10)) == 0.0  # degenerate box


ANN = [
    {"img_id": 1, "sents": "dog on the left", "bbox": [20, 20, 100, 60], "height": 100, "width": 200},
    {"img_id": 2, "sents": "top half", "bbox": [0, 0, 50, 50], "height": 100, "width": 100},
    {"img_id": 3, "sents": "the red car", "bbox": [0, 0, 10, 10], "height": 50, "width": 50},
    # same image and sentence as the first: matched by order
    {"img_id": 1, "sents": "dog on the left", "bbox": [0, 0, 10, 10], "height": 100, "width": 200},
]
PREDS = [
    {"img_id": 1, "sents": "dog on the left", "pred": "{<10><20><60><80>}"},  # IoU 1
    {"img_id": 2, "sents": "top half", "pred": "{<0><0><50><100>}"},          # IoU exactly 0.5: miss
    {"img_id": 3, "sents": "the red car", "pred": "I cannot find it"},        # unparseable
    {"img_id": 1, "sents": "dog on the left", "pred": "{< 0 >< 0 >< 5 ><10>}"},  # IoU 1
]


def test_refcoco_scorer(tmp_path):
    ann, pred = tmp_path / "refcoco_val.json", tmp_path / "pred.json"
    ann.write_text(json.dumps(ANN))
    pred.write_text(json.dumps(PREDS))
    r = get_scorer("refcoco").score(str(pred), ann=str(ann))
    assert r["metric"] == "acc@iou>0.5"
    # MiniGPT-v2's protocol: the exact-0.5 box of img 2 is a hit with the +1-pixel IoU (2601/5151).
    assert r["overall"] == 75.0
    assert r["breakdown"] == {"strict_acc@iou>0.5": 50.0, "mean_iou": 62.5, "not_read_by_protocol": 1,
                              "unparseable": 1}


def test_refcoco_by_id_and_variants():
    ann = [dict(a, id=i) for i, a in enumerate(ANN)]
    preds = [{"id": i, "pred": p["pred"]} for i, p in reversed(list(enumerate(PREDS)))]
    for name in ("refcoco", "refcoco+", "refcocog"):
        r = get_scorer(name).score(preds, ann=ann)
        assert r["benchmark"] == name and r["overall"] == 75.0


def test_refcoco_missing_prediction():
    with pytest.raises(EvalInputError, match=r"no prediction for \(img_id, sents\) \(3, 'the red car'\)"):
        get_scorer("refcoco").score(PREDS[:2] + PREDS[3:], ann=ANN)


def test_the_protocol_reads_boxes_as_minigptv2_eval_ref_does():
    assert minigptv2_box("{<10><20><30><40>}") == (10, 20, 30, 40)
    assert minigptv2_box(" { <10> <20><30> <40> }<unk>") == (10, 20, 30, 40)  # spaces and <unk> removed
    assert minigptv2_box("{<10><20><300><400>}") == (10, 20, 300, 400)  # no range check
    assert minigptv2_box("the dog {<1><2><3><4>}") is None  # must start with the box
    assert minigptv2_box("{<1><2><3><4>} and 5 more") is None  # five integers: its unpacking fails
    assert minigptv2_box("{<1><2><3><4444>}") is None  # four digits


def test_inclusive_iou_is_the_refer_toolkits():
    # The case: {<10><10><20><30>} vs [10, 10, 20, 20] (x, y, w, h) in a 100 x 100 image.
    pred, gold = grid_box_to_pixels((10, 10, 20, 30), 100, 100), (10, 10, 30, 30)
    assert iou_inclusive(pred, gold) == pytest.approx(231 / 441)  # 11 x 21 over 21 x 21
    assert iou_xyxy(pred, gold) == 0.5
    r = get_scorer("refcoco").score([{"img_id": 1, "sents": "s", "pred": "{<10><10><20><30>}"}],
                                    ann=[{"img_id": 1, "sents": "s", "bbox": [10, 10, 20, 20],
                                          "height": 100, "width": 100}])
    assert r["overall"] == 100.0 and r["breakdown"]["strict_acc@iou>0.5"] == 0.0
