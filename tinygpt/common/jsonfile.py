"""The one checked JSON reader (datasets, evaluation inputs and prediction files all read with it) and
the one strict JSON writer (`dumps`: what every JSON file the project writes goes through)."""
from __future__ import annotations

import json
import math
from typing import Any

from .errors import UserError


def read_json(path: str, error: type[UserError] = UserError) -> Any:
    """A JSON file, or JSON lines when the name ends in `.jsonl`, read as UTF-8.  Undecodable bytes
    (a Latin-1 or UTF-16 file), malformed or too deeply nested JSON, or an integer of thousands of
    digits raise `error` naming the file (and the line of a .jsonl); a missing file is the caller's
    to report (OSError)."""
    try:
        with open(path, encoding="utf-8") as f:
            if not path.endswith(".jsonl"):
                return json.load(f)
            rows = []
            for lineno, line in enumerate(f, 1):
                if line.strip():
                    try:
                        rows.append(json.loads(line))
                    except json.JSONDecodeError as e:
                        raise error(f"{path}: malformed JSON on line {lineno} ({e.msg})") from None
                    except ValueError as e:  # an integer of more than 4300 digits
                        raise error(f"{path}: line {lineno}: {_too_long(e)}") from None
            return rows
    except UnicodeDecodeError as e:
        raise error(f"{path}: not UTF-8 text (byte {e.start}: {e.reason}); save the file as UTF-8") from None
    except json.JSONDecodeError as e:
        raise error(f"{path}: malformed JSON ({e.msg} at line {e.lineno} column {e.colno})") from None
    except RecursionError:
        raise error(f"{path}: the JSON is nested too deeply") from None
    except UserError:  # a .jsonl line's own message, above (UserError is a ValueError too)
        raise
    except ValueError as e:  # after JSONDecodeError and UnicodeDecodeError, its subclasses
        raise error(f"{path}: {_too_long(e)}") from None


def _too_long(e: ValueError) -> str:
    return f"a number in it is too long to read ({str(e).split(';')[0]})"


def dumps(obj: Any, **kwargs) -> str:
    """`json.dumps` that writes strict JSON: a NaN or infinite float (which json.dumps writes as bare
    `NaN` / `Infinity`, which strict readers refuse) is written as null."""
    return json.dumps(_finite(obj), allow_nan=False, **kwargs)


def _finite(obj: Any) -> Any:
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {k: _finite(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_finite(v) for v in obj]
    return obj
