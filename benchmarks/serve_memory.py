"""Server memory under hostile load: 40 concurrent clients each sending a legal 4096x4096 PNG
(~50 KB of file, 48 MiB of RGB once decoded) to `demo.py --api-only`, every request its own file (the
same pixels, another comment chunk: each is decoded, none comes from the server's input cache).

    bash quickstart.sh                      # (for data/synthetic/tokenizer; weights are not needed)
    python -m benchmarks.serve_memory [--clients 40] [--side 4096] [--cfg-path eval_configs/tiny.yaml]

The server runs in its own process (the quickstart's tiny model config; `--options model.ckpt=[]`
by default, so random weights do: memory does not depend on them).  Prints, from /proc/<pid>:
  idle      RSS after one warm-up request
  peak      highest RSS sampled every 10 ms while the clients are served
  held      RSS 3 s after the last answer of each burst (`--bursts` times the same 40 clients)
and the answers' status codes (200 answered, 429 refused with Retry-After while the queue is full).
Targets (issue 16): peak < 1.5x idle, held within 10% of idle.
"""
from __future__ import annotations

import argparse
import base64
import io
import json
import struct
import subprocess
import sys
import threading
import time
import zlib
from collections import Counter

from . import _common as C


def rss(pid: int) -> int:
    with open(f"/proc/{pid}/status") as f:
        return next(int(line.split()[1]) * 1024 for line in f if line.startswith("VmRSS"))


def big_png(side: int) -> bytes:
    from PIL import Image, ImageDraw

    image = Image.new("RGB", (side, side), "white")
    ImageDraw.Draw(image).ellipse([side // 4, side // 4, side // 2, side // 2], fill="red")
    buf = io.BytesIO()
    image.save(buf, format="PNG", optimize=True)
    return buf.getvalue()


def tagged(png: bytes, tag: str) -> str:
    """`png` with a tEXt chunk holding `tag` after its header, base64: the same pixels in other file
    bytes, so that the server's cache of decoded inputs (keyed by the file's bytes) misses and every
    request decodes its 4096 px image, as 40 users with 40 photos would make it."""
    data = b"Comment\0" + tag.encode()
    chunk = struct.pack(">I", len(data)) + b"tEXt" + data + struct.pack(">I", zlib.crc32(b"tEXt" + data))
    header_end = 8 + 25  # the signature and the IHDR chunk
    return base64.b64encode(png[:header_end] + chunk + png[header_end:]).decode()


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--cfg-path", default="eval_configs/tiny.yaml")
    p.add_argument("--options", nargs="*", default=["model.ckpt=[]"])
    p.add_argument("--clients", type=int, default=40)
    p.add_argument("--side", type=int, default=4096)
    p.add_argument("--bursts", type=int, default=3)
    p.add_argument("--port", type=int, default=7911)
    C.add_output_args(p)
    args = p.parse_args(argv)
    import httpx

    url = f"http://127.0.0.1:{args.port}"
    server = subprocess.Popen([sys.executable, "demo.py", "--api-only", "--cfg-path", args.cfg_path, "--port",
                               str(args.port), "--max-new-tokens", "4", "--options", *args.options],
                              cwd=C.ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        for _ in range(600):
            try:
                if httpx.get(url + "/health", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if server.poll() is not None:
                print(server.stderr.read().decode()[-2000:], file=sys.stderr)
                return 1
            time.sleep(0.2)
        image = big_png(args.side)
        body = {"input_text": "what colour is the circle?", "max_new_tokens": 4}
        httpx.post(url + "/worker_generate", json={**body, "image": tagged(big_png(64), "warm-up")},
                   timeout=120)
        time.sleep(1)
        idle = rss(server.pid)
        peak = [idle]
        done = threading.Event()

        def sample():
            while not done.is_set():
                peak[0] = max(peak[0], rss(server.pid))
                time.sleep(0.01)

        statuses, lock = Counter(), threading.Lock()

        def client(tag: str):
            try:
                outcome = httpx.post(url + "/worker_generate", json={**body, "image": tagged(image, tag)},
                                     timeout=600).status_code
            except httpx.HTTPError as exc:
                outcome = type(exc).__name__
            with lock:
                statuses[outcome] += 1

        sampler = threading.Thread(target=sample, daemon=True)
        sampler.start()
        held, walls = [], []
        for burst in range(args.bursts):  # the burst again: held memory must not grow burst by burst
            start = time.perf_counter()
            threads = [threading.Thread(target=client, args=(f"burst {burst} client {k}",))
                       for k in range(args.clients)]
            for t in threads:
                t.start()
            for t in threads:
                t.join()
            walls.append(round(time.perf_counter() - start, 2))
            time.sleep(3)
            held.append(rss(server.pid))
        done.set()
    finally:
        server.terminate()
        server.wait(30)
    mib = 2 ** 20
    result = {
        "machine": C.machine(), **C.git_commit(), "clients": args.clients, "image": f"{args.side}x{args.side} PNG",
        "png_bytes": len(image), "distinct_files": True, "statuses": dict(statuses), "wall_s": walls,
        "idle_mib": round(idle / mib, 1), "peak_mib": round(peak[0] / mib, 1),
        "held_mib_after_each_burst": [round(h / mib, 1) for h in held],
        "peak_over_idle": round(peak[0] / idle, 3), "held_over_idle": [round(h / idle, 3) for h in held],
    }
    print(json.dumps(result, indent=2))
    C.write_json(C.result_path(args, "serve_memory.json"), result)
    return 0


if __name__ == "__main__":
    sys.exit(main())
