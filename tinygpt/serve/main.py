"""`python demo.py`: arguments -> config -> model -> Chat -> web demo + API, API alone, or terminal.

    python demo.py                                    # the README quickstart's tiny model
    python demo.py --cfg-path eval_configs/X.yaml --options run.device=cpu
    python demo.py --cfg-path eval_configs/X.yaml --host 0.0.0.0 --port 7860   # reachable from others
    python demo.py --cfg-path eval_configs/X.yaml --api-only
    python demo.py --model exported/tiny                # a `python -m tinygpt.export` directory
    python demo.py --cli --image photo.jpg < questions.txt
"""
from __future__ import annotations

import argparse
import dataclasses
import functools
import logging
import os
import sys
from typing import Optional

from ..conversation.chat import Chat, GenerationOptions
from ..common.errors import UserError, entry_point
from .threads import SMALL_MODEL_PARAMS, model_engine, use_model_threads
from .validation import Limits

DEFAULT_CONFIG = "eval_configs/tiny.yaml"
DEFAULT_CHECKPOINT = "output/tiny/stage4/checkpoint_final.safetensors"
QUICKSTART = "bash quickstart.sh"


class StartupError(UserError):
    """The demo cannot start; the message says what to do (exit status 2)."""


def parse_args(argv: Optional[list[str]]) -> argparse.Namespace:
    defaults = GenerationOptions()
    p = argparse.ArgumentParser(prog="demo.py", description="Chat with a TinyGPT-V model about an image: "
                                "Gradio web demo + JSON API, or the terminal with --cli.")
    p.add_argument("--model", metavar="DIR", help="an exported model directory (python -m tinygpt.export); "
                   "no YAML needed")
    p.add_argument("--cfg-path", help=f"model config YAML (default: {DEFAULT_CONFIG}, the quickstart's tiny "
                   f"model, made by `{QUICKSTART}`)")
    p.add_argument("--options", nargs="+", default=[], metavar="KEY=VALUE",
                   help="config overrides, e.g. run.device=cpu model.max_context_len=1024")
    p.add_argument("--host", default="127.0.0.1",
                   help="address to listen on (default 127.0.0.1: this machine only; 0.0.0.0 exposes it)")
    p.add_argument("--port", type=int, default=7860)
    p.add_argument("--api-only", action="store_true", help="serve the JSON API without the web page")
    p.add_argument("--cli", action="store_true", help="chat in the terminal instead (needs --image)")
    p.add_argument("--image", help="the image to chat about with --cli")
    g = p.add_argument_group("generation (defaults for every answer; the web page and API can change them)")
    g.add_argument("--temperature", type=float, default=defaults.temperature, help="0 = greedy (default)")
    g.add_argument("--num-beams", type=int, default=defaults.num_beams)
    g.add_argument("--max-new-tokens", type=int, default=defaults.max_new_tokens)
    g.add_argument("--top-p", type=float, default=defaults.top_p)
    g.add_argument("--repetition-penalty", type=float, default=defaults.repetition_penalty)
    limits = Limits()
    s = p.add_argument_group("serving (the scheduler that batches concurrent requests; docs/chat.md)")
    s.add_argument("--max-batch-size", type=int, default=limits.max_batch_size,
                   help="answers decoded together (default %(default)s)")
    s.add_argument("--max-queue", type=int, default=limits.max_queue,
                   help="requests waiting beyond the batch; one more gets 429 + Retry-After (default %(default)s)")
    s.add_argument("--batch-timeout-ms", type=float, default=limits.batch_timeout_s * 1000,
                   help="the longest an arriving request waits for others still being prepared, to share one prefill "
                   "(default %(default)s)")
    s.add_argument("--visual-cache", type=int, default=limits.visual_cache_size, metavar="N",
                   help=f"keep the decoded inputs (by the file's bytes, within {limits.input_cache_bytes // 2**20} "
                   "MiB) and the visual tokens (by the pixels) of the last N images, so a conversation's next turn "
                   "(an API client sends the image again) is neither decoded nor encoded again; 0 = off "
                   "(default %(default)s)")
    s.add_argument("--engine", choices=("auto", "process", "thread"), default="auto",
                   help="where the model runs: its own process (the HTTP side then never waits for the model's "
                   "interpreter lock; the HTTP process keeps a second copy of the weights) or a thread of the "
                   f"HTTP server's process; default auto: process for a model under {SMALL_MODEL_PARAMS // 10**6} M "
                   "parameters, thread otherwise (docs/chat.md)")
    s.add_argument("--threads", type=int, metavar="N",
                   help="threads each tensor op of the model runs on (default: 1 for a model under "
                   f"{SMALL_MODEL_PARAMS // 10**6} M parameters, whose ops are too small to split; torch's "
                   "default otherwise)")
    args = p.parse_args(argv)
    if args.max_batch_size < 1 or args.max_queue < 0 or not 0 <= args.batch_timeout_ms <= 10_000 \
            or args.visual_cache < 0:
        p.error("--max-batch-size must be >= 1, --max-queue and --visual-cache >= 0 and --batch-timeout-ms "
                "in [0, 10000]")
    if args.threads is not None and args.threads < 1:
        p.error("--threads must be >= 1")
    args.limits = dataclasses.replace(limits, max_batch_size=args.max_batch_size, max_queue=args.max_queue,
                                      batch_timeout_s=args.batch_timeout_ms / 1000,
                                      visual_cache_size=args.visual_cache)
    if args.cli and not args.image:
        p.error("--cli needs --image IMG")
    if args.image and not args.cli:
        p.error("--image is for --cli (the web page has its own upload)")
    try:
        args.generation = defaults.replace(temperature=args.temperature, num_beams=args.num_beams,
                                           max_new_tokens=args.max_new_tokens, top_p=args.top_p,
                                           repetition_penalty=args.repetition_penalty)
    except ValueError as exc:
        p.error(str(exc))
    return args


def config_path(requested: Optional[str]) -> str:
    """The config to use; without --cfg-path, the quickstart's tiny model, which must exist."""
    if requested:
        return requested
    missing = [p for p in (DEFAULT_CONFIG, DEFAULT_CHECKPOINT) if not os.path.exists(p)]
    if missing:
        raise StartupError(
            f"no --cfg-path given, so the demo uses the README quickstart's tiny model, but "
            f"{' and '.join(missing)} {'is' if len(missing) == 1 else 'are'} missing (looked in {os.getcwd()}).\n"
            f"Make it with `{QUICKSTART}` (it trains the tiny model on the synthetic data), "
            f"or pass --cfg-path eval_configs/<config>.yaml for another model.")
    return DEFAULT_CONFIG


def load_chat(cfg_path: Optional[str], options: list[str], generation: GenerationOptions,
              model_dir: Optional[str] = None) -> Chat:
    """Config (or exported directory) -> the Chat every route answers with (api.inference_chat)."""
    import tinygpt
    from tinygpt.api import inference_chat

    if model_dir:
        from tinygpt.export import load_exported_config

        cfg = load_exported_config(model_dir, options)
    else:
        cfg = tinygpt.load_config(cfg_path, options)
    return inference_chat(cfg, generation)


@entry_point("demo.py")
def main(argv: Optional[list[str]] = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    if args.model and args.cfg_path:
        raise StartupError("give --model (an exported directory) or --cfg-path, not both")
    cfg_path = None if args.model else config_path(args.cfg_path)
    chat = load_chat(cfg_path, args.options, args.generation, model_dir=args.model)
    limits = args.limits
    threads = use_model_threads(chat.model, args.threads)
    if args.cli:
        from .cli import run_cli

        return run_cli(chat, args.image, sys.stdin, sys.stdout, sys.stderr, limits=limits)

    from .app import build_app, serve
    from .ui import synthetic_examples

    scheduler = None
    if model_engine(chat.model, args.engine) == "process":  # the child builds its own model from the same arguments
        from .engine_process import ModelGone, ProcessScheduler

        try:
            scheduler = ProcessScheduler(functools.partial(load_chat, cfg_path, args.options, args.generation,
                                                           model_dir=args.model), limits, args.threads)
        except ModelGone as exc:
            raise StartupError(f"{exc} (or run the model in the server's process: --engine thread)") from exc
        threads = scheduler.threads
    examples = [] if args.api_only else synthetic_examples(instruct=chat.style.instruct)
    app = build_app(chat, ui=not args.api_only, limits=limits, examples=examples, scheduler=scheduler)
    if args.host not in ("127.0.0.1", "localhost", "::1"):
        print(f"demo.py: listening on {args.host}: other machines can reach this server, which has no "
              f"authentication", file=sys.stderr)
    where = f"http://{args.host}:{args.port}"
    print(f"demo.py: {'JSON API' if args.api_only else 'chat page'} on {where}/ "
          f"(POST {where}/v1/chat/completions, POST {where}/worker_generate, GET {where}/health, "
          f"GET {where}/metrics; up to {limits.max_batch_size} answers batched, {threads} thread(s) per op, "
          f"the model in {'its own process' if scheduler else 'a thread'})", file=sys.stderr)
    try:
        serve(app, args.host, args.port)
    finally:
        if scheduler is not None:
            scheduler.close()
    return 0
