"""A small OpenAI-compatible chat-completions server on 127.0.0.1 for the tests and benchmarks (not shipped).

It answers ``POST /v1/chat/completions`` with whatever ``responder(request_json) -> str`` returns
(and ``GET /v1/models`` with ``models``, counted in ``model_listings``, not in ``requests``),
after an optional fixed latency, and can inject faults from a queue (HTTP status with headers,
a stall longer than the client's timeout, a malformed body). It records every request and the
peak number of requests in flight, so tests can check what the client really sent.
"""

from __future__ import annotations

import json
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Callable


@dataclass(frozen=True)
class Fault:
    """``kind``: 'status' (send ``status`` with ``headers``), 'stall' (sleep ``seconds``), 'malformed'."""

    kind: str
    status: int = 500
    headers: dict = field(default_factory=dict)
    seconds: float = 0.0


class LoopbackJudgeServer:
    """``with LoopbackJudgeServer(responder) as server: server.base_url`` -> ``http://127.0.0.1:<port>/v1``."""

    def __init__(self, responder: Callable[[dict], str], latency: float = 0.0,
                 models: tuple[str, ...] = ()):
        self.responder = responder
        self.latency = latency
        self.models = models  # ids answered by GET /v1/models (kept apart from `requests`)
        self.model_listings = 0
        self.faults: deque[Fault] = deque()
        self.requests: list[dict] = []
        self.headers: list[dict] = []
        self.in_flight = 0
        self.peak_in_flight = 0
        self._lock = threading.Lock()
        self._httpd: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    @property
    def base_url(self) -> str:
        host, port = self._httpd.server_address[:2]
        return f"http://{host}:{port}/v1"

    def _handle(self, handler: BaseHTTPRequestHandler) -> None:
        length = int(handler.headers.get("Content-Length") or 0)
        body = json.loads(handler.rfile.read(length) or b"{}")
        with self._lock:
            self.requests.append(body)
            self.headers.append({k.lower(): v for k, v in handler.headers.items()})
            self.in_flight += 1
            self.peak_in_flight = max(self.peak_in_flight, self.in_flight)
            fault = self.faults.popleft() if self.faults else None
        try:
            if self.latency:
                time.sleep(self.latency)
            if fault is not None and fault.kind == "stall":
                time.sleep(fault.seconds)
            if fault is not None and fault.kind == "status":
                self._send(handler, fault.status, b'{"error": {"message": "injected"}}', fault.headers)
                return
            if fault is not None and fault.kind == "malformed":
                self._send(handler, 200, b'{"choices": [ {"message": ')
                return
            content = self.responder(body)
            reply = {"id": f"cmpl-{len(self.requests)}", "object": "chat.completion",
                     "created": int(time.time()), "model": body.get("model", ""),
                     "choices": [{"index": 0, "finish_reason": "stop",
                                  "message": {"role": "assistant", "content": content}}],
                     "usage": {"prompt_tokens": 0, "completion_tokens": 0, "total_tokens": 0}}
            self._send(handler, 200, json.dumps(reply).encode())
        except (BrokenPipeError, ConnectionResetError):
            pass  # the client gave up (timeout test); nothing to answer
        finally:
            with self._lock:
                self.in_flight -= 1

    def _list_models(self, handler: BaseHTTPRequestHandler) -> None:
        with self._lock:
            self.model_listings += 1
            fault = self.faults.popleft() if self.faults else None
        if fault is not None and fault.kind == "stall":
            time.sleep(fault.seconds)
        if fault is not None and fault.kind == "status":
            self._send(handler, fault.status, b'{"error": {"message": "injected"}}', fault.headers)
            return
        data = [{"id": m, "object": "model", "created": 0, "owned_by": "loopback"} for m in self.models]
        self._send(handler, 200, json.dumps({"object": "list", "data": data}).encode())

    @staticmethod
    def _send(handler, status: int, payload: bytes, headers: dict | None = None) -> None:
        handler.send_response(status)
        handler.send_header("Content-Type", "application/json")
        handler.send_header("Content-Length", str(len(payload)))
        for name, value in (headers or {}).items():
            handler.send_header(name, value)
        handler.end_headers()
        handler.wfile.write(payload)

    def start(self) -> "LoopbackJudgeServer":
        server = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):  # noqa: N802 (http.server naming)
                if not self.path.rstrip("/").endswith("/chat/completions"):
                    LoopbackJudgeServer._send(self, 404, b'{"error": "not found"}')
                    return
                server._handle(self)

            def do_GET(self):
                if not self.path.rstrip("/").endswith("/models"):
                    LoopbackJudgeServer._send(self, 404, b'{"error": "not found"}')
                    return
                try:
                    server._list_models(self)
                except (BrokenPipeError, ConnectionResetError):
                    pass

            def log_message(self, *args):
                pass

        class Server(ThreadingHTTPServer):
            request_queue_size = 128  # the default 5 would refuse bursts of concurrent clients
            block_on_close = False  # do not wait for stalled handlers (timeout tests)

        self._httpd = Server(("127.0.0.1", 0), Handler)
        self._httpd.daemon_threads = True
        self._thread = threading.Thread(target=self._httpd.serve_forever, daemon=True,
                                        name="kick-loopback-judge")
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._httpd is not None:
            self._httpd.shutdown()
            self._httpd.server_close()
            self._thread.join(timeout=5)
            self._httpd = None

    def __enter__(self) -> "LoopbackJudgeServer":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()
