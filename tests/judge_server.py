"""A tiny OpenAI-compatible chat server on loopback that injects faults, for testing the LLM-judge client.

It is real HTTP (stdlib ``ThreadingHTTPServer`` in a thread), so the official ``openai`` client talks to
it exactly as it would to vLLM or OpenAI. Each chat request pops the next fault from a FIFO queue
("500", "429", "timeout", "malformed", "unparsable"; empty queue -> "ok", answered by ``respond(body)``).
``api_key`` demands a bearer token; ``die_after`` stops listening after that many good answers, and
``restart()`` brings the server back on the same port.
"""

from __future__ import annotations

import collections
import json
import threading
import time
import uuid
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Callable, Iterable


@dataclass
class Reply:
    content: str
    top_logprobs: dict[str, float] | None = None  # alternatives for the FIRST generated token, {token: logprob}


class _HTTPServer(ThreadingHTTPServer):
    allow_reuse_address = True
    daemon_threads = False  # non-daemon handler threads are the ones server_close() joins


def _words(text) -> int:
    return len(text.split()) if isinstance(text, str) else 0


class JudgeServer:
    """OpenAI-compatible POST /v1/chat/completions and GET /v1/models on 127.0.0.1, served from a thread."""

    def __init__(self, respond: Callable[[dict], Reply | str], port: int = 0, model: str = "judge-test",
                 faults: Iterable[str] = (), timeout_sleep: float = 3.0, die_after: int | None = None,
                 api_key: str | None = None):
        self.respond, self.model, self.timeout_sleep = respond, model, timeout_sleep
        self.die_after, self.api_key, self._port = die_after, api_key, port
        self.requests: list[dict] = []
        self.answered: list[dict] = []
        self._faults = collections.deque(faults)
        self._lock = threading.Lock()
        self._stopping = threading.Event()  # wakes "timeout" sleepers on stop()
        self._httpd: _HTTPServer | None = None
        self._thread: threading.Thread | None = None

    # -- lifecycle -------------------------------------------------------------------------------
    def start(self) -> "JudgeServer":
        self._stopping.clear()
        self._httpd = _HTTPServer(("127.0.0.1", self._port), self._handler_class())
        self._port = self._httpd.server_address[1]
        self._thread = threading.Thread(target=self._httpd.serve_forever, kwargs={"poll_interval": 0.05},
                                        name=f"judge-server-{self._port}", daemon=True)
        self._thread.start()
        return self

    def stop(self):
        if self._httpd is None:
            return
        self._stopping.set()
        self._stop_listening()
        self._httpd.server_close()  # joins the handler threads
        self._thread.join()
        self._httpd = self._thread = None

    def restart(self) -> "JudgeServer":
        """A fresh server on the same port; keeps ``requests``/``answered``, clears ``die_after``."""
        self.stop()
        self.die_after = None
        return self.start()

    def __enter__(self) -> "JudgeServer":
        return self.start()

    def __exit__(self, *exc):
        self.stop()

    def _stop_listening(self):
        # shutdown() waits for serve_forever to leave its loop (safe from a handler thread: it is another
        # thread); then closing the socket makes later connects fail with "connection refused".
        httpd = self._httpd
        if httpd is not None and httpd.socket.fileno() != -1:
            httpd.shutdown()
            httpd.socket.close()

    @property
    def port(self) -> int:
        return self._port

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._port}/v1"

    def push_faults(self, *faults: str):
        with self._lock:
            self._faults.extend(faults)

    # -- answers ---------------------------------------------------------------------------------
    def _completion(self, body: dict, reply: Reply) -> dict:
        message = {"role": "assistant", "content": reply.content}
        choice = {"index": 0, "message": message, "finish_reason": "stop", "logprobs": None}
        if body.get("logprobs"):
            alts = reply.top_logprobs or {reply.content[:1]: 0.0}
            ranked = sorted(alts.items(), key=lambda kv: kv[1], reverse=True)[: int(body.get("top_logprobs") or 0)]
            first, lp = max(alts.items(), key=lambda kv: kv[1])
            choice["logprobs"] = {"content": [{
                "token": first, "logprob": lp, "bytes": None,
                "top_logprobs": [{"token": t, "logprob": l, "bytes": None} for t, l in ranked]}]}
        prompt = sum(_words(m.get("content")) for m in body.get("messages", []))
        completion = max(1, _words(reply.content))
        return {"id": f"chatcmpl-{uuid.uuid4().hex[:12]}", "object": "chat.completion", "created": int(time.time()),
                "model": body.get("model", self.model),
                "choices": [dict(choice, index=i) for i in range(max(1, int(body.get("n") or 1)))],
                "usage": {"prompt_tokens": prompt, "completion_tokens": completion,
                          "total_tokens": prompt + completion}}

    def _handler_class(self):
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):  # keep test output quiet
                pass

            def _send(self, status: int, payload, headers: dict | None = None):
                data = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
                try:
                    self.send_response(status)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(data)))
                    for k, v in (headers or {}).items():
                        self.send_header(k, v)
                    self.end_headers()
                    self.wfile.write(data)
                    self.wfile.flush()
                except (BrokenPipeError, ConnectionResetError):
                    pass  # the client gave up (e.g. its timeout fired)

            def _error(self, status: int, message: str, kind: str, headers: dict | None = None):
                self._send(status, {"error": {"message": message, "type": kind, "param": None, "code": None}},
                           headers)

            def _authorized(self) -> bool:
                if server.api_key is None or self.headers.get("Authorization") == f"Bearer {server.api_key}":
                    return True
                self._error(401, "Incorrect API key provided.", "invalid_request_error")
                return False

            def do_GET(self):
                if not self._authorized():
                    return
                if self.path.rstrip("/") != "/v1/models":
                    return self._error(404, f"no route {self.path}", "invalid_request_error")
                self._send(200, {"object": "list", "data": [
                    {"id": server.model, "object": "model", "created": 0, "owned_by": "judge-server"}]})

            def do_POST(self):
                raw = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                try:
                    body = json.loads(raw or b"{}")
                except ValueError:
                    return self._error(400, "request body is not JSON", "invalid_request_error")
                with server._lock:
                    server.requests.append(body)
                if not self._authorized():
                    return
                if self.path.rstrip("/") != "/v1/chat/completions":
                    return self._error(404, f"no route {self.path}", "invalid_request_error")
                with server._lock:
                    fault = server._faults.popleft() if server._faults else "ok"
                if fault == "500":
                    return self._error(500, "injected server error", "server_error")
                if fault == "429":
                    return self._error(429, "injected rate limit", "rate_limit_exceeded", {"Retry-After": "0"})
                if fault == "malformed":
                    return self._send(200, b'{"id": "x", "choices": [')
                if fault == "timeout" and server._stopping.wait(server.timeout_sleep):
                    return  # stop() woke us: the client is long gone
                if fault == "unparsable":
                    reply = Reply("I cannot decide.", {"I": -0.1, "The": -2.5, "Sorry": -3.0})
                else:
                    reply = server.respond(body)
                    reply = Reply(reply) if isinstance(reply, str) else reply
                payload = server._completion(body, reply)
                with server._lock:
                    server.answered.append(body)
                    dying = server.die_after is not None and len(server.answered) >= server.die_after
                if dying:  # stop listening *before* the reply goes out, so the client's next call is refused
                    server._stop_listening()
                self._send(200, payload)

        return Handler


def arithmetic_oracle(body: dict) -> Reply:
    """A capable judge for tests: it reads rest-loop's judge prompts and grades by the reference.

    Pointwise: one digit (9 right, 2 wrong) with its logprobs; rationale: a sentence and
    `Rating: N`; ranking: right candidates first, in the prompt's order, as the paper's format.
    """
    import re

    from rest_loop.improve.verifiers import extract_number

    text = body["messages"][-1]["content"]
    reference = re.search(r"Reference answer: (.*)", text).group(1).strip()

    def right(answer: str) -> bool:
        return extract_number(answer) == extract_number(reference)

    candidates = re.findall(r"Candidate #(\d+):\n(.*?)(?=\n\nCandidate #|\Z)", text, re.S)
    if candidates:
        order = sorted(candidates, key=lambda c: not right(c[1]))  # stable: right ones first, then shown order
        ranking = " > ".join(f"#{n}" for n, _ in order)
        return Reply(f"Explanation: candidates that match {reference} are better.\n"
                     f"Answer: #{order[0][0]}\nRanking: {ranking}")
    answer = re.search(r"Answer to grade:\n(.*?)(?=\n\nReply with|\Z)", text, re.S).group(1)
    rating = 9 if right(answer) else 2
    if body.get("logprobs"):
        return Reply(str(rating), {str(rating): -0.05, str(rating - 1): -3.0, "The": -5.0})
    return Reply(f"The answer {'matches' if rating == 9 else 'does not match'} the reference.\nRating: {rating}")
