"""Benchmarks write their JSON outside the tracked record unless asked (--record)."""
import argparse

from benchmarks import _common as C


def _args(*argv):
    parser = argparse.ArgumentParser()
    C.add_output_args(parser)
    return parser.parse_args(list(argv))


def test_a_run_writes_untracked_unless_recording(tmp_path):
    assert C.result_path(_args(), "chat_x.json") == C.ROOT / "output" / "benchmarks" / "chat_x.json"
    assert C.result_path(_args("--record"), "chat_x.json") == C.ROOT / "benchmarks" / "results" / "chat_x.json"
    assert C.result_path(_args("--out", str(tmp_path / "a.json")), "chat_x.json") == tmp_path / "a.json"
