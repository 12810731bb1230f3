"""The one way tinygpt writes a file that others read: a temp file beside it, renamed over it.

A crash (or SIGKILL) mid-write leaves the old file intact and, at worst, a `.tmp-*` sibling, which
`remove_stale_temps` clears at the next start of whoever owns the directory.
"""
from __future__ import annotations

import contextlib
import glob
import json
import os
import tempfile
from typing import Any, Iterator

PREFIX = ".tmp-"


def _file_mode() -> int:
    """The mode `open()` would give a new file (0o666 less the umask): mkstemp makes 0600 files,
    which other users of a shared export or checkpoint could not read."""
    umask = os.umask(0)  # read-and-restore at import, while no other thread can create files
    os.umask(umask)
    return 0o666 & ~umask


_MODE = _file_mode()


@contextlib.contextmanager
def atomic_path(path: str, suffix: str = "") -> Iterator[str]:
    """Yield a temp path in `path`'s directory (created); when the block ends without an error it is
    renamed over `path`, otherwise removed."""
    directory = os.path.dirname(os.path.abspath(path))
    os.makedirs(directory, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=PREFIX, suffix=suffix, dir=directory)
    os.close(fd)
    try:
        yield tmp
        os.chmod(tmp, _MODE)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.remove(tmp)
        raise


def write_text(path: str, text: str) -> None:
    with atomic_path(path) as tmp, open(tmp, "w", encoding="utf-8") as f:
        f.write(text)


def write_json(path: str, obj: Any) -> None:
    write_text(path, json.dumps(obj, indent=2) + "\n")


def remove_stale_temps(directory: str) -> list[str]:
    """Delete the `.tmp-*` files a killed writer left in `directory`; returns their paths."""
    stale = sorted(glob.glob(os.path.join(glob.escape(directory), PREFIX + "*")))
    for path in stale:
        with contextlib.suppress(OSError):
            os.remove(path)
    return stale
