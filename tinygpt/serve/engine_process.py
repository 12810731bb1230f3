"""The model and its scheduler in a process of their own (`demo.py --engine process`), as vLLM splits
its API server from its engine core: the HTTP process keeps validation, image decoding and
preprocessing, the prompt's tokens, the queue bound (429) and /metrics, and no longer shares its
interpreter lock with the model thread, whose every tensor op otherwise handed the lock to the
event loop and waited to get it back (docs/chat.md, "Why").

    scheduler = ProcessScheduler(factory, limits)   # factory(): the Chat (or model), built in the child
    request = scheduler.reserve(n)                    # as Scheduler.reserve: a slot, or Busy
    request.start(rows, sink, stop); request.cancel()
    scheduler.close()

The child runs the same `Scheduler` (one batching implementation); this module only carries its
calls and events over a pipe.  Every call the HTTP side makes (reserve, start, cancel) is mirrored
in the child in order, so the child's scheduler sees what a thread engine sees (requests still
being prepared included, for `batch_timeout_s`).  A slot is freed in the HTTP process exactly once:
when its last answer (or an error) arrives, before the caller sees it, as the thread engine frees
it; after a cancel, when the child's scheduler has dropped its rows and says so.  The child builds the model itself from `factory` (a
picklable callable: no weights cross the pipe).  If the child dies, in-flight requests get a
`ModelGone` error and new ones are refused with it (HTTP 503), and the log says so.
"""
from __future__ import annotations

import itertools
import logging
import multiprocessing
import queue
import threading
from typing import Callable, Optional

import torch
from prometheus_client.parser import text_string_to_metric_families

from .batching import Row
from .metrics import ServeMetrics
from .scheduler import Busy, Event, Scheduler
from .threads import use_model_threads
from .validation import Limits

log = logging.getLogger(__name__)

# What the model process measures (the HTTP process keeps the request counts and the held gauge).
MODEL_SIDE = ("queue_depth", "running", "prompt_tokens", "generation_tokens", "ttft", "prefill", "prefill_rows",
              "visual_cache_hits", "token_latency")
HTTP_SIDE = ("tinygpt_requests", "tinygpt_requests_held", "tinygpt_input_cache_hits")


class ModelGone(Exception):
    """The model process is not running (HTTP 503)."""


class RemoteRequest:
    """The HTTP side of a request whose rows run in the model process (scheduler.Request's interface)."""

    def __init__(self, engine: "ProcessScheduler", rid: int, n: int):
        self.engine, self.id, self.n = engine, rid, n
        self.sink: Callable[[Event], None] = lambda event: None
        self.cancelled = False
        self.released = False
        self.answered = 0  # choices whose Answer came back

    def start(self, rows: list[Row], sink: Callable[[Event], None], stop: tuple[str, ...] = ()) -> None:
        if len(rows) != self.n:
            raise ValueError(f"this request reserved {self.n} rows, got {len(rows)}")
        self.sink = sink
        # The image goes as an array (pickled bytes), not as a tensor: torch would pass it through
        # shared memory, a file per tensor.
        self.engine._send(("start", self.id, [(r.image.numpy(), r.layout, r.options, r.dialogue) for r in rows],
                           tuple(stop)))

    def cancel(self) -> None:
        if not (self.cancelled or self.released):
            self.cancelled = True
            self.engine._send(("cancel", self.id))


class ProcessScheduler:
    """Scheduler's interface (reserve, held, running, metrics, close) over a model process."""

    def __init__(self, factory: Callable, limits: Limits, threads: Optional[int] = None, start_timeout_s: float = 600):
        self.max_batch_size, self.max_queue = limits.max_batch_size, limits.max_queue
        self.retry_after_s = 2
        self.metrics = ServeMetrics()
        for name in MODEL_SIDE:  # these come from the model process (_ModelMetrics)
            self.metrics.registry.unregister(getattr(self.metrics, name))
        self.metrics.registry.register(_ModelMetrics(self))
        self._lock = threading.Lock()
        self._send_lock = threading.Lock()
        self._asking = threading.Lock()
        self._requests: dict[int, RemoteRequest] = {}
        self._ids = itertools.count()
        self._running = 0
        self._replies: queue.Queue = queue.Queue()
        self._closing = self._gone = False
        ctx = multiprocessing.get_context("spawn")  # a fresh interpreter: no threads or locks forked
        self._conn, child = ctx.Pipe()
        self.process = ctx.Process(target=_model_process, name="tinygpt-model",
                                   args=(factory, limits, threads, child), daemon=True)
        self.process.start()
        child.close()
        if not self._conn.poll(start_timeout_s):
            self.process.kill()
            raise ModelGone(f"the model process did not start within {start_timeout_s:.0f} s")
        try:
            ready = self._conn.recv()
        except EOFError:
            raise ModelGone(f"the model process failed to start (exit code {self.process.exitcode}); see its log")
        if ready[0] != "ready":
            raise ModelGone(f"the model process failed to start: {ready[1]}")
        self.threads = ready[1]
        self._reader = threading.Thread(target=self._read, name="tinygpt-model-events", daemon=True)
        self._reader.start()

    # ------------------------------------------------------------------ callers' side
    @property
    def held(self) -> int:
        return len(self._requests)

    @property
    def running(self) -> int:
        return self._running

    def reserve(self, n: int = 1) -> RemoteRequest:
        with self._lock:
            if self._gone:
                raise ModelGone("the model process is not running; the server must be restarted")
            if self._closing:
                raise Busy("the server is shutting down", self.retry_after_s)
            if len(self._requests) >= self.max_batch_size + self.max_queue:
                raise Busy(f"the server is busy ({len(self._requests)} requests accepted, the queue holds "
                           f"{self.max_queue}); retry later", self.retry_after_s)
            request = RemoteRequest(self, next(self._ids), n)
            self._requests[request.id] = request
            self.metrics.held.set(len(self._requests))
        self._send(("reserve", request.id, n))
        return request

    def close(self) -> None:
        self._closing = True
        if self.process.is_alive():
            try:
                self._send(("close",))
            except ModelGone:
                pass
            self.process.join(timeout=30)
        if self.process.is_alive():
            self.process.kill()
        self._reader.join(timeout=10)

    def model_metrics(self) -> str:
        """The model process's metrics (Prometheus text); empty when it is gone."""
        with self._asking:  # one question at a time: the replies come back in order
            try:
                self._send(("metrics",))
                return self._replies.get(timeout=10)
            except (ModelGone, queue.Empty):
                return ""

    def _send(self, message) -> None:
        with self._send_lock:
            if self._gone:
                raise ModelGone("the model process is not running")
            try:
                self._conn.send(message)
            except OSError as exc:
                raise ModelGone(f"the model process is not running ({exc})")

    # ------------------------------------------------------------------ the reader thread
    def _read(self) -> None:
        try:
            while True:
                message = self._conn.recv()
                kind = message[0]
                if kind == "event":
                    _, rid, event, error = message
                    request = self._requests.get(rid)
                    if request is not None:
                        if error is not None:
                            event = Event(event.index, error=_rebuild(*error))
                        request.answered += event.answer is not None
                        if error is not None or request.answered == request.n:
                            # Its last event: the child frees it right after; free it here before
                            # the caller sees the answer (as the thread engine does), not when the
                            # child's note arrives.
                            self._free(rid)
                        request.sink(event)
                elif kind == "released":  # e.g. a cancel: the child dropped its rows
                    self._free(message[1])
                elif kind == "running":
                    self._running = message[1]
                elif kind == "metrics":
                    self._replies.put(message[1])
        except (EOFError, OSError):
            pass
        self._conn_closed()

    def _free(self, rid: int) -> None:
        with self._lock:
            request = self._requests.pop(rid, None)
            self.metrics.held.set(len(self._requests))
        if request is not None:
            request.released = True

    def _conn_closed(self) -> None:
        with self._lock:
            self._gone = True
            orphans = list(self._requests.values())
            self._requests.clear()
            self.metrics.held.set(0)
        self._running = 0
        self._replies.put("")  # a /metrics question in flight gets no answer from it any more
        self.process.join(timeout=5)
        if not self._closing:
            log.error("the model process exited (exit code %s): %d request(s) failed; new requests get 503 until "
                      "the server is restarted", self.process.exitcode, len(orphans))
        gone = ModelGone(f"the model process exited (exit code {self.process.exitcode})")
        for request in orphans:
            request.released = True
            request.sink(Event(0, error=gone))


class _ModelMetrics:
    """A prometheus_client collector: the model process's metrics, read when /metrics is asked."""

    def __init__(self, engine: ProcessScheduler):
        self.engine = engine

    def describe(self):
        return []  # names are only known once the child answers; registering must not ask it

    def collect(self):
        for family in text_string_to_metric_families(self.engine.model_metrics()):
            if family.name not in HTTP_SIDE:
                yield family


def _rebuild(kind: str, message: str, retry_after: Optional[int]) -> BaseException:
    """An error of the model process, on this side (exceptions with extra arguments do not unpickle)."""
    if kind == "Busy":
        return Busy(message, retry_after)
    return type(kind, (RuntimeError,), {})(message)  # keeps its name for "generation failed: <name>: ..."


# ---------------------------------------------------------------------- the model process
class _ReportingScheduler(Scheduler):
    """The child's scheduler: tells the HTTP process when a request's slot is freed."""

    def __init__(self, model, send: Callable, **kwargs):
        self.send = send
        self.requests = {}  # the HTTP process's id -> Request, until its slot is freed
        self.reported_running = 0
        super().__init__(model, **kwargs)

    def _next_rows(self):
        # The top of the model thread's loop, after every prefill and step (and a failure): the
        # running batch's size for /health.
        if len(self.batch) != self.reported_running:
            self.reported_running = len(self.batch)
            self.send(("running", self.reported_running))
        return super()._next_rows()

    def _release(self, request) -> None:
        freed = request.state != "done"
        super()._release(request)
        if freed:
            self.requests.pop(request.rid, None)
            self.send(("released", request.rid))


def _model_process(factory: Callable, limits: Limits, threads: Optional[int], conn) -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s[model]: %(message)s")
    try:
        built = factory()
        model = getattr(built, "model", built)  # a Chat or the model itself
        n_threads = use_model_threads(model, threads)
    except Exception as exc:
        log.exception("the model could not be built")
        conn.send(("failed", f"{type(exc).__name__}: {exc}"))
        return
    send_lock = threading.Lock()

    def send(message) -> None:
        with send_lock:
            conn.send(message)

    # The HTTP process holds the queue bound; here every mirrored reserve must succeed.
    scheduler = _ReportingScheduler(model, send, max_batch_size=limits.max_batch_size, max_queue=2**31,
                                    batch_timeout_s=limits.batch_timeout_s, visual_cache_size=limits.visual_cache_size)

    def sink(rid: int, event: Event) -> None:
        error = event.error
        wire = (type(error).__name__, str(error), getattr(error, "retry_after", None)) if error is not None else None
        send(("event", rid, Event(event.index, event.text, event.answer) if error is None else Event(event.index),
              wire))

    requests = scheduler.requests
    conn.send(("ready", n_threads))
    try:
        while True:
            message = conn.recv()
            kind = message[0]
            if kind == "reserve":
                request = scheduler.reserve(message[2])
                request.rid = message[1]
                requests[message[1]] = request
            elif kind == "start":
                _, rid, rows, stop = message
                if rid not in requests:  # cancelled before it started
                    continue
                requests[rid].start([Row(torch.from_numpy(image), layout, options, dialogue=dialogue)
                               for image, layout, options, dialogue in rows],
                              lambda event, rid=rid: sink(rid, event), stop)
            elif kind == "cancel":
                request = requests.get(message[1])
                if request is not None:
                    request.cancel()
            elif kind == "metrics":
                send(("metrics", scheduler.metrics.render().decode()))
            elif kind == "close":
                break
    except EOFError:  # the HTTP process is gone
        pass
    scheduler.close()
