"""Chat in the terminal about one image: one question per line, `/reset` starts over, `/quit` ends.

Reads lines from `stdin` until EOF, so it works with piped input:
    printf 'what is this?\\nand its colour?\\n' | python demo.py --cli --image cat.jpg
"""
from __future__ import annotations

from typing import TextIO

from PIL import Image

from ..conversation.chat import Chat
from .validation import Limits, RequestError, open_image

HELP = "Type a question and press Enter; /reset starts a new conversation, /quit (or EOF) ends."


def run_cli(chat: Chat, image_path: str, stdin: TextIO, stdout: TextIO, stderr: TextIO,
            options: dict | None = None, limits: Limits | None = None) -> int:
    """The terminal chat loop; returns the process exit code (2: the image cannot be used)."""
    options = options or {}
    try:
        with open(image_path, "rb") as f:
            image: Image.Image = open_image(f.read(), limits or Limits())
    except OSError as exc:
        print(f"demo.py: cannot read --image {image_path}: {exc.strerror or exc}", file=stderr)
        return 2
    except RequestError as exc:
        print(f"demo.py: --image {image_path}: {exc.message}", file=stderr)
        return 2
    chat.upload_image(image)
    interactive = stdin.isatty()
    print(f"Chatting about {image_path} ({chat.style.describe()}). {HELP}", file=stderr)
    while True:
        if interactive:
            stdout.write("You: ")
            stdout.flush()
        line = stdin.readline()
        if not line:  # EOF
            break
        line = line.strip()
        if not line:
            continue
        if line == "/quit":
            break
        if line == "/reset":
            chat.upload_image(image)
            print("(new conversation)", file=stdout, flush=True)
            continue
        if line.startswith("/"):
            print(f"unknown command {line!r}. {HELP}", file=stderr)
            continue
        chat.ask(line)
        stdout.write("Assistant: ")
        stdout.flush()
        for piece in chat.stream(**options):
            stdout.write(piece)
            stdout.flush()
        stdout.write("\n")
        stdout.flush()
    return 0
