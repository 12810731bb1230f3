"""Throughput and latency of `demo.py --api-only` under 1, 2, 4, 8, 16 concurrent OpenAI-client users.

    bash quickstart.sh                         # the tiny model this measures by default
    python -m benchmarks.serve [--clients 1 2 4 8 16] [--requests 24] [--max-tokens 16] [--rounds 3]
    python -m benchmarks.serve --model-root /path/to/a/clone/with/output   # where output/tiny is
    python -m benchmarks.serve --record        # also write benchmarks/results/serve_tiny.json
    python -m benchmarks.serve --preset small  # a random model, ViT-g-proportioned (benchmarks/_common.py)
    python -m benchmarks.serve --engine process thread   # both engines, interleaved in one run
    python -m benchmarks.serve --visual-cache 0   # every image encoded every time (users who each send new pictures)
    python -m benchmarks.serve --client openai    # a process per user with the official openai client

The server runs in its own process on 127.0.0.1 (the same command a user runs).  The clients run
beside it, as vLLM's and SGLang's serving benchmarks drive a server: one process, each client an
asyncio task with an aiohttp session (about 0.5 ms of CPU per answer); with `--client openai`, each
client is a process of its own with the official `openai` client (2.3-3.8 ms per answer, which on a
2-core machine the server pays for).  Each client sends `--requests` streamed greedy chat completions one after another
(questions drawn in turn from a fixed list, so prompts differ in length), each with its image, as
the stateless API has it: by default each client its own picture (a conversation; the server's
visual cache encodes it once), with `--images shared` one picture for all.  Per client count:
answers/s and generated tokens/s over the wall time, p50/p95 latency of a whole answer and of its
first token (TTFT), how many answers differ from the answer the same question gets alone (greedy:
batching must not change an answer; the lone answers are taken first, with one client), and where
the time went: ms of CPU per answer in the server process and in the client processes, the cores
each used (on a small machine the clients share its cores with the server), and, from the server's
/metrics, the model thread's ms per answer in prefills and in decode steps, and the rows each
prefill and each step carried.  Rounds interleave the
client counts (1 2 4 ... 1 2 4 ...); figures are medians over rounds.  The JSON (machine, CPU, load
average, commit, every round) goes to --out (an untracked path by default); `--record` also writes
it to benchmarks/results/.  With several `--engine`s, a server of each runs (on consecutive ports)
and every round runs each engine in turn; the server's CPU counts its model process too.
"""
from __future__ import annotations

import argparse
import base64
import importlib
import io
import json
import multiprocessing as mp
import os
import queue
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Optional

from tinygpt.serve.validation import Limits

from . import _common as C

QUESTIONS = ["[vqa] what colour is the circle?", "[vqa] how many squares are there?",
             "[caption] describe this image in detail.", "[vqa] is there a triangle?",
             "[refer] the red circle", "[vqa] what shape is left of the square?"]

# --client: how the users are driven (the JSON's settings.clients)
CLIENT_KINDS = {"http": "one process, an aiohttp task per client",
                "openai": "separate processes, official openai client"}

COLOURS = ["red", "blue", "green", "yellow", "purple", "orange", "black", "grey"]


def shapes_png(side: int = 224, variant: int = 0) -> str:
    """A circle and a square (variant k: its own colours and place), as a data URL."""
    from PIL import Image, ImageDraw

    image = Image.new("RGB", (side, side), "white")
    draw = ImageDraw.Draw(image)
    shift = (variant // len(COLOURS)) * side // 16
    draw.ellipse([side // 8 + shift, side // 8, side // 2 + shift, side // 2], fill=COLOURS[variant % len(COLOURS)])
    draw.rectangle([side // 2, side // 3 + shift, side - side // 8, side - side // 8],
                   fill=COLOURS[(variant + 3) % len(COLOURS)])
    buf = io.BytesIO()
    image.save(buf, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode()


def preset_config(name: str, workdir: Path) -> str:
    """A YAML for a random-weight preset (its answers run to max_tokens: decode-heavy)."""
    from tinygpt.common.config import Config, to_yaml

    cfg = Config(model=C.preset(name, workdir))
    cfg.run.device = "cpu"
    path = workdir / f"serve_{name}.yaml"
    path.write_text(to_yaml(cfg))
    return str(path)


def start_server(args, engine: str, port: int) -> subprocess.Popen:
    import httpx

    command = [sys.executable, str(C.ROOT / "demo.py"), "--api-only", "--port", str(port), "--engine", engine,
               "--max-batch-size", str(args.max_batch_size), "--batch-timeout-ms", str(args.batch_timeout_ms),
               *(["--threads", str(args.threads)] if args.threads else []),
               *(["--visual-cache", str(args.visual_cache)] if args.visual_cache is not None else []),
               *(["--cfg-path", args.cfg_path] if args.cfg_path else []),
               *(["--options", *args.options] if args.options else [])]
    # The server's log goes to a file: a pipe nobody reads fills up (one access-log line per
    # request) and then blocks the server.
    log = tempfile.TemporaryFile()
    server = subprocess.Popen(command, cwd=args.model_root, stdout=subprocess.DEVNULL, stderr=log)
    for _ in range(1500):
        try:
            if httpx.get(f"http://127.0.0.1:{port}/health", timeout=1).status_code == 200:
                return server
        except httpx.HTTPError:
            pass
        if server.poll() is not None:
            log.seek(0)
            raise SystemExit(f"the server did not start:\n{log.read().decode()[-2000:]}")
        time.sleep(0.2)
    server.terminate()
    raise SystemExit("the server did not answer /health within 300 s")


def chat_request(image: str, question: str, max_tokens: int) -> dict:
    """The body every client sends: one streamed greedy question about `image`, usage included."""
    return {"model": "tinygpt-v", "max_tokens": max_tokens, "temperature": 0, "stream": True,
            "stream_options": {"include_usage": True},
            "messages": [{"role": "user", "content": [{"type": "text", "text": question},
                                                       {"type": "image_url", "image_url": {"url": image}}]}]}


def ask(client, image: str, question: str, max_tokens: int) -> dict:
    """One streamed greedy answer: its text, tokens, latency and time to first token."""
    start = time.perf_counter()
    first, text, tokens = None, "", 0
    stream = client.chat.completions.create(**chat_request(image, question, max_tokens))
    for chunk in stream:
        if chunk.usage is not None:
            tokens = chunk.usage.completion_tokens
        if chunk.choices and chunk.choices[0].delta.content:
            first = first or time.perf_counter()
            text += chunk.choices[0].delta.content
    end = time.perf_counter()
    return {"question": question, "text": text, "tokens": tokens, "latency": end - start,
            "ttft": (first or end) - start}


def _client(tasks, results, urls: list[str], image: str) -> None:
    """A client process (a user): the official `openai` client asking, one after another, the
    questions it is given about its image (of the server at the url it is given); reports its
    answers and the CPU time it spent."""
    import openai

    clients = {url: openai.OpenAI(base_url=url + "/v1", api_key="none", max_retries=0, timeout=600) for url in urls}
    for client in clients.values():
        ask(client, image, QUESTIONS[0], 4)  # warm-up: the client builds its machinery on first use
    results.put("ready")
    while (task := tasks.get()) is not None:
        url, k, requests, max_tokens = task
        cpu = time.process_time()
        answers = [{**ask(clients[url], image, QUESTIONS[(k + i) % len(QUESTIONS)], max_tokens), "image": image}
                   for i in range(requests)]
        results.put((answers, time.process_time() - cpu))


async def ask_http(session, url: str, image: str, question: str, max_tokens: int) -> dict:
    """`ask` over a bare aiohttp session: the same request, its server-sent events read as JSON lines."""
    start = time.perf_counter()
    first, text, tokens = None, "", 0
    async with session.post(url + "/v1/chat/completions", json=chat_request(image, question, max_tokens)) as response:
        if response.status != 200:
            raise RuntimeError(f"HTTP {response.status} from {url}: {(await response.text())[:500]}")
        async for line in response.content:
            if not line.startswith(b"data: {"):  # blank separators and the final "data: [DONE]"
                continue
            chunk = json.loads(line[6:])
            if chunk.get("usage"):
                tokens = chunk["usage"]["completion_tokens"]
            if chunk["choices"] and chunk["choices"][0]["delta"].get("content"):
                first = first or time.perf_counter()
                text += chunk["choices"][0]["delta"]["content"]
    end = time.perf_counter()
    return {"question": question, "text": text, "tokens": tokens, "latency": end - start,
            "ttft": (first or end) - start}


def _http_clients(tasks, results, urls: list[str], images: list[str]) -> None:
    """Every client in one process, as vLLM's and SGLang's serving benchmarks drive a server: one
    asyncio task per user over aiohttp, each asking its questions one after another about its own
    image; reports their answers and the process's CPU time."""
    import asyncio

    import aiohttp

    async def client(session, url: str, k: int, requests: int, max_tokens: int) -> list[dict]:
        return [{**await ask_http(session, url, images[k], QUESTIONS[(k + i) % len(QUESTIONS)], max_tokens),
                 "image": images[k]} for i in range(requests)]

    async def serve_tasks() -> None:
        timeout = aiohttp.ClientTimeout(total=600)
        async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0), timeout=timeout) as session:
            for url in urls:
                await client(session, url, 0, 1, 4)  # warm-up: aiohttp's machinery and a connection
            results.put("ready")
            while (task := await asyncio.to_thread(tasks.get)) is not None:
                url, clients, requests, max_tokens = task
                cpu = time.process_time()
                answers = await asyncio.gather(*(client(session, url, k, requests, max_tokens)
                                                 for k in range(clients)))
                results.put(([a for each in answers for a in each], time.process_time() - cpu))

    asyncio.run(serve_tasks())


class Clients:
    """The users, started once (spawned: no state shared with this process) and reused by every
    level: a level with k clients gives work to the first k.  kind "http": one process for all, a
    light aiohttp client each (the default: on a small machine the clients share its cores with the
    server, and this one costs a fifth of the official client's CPU per answer); "openai": a process
    each with the official `openai` client (a user's own program)."""

    def __init__(self, images: list[str], urls: list[str], kind: str = "http"):
        try:  # here, where a missing package is one line, not a traceback in a child nobody waits on
            importlib.import_module("aiohttp" if kind == "http" else "openai")
        except ImportError as exc:
            raise SystemExit(f"--client {kind} needs {exc.name}: pip install -e '.[dev]' (scripts/setup.sh does)")
        ctx = mp.get_context("spawn")
        self.results = ctx.Queue()
        if kind == "http":
            self.tasks = [ctx.Queue()]
            self.procs = [ctx.Process(target=_http_clients, args=(self.tasks[0], self.results, urls, images),
                                      daemon=True)]
        else:
            self.tasks = [ctx.Queue() for _ in images]
            self.procs = [ctx.Process(target=_client, args=(q, self.results, urls, image), daemon=True)
                          for q, image in zip(self.tasks, images)]
        self.kind = kind
        for proc in self.procs:
            proc.start()
        for _ in self.procs:
            self._get()  # each has answered its warm-up question

    def _get(self):
        """The next result, or SystemExit naming a client process that died (its traceback is above)."""
        while True:
            try:
                return self.results.get(timeout=1)
            except queue.Empty:
                dead = [proc for proc in self.procs if proc.exitcode is not None]
                if dead:
                    raise SystemExit(f"a client process exited with code {dead[0].exitcode}; see its error above")

    def run(self, url: str, clients: int, requests: int, max_tokens: int) -> tuple[float, list[dict], float]:
        """-> wall seconds, every answer, the client processes' CPU seconds."""
        start = time.perf_counter()
        if self.kind == "http":
            self.tasks[0].put((url, clients, requests, max_tokens))
            results, cpu = self._get()
            return time.perf_counter() - start, results, cpu
        for k in range(clients):
            self.tasks[k].put((url, k, requests, max_tokens))
        results, cpu = [], 0.0
        for _ in range(clients):
            answers, spent = self._get()
            results += answers
            cpu += spent
        return time.perf_counter() - start, results, cpu

    def close(self) -> None:
        for q in self.tasks:
            q.put(None)
        for proc in self.procs:
            proc.join(30)


def process_cpu_s(pid: int) -> Optional[float]:
    """CPU seconds (user + system) process `pid` and its child processes (the model process of
    `--engine process`) have used so far (None where /proc is missing)."""
    try:
        with open(f"/proc/{pid}/task/{pid}/children") as f:
            children = [int(c) for c in f.read().split()]
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
    except OSError:
        return None
    own = (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    return own + sum(process_cpu_s(child) or 0.0 for child in children)


def summarise(clients: int, wall: float, results: list[dict], alone: dict, server_cpu: Optional[float],
              client_cpu: float) -> dict:
    latencies = sorted(r["latency"] for r in results)
    ttfts = sorted(r["ttft"] for r in results)
    n = len(results)
    return {"clients": clients, "answers": n, "wall_s": round(wall, 3),
            "answers_per_s": round(len(results) / wall, 3),
            "tokens_per_s": round(sum(r["tokens"] for r in results) / wall, 2),
            "p50_latency_s": round(statistics.median(latencies), 4), "p95_latency_s": round(_p95(latencies), 4),
            "p50_ttft_s": round(statistics.median(ttfts), 4), "p95_ttft_s": round(_p95(ttfts), 4),
            "differ_from_alone": sum(r["text"] != alone[r["image"], r["question"]] for r in results),
            # where the CPU went: ms per answer in the server process and in the client processes,
            # and the cores each used on average over the level
            "server_cpu_ms_per_answer": None if server_cpu is None else round(1000 * server_cpu / n, 2),
            "client_cpu_ms_per_answer": round(1000 * client_cpu / n, 2),
            "server_cores": None if server_cpu is None else round(server_cpu / wall, 2),
            "client_cores": round(client_cpu / wall, 2)}


def model_counters(url: str) -> dict:
    """The server's model-thread counters (/metrics): prefill and decode-step time and counts, rows."""
    import httpx
    from prometheus_client.parser import text_string_to_metric_families

    wanted = {"tinygpt_prefill_seconds_sum", "tinygpt_prefill_seconds_count", "tinygpt_prefill_rows_total",
              "tinygpt_time_per_output_token_seconds_sum", "tinygpt_time_per_output_token_seconds_count",
              "tinygpt_generation_tokens_total"}
    text = httpx.get(url + "/metrics", timeout=30).text
    return {s.name: s.value for family in text_string_to_metric_families(text) for s in family.samples
            if s.name in wanted}


def model_share(before: dict, after: dict, answers: int) -> dict:
    """Per answer: the model thread's ms in prefills and in decode steps; rows per prefill and per step."""
    d = {k: after[k] - before[k] for k in after}
    prefills, steps = d["tinygpt_prefill_seconds_count"], d["tinygpt_time_per_output_token_seconds_count"]
    step_rows = d["tinygpt_generation_tokens_total"] - d["tinygpt_prefill_rows_total"]  # a prefill gives a first token
    return {"prefill_ms_per_answer": round(1000 * d["tinygpt_prefill_seconds_sum"] / answers, 2),
            "decode_ms_per_answer": round(1000 * d["tinygpt_time_per_output_token_seconds_sum"] / answers, 2),
            "rows_per_prefill": round(d["tinygpt_prefill_rows_total"] / prefills, 2) if prefills else None,
            "rows_per_step": round(step_rows / steps, 2) if steps else None}


def _median(values) -> Optional[float]:
    values = [v for v in values if v is not None]
    return statistics.median(values) if values else None


def _p95(values: list[float]) -> float:
    return values[min(len(values) - 1, round(0.95 * (len(values) - 1)))]


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model-root", default=str(C.ROOT),
                   help="the folder the server runs in (its output/tiny and data/synthetic are the model's)")
    p.add_argument("--cfg-path", default="eval_configs/tiny.yaml")
    p.add_argument("--preset", choices=["tiny", "small"], help="a random-weight preset instead of --cfg-path")
    p.add_argument("--options", nargs="*", default=[])
    p.add_argument("--clients", type=int, nargs="+", default=[1, 2, 4, 8, 16])
    p.add_argument("--requests", type=int, default=24, help="answers each client asks for, one after another")
    p.add_argument("--max-tokens", type=int, default=16)
    p.add_argument("--max-batch-size", type=int, default=16)
    p.add_argument("--batch-timeout-ms", type=float, default=Limits().batch_timeout_s * 1000,
                   help="the server's --batch-timeout-ms (default: its own)")
    p.add_argument("--threads", type=int, help="the server's --threads (default: its own)")
    p.add_argument("--visual-cache", type=int, help="the server's --visual-cache (default: its own; 0: every "
                   "image encoded every time, as for users who each send a new picture every time)")
    p.add_argument("--images", choices=["per-client", "shared"], default="per-client",
                   help="per-client: each client asks all its questions about its own picture (a conversation: the "
                   "API resends it every turn); shared: one picture for every client")
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--client", choices=["http", "openai"], default="http",
                   help="http: every client an aiohttp task in one process (as vLLM's benchmark); openai: a "
                   "process each with the official openai client, whose own CPU then shares the machine's cores")
    p.add_argument("--engine", nargs="+", choices=["process", "thread"], default=["process"],
                   help="the server's --engine; several: one server each, interleaved in every round")
    p.add_argument("--port", type=int, default=7913, help="the first server's port (the next ones follow)")
    p.add_argument("--out", default=str(Path(tempfile.gettempdir()) / "tinygpt-bench" / "serve.json"))
    p.add_argument("--record", action="store_true",
                   help="also write benchmarks/results/serve_tiny.json (serve_preset_<name>.json with --preset)")
    args = p.parse_args(argv)

    name = "tiny"
    if args.preset:
        name = f"preset_{args.preset}"
        args.cfg_path = preset_config(args.preset, Path(tempfile.mkdtemp(prefix="tinygpt-serve-")))
    machine = C.machine()
    urls = {engine: f"http://127.0.0.1:{args.port + i}" for i, engine in enumerate(args.engine)}
    images = [shapes_png(variant=k if args.images == "per-client" else 0) for k in range(max(args.clients))]
    servers = {}
    try:
        import openai

        alone = {}
        for i, engine in enumerate(args.engine):
            servers[engine] = start_server(args, engine, args.port + i)
            client = openai.OpenAI(base_url=urls[engine] + "/v1", api_key="none", max_retries=0, timeout=600)
            for question in QUESTIONS:  # warm-up
                ask(client, images[0], question, args.max_tokens)
            alone[engine] = {(image, q): ask(client, image, q, args.max_tokens)["text"]
                             for image in dict.fromkeys(images) for q in QUESTIONS}
        rounds = []
        pool = Clients(images, list(urls.values()), args.client)
        try:
            for r in range(args.rounds):
                for clients in args.clients:
                    for engine, url in urls.items():
                        pid = servers[engine].pid
                        cpu, counters = process_cpu_s(pid), model_counters(url)
                        wall, results, client_cpu = pool.run(url, clients, args.requests, args.max_tokens)
                        cpu = None if cpu is None else process_cpu_s(pid) - cpu
                        row = {**summarise(clients, wall, results, alone[engine], cpu, client_cpu),
                               **model_share(counters, model_counters(url), len(results))}
                        rounds.append({"round": r, "engine": engine, **row})
                        print(json.dumps(rounds[-1]), flush=True)
        finally:
            pool.close()
    finally:
        for server in servers.values():
            server.terminate()
            server.wait(30)

    table = []
    for engine in args.engine:
        rows = []
        for clients in args.clients:
            runs = [x for x in rounds if x["clients"] == clients and x["engine"] == engine]
            row = {k: _median(x[k] for x in runs) for k in runs[0] if k not in ("round", "clients", "engine")}
            # every answer of every round counts here, not a median
            row.update(engine=engine, clients=clients, answers=sum(x["answers"] for x in runs),
                       differ_from_alone=sum(x["differ_from_alone"] for x in runs))
            rows.append(row)
        for row in rows:
            row["speedup"] = round(row["answers_per_s"] / rows[0]["answers_per_s"], 2)
            row["p95_over_lone_p95"] = round(row["p95_latency_s"] / rows[0]["p95_latency_s"], 2)
        table += rows
    print(C.table(table, [("engine", "engine", "s"), ("clients", "clients", "d"), ("answers_per_s", "answers/s", ".2f"),
                          ("speedup", "x 1 client", ".2f"), ("tokens_per_s", "tokens/s", ".1f"),
                          ("p50_latency_s", "p50 latency s", ".3f"), ("p95_latency_s", "p95 latency s", ".3f"),
                          ("p95_over_lone_p95", "p95 / lone p95", ".2f"),
                          ("p50_ttft_s", "p50 TTFT s", ".3f"), ("p95_ttft_s", "p95 TTFT s", ".3f"),
                          ("answers", "answers", "d"), ("differ_from_alone", "!= alone", "d"),
                          ("server_cpu_ms_per_answer", "server CPU ms/answer", ".1f"),
                          ("client_cpu_ms_per_answer", "client CPU ms/answer", ".1f"),
                          ("server_cores", "server cores", ".2f"), ("client_cores", "client cores", ".2f"),
                          ("prefill_ms_per_answer", "prefill ms/answer", ".1f"),
                          ("decode_ms_per_answer", "decode ms/answer", ".1f"),
                          ("rows_per_prefill", "rows/prefill", ".1f"), ("rows_per_step", "rows/step", ".1f")]))
    same = len({json.dumps(sorted(a.values())) for a in alone.values()}) == 1
    print(f"lone answers the same on every engine: {same}")
    result = {"machine": machine, **C.git_commit(), "loadavg_at_end": list(os.getloadavg()),
              "model": {"preset": args.preset, "cfg_path": args.cfg_path, "options": args.options, "model_root": args.model_root},
              "settings": {"requests_per_client": args.requests, "max_tokens": args.max_tokens,
                           "max_batch_size": args.max_batch_size, "threads": args.threads,
                           "clients": CLIENT_KINDS[args.client],
                           "batch_timeout_ms": args.batch_timeout_ms, "rounds": args.rounds, "greedy": True,
                           "streamed": True, "image": "224x224 PNG", "images": args.images,
                           "visual_cache": args.visual_cache, "engines": args.engine},
              "lone_answers_same_on_every_engine": same,
              "alone": {engine: [{"image": images.index(image), "question": q, "text": text}
                                 for (image, q), text in answers.items()] for engine, answers in alone.items()},
              "table": table, "rounds": rounds}
    print("wrote", C.write_json(args.out, result))
    if args.record:
        print("wrote", C.write_json(C.RESULTS / f"serve_{name}.json", result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
