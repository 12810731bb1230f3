"""Request validation shared by the HTTP APIs (mllm-npu's and OpenAI's), the Gradio demo and the
terminal chat.

Everything a client sends is checked here before the model sees it; a problem raises
`RequestError(status, message)`, which the API turns into a 4xx JSON answer.  Checks, in order of
cost: body size, JSON syntax, known keys, value types and ranges, text, base64, image bytes,
image header (pixel count), image decode.
"""
from __future__ import annotations

import base64
import binascii
import io
import json
import math
import re
import sys
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Optional

from PIL import Image, UnidentifiedImageError

from ..conversation.chat import GenerationOptions

if TYPE_CHECKING:  # the web server's request type; the terminal chat needs no web stack
    from starlette.requests import Request

NUMBER_BOUND = 2**64
SEED_RANGE = (-(2**63), 2**64 - 1)  # what torch.Generator.manual_seed takes
_DATA_URL = re.compile(r"^data:[\w/+.-]*(;[\w=.-]+)*;base64,", re.I)
_SPACE = re.compile(rb"\s+")


class RequestError(ValueError):
    """Bad client input: `status` is the HTTP status (4xx), `message` says what to fix."""

    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = status
        self.message = message


@dataclass(frozen=True)
class Limits:
    """What one request may ask for.  The body limit leaves room for a base64 image at the byte
    limit (4/3 of it) plus the text."""

    max_body_bytes: int = 16 * 2**20
    max_image_bytes: int = 10 * 2**20  # the decoded (PNG/JPEG/...) file
    max_image_pixels: int = 4096 * 4096
    max_text_chars: int = 4000
    max_new_tokens: int = 1024
    max_beams: int = 8
    max_temperature: float = 5.0
    # Below this a softmax over logits / temperature overflows (inf/nan probabilities): 0 is greedy.
    min_temperature: float = 0.01
    # JPEGs are decoded at a reduced scale (libjpeg's 1/2, 1/4, 1/8) down to this side: a 4096 px
    # photo then costs a 16th of its full RGB size while it is decoded.
    decode_side: int = 1024
    # Memory under load: requests decoding an image at once.
    max_decoding: int = 2
    # The scheduler (scheduler.py): rows decoded together, requests waiting beyond them (model-size
    # inputs only; one more gets 429 with Retry-After), and the longest an arrival waits for requests
    # still being prepared, to share one prefill (seconds; benchmarks/serve.py: 8 clients on the
    # quickstart model 1.8x one client's answers/s with 5 ms, 2.2x with 50 ms).
    max_batch_size: int = 8
    max_queue: int = 64
    batch_timeout_s: float = 0.05
    # Visual tokens of this many recently seen images kept by content (visual_cache.py: a chat client
    # resends its image every turn), and their decoded model inputs by the file's bytes (handoff.py),
    # those within input_cache_bytes (a 448 px input is 2.4 MB); 0 decodes and encodes every image
    # every time.
    visual_cache_size: int = 64
    input_cache_bytes: int = 64 * 2**20
    # /v1/chat/completions: the most choices (`n`) one request may ask for (rows of one batch).
    max_choices: int = 8
    # /v1/chat/completions: `file://` (or plain) image paths under this folder; None = refused.
    local_image_root: Optional[str] = None


@dataclass
class GenerateRequest:
    """A validated `/worker_generate` body (the image still base64; see `image_bytes`)."""

    text: str
    image_b64: str
    options: dict  # GenerationOptions field -> value, only those the client set
    stream: bool


# field -> (type name for messages, python types, bool allowed)
_FIELDS: dict[str, tuple[str, tuple, bool]] = {
    "input_text": ("a string", (str,), False),
    "image": ("a base64 string", (str,), False),
    "max_new_tokens": ("an integer", (int,), False),
    "num_beams": ("an integer", (int,), False),
    "temperature": ("a number", (int, float), False),
    "top_p": ("a number", (int, float), False),
    "stream": ("a boolean", (bool,), True),
    # mllm-npu clients send image_gen; we answer questions about images, we do not draw them.
    "image_gen": ("a boolean", (bool,), True),
}
_REQUIRED = ("input_text", "image")
_OPTION_FIELDS = ("max_new_tokens", "num_beams", "temperature", "top_p")


def parse_json_body(body: bytes) -> Any:
    try:
        return json.loads(body)
    except UnicodeDecodeError:
        raise RequestError(400, "the body is not UTF-8 text") from None
    except RecursionError:
        raise RequestError(400, "the body's JSON is nested too deeply") from None
    except json.JSONDecodeError as exc:
        raise RequestError(400, f"the body is not valid JSON: {exc.msg} at line {exc.lineno} column {exc.colno}") from None
    except ValueError:  # Python's int-from-text guard (sys.get_int_max_str_digits, 4300 digits)
        raise RequestError(400, f"the body holds an integer of more than {sys.get_int_max_str_digits()} digits") from None


def check_number(key: str, value: Any, status: int) -> None:
    """A JSON number a client sent is finite and within +-2**64 (checked before any float() or
    torch call sees it: float(10**400) and torch.manual_seed(2**70) raise, they do not clamp); the
    message never prints the value (a 4000-digit integer)."""
    if isinstance(value, float) and not math.isfinite(value):
        raise RequestError(status, f"'{key}' must be a finite number")
    if isinstance(value, int) and not isinstance(value, bool) and not -NUMBER_BOUND <= value <= NUMBER_BOUND:
        raise RequestError(status, f"'{key}' is out of range (its magnitude is over 2**64)")


def parse_generate_request(payload: Any, limits: Limits) -> GenerateRequest:
    """Check a decoded JSON body of `/worker_generate` (see docs/chat.md for the contract)."""
    if not isinstance(payload, dict):
        raise RequestError(422, f"the body must be a JSON object, not {type(payload).__name__}")
    unknown = sorted(set(payload) - set(_FIELDS))
    if unknown:
        raise RequestError(422, f"unknown key(s): {', '.join(unknown)}; known keys: {', '.join(_FIELDS)}")
    missing = [k for k in _REQUIRED if k not in payload]
    if missing:
        raise RequestError(422, f"missing key(s): {', '.join(missing)}")
    for key, value in payload.items():
        name, types, bool_ok = _FIELDS[key]
        if value is None and key not in _REQUIRED:
            continue
        if isinstance(value, bool) and not bool_ok or not isinstance(value, types):
            raise RequestError(422, f"'{key}' must be {name}, got {_json_type(value)}")
        check_number(key, value, 422)
    if payload.get("image_gen"):
        raise RequestError(422, "image_gen is not supported: this model answers questions about images")
    text = check_text(payload["input_text"], limits)
    options = {k: payload[k] for k in _OPTION_FIELDS if payload.get(k) is not None}
    if "temperature" in options:
        options["temperature"] = float(options["temperature"])
    if "top_p" in options:
        options["top_p"] = float(options["top_p"])
    check_options(options, limits)
    if not payload["image"]:
        raise RequestError(422, "'image' is empty; send the image file base64-encoded")
    return GenerateRequest(text=text, image_b64=payload["image"], options=options,
                           stream=bool(payload.get("stream") or False))


def check_text(text: str, limits: Limits) -> str:
    """The question, stripped; empty, overlong or not-Unicode text (a lone surrogate such as
    JSON's "\\ud800") is an error."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise RequestError(422, f"'input_text' is not valid Unicode text ({exc.reason} at character {exc.start})") from None
    text = text.strip()
    if not text:
        raise RequestError(422, "'input_text' is empty; ask a question about the image")
    if len(text) > limits.max_text_chars:
        raise RequestError(422, f"'input_text' has {len(text)} characters; the limit is {limits.max_text_chars}")
    return text


def check_options(options: dict, limits: Limits) -> GenerationOptions:
    """Range checks for generation options (also used for the demo's sliders)."""
    ranges = {
        "max_new_tokens": (1, limits.max_new_tokens),
        "num_beams": (1, limits.max_beams),
        "temperature": (0.0, limits.max_temperature),
    }
    for key, (low, high) in ranges.items():
        if key in options and not low <= options[key] <= high:
            raise RequestError(422, f"'{key}' must be between {low} and {high}, got {options[key]}")
    if 0 < options.get("temperature", 0) < limits.min_temperature:
        raise RequestError(422, f"'temperature' must be 0 (greedy) or at least {limits.min_temperature}, "
                                f"got {options['temperature']}")
    if "top_p" in options and not 0 < options["top_p"] <= 1:
        raise RequestError(422, f"'top_p' must be in (0, 1], got {options['top_p']}")
    if options.get("seed") is not None and not SEED_RANGE[0] <= options["seed"] <= SEED_RANGE[1]:
        raise RequestError(422, f"'seed' must be between {SEED_RANGE[0]} and {SEED_RANGE[1]}")
    try:
        return GenerationOptions().replace(**options)
    except (TypeError, ValueError) as exc:
        raise RequestError(422, str(exc)) from None


def image_bytes(data: str, limits: Limits) -> bytes:
    """base64 (optionally a `data:image/...;base64,` URL, whitespace ignored) -> the image file's
    bytes (checked against the byte limit, not yet opened)."""
    data = _DATA_URL.sub("", data.strip(), count=1)
    try:
        raw_b64 = _SPACE.sub(b"", data.encode("ascii"))
    except UnicodeEncodeError:
        raise RequestError(400, "'image' is not valid base64 (non-ASCII characters)") from None
    if len(raw_b64) // 4 * 3 > limits.max_image_bytes + 2:
        raise RequestError(413, f"the image is over the {_mib(limits.max_image_bytes)} limit")
    try:
        raw = base64.b64decode(raw_b64, validate=True)
    except (binascii.Error, ValueError):
        raise RequestError(400, "'image' is not valid base64") from None
    return raw


def open_image(raw: bytes, limits: Limits) -> Image.Image:
    """Image file bytes -> RGB PIL image, checking the byte and pixel limits on the header before
    decoding; JPEGs decode at a reduced scale down to `limits.decode_side`."""
    if len(raw) > limits.max_image_bytes:
        raise RequestError(413, f"the image has {len(raw)} bytes; the limit is {_mib(limits.max_image_bytes)}")
    try:
        image = Image.open(io.BytesIO(raw))  # reads the header only
    except UnidentifiedImageError:
        raise RequestError(415, "'image' does not hold an image file PIL can read (PNG, JPEG, WebP, ...)") from None
    except Image.DecompressionBombError as exc:
        raise RequestError(413, str(exc)) from None
    except Exception as exc:  # a header cut short or corrupt: OSError, SyntaxError, struct.error, ...
        raise RequestError(415, f"the image header could not be read: {exc}") from None
    check_image(image, limits)
    try:
        if image.format == "JPEG":
            image.draft("RGB", (limits.decode_side, limits.decode_side))
        image.load()
        return image if image.mode == "RGB" else image.convert("RGB")
    except Image.DecompressionBombError as exc:
        raise RequestError(413, str(exc)) from None
    except Exception as exc:  # truncated or corrupt data: PIL raises OSError, SyntaxError, ...
        raise RequestError(415, f"the image could not be decoded: {exc}") from None


def check_image(image: Image.Image, limits: Limits) -> None:
    width, height = image.size
    if width < 1 or height < 1:
        raise RequestError(415, "the image is empty")
    if width * height > limits.max_image_pixels:
        raise RequestError(413, f"the image is {width}x{height} = {width * height} pixels; "
                                f"the limit is {limits.max_image_pixels}")


def _json_type(value: Any) -> str:
    return {bool: "a boolean", int: "an integer", float: "a number", str: "a string", list: "an array",
            dict: "an object", type(None): "null"}.get(type(value), type(value).__name__)


def _mib(n: int) -> str:
    return f"{n / 2**20:.1f} MiB" if n >= 2**20 else f"{n} bytes"


def content_length(headers) -> Optional[int]:
    """The declared Content-Length, or None; a malformed one is a 400."""
    value = headers.get("content-length")
    if value is None:
        return None
    try:
        n = int(value)
    except ValueError:
        n = -1
    if n < 0:
        raise RequestError(400, f"malformed Content-Length header {value!r}")
    return n


async def read_json_request(request: Request, limits: Limits):
    """The JSON body of a POST, checked as every route checks it: Content-Type, size, syntax."""
    _require_json(request)
    return parse_json_body(await _read_body(request, limits.max_body_bytes))


def _require_json(request: Request) -> None:
    kind = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if kind != "application/json":
        raise RequestError(415, f"Content-Type must be application/json, got {kind or 'none'!r}")


async def _read_body(request: Request, limit: int) -> bytes:
    """The body, refusing it early when Content-Length is over `limit` and while reading when the
    bytes actually sent are (chunked bodies or a lying header)."""
    declared = content_length(request.headers)
    if declared is not None and declared > limit:
        raise RequestError(413, f"the body is {declared} bytes; the limit is {limit}")
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > limit:
            raise RequestError(413, f"the body is over the {limit}-byte limit")
    return bytes(body)
