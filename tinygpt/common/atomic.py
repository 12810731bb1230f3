"""The one way tinygpt writes a file that others read: a temp file beside it, renamed over it.

A crash (or SIGKILL) mid-write leaves the old file intact and, at worst, a `.tmp-*` sibling, which
`remove_stale_temps` clears at the next start of whoever owns the directory: the training output
(runners/iter_runner.py), the feature cache (tasks/feature_cache.py) and the evaluation output
(evaluation/runner.py).
"""
from __future__ import annotations

import contextlib
import glob
import os
import tempfile
import time
from typing import Any, Iterator

from . import jsonfile

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


@contextlib.contextmanager
def staged_directory(out: str) -> Iterator[str]:
    """Yield an empty temp directory beside `out`; when the block ends without an error, each of its
    entries replaces `out`'s entry of that name (`out` created, its other entries kept).  An error
    leaves `out` as it was: a directory of files that only work together (an export) is never
    half-written."""
    import shutil

    parent = os.path.dirname(os.path.abspath(out))
    os.makedirs(parent, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=PREFIX, dir=parent) as staging:
        yield staging
        os.makedirs(out, exist_ok=True)
        for name in sorted(os.listdir(staging)):
            os.chmod(os.path.join(staging, name), _MODE)  # temporary files are created 0600
            dest = os.path.join(out, name)
            if os.path.isdir(dest) and not os.path.islink(dest):
                shutil.rmtree(dest)
            os.replace(os.path.join(staging, name), dest)


def write_text(path: str, text: str) -> None:
    with atomic_path(path) as tmp, open(tmp, "w", encoding="utf-8") as f:
        f.write(text)


def write_json(path: str, obj: Any) -> None:
    """Strict JSON (a non-finite float is null: jsonfile.dumps)."""
    write_text(path, jsonfile.dumps(obj, indent=2) + "\n")


def remove_stale_temps(directory: str, recursive: bool = False, older_than_s: float = 0.0) -> list[str]:
    """Delete the `.tmp-*` files a killed writer left in `directory` (and in every folder below it
    with `recursive`); returns their paths.  With `older_than_s`, only files unchanged for that long:
    where other processes may be writing at the same time (a feature cache shared by ranks or runs),
    a temp file that is still being written is not stale."""
    if recursive:
        found = [os.path.join(root, name) for root, _, names in os.walk(directory)
                 for name in names if name.startswith(PREFIX)]
    else:
        found = glob.glob(os.path.join(glob.escape(directory), PREFIX + "*"))
    now = time.time()
    stale = []
    for path in sorted(found):
        with contextlib.suppress(OSError):  # another process may have swept it first
            if older_than_s <= 0 or now - os.path.getmtime(path) >= older_than_s:
                os.remove(path)
                stale.append(path)
    return stale
