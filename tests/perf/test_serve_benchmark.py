"""benchmarks/serve.py's accounting: the model thread's share per answer from two /metrics scrapes,
and a process's CPU time (the figures docs/chat.md explains the serving numbers with); a client
process that dies is reported, not waited on forever."""
from __future__ import annotations

import os
import socket
import time

import pytest

from benchmarks.serve import Clients, model_share, process_cpu_s, shapes_png


def test_model_share_per_answer():
    before = {"tinygpt_prefill_seconds_sum": 1.0, "tinygpt_prefill_seconds_count": 10, "tinygpt_prefill_rows_total": 20,
              "tinygpt_time_per_output_token_seconds_sum": 2.0, "tinygpt_time_per_output_token_seconds_count": 50,
              "tinygpt_generation_tokens_total": 100}
    # 8 answers: 2 prefills of 4 rows (0.08 s), 6 steps (0.06 s) giving 30 tokens beyond the 8 first ones
    after = {"tinygpt_prefill_seconds_sum": 1.08, "tinygpt_prefill_seconds_count": 12, "tinygpt_prefill_rows_total": 28,
             "tinygpt_time_per_output_token_seconds_sum": 2.06, "tinygpt_time_per_output_token_seconds_count": 56,
             "tinygpt_generation_tokens_total": 138}
    assert model_share(before, after, 8) == {"prefill_ms_per_answer": 10.0, "decode_ms_per_answer": 7.5,
                                             "rows_per_prefill": 4.0, "rows_per_step": 5.0}


def test_process_cpu_counts_this_process():
    start = process_cpu_s(os.getpid())
    deadline = time.process_time() + 0.2
    while time.process_time() < deadline:  # burn 0.2 s of CPU
        pass
    assert process_cpu_s(os.getpid()) - start >= 0.15


def test_a_client_that_dies_ends_the_benchmark_with_a_message():
    with socket.socket() as s:  # a port nothing listens on: the clients' warm-up request fails
        s.bind(("127.0.0.1", 0))
        url = f"http://127.0.0.1:{s.getsockname()[1]}"
    with pytest.raises(SystemExit, match="a client process exited with code 1"):
        Clients([shapes_png(side=32)], [url], "http")
