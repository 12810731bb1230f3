"""common/atomic.py: the one atomic write (what users read: exports, checkpoints, results)."""
import os
import stat

import pytest

from tinygpt.common import atomic


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def test_written_files_get_the_mode_open_would_give_not_mkstemps_0600(tmp_path):
    path = tmp_path / "sub" / "config.json"
    atomic.write_json(str(path), {"a": 1})
    assert path.read_text() == '{\n  "a": 1\n}\n'
    assert stat.S_IMODE(path.stat().st_mode) == 0o666 & ~_umask()  # 0644 under the usual umask 022


def test_a_failed_write_keeps_the_old_file_and_leaves_no_temp(tmp_path):
    path = tmp_path / "result.txt"
    atomic.write_text(str(path), "old")
    with pytest.raises(RuntimeError):
        with atomic.atomic_path(str(path)) as tmp:
            open(tmp, "w").write("half")
            raise RuntimeError("killed mid-write")
    assert path.read_text() == "old" and os.listdir(tmp_path) == ["result.txt"]


def test_a_staged_directory_replaces_its_entries_only_when_the_block_succeeds(tmp_path):
    out = tmp_path / "export"
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    (out / "model.onnx").write_text("old")
    with pytest.raises(RuntimeError):
        with atomic.staged_directory(str(out)) as staging:
            (tmp_path.joinpath(staging) / "model.onnx").write_text("half")
            raise RuntimeError("the export failed")
    assert (out / "model.onnx").read_text() == "old" and sorted(os.listdir(tmp_path)) == ["export"]
    with atomic.staged_directory(str(out)) as staging:
        (tmp_path.joinpath(staging) / "model.onnx").write_text("new")
    assert {p.name: p.read_text() for p in out.iterdir()} == {"keep.txt": "mine", "model.onnx": "new"}
    assert stat.S_IMODE((out / "model.onnx").stat().st_mode) == 0o666 & ~_umask()
    assert sorted(os.listdir(tmp_path)) == ["export"]  # no staging directory left
