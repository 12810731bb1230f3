"""The one checked JSON reader: datasets, evaluation inputs and prediction files all read with it."""
from __future__ import annotations

import json
from typing import Any

from .errors import UserError


def read_json(path: str, error: type[UserError] = UserError) -> Any:
    """A JSON file, or JSON lines when the name ends in `.jsonl`, read as UTF-8.  Undecodable bytes
    (a Latin-1 or UTF-16 file), malformed or too deeply nested JSON raise `error` naming the file
    (and the line of a .jsonl); a missing file is the caller's to report (OSError)."""
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
            return rows
    except UnicodeDecodeError as e:
        raise error(f"{path}: not UTF-8 text (byte {e.start}: {e.reason}); save the file as UTF-8") from None
    except json.JSONDecodeError as e:
        raise error(f"{path}: malformed JSON ({e.msg} at line {e.lineno} column {e.colno})") from None
    except RecursionError:
        raise error(f"{path}: the JSON is nested too deeply") from None
