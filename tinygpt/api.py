"""The one-line Python API: a trained model that answers questions about images.

    import tinygpt
    model = tinygpt.from_pretrained("output/tiny/stage4")   # or an export dir, or a YAML
    model.answer("dataset/examples/shapes.png", "[vqa] what colour is the square?")       # -> "red"
    model.answer([img_a, img_b], ["[vqa] what colour is the circle?", "[vqa] how many shapes?"])
    chat = model.chat()                                    # a multi-turn session (conversation.Chat)
    chat.upload_image(img); chat.ask("..."); chat.answer(); chat.ask("..."); chat.answer()

A thin facade over the Chat that demo.py and the HTTP API use (same prompt layout, image order
read from the model's prompt style, eval image transform, greedy by default): no second generation
path.  Images are paths or PIL images; the question is what a user would type in the demo.
"""
from __future__ import annotations

import os
from typing import Optional, Sequence, Union

from PIL import Image

from .common.errors import UserError
from .conversation.chat import Chat, GenerationOptions

ImageLike = Union[str, "os.PathLike[str]", Image.Image]
# What `from_pretrained(DIR)` looks for when DIR is a training output folder rather than an export.
_CHECKPOINT = "checkpoint_final.safetensors"


class Pretrained:
    """A loaded model with `answer` (one question or a batch) and `chat` (a session)."""

    def __init__(self, chat: Chat):
        self._chat = chat
        self.model = chat.model  # the torch module (TinyGPTV), for users who want tensors
        self.style = chat.style  # the prompt style it was trained with

    def chat(self) -> Chat:
        """A new conversation on this model (upload_image, ask, answer / stream, history)."""
        return self._chat.session()

    def answer(self, image: Union[ImageLike, Sequence[ImageLike]], question: Union[str, Sequence[str]],
               **options) -> Union[str, list[str]]:
        """The answer to `question` about `image`; lists of both give a list of answers, in order.
        `options` are generation options (max_new_tokens, temperature, num_beams, seed, ...)."""
        if isinstance(question, str):
            return self._one(image, question, options)
        images = list(image) if isinstance(image, (list, tuple)) else None
        if images is None or len(images) != len(question):
            raise UserError(f"answer: {len(question)} questions need as many images in a list, got "
                            f"{len(images) if images is not None else type(image).__name__}")
        return [self._one(im, q, options) for im, q in zip(images, question)]

    def _one(self, image: ImageLike, question: str, options: dict) -> str:
        session = self.chat()
        session.upload_image(_open(image))
        session.ask(question)
        return session.answer(**options)


def _open(image: ImageLike) -> Image.Image:
    if isinstance(image, Image.Image):
        return image.convert("RGB")
    if not isinstance(image, (str, os.PathLike)):
        raise UserError(f"answer: an image is a path or a PIL image, got {type(image).__name__}")
    try:
        with Image.open(image) as im:
            return im.convert("RGB")
    except (OSError, ValueError) as exc:
        raise UserError(f"answer: cannot read image {os.fspath(image)}: {exc}") from None


def from_pretrained(source: str, device: Optional[str] = None, options: Sequence[str] = (),
                    generation: Optional[GenerationOptions] = None) -> Pretrained:
    """Load for inference (LoRA merged, frozen, eval mode) from any of:
    - an exported directory (`python -m tinygpt.export`, holds config.yaml);
    - a training output folder holding checkpoint_final.safetensors and config.yaml (the stage's
      resolved config, e.g. output/tiny/stage4: paths in it are relative to where it was trained);
    - a YAML config (train_configs/... or eval_configs/...; its model.ckpt names the weights).
    `options` are config overrides (KEY=VALUE); `device` overrides run.device."""
    import tinygpt

    options = list(options) + ([f"run.device={device}"] if device else [])
    if os.path.isdir(source) and os.path.isfile(os.path.join(source, _CHECKPOINT)):
        # A stage's folder: its resolved config loads what the stage started from, then its own result.
        cfg = tinygpt.load_config(os.path.join(source, "config.yaml"), options)
        cfg.model.ckpt = list(cfg.model.ckpt) + [os.path.join(source, _CHECKPOINT)]
    elif os.path.isdir(source):
        from .export import load_exported_config

        cfg = load_exported_config(source, options)
    elif os.path.isfile(source):
        cfg = tinygpt.load_config(source, options)
    else:
        raise UserError(f"from_pretrained: {source} is neither an exported directory, a training output folder "
                        f"nor a config file")
    return Pretrained(inference_chat(cfg, generation))


def inference_chat(cfg, generation: Optional[GenerationOptions] = None) -> Chat:
    """Config -> inference model (LoRA merged, frozen, on run.device) -> the Chat, with the eval image
    transform at the model's input size (what from_pretrained, demo.py and the servers answer with)."""
    import tinygpt
    from .common import device as devices
    from .processors.build import eval_processor

    device = devices.resolve_device(cfg.run.device)
    model = tinygpt.build_model(cfg, device, training=False)
    return Chat(model, eval_processor(cfg.model), device, defaults=generation)
