"""Boxes `{<x1><y1><x2><y2>}` (0-99 grid): parsing answers, drawing them, the demo's box helpers."""
from __future__ import annotations

import json

import pytest

from PIL import Image

from tinygpt.conversation.boxes import Box, format_box, grid_point, parse_boxes, strip_boxes
from tinygpt.serve.boxes import draw_boxes
from tinygpt.serve.ui import _box_set, _with_tag, build_ui, synthetic_examples


def test_parse_refer_answer():
    assert parse_boxes("{<10><20><30><40>}") == [Box(10, 20, 30, 40)]
    assert parse_boxes(" { <10> <20><30><40> } ") == [Box(10, 20, 30, 40)]


def test_parse_grounding_and_detection():
    text = ("<p>red circle</p> {<10><12><30><40>}<delim>{<50><50><60><70>} and "
            "<p>cat</p> {<1><2><3><4><delim><5><6><7><8>}")
    assert parse_boxes(text) == [Box(10, 12, 30, 40, "red circle"), Box(50, 50, 60, 70, "red circle"),
                                 Box(1, 2, 3, 4, "cat"), Box(5, 6, 7, 8, "cat")]
    assert strip_boxes(text) == "red circle and cat"


def test_parse_orders_and_clamps_and_ignores_junk():
    assert parse_boxes("{<30><40><10><20>}") == [Box(10, 20, 30, 40)]
    assert parse_boxes("{<0><0><100><250>}") == [Box(0, 0, 99, 99)]
    assert parse_boxes("{<10><20><30>} <1><2><3><4> {<a><b><c><d>} nothing") == []


def test_format_box():
    assert format_box(10, 20, 30, 40) == "{<10><20><30><40>}"
    assert format_box(30.4, 40, 10, 120) == "{<10><40><30><99>}"
    assert str(Box(1, 2, 3, 4)) == "{<1><2><3><4>}"
    assert parse_boxes(format_box(5, 6, 7, 8)) == [Box(5, 6, 7, 8)]


def test_grid_point():
    assert grid_point(0, 0, 200, 100) == (0, 0)
    assert grid_point(100, 50, 200, 100) == (50, 50)
    assert grid_point(199.9, 99.9, 200, 100) == (99, 99)
    assert grid_point(500, -3, 200, 100) == (99, 0)


def test_draw_boxes():
    image = Image.new("RGB", (200, 100), "white")
    out = draw_boxes(image, [Box(10, 20, 50, 80, "thing"), Box(60, 10, 90, 90)])
    assert out.size == image.size and image.getpixel((20, 20)) == (255, 255, 255)  # original untouched
    assert out.getpixel((20, 21)) != (255, 255, 255)  # left edge of box 1 at x = 10/100*200
    assert out.getpixel((60, 50)) == (255, 255, 255)  # inside the box: not filled
    assert out.getpixel((120, 50)) != (255, 255, 255)  # left edge of box 2
    assert draw_boxes(image, []).tobytes() == image.tobytes()


def test_task_tag_buttons_replace_the_tag():
    assert _with_tag("[refer]", "") == "[refer] "
    assert _with_tag("[refer]", "the blue square") == "[refer] the blue square "
    assert _with_tag("[identify]", "[refer] the blue square") == "[identify] the blue square "


def test_box_inputs_set():
    assert _box_set((1, 2, 3, 4)) and not _box_set((None, 2, 3, 4)) and not _box_set((0, 0, 0, 0))


def test_ui_builds_for_both_templates(chat, inst_chat):
    assert build_ui(chat) is not None
    assert build_ui(inst_chat, examples=[("x.png", "[vqa] what?")]) is not None


def test_synthetic_examples(tmp_path):
    assert synthetic_examples(tmp_path / "absent") == []
    images = tmp_path / "images"
    images.mkdir()
    for i in (1, 2):
        Image.new("RGB", (8, 8)).save(images / f"COCO_val2014_{1_000_000 + i:012d}.jpg")
    (tmp_path / "vqav2").mkdir()
    (tmp_path / "vqav2" / "questions.json").write_text(json.dumps(
        {"questions": [{"question_id": 1, "image_id": 1_000_001, "question": "How many circles?"}]}))
    examples = synthetic_examples(tmp_path, instruct=True)
    assert [q for _, q in examples] == ["[vqa] How many circles?", "[vqa] What shapes are in the image?"]
    assert synthetic_examples(tmp_path)[0][1] == "How many circles?"


def test_ui_upload_is_size_checked_before_it_is_decoded(chat, tmp_path):
    """The page hands the uploaded file's path over undecoded (Gradio reads only its header), and the
    demo's upload handler refuses an over-limit image from its header."""
    import struct
    import zlib

    import gradio as gr
    from gradio.data_classes import ImageData

    from tinygpt.serve.validation import Limits

    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    huge = tmp_path / "huge.png"  # declares 12000 x 12000, holds no pixels
    huge.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", 12000, 12000, 8, 2, 0, 0, 0))
                     + chunk(b"IDAT", b"") + chunk(b"IEND", b""))
    demo = build_ui(chat, Limits())
    upload = next(b for b in demo.blocks.values() if getattr(b, "elem_id", None) == "tinygpt-image")
    assert (upload.type, upload.image_mode) == ("filepath", None)
    assert upload.preprocess(ImageData(path=str(huge), orig_name="huge.png")) == str(huge)  # not decoded
    on_image = next(fn.fn for fn in demo.fns.values() if getattr(fn.fn, "__name__", "") == "on_image")
    with pytest.raises(gr.Error, match="pixels"):
        on_image(str(huge), None)
