"""The Gradio chat demo: upload an image, talk about it, watch answers stream in.

One `Chat` session per browser tab (in `gr.State`), all sharing the model; with the server's
scheduler (app.py) the tabs' answers are rows of the same batch as the API's requests.  For
`[INST]`-style templates (the multi-task stage) the page adds task-tag buttons, a box editor for
`[identify]` (four numbers, or click two corners on the "Boxes" image) and draws every box an
answer mentions.
"""
from __future__ import annotations

import html
from pathlib import Path
from typing import Optional, Sequence

import gradio as gr
from PIL import Image

from ..conversation.chat import Chat
from ..conversation.boxes import Box, format_box, grid_point, parse_boxes
from ..conversation.protocol import TASK_TAGS
from .boxes import draw_boxes
from .scheduler import Busy, Scheduler, stream_session
from .validation import Limits, RequestError, check_options, check_text, open_image

TITLE = "TinyGPT-V"


def build_ui(chat: Chat, limits: Optional[Limits] = None,
             examples: Sequence[tuple[str, str]] = (), scheduler: Optional[Scheduler] = None) -> gr.Blocks:
    """The demo page for `chat`'s model; `examples` are (image path, question) pairs; without
    `scheduler` answers stream from the Chat itself (one at a time)."""
    limits = limits or Limits()
    defaults = chat.defaults
    instruct = chat.style.instruct

    def session_of(state: Optional[Chat]) -> Chat:
        return state if state is not None else chat.session()

    # ------------------------------------------------------------------ handlers
    def upload(session: Chat, path: str) -> None:
        # The page hands over the uploaded file's path (type="filepath", image_mode=None: Gradio
        # reads only its header), so the size is checked before anything is decoded.
        try:
            with open(path, "rb") as f:
                session.upload_image(open_image(f.read(), limits))
        except OSError as exc:
            raise gr.Error(f"cannot read the uploaded image: {exc.strerror or exc}") from None
        except RequestError as exc:
            raise gr.Error(exc.message) from None

    def on_image(image, state):
        session = session_of(state)
        if image is None:
            session.reset()
            return session, [], None
        upload(session, image)
        return session, [], session.image

    def on_reset(image, state):
        session = session_of(state)
        if image is not None and session.image is not None:
            session.restart()  # same image, fresh conversation
        else:
            session.reset()
        return session, [], session.image, ""

    def respond(text, image, history, state, temperature, beams, max_new_tokens, *box):
        session = session_of(state)
        history = list(history or [])
        try:
            text = check_text(text or "", limits)
            options = dict(temperature=float(temperature), num_beams=int(beams),
                           max_new_tokens=int(max_new_tokens))
            check_options(options, limits)
        except RequestError as exc:
            raise gr.Error(exc.message) from None
        if image is None:
            raise gr.Error("Upload an image first.")
        if session.image is None:  # e.g. the page kept an image across a server restart
            upload(session, image)
        marked = []
        if instruct and text.startswith("[identify]"):
            if not parse_boxes(text) and _box_set(box):
                text = f"{text} {format_box(*box)}"
            marked = parse_boxes(text)
        session.ask(text)
        history += [{"role": "user", "content": _show(text)}, {"role": "assistant", "content": ""}]
        yield "", history, session, _annotate(session.image, marked)
        answer = ""
        try:
            for piece in stream_session(scheduler, session, **options) if scheduler else session.stream(**options):
                answer += piece
                history[-1] = {"role": "assistant", "content": _show(answer)}
                yield "", history, session, gr.skip()
        except Busy as exc:
            raise gr.Error(str(exc)) from None
        final = session.history[-1][1]
        history[-1] = {"role": "assistant", "content": _show(final)}
        yield "", history, session, _annotate(session.image, marked + parse_boxes(final))

    def on_select(annotated, x1, y1, x2, y2, corner, evt: gr.SelectData):
        if annotated is None or evt.index is None:
            return x1, y1, x2, y2, corner
        gx, gy = grid_point(evt.index[0], evt.index[1], *annotated.size)
        if corner == 0:  # first click: top-left corner; the second click completes the box
            return gx, gy, gx, gy, 1
        return x1, y1, gx, gy, 0

    def on_box(state, x1, y1, x2, y2):
        session = session_of(state)
        if session.image is None or not _box_set((x1, y1, x2, y2)):
            return gr.skip()
        return _annotate(session.image, parse_boxes(format_box(x1, y1, x2, y2)))

    # ------------------------------------------------------------------ layout
    with gr.Blocks(title=TITLE, analytics_enabled=False) as demo:
        gr.Markdown(f"# {TITLE}\nUpload an image, then ask about it. Template: "
                    f"`{chat.style.template}`")
        state = gr.State(None)
        with gr.Row():
            with gr.Column(scale=2):
                image = gr.Image(type="filepath", image_mode=None, label="Image", sources=["upload", "clipboard"],
                                 height=300, elem_id="tinygpt-image")
                annotated = gr.Image(type="pil", label="Boxes (click two corners to set a box)" if instruct
                                     else "Boxes", interactive=False, height=300, visible=instruct,
                                     elem_id="tinygpt-boxes")
                box = []
                corner = gr.State(0)
                with gr.Row(visible=instruct):
                    for name in ("x1", "y1", "x2", "y2"):
                        box.append(gr.Number(label=name, minimum=0, maximum=99, precision=0, value=None,
                                             min_width=60, elem_id=f"tinygpt-{name}"))
                temperature = gr.Slider(0.0, min(2.0, limits.max_temperature), value=defaults.temperature,
                                        step=0.05, label="Temperature (0 = greedy)")
                beams = gr.Slider(1, limits.max_beams, value=defaults.num_beams, step=1, label="Beams")
                max_new = gr.Slider(1, limits.max_new_tokens, value=min(defaults.max_new_tokens, limits.max_new_tokens),
                                    step=1, label="Max new tokens")
                reset = gr.Button("Reset conversation", elem_id="tinygpt-reset")
            with gr.Column(scale=3):
                chatbot = gr.Chatbot(label=TITLE, height=460, render_markdown=False, elem_id="tinygpt-chatbot")
                tags = []
                if instruct:
                    with gr.Row():
                        tags = [gr.Button(tag, size="sm", min_width=60, elem_id=f"tinygpt-tag-{tag[1:-1]}")
                                for tag in TASK_TAGS]
                with gr.Row():
                    text = gr.Textbox(show_label=False, placeholder="Ask about the image and press Enter",
                                      scale=5, elem_id="tinygpt-text")
                    send = gr.Button("Send", variant="primary", scale=1, min_width=80, elem_id="tinygpt-send")
                if examples:
                    gr.Examples([[str(p), q] for p, q in examples], inputs=[image, text], label="Examples")

        image.change(on_image, [image, state], [state, chatbot, annotated])
        reset.click(on_reset, [image, state], [state, chatbot, annotated, text])
        inputs = [text, image, chatbot, state, temperature, beams, max_new, *box]
        outputs = [text, chatbot, state, annotated]
        text.submit(respond, inputs, outputs)
        send.click(respond, inputs, outputs)
        for button, tag in zip(tags, TASK_TAGS):
            button.click(lambda t, tag=tag: _with_tag(tag, t), text, text)
        if instruct:
            annotated.select(on_select, [annotated, *box, corner], [*box, corner])
            for number in box:
                number.change(on_box, [state, *box], annotated)
    return demo


def _with_tag(tag: str, text: Optional[str]) -> str:
    """`text` with its task tag replaced by `tag`."""
    text = (text or "").strip()
    for known in TASK_TAGS:
        if text.startswith(known):
            text = text[len(known):].lstrip()
    return f"{tag} {text}".rstrip() + " "


def _box_set(box) -> bool:
    return all(v is not None for v in box) and (box[0] != box[2] or box[1] != box[3])


def _annotate(image: Optional[Image.Image], boxes: list[Box]):
    return None if image is None else draw_boxes(image, boxes)


def _show(text: str) -> str:
    # Shown as plain text (render_markdown=False), but HTML tags would still be interpreted: escape so
    # `<p>`, `<delim>` and `{<1><2><3><4>}` stay visible.
    return html.escape(text, quote=False)


def synthetic_examples(root: Path = Path("data/synthetic/eval"), instruct: bool = False,
                       limit: int = 4) -> list[tuple[str, str]]:
    """(image, question) pairs from the synthetic eval set when it is there (`images/` +
    `vqav2/questions.json`, as the synthetic generator writes them); `[vqa] ` is prefixed for
    `[INST]`-style templates.  Images without a question get a generic one."""
    import json

    images_dir = root / "images"
    if not images_dir.is_dir():
        return []
    images = sorted(p for p in images_dir.iterdir() if p.suffix.lower() in {".png", ".jpg", ".jpeg", ".webp"})
    questions: dict[str, str] = {}
    try:
        records = json.loads((root / "vqav2" / "questions.json").read_text())["questions"]
        for rec in records:
            name = f"COCO_val2014_{int(rec['image_id']):012d}.jpg"
            questions.setdefault(name, str(rec["question"]))
    except (OSError, ValueError, KeyError, TypeError):
        pass  # no (readable) questions: generic ones below
    generic = ("Describe this image.", "What shapes are in the image?", "What colour is the largest shape?")
    out = []
    for i, path in enumerate(images[:limit]):
        question = questions.get(path.name, generic[i % len(generic)])
        out.append((str(path), f"[vqa] {question}" if instruct else question))
    return out
