"""A realistic local fake of the Anthropic and OpenAI HTTP APIs, for end-to-end tests.

Standard library only: ``http.server.ThreadingHTTPServer`` + ``ssl``, HTTP/1.1 with
keep-alive, chunked SSE streams flushed event by event.

In-process use::

    from tests.fakes.provider import FakeProvider
    from tests.fakes.tlsfiles import make_test_ca

    tls = make_test_ca(tmp_path)
    with FakeProvider(tls["cert"], tls["key"]) as provider:
        provider.script(chunks=["Hel", "lo"])          # next API request only
        ...  # point clients at provider.base_url (Anthropic) / provider.openai_base_url
        req = provider.wait_for_requests(1)[0]

As a subprocess::

    python -m tests.fakes.provider --cert server.pem --key server-key.pem --port 0

prints ``READY https://127.0.0.1:<port>`` on stdout once listening and serves until
SIGTERM/SIGINT.  A small JSON control API under ``/_fake/`` (enabled by default in
subprocess mode, see ``_handle_control``) lets another process script behaviours and read
the recorded requests.

Endpoints: ``POST /v1/messages`` (Anthropic), ``POST /v1/chat/completions`` (OpenAI);
anything else is a 404 with a provider-style error body (OpenAI style when the request
carries ``Authorization: Bearer`` and no Anthropic headers, Anthropic style otherwise).
"""

from __future__ import annotations

import argparse
import base64
import collections
import dataclasses
import json
import math
import re
import secrets
import select
import signal
import socket
import socketserver
import ssl
import string
import struct
import sys
import threading
import time
import traceback
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Callable, Iterable, Mapping, Sequence

__all__ = ["FakeProvider", "Received", "Script"]

ANTHROPIC = "anthropic"
OPENAI = "openai"

_MAX_BODY = 64 * 1024 * 1024
_POLL_S = 0.05

def _is_network_error(exc: BaseException) -> bool:
    """True for errors that just mean "the peer went away" (or we are shutting down).

    OSError covers BrokenPipeError, ConnectionResetError, ssl.SSLError (SSLEOFError, ...)
    and socket timeouts; ValueError("I/O operation on closed file") shows up after a reset.
    Such errors never deserve a traceback.
    """
    if isinstance(exc, OSError):
        return True
    return isinstance(exc, ValueError) and "closed" in str(exc)


# --------------------------------------------------------------------------------------
# Public data types
# --------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Received:
    """One request as received by the fake.

    ``body`` is the request payload exactly as sent (for ``Transfer-Encoding: chunked``
    requests it is the de-chunked payload; ``wire_body`` holds the bytes including the
    chunk framing).  ``headers`` keeps received order, original casing and duplicates.
    """

    method: str
    path: str
    query: str
    headers: list[tuple[str, str]]
    body: bytes
    wire_body: bytes = b""
    http_version: str = "HTTP/1.1"
    connection_id: int = 0
    received_at: float = 0.0
    scripted: bool = False

    def header(self, name: str, default: str | None = None) -> str | None:
        """First value of header ``name`` (case-insensitive), or ``default``."""
        lname = name.lower()
        for k, v in self.headers:
            if k.lower() == lname:
                return v
        return default

    def header_values(self, name: str) -> list[str]:
        """All values of header ``name`` (case-insensitive), in received order."""
        lname = name.lower()
        return [v for k, v in self.headers if k.lower() == lname]

    def has_header(self, name: str) -> bool:
        return bool(self.header_values(name))

    def json(self) -> Any:
        return json.loads(self.body)

    @property
    def target(self) -> str:
        """The request target as sent (path plus ``?query`` if any)."""
        return f"{self.path}?{self.query}" if self.query else self.path


@dataclasses.dataclass
class Script:
    """A scripted behaviour for one upcoming API request (see ``FakeProvider.script``)."""

    reply_text: str | None = None
    chunks: Sequence[str] | None = None
    status: int | None = None
    error_body: Any = None
    delay_s: float = 0.0
    stall_after_events: int | None = None
    reset_after_events: int | None = None
    headers: Mapping[str, str] | Sequence[tuple[str, str]] | None = None
    usage: Mapping[str, Any] | None = None
    raw_body: bytes | Sequence[bytes] | None = None
    content_type: str | None = None
    chunk_delay_s: float = 0.0


class _Abort(Exception):
    """Unwind the handler and drop the connection (after stall/reset/peer close/stop)."""


# --------------------------------------------------------------------------------------
# Helpers
# --------------------------------------------------------------------------------------

_ALNUM = string.ascii_letters + string.digits


def _rand(n: int) -> str:
    return "".join(secrets.choice(_ALNUM) for _ in range(n))


def _split_words(text: str) -> list[str]:
    """Split into word-ish pieces whose concatenation is exactly ``text``."""
    return re.findall(r"\S+\s*|\s+", text)


def _approx_tokens(text: str) -> int:
    return max(1, math.ceil(len(text) / 4)) if text else 0


def _content_text(content: Any) -> str:
    """Text of an Anthropic content / OpenAI message content (str or list of blocks/parts)."""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        parts = []
        for block in content:
            if isinstance(block, dict) and block.get("type") in ("text", "input_text") and isinstance(block.get("text"), str):
                parts.append(block["text"])
            elif isinstance(block, str):
                parts.append(block)
        return "\n".join(parts)
    return ""


def _last_user_text(messages: Any) -> str:
    if not isinstance(messages, list):
        return ""
    for msg in reversed(messages):
        if isinstance(msg, dict) and msg.get("role") == "user":
            return _content_text(msg.get("content"))
    return ""


def _all_prompt_text(req: Mapping[str, Any]) -> str:
    parts = []
    system = req.get("system")
    if system is not None:
        parts.append(_content_text(system))
    for msg in req.get("messages") or []:
        if isinstance(msg, dict):
            parts.append(_content_text(msg.get("content")))
    return "\n".join(parts)


def _anthropic_error(status: int, message: str | None = None) -> dict[str, Any]:
    etype, default_msg = {
        400: ("invalid_request_error", "Invalid request"),
        401: ("authentication_error", "invalid x-api-key"),
        403: ("permission_error", "Your API key does not have permission to use the specified resource."),
        404: ("not_found_error", "Not Found"),
        413: ("request_too_large", "Request exceeds the maximum allowed number of bytes."),
        429: ("rate_limit_error", "Number of request tokens has exceeded your per-minute rate limit"),
        500: ("api_error", "Internal server error"),
        529: ("overloaded_error", "Overloaded"),
    }.get(status, ("api_error" if status >= 500 else "invalid_request_error", f"HTTP {status}"))
    return {
        "type": "error",
        "error": {"type": etype, "message": message or default_msg},
        "request_id": "req_" + _rand(24),
    }


def _openai_error(status: int, message: str | None = None) -> dict[str, Any]:
    etype, code, default_msg = {
        400: ("invalid_request_error", None, "Invalid request"),
        401: ("invalid_request_error", "invalid_api_key", "Incorrect API key provided."),
        403: ("invalid_request_error", "unsupported_country_region_territory", "Forbidden"),
        404: ("invalid_request_error", None, "Not found"),
        429: ("requests", "rate_limit_exceeded", "Rate limit reached for requests"),
        500: ("server_error", None, "The server had an error while processing your request. Sorry about that!"),
        503: ("server_error", None, "The engine is currently overloaded, please try again later"),
    }.get(status, ("server_error" if status >= 500 else "invalid_request_error", None, f"HTTP {status}"))
    return {"error": {"message": message or default_msg, "type": etype, "param": None, "code": code}}


def _peer_closed(sock: socket.socket) -> bool:
    """Non-blocking check whether the peer closed (FIN/RST) or sent a TLS alert (close_notify)."""
    try:
        if sock.fileno() < 0:
            return True
        readable, _, _ = select.select([sock], [], [], 0)
        if not readable:
            return False
        # Peek at the raw TCP stream underneath TLS.
        data = socket.socket.recv(sock, 5, socket.MSG_PEEK)
    except (OSError, ValueError):
        return True
    return data == b"" or data[:1] == b"\x15"  # EOF, or a TLS alert record


def _unsent_bytes(sock: socket.socket) -> int:
    """Bytes in the kernel send queue not yet ACKed by the peer (0 if unknown)."""
    try:
        import fcntl
        import termios

        buf = fcntl.ioctl(sock.fileno(), termios.TIOCOUTQ, b"\0\0\0\0")  # == SIOCOUTQ
        return struct.unpack("i", buf)[0]
    except Exception:
        return 0


# --------------------------------------------------------------------------------------
# Server
# --------------------------------------------------------------------------------------


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    block_on_close = False
    allow_reuse_address = True
    request_queue_size = 128

    fake: "FakeProvider"

    def server_bind(self) -> None:
        # HTTPServer.server_bind does a reverse DNS lookup (getfqdn); skip it.
        socketserver.TCPServer.server_bind(self)
        host, port = self.server_address[:2]
        self.server_name = str(host)
        self.server_port = port

    def process_request(self, request: socket.socket, client_address: Any) -> None:
        conn_id = self.fake._on_accept()
        t = threading.Thread(
            target=self._connection_thread,
            args=(request, client_address, conn_id),
            name=f"fake-provider-conn-{conn_id}",
            daemon=True,
        )
        t.start()

    def _connection_thread(self, request: socket.socket, client_address: Any, conn_id: int) -> None:
        fake = self.fake
        fake._thread_started(threading.current_thread())
        tls: ssl.SSLSocket | None = None
        try:
            request.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)  # flush each SSE event now
            request.settimeout(fake.handshake_timeout)
            tls = fake._ssl_ctx.wrap_socket(request, server_side=True)
            tls.settimeout(fake.idle_timeout)
            fake._register_socket(tls)
            _Handler(tls, client_address, self, conn_id)
        except BaseException as exc:  # noqa: BLE001 - connection threads must never die loudly
            fake._report_error(exc)
        finally:
            for s in (tls, request):
                if s is not None:
                    try:
                        s.close()
                    except Exception:
                        pass
            if tls is not None:
                fake._unregister_socket(tls)
            fake._on_close(threading.current_thread())

    def handle_error(self, request: Any, client_address: Any) -> None:  # pragma: no cover - unused path
        exc = sys.exc_info()[1]
        if exc is not None:
            self.fake._report_error(exc)


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "fake-llm-provider/1.0"
    sys_version = ""
    server: _Server

    def __init__(self, request: Any, client_address: Any, server: _Server, conn_id: int) -> None:
        self.conn_id = conn_id
        self.fake = server.fake
        super().__init__(request, client_address, server)

    # Silence the default stderr access log.
    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002
        pass

    # All methods go through one dispatcher; unknown routes get a provider-style 404.
    def do_POST(self) -> None:
        self._dispatch()

    do_GET = do_PUT = do_PATCH = do_DELETE = do_HEAD = do_OPTIONS = do_POST

    # ---- request reading -------------------------------------------------------------

    def _read_body(self) -> tuple[bytes, bytes]:
        te = ",".join(self.headers.get_all("Transfer-Encoding") or []).lower()
        if "chunked" in te:
            return self._read_chunked()
        cl = self.headers.get("Content-Length")
        if cl is None:
            return b"", b""
        n = int(cl.strip())
        if n < 0 or n > _MAX_BODY:
            raise ValueError("bad Content-Length")
        body = self.rfile.read(n) if n else b""
        if len(body) != n:
            raise _Abort("short body")
        return body, body

    def _read_chunked(self) -> tuple[bytes, bytes]:
        body = bytearray()
        wire = bytearray()
        while True:
            line = self.rfile.readline(65537)
            if not line:
                raise _Abort("EOF in chunked body")
            wire += line
            size = int(line.split(b";", 1)[0].strip(), 16)
            if size == 0:
                break
            if len(body) + size > _MAX_BODY:
                raise ValueError("chunked body too large")
            data = self.rfile.read(size)
            crlf = self.rfile.read(2)
            if len(data) != size or crlf != b"\r\n":
                raise _Abort("bad chunk")
            body += data
            wire += data + crlf
        while True:  # trailers, terminated by an empty line
            line = self.rfile.readline(65537)
            if not line:
                raise _Abort("EOF in trailers")
            wire += line
            if line in (b"\r\n", b"\n"):
                break
        return bytes(body), bytes(wire)

    def _dispatch(self) -> None:
        try:
            try:
                body, wire = self._read_body()
            except ValueError:
                self.close_connection = True
                self._send_json(400, _anthropic_error(400, "malformed request body framing"), Script())
                return
            path, _, query = self.path.partition("?")
            rec = Received(
                method=self.command,
                path=path,
                query=query,
                headers=list(self.headers.items()),
                body=body,
                wire_body=wire,
                http_version=self.request_version,
                connection_id=self.conn_id,
                received_at=time.time(),
            )
            if path.startswith("/_fake/") and self.fake.control_api:
                self._handle_control(rec)
                return

            route = None
            if self.command == "POST" and path == "/v1/messages":
                route = self._anthropic
            elif self.command == "POST" and path == "/v1/chat/completions":
                route = self._openai
            script = self.fake._pop_script() if route is not None else None
            self.fake._record(dataclasses.replace(rec, scripted=script is not None))
            if route is None:
                self._not_found(rec)
            else:
                route(rec, script or Script())
        except _Abort:
            self.close_connection = True

    # ---- low-level response writing --------------------------------------------------

    def _write(self, data: bytes) -> None:
        self.wfile.write(data)

    def _merged_headers(self, defaults: list[tuple[str, str]], script: Script) -> list[tuple[str, str]]:
        extra: list[tuple[str, str]] = []
        if script.headers:
            items = script.headers.items() if isinstance(script.headers, Mapping) else script.headers
            extra = [(str(k), str(v)) for k, v in items]
        overridden = {k.lower() for k, _ in extra}
        if script.content_type is not None:
            overridden.add("content-type")
            extra.insert(0, ("Content-Type", script.content_type))
        return [(k, v) for k, v in defaults if k.lower() not in overridden] + extra

    def _send_head(self, status: int, headers: list[tuple[str, str]]) -> None:
        self.send_response(status)
        for k, v in headers:
            self.send_header(k, v)
        self.end_headers()  # flushes status line + headers in one write

    def _wait(self, seconds: float | None) -> None:
        """Sleep ``seconds`` (None = forever); raise _Abort if the server stops or the peer leaves."""
        deadline = None if seconds is None else time.monotonic() + seconds
        stop = self.fake._stop_event
        while True:
            if stop.is_set() or _peer_closed(self.connection):
                raise _Abort("stopped or peer closed")
            if deadline is not None:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return
                stop.wait(min(_POLL_S, remaining))
            else:
                stop.wait(_POLL_S)

    def _stall(self) -> None:
        self.fake._note("stall", self.conn_id)
        self._wait(None)

    def _reset(self) -> None:
        """Abort the TCP connection with RST (SO_LINGER 0 + close), no TLS close_notify."""
        self.fake._note("reset", self.conn_id)
        sock = self.connection
        # SO_LINGER 0 discards whatever is still in our send queue, so first let the events
        # already written reach the peer's kernel (best effort; Linux SIOCOUTQ).
        deadline = time.monotonic() + 1.0
        while time.monotonic() < deadline and _unsent_bytes(sock) > 0:
            time.sleep(0.005)
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        except OSError:
            pass
        try:
            self.rfile.close()  # drop makefile()'s reference so close() really closes the fd
        except Exception:
            pass
        try:
            sock.close()
        except Exception:
            pass
        raise _Abort("reset")

    def _check_before_headers(self, script: Script) -> None:
        if script.delay_s:
            self._wait(script.delay_s)
        if script.reset_after_events is not None and script.reset_after_events < 0:
            self._reset()
        if script.stall_after_events is not None and script.stall_after_events < 0:
            self._stall()

    def _send_body(self, status: int, body: bytes, headers: list[tuple[str, str]], script: Script) -> None:
        """A non-streamed response; stall/reset N=0: after headers, N>=1: after half the body."""
        self._check_before_headers(script)
        if self.command == "HEAD":
            body = b""
        if not any(k.lower() == "content-length" for k, _ in headers):  # a script may fake a wrong one
            headers = [*headers, ("Content-Length", str(len(body)))]
        self._send_head(status, headers)
        for n, action in ((script.stall_after_events, self._stall), (script.reset_after_events, self._reset)):
            if n is not None:
                if n >= 1:
                    self._write(body[: len(body) // 2])
                action()
        if body:
            self._write(body)

    def _send_json(self, status: int, obj: Any, script: Script, defaults: list[tuple[str, str]] | None = None) -> None:
        body = obj if isinstance(obj, bytes) else (obj.encode() if isinstance(obj, str) else json.dumps(obj).encode())
        headers = self._merged_headers([("Content-Type", "application/json"), *(defaults or [])], script)
        self._send_body(status, body, headers, script)

    def _send_stream(self, status: int, events: Sequence[bytes], headers: list[tuple[str, str]], script: Script) -> None:
        """Stream ``events``: one chunk per event, written (flushed) immediately.

        stall/reset N: after N events (N >= len(events): after all events, before the
        terminating zero-length chunk)."""
        self._check_before_headers(script)
        chunked = self.request_version != "HTTP/1.0"
        if chunked:
            headers = [*headers, ("Transfer-Encoding", "chunked")]
        else:
            self.close_connection = True
            headers = [*headers, ("Connection", "close")]
        self._send_head(status, headers)
        if self.command == "HEAD":
            return
        stall, reset = script.stall_after_events, script.reset_after_events
        for i, ev in enumerate([*events, None]):
            if stall == i or (ev is None and stall is not None and stall > i):
                self._stall()
            if reset == i or (ev is None and reset is not None and reset > i):
                self._reset()
            if ev is None:
                break
            if i and script.chunk_delay_s:
                self._wait(script.chunk_delay_s)
            if not ev:
                continue  # a zero-length chunk would terminate the body
            self._write(b"%x\r\n%s\r\n" % (len(ev), ev) if chunked else ev)
            self.fake._note("event", self.conn_id)
        if chunked:
            self._write(b"0\r\n\r\n")

    def _send_raw(self, status: int, script: Script, provider: str) -> None:
        raw = script.raw_body
        ctype = script.content_type or "application/json"
        base = [("Content-Type", ctype), *self._id_headers(provider)]
        headers = self._merged_headers(base, Script(headers=script.headers))
        if isinstance(raw, (bytes, bytearray, memoryview)):
            self._send_body(status, bytes(raw), headers, script)
        else:
            self._send_stream(status, [bytes(p) for p in (raw or [])], headers, script)

    def _id_headers(self, provider: str) -> list[tuple[str, str]]:
        if provider == ANTHROPIC:
            return [("request-id", "req_" + _rand(24)), ("anthropic-organization-id", "00000000-0000-4000-8000-000000000000")]
        return [
            ("x-request-id", "req_" + _rand(32)),
            ("openai-organization", "fake-org"),
            ("openai-processing-ms", "12"),
            ("openai-version", "2020-10-01"),
        ]

    def _send_error(self, provider: str, status: int, body: Any, script: Script) -> None:
        if body is None:
            body = _anthropic_error(status) if provider == ANTHROPIC else _openai_error(status)
        self._send_json(status, body, script, self._id_headers(provider))

    def _not_found(self, rec: Received) -> None:
        openai_style = (
            (rec.header("authorization") or "").lower().startswith("bearer ")
            and not rec.has_header("x-api-key")
            and not rec.has_header("anthropic-version")
        )
        if openai_style:
            body = _openai_error(404, f"Invalid URL ({rec.method} {rec.path})")
            self._send_error(OPENAI, 404, body, Script())
        else:
            self._send_error(ANTHROPIC, 404, _anthropic_error(404, "Not Found"), Script())

    def _parse_json_request(self, rec: Received, provider: str, script: Script) -> dict[str, Any] | None:
        try:
            req = json.loads(rec.body)
            if not isinstance(req, dict):
                raise ValueError("not an object")
            return req
        except ValueError:
            msg = "There was an error parsing the body of your request"
            body = _anthropic_error(400, msg) if provider == ANTHROPIC else _openai_error(400, msg)
            self._send_error(provider, 400, body, Script(headers=script.headers))
            return None

    def _plan(self, rec: Received, req: dict[str, Any], provider: str, script: Script) -> tuple[str, list[str]]:
        if script.reply_text is not None:
            text = script.reply_text
        elif script.chunks is not None:
            text = "".join(script.chunks)
        else:
            text = self.fake._default_reply(provider, rec, req)
        chunks = list(script.chunks) if script.chunks is not None else _split_words(text)
        return text, chunks

    # ---- Anthropic -------------------------------------------------------------------

    def _anthropic(self, rec: Received, script: Script) -> None:
        if script.raw_body is not None:
            return self._send_raw(script.status or 200, script, ANTHROPIC)
        if script.error_body is not None or (script.status is not None and script.status >= 400):
            return self._send_error(ANTHROPIC, script.status or 500, script.error_body, script)
        req = self._parse_json_request(rec, ANTHROPIC, script)
        if req is None:
            return
        text, chunks = self._plan(rec, req, ANTHROPIC, script)
        model = req.get("model") or "claude-fake"
        usage: dict[str, Any] = {
            "input_tokens": _approx_tokens(_all_prompt_text(req)),
            "output_tokens": _approx_tokens(text),
            "cache_creation_input_tokens": 0,
            "cache_read_input_tokens": 0,
        }
        usage.update(script.usage or {})
        msg_id = "msg_01" + _rand(22)
        status = script.status or 200
        if not req.get("stream"):
            message = {
                "id": msg_id,
                "type": "message",
                "role": "assistant",
                "model": model,
                "content": [{"type": "text", "text": text}],
                "stop_reason": "end_turn",
                "stop_sequence": None,
                "usage": usage,
            }
            return self._send_json(status, message, script, self._id_headers(ANTHROPIC))

        def ev(name: str, data: dict[str, Any]) -> bytes:
            return f"event: {name}\ndata: {json.dumps(data, separators=(',', ':'))}\n\n".encode()

        start_usage = dict(usage, output_tokens=min(1, usage.get("output_tokens", 1)))
        events = [
            ev("message_start", {"type": "message_start", "message": {
                "id": msg_id, "type": "message", "role": "assistant", "model": model, "content": [],
                "stop_reason": None, "stop_sequence": None, "usage": start_usage}}),
            ev("content_block_start", {"type": "content_block_start", "index": 0,
                                       "content_block": {"type": "text", "text": ""}}),
            ev("ping", {"type": "ping"}),
            *(ev("content_block_delta", {"type": "content_block_delta", "index": 0,
                                         "delta": {"type": "text_delta", "text": piece}}) for piece in chunks),
            ev("content_block_stop", {"type": "content_block_stop", "index": 0}),
            ev("message_delta", {"type": "message_delta",
                                 "delta": {"stop_reason": "end_turn", "stop_sequence": None},
                                 "usage": {"output_tokens": usage.get("output_tokens", 0)}}),
            ev("message_stop", {"type": "message_stop"}),
        ]
        headers = self._merged_headers(
            [("Content-Type", "text/event-stream; charset=utf-8"), ("Cache-Control", "no-cache"),
             *self._id_headers(ANTHROPIC)], script)
        self._send_stream(status, events, headers, script)

    # ---- OpenAI ----------------------------------------------------------------------

    def _openai(self, rec: Received, script: Script) -> None:
        if script.raw_body is not None:
            return self._send_raw(script.status or 200, script, OPENAI)
        if script.error_body is not None or (script.status is not None and script.status >= 400):
            return self._send_error(OPENAI, script.status or 500, script.error_body, script)
        req = self._parse_json_request(rec, OPENAI, script)
        if req is None:
            return
        text, chunks = self._plan(rec, req, OPENAI, script)
        model = req.get("model") or "gpt-fake"
        prompt_tokens = _approx_tokens(_all_prompt_text(req))
        completion_tokens = _approx_tokens(text)
        usage: dict[str, Any] = {
            "prompt_tokens": prompt_tokens,
            "completion_tokens": completion_tokens,
            "total_tokens": prompt_tokens + completion_tokens,
            "prompt_tokens_details": {"cached_tokens": 0},
            "completion_tokens_details": {"reasoning_tokens": 0},
        }
        if script.usage:
            usage.update(script.usage)
            if "total_tokens" not in script.usage:
                usage["total_tokens"] = int(usage.get("prompt_tokens") or 0) + int(usage.get("completion_tokens") or 0)
        cid = "chatcmpl-" + _rand(29)
        created = int(time.time())
        fingerprint = "fp_fake0001"
        status = script.status or 200
        if not req.get("stream"):
            completion = {
                "id": cid,
                "object": "chat.completion",
                "created": created,
                "model": model,
                "choices": [{
                    "index": 0,
                    "message": {"role": "assistant", "content": text, "refusal": None, "annotations": []},
                    "logprobs": None,
                    "finish_reason": "stop",
                }],
                "usage": usage,
                "service_tier": "default",
                "system_fingerprint": fingerprint,
            }
            return self._send_json(status, completion, script, self._id_headers(OPENAI))

        include_usage = bool((req.get("stream_options") or {}).get("include_usage"))

        def chunk(choices: list[dict[str, Any]], **extra: Any) -> bytes:
            obj: dict[str, Any] = {"id": cid, "object": "chat.completion.chunk", "created": created, "model": model,
                                   "service_tier": "default", "system_fingerprint": fingerprint, "choices": choices}
            if include_usage:
                obj["usage"] = None
            obj.update(extra)
            return b"data: " + json.dumps(obj, separators=(",", ":")).encode() + b"\n\n"

        def choice(delta: dict[str, Any], finish: str | None = None) -> list[dict[str, Any]]:
            return [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}]

        events = [
            chunk(choice({"role": "assistant", "content": "", "refusal": None})),
            *(chunk(choice({"content": piece})) for piece in chunks),
            chunk(choice({}, "stop")),
        ]
        if include_usage:
            events.append(chunk([], usage=usage))
        events.append(b"data: [DONE]\n\n")
        headers = self._merged_headers(
            [("Content-Type", "text/event-stream; charset=utf-8"), *self._id_headers(OPENAI)], script)
        self._send_stream(status, events, headers, script)

    # ---- control API (for subprocess mode) --------------------------------------------

    def _handle_control(self, rec: Received) -> None:
        """``POST /_fake/script`` (JSON Script fields; ``raw_body`` as latin-1 string or
        ``raw_body_b64``), ``GET /_fake/requests``, ``GET /_fake/stats``, ``POST /_fake/reset``."""
        fake = self.fake
        ctl = Script()
        if rec.method == "POST" and rec.path == "/_fake/script":
            spec = json.loads(rec.body or b"{}")
            if "raw_body_b64" in spec:
                spec["raw_body"] = base64.b64decode(spec.pop("raw_body_b64"))
            elif isinstance(spec.get("raw_body"), str):
                spec["raw_body"] = spec["raw_body"].encode("latin-1")
            elif isinstance(spec.get("raw_body"), list):
                spec["raw_body"] = [p.encode("latin-1") for p in spec["raw_body"]]
            fake.script(**spec)
            return self._send_json(200, {"ok": True, "pending": fake.pending_scripts}, ctl)
        if rec.method == "GET" and rec.path == "/_fake/requests":
            out = [{
                "method": r.method, "path": r.path, "query": r.query, "headers": r.headers,
                "body_b64": base64.b64encode(r.body).decode(), "connection_id": r.connection_id,
            } for r in fake.requests_snapshot()]
            return self._send_json(200, out, ctl)
        if rec.method == "GET" and rec.path == "/_fake/stats":
            return self._send_json(200, fake.stats(), ctl)
        if rec.method == "POST" and rec.path == "/_fake/reset":
            fake.reset()
            return self._send_json(200, {"ok": True}, ctl)
        return self._send_json(404, {"error": "unknown control endpoint"}, ctl)


# --------------------------------------------------------------------------------------
# Public API
# --------------------------------------------------------------------------------------


class FakeProvider:
    """HTTPS fake of Anthropic ``/v1/messages`` and OpenAI ``/v1/chat/completions``.

    Thread-safe attributes/methods: ``requests`` (list of :class:`Received`, appended in
    arrival order), ``connections`` (TCP connections accepted), ``connections_closed``,
    ``active_connections``, ``script()``, ``wait_for_requests()``, ``wait_for()``.
    """

    def __init__(
        self,
        cert: str,
        key: str,
        host: str = "127.0.0.1",
        port: int = 0,
        *,
        control_api: bool = False,
        handshake_timeout: float = 10.0,
        idle_timeout: float | None = None,
    ) -> None:
        self.cert, self.key, self.host, self._port = cert, key, host, port
        self.control_api = control_api
        self.handshake_timeout = handshake_timeout
        self.idle_timeout = idle_timeout

        self._lock = threading.Lock()
        self._cond = threading.Condition(self._lock)
        self._scripts: collections.deque[Script] = collections.deque()
        self.requests: list[Received] = []
        self.connections = 0
        self.connections_closed = 0
        self.events: list[tuple[str, int]] = []  # ("stall"|"reset"|"event", connection_id)
        self.errors: list[BaseException] = []  # unexpected (non-network) handler errors
        self.default_reply: Callable[[str, Received, dict[str, Any]], str] | str | None = None

        self._stop_event = threading.Event()
        self._sockets: set[ssl.SSLSocket] = set()
        self._threads: set[threading.Thread] = set()
        self._httpd: _Server | None = None
        self._serve_thread: threading.Thread | None = None

        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.minimum_version = ssl.TLSVersion.TLSv1_2
        ctx.load_cert_chain(cert, key)
        ctx.set_alpn_protocols(["http/1.1"])
        self._ssl_ctx = ctx

    # ---- lifecycle -------------------------------------------------------------------

    def start(self) -> "FakeProvider":
        if self._httpd is not None:
            raise RuntimeError("already started")
        httpd = _Server((self.host, self._port), _Handler)
        httpd.fake = self
        self._httpd = httpd
        self._serve_thread = threading.Thread(
            target=httpd.serve_forever, kwargs={"poll_interval": _POLL_S}, name="fake-provider", daemon=True
        )
        self._serve_thread.start()
        return self

    def stop(self, timeout: float = 5.0) -> None:
        """Stop accepting, drop every open connection (even stalled ones) and join threads."""
        httpd = self._httpd
        if httpd is None or self._stop_event.is_set():
            return
        self._stop_event.set()
        httpd.shutdown()
        httpd.server_close()
        with self._lock:
            socks = list(self._sockets)
            threads = list(self._threads)
        for s in socks:
            try:
                socket.socket.shutdown(s, socket.SHUT_RDWR)  # unblocks readers; bypasses SSL unwrap
            except (OSError, ValueError):
                pass
        deadline = time.monotonic() + timeout
        if self._serve_thread is not None:
            self._serve_thread.join(max(0.0, deadline - time.monotonic()))
        for t in threads:
            t.join(max(0.0, deadline - time.monotonic()))

    def __enter__(self) -> "FakeProvider":
        return self.start()

    def __exit__(self, *exc: Any) -> None:
        self.stop()

    @property
    def port(self) -> int:
        if self._httpd is None:
            raise RuntimeError("not started")
        return self._httpd.server_address[1]

    @property
    def base_url(self) -> str:
        """``https://127.0.0.1:PORT`` - the Anthropic SDK's ``base_url``."""
        return f"https://{self.host}:{self.port}"

    @property
    def openai_base_url(self) -> str:
        """``https://127.0.0.1:PORT/v1`` - the OpenAI SDK's ``base_url`` (it appends ``/chat/completions``)."""
        return self.base_url + "/v1"

    # ---- scripting -------------------------------------------------------------------

    def script(
        self,
        reply_text: str | None = None,
        chunks: Sequence[str] | None = None,
        status: int | None = None,
        error_body: Any = None,
        delay_s: float = 0,
        stall_after_events: int | None = None,
        reset_after_events: int | None = None,
        headers: Mapping[str, str] | Sequence[tuple[str, str]] | None = None,
        usage: Mapping[str, Any] | None = None,
        raw_body: bytes | Sequence[bytes] | None = None,
        content_type: str | None = None,
        chunk_delay_s: float = 0,
    ) -> Script:
        """Queue a behaviour for the next request to ``/v1/messages`` or ``/v1/chat/completions``.

        Scripts are consumed FIFO, one per API request; other paths (404s, ``/_fake/``)
        never consume one; with the queue empty the default (echo) behaviour applies.

        reply_text      answer text (non-stream body; streamed split into words unless ``chunks``)
        chunks          exact text pieces, one stream delta each (non-stream: joined)
        status          response status; >= 400 sends a provider-style error JSON
        error_body      error JSON to send instead (dict -> JSON, str/bytes sent verbatim;
                        status defaults to 500)
        delay_s         sleep before the status line (aborted early if the peer leaves / stop())
        stall_after_events / reset_after_events
                        streams: after N SSE events (N >= number of events: after all of them
                        but before the terminating zero-length chunk); non-stream bodies: N=0
                        after the headers, N>=1 after half the body; N<0: before any response
                        byte.  stall = send nothing more until the peer closes or stop();
                        reset = wait (<=1s) for sent bytes to be ACKed, then SO_LINGER 0 + close
                        (TCP RST, no TLS close_notify)
        headers         extra response headers (dict or list of pairs); replace same-named defaults
        usage           merged over the default usage object (OpenAI total_tokens recomputed
                        unless given)
        raw_body        exact response bytes (Content-Length), or a list of byte strings sent as
                        one HTTP chunk each (stall/reset count these pieces); status default 200
        content_type    Content-Type override (default for raw_body: application/json)
        chunk_delay_s   extra: pause between stream events (abortable like delay_s)
        """
        s = Script(
            reply_text=reply_text,
            chunks=list(chunks) if chunks is not None else None,
            status=status,
            error_body=error_body,
            delay_s=delay_s,
            stall_after_events=stall_after_events,
            reset_after_events=reset_after_events,
            headers=headers,
            usage=usage,
            raw_body=raw_body if raw_body is None or isinstance(raw_body, (bytes, bytearray)) else list(raw_body),
            content_type=content_type,
            chunk_delay_s=chunk_delay_s,
        )
        with self._lock:
            self._scripts.append(s)
        return s

    @property
    def pending_scripts(self) -> int:
        with self._lock:
            return len(self._scripts)

    def reset(self) -> None:
        """Forget recorded requests/events/errors and pending scripts (counters are kept)."""
        with self._lock:
            self._scripts.clear()
            self.requests.clear()
            self.events.clear()
            self.errors.clear()

    # ---- observation -----------------------------------------------------------------

    def requests_snapshot(self) -> list[Received]:
        with self._lock:
            return list(self.requests)

    def wait_for(self, predicate: Callable[[], bool], timeout: float = 5.0) -> None:
        """Wait until ``predicate()`` (evaluated under the provider lock) is true, else TimeoutError."""
        with self._cond:
            if not self._cond.wait_for(predicate, timeout):
                raise TimeoutError("condition not met within %.1fs" % timeout)

    def wait_for_requests(self, n: int, timeout: float = 5.0) -> list[Received]:
        """Wait until at least ``n`` requests were recorded; return a snapshot of all of them."""
        with self._cond:
            if not self._cond.wait_for(lambda: len(self.requests) >= n, timeout):
                raise TimeoutError(f"expected {n} requests, got {len(self.requests)} within {timeout}s")
            return list(self.requests)

    @property
    def active_connections(self) -> int:
        with self._lock:
            return self.connections - self.connections_closed

    def wait_for_idle(self, timeout: float = 5.0) -> None:
        """Wait until every accepted connection has been closed."""
        self.wait_for(lambda: self.connections == self.connections_closed, timeout)

    def stats(self) -> dict[str, int]:
        with self._lock:
            return {
                "connections": self.connections,
                "connections_closed": self.connections_closed,
                "requests": len(self.requests),
                "pending_scripts": len(self._scripts),
            }

    # ---- internals (called from server threads) ---------------------------------------

    def _default_reply(self, provider: str, rec: Received, req: dict[str, Any]) -> str:
        dr = self.default_reply
        if callable(dr):
            return dr(provider, rec, req)
        if isinstance(dr, str):
            return dr
        return f"Hello from fake {provider}: {_last_user_text(req.get('messages'))}"

    def _pop_script(self) -> Script | None:
        with self._lock:
            return self._scripts.popleft() if self._scripts else None

    def _record(self, rec: Received) -> None:
        with self._cond:
            self.requests.append(rec)
            self._cond.notify_all()

    def _note(self, kind: str, conn_id: int) -> None:
        with self._cond:
            self.events.append((kind, conn_id))
            self._cond.notify_all()

    def _on_accept(self) -> int:
        with self._cond:
            self.connections += 1
            self._cond.notify_all()
            return self.connections

    def _thread_started(self, t: threading.Thread) -> None:
        with self._lock:
            self._threads.add(t)

    def _on_close(self, t: threading.Thread) -> None:
        with self._cond:
            self.connections_closed += 1
            self._threads.discard(t)
            self._cond.notify_all()

    def _register_socket(self, s: ssl.SSLSocket) -> None:
        with self._lock:
            self._sockets.add(s)
        if self._stop_event.is_set():  # raced with stop(): don't serve
            raise _Abort("stopping")

    def _unregister_socket(self, s: ssl.SSLSocket) -> None:
        with self._lock:
            self._sockets.discard(s)

    def _report_error(self, exc: BaseException) -> None:
        if isinstance(exc, _Abort) or _is_network_error(exc):
            return  # client went away / TLS failure / shutdown: expected, stay quiet
        with self._lock:
            self.errors.append(exc)
        traceback.print_exception(type(exc), exc, exc.__traceback__, file=sys.stderr)


# --------------------------------------------------------------------------------------
# Subprocess entry point
# --------------------------------------------------------------------------------------


def main(argv: Iterable[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.fakes.provider", description=__doc__.split("\n")[0])
    parser.add_argument("--cert", required=True, help="server certificate (PEM)")
    parser.add_argument("--key", required=True, help="server private key (PEM)")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0, help="0 = pick a free port (see READY line)")
    parser.add_argument("--no-control", action="store_true", help="disable the /_fake/ control API")
    args = parser.parse_args(list(argv) if argv is not None else None)

    done = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: done.set())
    provider = FakeProvider(args.cert, args.key, args.host, args.port, control_api=not args.no_control).start()
    print(f"READY {provider.base_url}", flush=True)
    try:
        while not done.wait(0.5):
            pass
    finally:
        provider.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
