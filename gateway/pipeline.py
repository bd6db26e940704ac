"""One governed call, top to bottom.

    route -> identify -> policy -> read body -> parse -> decide -> forward
          -> relay the answer (whole, or event by event) -> record

Each step either hands on to the next or ends the call with a gateway-made,
provider-shaped error (``gateway.errors``). Nothing is forwarded unless every
check said yes, and any unexpected exception before forwarding denies the call
(fail closed) with a log line that holds no content.
"""

import logging
import os
import socket
import time
from dataclasses import dataclass

import gevent
import requests
from gunicorn.http.errors import ParseException
from urllib3.exceptions import HTTPError as Urllib3Error
from urllib3.exceptions import ReadTimeoutError

from . import engine, identity, jsonspans, metrics
from .engine.redaction import scan_strings
from .errors import REASONS, BodyTimeout, error_body, new_request_id, status_line
from .headers import request_headers, response_headers
from .providers import ADAPTERS, ROUTES, read_call
from .streaming import StreamRelay
from .upstream import forwards_unchanged
from .usage import tokens
from .usage.record import usage_record

log = logging.getLogger("mitrity.gateway")
READ_CHUNK_BYTES = 64 * 1024
# Answered on a provider's path but not a governed call: no usage record.
_NOT_CALLS = frozenset(("method_not_allowed",))


@dataclass
class Call:
    """What the gateway knows of one call: metadata only, never content."""
    request_id: str
    started: float
    provider: str | None = None
    agent_id: str | None = None
    model: str | None = None
    stream: bool = False
    decision: str = "blocked"   # the request-phase verdict: allowed | redacted | blocked
    reason: str | None = None
    redactions: int = 0         # findings redacted, prompt and answer
    prompt_redactions: int = 0  # of which in the prompt
    forwarded: bool = False     # the request reached the provider
    usage: object = None        # gateway.usage.tokens.Usage, when the answer reported it
    prices: object = None       # the policy's price catalog, for the cost estimate
    started_at: float = 0.0     # wall clock, for the record's ts
    status: int = 0
    upstream_s: float | None = None  # forwarding until the provider's response headers


class _CloseAfter:
    """A response body after which the connection is shut down: the request's
    body was not (fully) read, so the connection cannot carry another request."""

    def __init__(self, body, sock):
        self._body, self._sock = body, sock

    def __iter__(self):
        yield self._body

    def close(self):
        _shutdown(self._sock)


def _shutdown(sock):
    if sock is None:
        return
    try:
        sock.shutdown(socket.SHUT_RDWR)
    except OSError:
        pass


class Gateway:
    def __init__(self, config, policies, upstreams, admin, usage_spool=None):
        self.policies = policies
        self.usage_spool = usage_spool  # where each call's usage record goes (gateway.usage.spool)
        self.upstreams = upstreams
        self.admin = admin
        self.max_request_bytes = config["server.max_request_bytes"]
        self.max_response_bytes = config["upstream.max_response_bytes"]
        self.body_timeout_s = config["server.body_timeout_s"]
        self.response_scan = config["dlp.response_scan"]
        self.holdback_bytes = config["dlp.stream_holdback_bytes"]
        self.allow_unknown = config["identity.unknown_agent"] == "allow"
        header = config["identity.api_key_header"]
        self.identity_header = header
        self.identity_environ_key = "HTTP_" + header.upper().replace("-", "_") if header else None

    # -- entry -------------------------------------------------------------

    def __call__(self, environ, start_response):
        request_id = new_request_id()
        connection = environ.get("mitrity.connection")
        if connection is not None and connection.role == "admin":
            return self.admin(environ, start_response, request_id)
        call = Call(request_id, time.monotonic(), started_at=time.time())
        try:
            return self.serve(environ, start_response, call, connection)
        except ParseException:
            raise  # malformed HTTP (e.g. bad chunking): the worker answers 400 and closes
        except BodyTimeout:
            # The worker closes the connection without an answer (a cut).
            call.reason, call.status = "body_timeout", 0
            self.record(call)
            raise
        except Exception as exc:
            frame = exc.__traceback__
            while frame.tb_next is not None:
                frame = frame.tb_next
            where = f"{os.path.basename(frame.tb_frame.f_code.co_filename)}:{frame.tb_lineno}"
            # The type and place only: an exception's text may quote content.
            log.error("request %s failed closed: %s at %s", request_id, type(exc).__name__, where)
            # After forwarding, the provider's answer is what could not be handled.
            return self.deny(start_response, call, "upstream_error" if call.forwarded else "internal_error")

    # -- the pipeline ------------------------------------------------------

    def serve(self, environ, start_response, call, connection):
        path, _, query = environ.get("RAW_URI", "").partition("?")
        provider = ROUTES.get(path)
        # A provider the config leaves out has no route (SPEC section 3).
        call.provider = provider if provider in self.upstreams.providers else None
        if call.provider is None:
            return self.deny(start_response, call, "not_found")
        if environ["REQUEST_METHOD"] != "POST":
            return self.deny(start_response, call, "method_not_allowed")

        cred = identity.credential(connection.spiffe_id if connection else None,
                                   environ.get(self.identity_environ_key) if self.identity_environ_key else None)
        if cred is None:
            return self.deny(start_response, call, "identity_missing")
        policy = self.policies.current()
        if policy is None:
            return self.deny(start_response, call, "policy_unavailable")
        agent = identity.resolve(policy, cred, self.allow_unknown)
        if agent is None:
            return self.deny(start_response, call, "agent_unknown")
        call.agent_id = agent.id

        body = self.read_body(environ)
        if body is None:
            return self.deny(start_response, call, "request_too_large", close=environ.get("gunicorn.socket"))
        adapter = ADAPTERS[call.provider]
        try:
            # Strict: not UTF-8, not JSON, or duplicate keys (which the scan
            # and the provider could read differently) are all a bad request.
            document = jsonspans.loads(body)
            request = read_call(document)
            prompt = adapter.prompt_strings(body, document) if request else ()
        except ValueError:
            request = None
        if request is None:
            return self.deny(start_response, call, "invalid_request")
        target = path + ("?" + query if query else "")
        if not forwards_unchanged(target):
            return self.deny(start_response, call, "invalid_request", message=(
                "The query string is not RFC 3986 (a raw character that must be percent-encoded, a stray '%', "
                "or a lower-case escape): it could not be forwarded unchanged."))
        call.model, call.stream = request.model, request.stream

        decision = engine.decide(policy, agent, call.provider, call.model, prompt)
        if decision.verdict.denied:
            return self.deny(start_response, call, decision.verdict.reason, message=decision.verdict.message)
        if decision.edits:
            body = jsonspans.replace_spans(body, decision.edits)
            call.decision, call.redactions = "redacted", decision.redactions
            call.prompt_redactions = decision.redactions
        else:
            call.decision = "allowed"
        call.prices = policy.prices
        drop_usage_chunk = False
        if call.provider == "openai" and call.stream and not adapter.asks_for_stream_usage(document):
            # Ask for the usage chunk (SPEC section 5); the agent will not see it.
            asked = adapter.with_stream_usage(body, document)
            if asked is not None:
                body, drop_usage_chunk = asked, True
        return self.forward(environ, start_response, call, policy, target, body, drop_usage_chunk)

    def read_body(self, environ):
        """The whole request body, or None when it is over the limit."""
        declared = environ.get("CONTENT_LENGTH")
        if declared and int(declared) > self.max_request_bytes:
            return None
        stream, parts, size = environ["wsgi.input"], [], 0
        with gevent.Timeout(self.body_timeout_s, BodyTimeout):
            while True:
                part = stream.read(READ_CHUNK_BYTES)
                if not part:
                    return b"".join(parts)
                size += len(part)
                if size > self.max_request_bytes:
                    return None
                parts.append(part)

    def forward(self, environ, start_response, call, policy, path_and_query, body, drop_usage_chunk=False):
        headers = request_headers(environ, self.identity_header)
        sent = time.monotonic()
        try:
            upstream = self.upstreams.send(call.provider, path_and_query, headers, body)
        except (requests.exceptions.ConnectTimeout, requests.exceptions.ReadTimeout):
            return self.deny(start_response, call, "upstream_timeout")
        except requests.exceptions.RequestException as exc:
            log.warning("request %s: provider %s unreachable: %s", call.request_id, call.provider, type(exc).__name__)
            return self.deny(start_response, call, "upstream_error")

        call.forwarded = True
        call.upstream_s = time.monotonic() - sent
        answer_headers = response_headers(upstream.headers) + self.call_headers(call)
        call.status = upstream.status_code
        content_type = upstream.headers.get("content-type", "")
        scanner = policy.scanner if self.response_scan and policy.scanner.has_patterns("response") else None
        if upstream.ok and content_type.startswith("text/event-stream"):
            start_response(status_line(upstream.status_code), answer_headers)
            return self.relay_stream(upstream, call, scanner, drop_usage_chunk)

        try:
            answer = self.read_answer(upstream)
        except ReadTimeoutError:
            upstream.close()
            return self.deny(start_response, call, "upstream_timeout")
        except (Urllib3Error, OSError) as exc:
            upstream.close()
            log.warning("request %s: answer unreadable: %s", call.request_id, type(exc).__name__)
            return self.deny(start_response, call, "upstream_error")
        if answer is None:
            upstream.close()
            log.warning("request %s: answer over upstream.max_response_bytes", call.request_id)
            return self.deny(start_response, call, "upstream_error")
        if upstream.ok:
            call.usage = tokens.from_answer(call.provider, answer)  # kept even if the answer is blocked
        if upstream.ok and scanner is not None:
            # Provider errors pass unchanged; a 2xx answer is delivered only
            # once scanned, and never when it cannot be read or rewritten.
            try:
                scan = scan_strings(scanner, ADAPTERS[call.provider].answer_strings(answer), "response",
                                    "response_blocked")
                if scan.edits:
                    answer = jsonspans.replace_spans(answer, scan.edits)
            except ValueError:
                log.warning("request %s: answer is not the provider's JSON; not delivered", call.request_id)
                return self.deny(start_response, call, "upstream_error")
            if scan.verdict.denied:
                log.info("request %s: answer blocked by %s", call.request_id, scan.verdict.rule_ids[0])
                return self.deny(start_response, call, "response_blocked")
            call.redactions += scan.redactions
        start_response(status_line(upstream.status_code),
                       answer_headers + [("content-length", str(len(answer)))])
        self.record(call)
        return [answer]

    def read_answer(self, upstream):
        """The whole non-streamed answer, or None when it is over the limit."""
        parts, size = [], 0
        while True:
            part = upstream.raw.read1(READ_CHUNK_BYTES, decode_content=True)
            if not part:
                upstream.raw.release_conn()  # read to the end: the connection goes back to the pool
                return b"".join(parts)
            size += len(part)
            if size > self.max_response_bytes:
                return None
            parts.append(part)

    def relay_stream(self, upstream, call, scanner, drop_usage_chunk=False):
        """Relay an SSE answer event by event, as the provider sends it
        (through the holdback window when answers are scanned)."""
        relay = StreamRelay(call.provider, ADAPTERS[call.provider], scanner, self.holdback_bytes,
                            tokens.StreamUsage(call.provider), drop_usage_chunk)
        try:
            while True:
                try:
                    chunk = upstream.raw.read1(READ_CHUNK_BYTES, decode_content=True)
                except ReadTimeoutError:
                    yield relay.fail("upstream_timeout")
                    return
                except (Urllib3Error, OSError) as exc:
                    log.warning("request %s: stream cut: %s", call.request_id, type(exc).__name__)
                    yield relay.fail("upstream_error")
                    return
                if not chunk:
                    upstream.raw.release_conn()
                    try:
                        out = relay.finish()
                    except Exception as exc:
                        log.error("request %s: stream relay failed: %s", call.request_id, type(exc).__name__)
                        out = relay.abort("upstream_error")
                    if out:
                        yield out
                    return
                try:
                    out = relay.feed(chunk)
                except Exception as exc:  # a fault of the gateway's: fail closed, never relay unscanned
                    log.error("request %s: stream relay failed: %s", call.request_id, type(exc).__name__)
                    out = relay.abort("upstream_error")
                if out:
                    yield out
                if relay.failure:  # blocked or garbage: the stream ends here
                    return
        finally:
            # Also runs when the agent goes away (the server closes this
            # generator): a half-read connection is dropped, never pooled.
            # After release_conn() at the end of the stream this is a no-op.
            upstream.close()
            call.reason = call.reason or relay.failure
            call.redactions += relay.redactions
            if relay.usage.seen:  # a cut or abandoned stream keeps what was seen
                call.usage = relay.usage.usage()
            self.record(call)

    # -- answers made by the gateway ---------------------------------------

    def call_headers(self, call, reason=None):
        headers = [("x-request-id", call.request_id)]
        if call.provider is not None:
            headers.append(("x-mitrity-decision", call.decision))
        if reason is not None:
            headers.append(("x-mitrity-reason", reason))
        return headers

    def deny(self, start_response, call, code, message=None, close=None):
        reason = REASONS[code]
        call.reason = code
        call.status = reason.status
        # 404 and a 405 off a provider route are not tied to a provider.
        provider = call.provider if code not in ("not_found",) else None
        body = error_body(code, provider, message)
        headers = [("content-type", "application/json"), ("content-length", str(len(body)))]
        start_response(status_line(reason.status), headers + self.call_headers(call, code))
        self.record(call)
        if close is not None:
            return _CloseAfter(body, close)
        return [body]

    # -- record ------------------------------------------------------------

    def record(self, call):
        """The call's usage record (to the spool: one local append), its metrics and its log line."""
        latency_ms = (time.monotonic() - call.started) * 1000
        record = None
        if self.usage_spool is not None and call.provider is not None and call.reason not in _NOT_CALLS:
            record = usage_record(call, latency_ms)
            if not self.usage_spool.write(record):
                metrics.USAGE_DROPPED.inc()
        metrics.observe_call(call, latency_ms / 1000, record)
        log.info("call %s agent=%s provider=%s model=%s stream=%s decision=%s reason=%s status=%s redactions=%s "
                 "latency_ms=%.1f", call.request_id, call.agent_id, call.provider, call.model, call.stream,
                 call.decision, call.reason, call.status, call.redactions, latency_ms)
