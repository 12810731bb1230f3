"""One server for the demo page and the JSON API: FastAPI routes first, Gradio mounted at `/`."""
from __future__ import annotations

import os
from typing import Optional, Sequence

from fastapi import FastAPI

from ..conversation.chat import Chat
from .api import create_api
from .validation import Limits


def build_app(chat: Chat, *, ui: bool = True, limits: Optional[Limits] = None,
              examples: Sequence[tuple[str, str]] = (), scheduler=None) -> FastAPI:
    """The ASGI app: `/worker_generate`, `/worker_get_status`, `/health`, and (with `ui`) the
    Gradio chat at `/`.  `scheduler`: one the caller made and closes (e.g. a ProcessScheduler);
    without it the app makes a thread scheduler of its own."""
    limits = limits or Limits()
    app = create_api(chat, limits, scheduler)
    if not ui:
        return app
    os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")  # no phoning home from a local demo
    import gradio as gr

    from .ui import build_ui

    demo = build_ui(chat, limits, examples, scheduler=app.state.scheduler)
    demo.queue(max_size=64)
    allowed = sorted({os.path.dirname(os.path.abspath(p)) for p, _ in examples})
    return gr.mount_gradio_app(app, demo, path="/", ssr_mode=False, max_file_size=limits.max_image_bytes,
                               allowed_paths=allowed or None)


def serve(app: FastAPI, host: str, port: int) -> None:
    """Run `app` with uvicorn until interrupted: idle keep-alive connections close after 5 s and a
    request must arrive whole within deadline.REQUEST_DEADLINE_S (stalled clients hold no slot).
    The event loop is uvloop where installed (the serve extra): the HTTP side of an answer shares one
    interpreter lock with the model thread, and uvloop's C loop took ~15% of the server's CPU per
    answer off it with 8 clients (docs/chat.md)."""
    import uvicorn

    from .deadline import DeadlineH11Protocol

    uvicorn.run(app, host=host, port=port, log_level="info", http=DeadlineH11Protocol, timeout_keep_alive=5,
                loop="auto")
