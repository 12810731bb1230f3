"""Fixtures for the chat tests: tiny random TinyGPT-V models (both templates) behind a Chat."""
from __future__ import annotations

import socket
import threading
import time

import pytest
import torch
from PIL import Image, ImageDraw

from tiny import build_tiny_model

INST = ("[INST] {} [/INST]", "###")  # TinyGPT-V stage 4


def tiny_processor(image_size: int = 28):
    from tinygpt.common.config import ProcessorConfig
    from tinygpt.processors import build_processor

    return build_processor(ProcessorConfig(name="blip2_image_eval", image_size=image_size))


def make_chat(model):
    from tinygpt.conversation import Chat, GenerationOptions

    # A random model may emit EOS at once: min_new_tokens keeps answers non-empty.
    return Chat(model, tiny_processor(model.cfg.vision.image_size), "cpu",
                defaults=GenerationOptions(min_new_tokens=3, max_new_tokens=6))


@pytest.fixture(scope="session")
def tiny_model(tiny_root):
    return build_tiny_model(tiny_root)


@pytest.fixture(scope="session")
def inst_model(tiny_root):
    return build_tiny_model(tiny_root, INST)


@pytest.fixture
def chat(tiny_model):
    return make_chat(tiny_model)


@pytest.fixture
def inst_chat(inst_model):
    return make_chat(inst_model)


@pytest.fixture(name="make_chat", scope="session")
def make_chat_fixture():
    """make_chat(model) -> a Chat with short non-empty answers."""
    return make_chat


def shapes_image(size=(96, 64)) -> Image.Image:
    image = Image.new("RGB", size, "white")
    draw = ImageDraw.Draw(image)
    draw.ellipse([8, 8, 40, 40], fill="red")
    draw.rectangle([50, 20, 90, 60], fill="blue")
    return image


@pytest.fixture
def image():
    return shapes_image()


@pytest.fixture
def image_file(tmp_path):
    path = tmp_path / "shapes.png"
    shapes_image().save(path)
    return path


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class ServerThread:
    """uvicorn serving `app` on 127.0.0.1:<free port> in a daemon thread, with the demo's HTTP protocol."""

    def __init__(self, app):
        import uvicorn

        from tinygpt.serve.deadline import DeadlineH11Protocol

        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=self.port, log_level="warning",
                                                    http=DeadlineH11Protocol))
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    def __enter__(self):
        self.thread.start()
        deadline = time.time() + 30
        while not self.server.started:
            if time.time() > deadline or not self.thread.is_alive():
                raise RuntimeError("uvicorn did not start")
            time.sleep(0.05)
        return self

    def __exit__(self, *exc):
        self.server.should_exit = True
        self.thread.join(timeout=10)


@pytest.fixture(name="engine", scope="session")
def engine_fixture(tiny_root):
    """engine(kind, limits) -> a context manager giving the scheduler `create_api` gets for that
    engine: None (the app makes its thread scheduler) or a ProcessScheduler whose model process
    builds the `tiny_model` fixture's model (same seed: same weights)."""
    import contextlib
    import functools

    @contextlib.contextmanager
    def engine(kind, limits):
        if kind == "thread":
            yield None
            return
        from tinygpt.serve.engine_process import ProcessScheduler

        scheduler = ProcessScheduler(functools.partial(build_tiny_model, tiny_root), limits)
        try:
            yield scheduler
        finally:
            scheduler.close()

    return engine


@pytest.fixture(name="serve", scope="session")
def serve_fixture():
    """serve(app) -> a context manager running `app` on 127.0.0.1 at a free port (`.url`)."""
    return ServerThread
