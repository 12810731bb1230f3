"""uvicorn's HTTP/1.1 protocol with a deadline for receiving a whole request.

uvicorn times out idle keep-alive connections only, and restarts that timer on every byte, so a
client that sends half its headers (or trickles a byte now and then) holds a connection -- and a
slot of the server -- for as long as it likes; ASGI middleware cannot help, it runs only after the
request is parsed.  Here every request (headers and body) must arrive within `REQUEST_DEADLINE_S`
of its first byte (of the connection, for the first request); otherwise the connection is closed.
Answers are not limited: the deadline is disarmed once the request is complete.

A request h11 cannot parse (broken framing such as `Content-Length: abc`) is answered 400 with a
JSON body in both APIs' error shapes (uvicorn's own answer is plain text, which JSON clients choke on).

    uvicorn.run(app, http=DeadlineH11Protocol, timeout_keep_alive=5)
"""
from __future__ import annotations

import asyncio
import json
import logging

import h11
from uvicorn.protocols.http.h11_impl import H11Protocol

log = logging.getLogger(__name__)

REQUEST_DEADLINE_S = 15.0


class DeadlineH11Protocol(H11Protocol):
    deadline_s = REQUEST_DEADLINE_S

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._deadline = None
        self._cycle_at_arm = None
        self._arm()

    def data_received(self, data: bytes) -> None:
        if self._deadline is None and self.cycle is not None and self.cycle.response_complete:
            self._arm()  # the first bytes of the next request on a kept-alive connection
        super().data_received(data)
        cycle = self.cycle
        if cycle is not None and cycle is not self._cycle_at_arm and not cycle.more_body:
            self._disarm()  # this request is complete: the app has it

    def send_400_response(self, msg: str) -> None:
        message = "malformed HTTP request: h11 cannot parse its request line or headers (e.g. a non-numeric Content-Length)"
        body = json.dumps({"text": message, "error_code": 400,  # /worker_generate's shape ...
                           "error": {"message": message, "type": "invalid_request_error",  # ... and OpenAI's
                                     "param": None, "code": 400}}).encode()
        headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
                   (b"connection", b"close")]
        for event in (h11.Response(status_code=400, headers=headers, reason=b"Bad Request"), h11.Data(data=body),
                      h11.EndOfMessage()):
            self.transport.write(self.conn.send(event))
        self.transport.close()

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        super().connection_lost(exc)

    def _arm(self) -> None:
        self._disarm()
        self._cycle_at_arm = self.cycle
        self._deadline = self.loop.call_later(self.deadline_s, self._expire)

    def _disarm(self) -> None:
        if getattr(self, "_deadline", None) is not None:
            self._deadline.cancel()
            self._deadline = None

    def _expire(self) -> None:
        self._deadline = None
        if not self.transport.is_closing():
            log.warning("%s: request not received within %.0f s; connection closed",
                        "%s:%d" % self.client if self.client else "client", self.deadline_s)
            self.transport.close()
