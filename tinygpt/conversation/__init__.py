"""The text protocol (`protocol`, `boxes`), chat histories and the `Chat` object shared by the
demo, the HTTP API and evaluators.

`protocol`, `boxes` and `history` are torch-free, so datasets and scorers import them without
loading a model stack; the torch-side names (`Chat`, ...) are imported on first use.
"""
from .history import Conversation
from .protocol import Dialogue, PromptStyle

_CHAT_NAMES = ("Chat", "GenerationOptions", "VisibleText", "model_lock")
__all__ = ["Conversation", "Dialogue", "PromptStyle", *_CHAT_NAMES]


def __getattr__(name: str):
    if name in _CHAT_NAMES:
        from . import chat

        return getattr(chat, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
