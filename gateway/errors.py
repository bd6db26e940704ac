"""Gateway-made errors: one table from reason code to HTTP status and error type.

Every error the gateway itself answers is shaped like the provider's own
error JSON (SPEC section 5), so an agent's SDK raises the exception it always
raises for that status. The message never quotes request or answer content.
"""

import json
import random
import time
from dataclasses import dataclass


@dataclass(frozen=True)
class Reason:
    code: str
    status: int
    error_type: str  # Anthropic's error type; OpenAI's `type` uses the same word
    message: str


REASONS = {r.code: r for r in (
    Reason("invalid_request", 400, "invalid_request_error", "The request body must be a JSON object with a model."),
    Reason("identity_missing", 401, "authentication_error", "No agent identity: present a client certificate or an API key."),
    Reason("agent_unknown", 403, "permission_error", "This identity is not bound to any agent."),
    Reason("mission_denied", 403, "permission_error", "This action is outside the agent's mission."),
    Reason("approval_required", 403, "permission_error", "This action needs a human approval."),
    Reason("threat_detected", 403, "permission_error", "The request was blocked by threat intelligence."),
    Reason("dlp_blocked", 403, "permission_error", "The request contains data that policy does not allow to leave."),
    Reason("not_found", 404, "not_found_error", "No such route on this gateway."),
    Reason("method_not_allowed", 405, "invalid_request_error", "Method not allowed on this route."),
    Reason("request_too_large", 413, "request_too_large", "The request body is larger than this gateway accepts."),
    Reason("headers_too_large", 431, "invalid_request_error", "The request headers are larger than this gateway accepts."),
    # Not in the SPEC table: a fault inside the gateway's own decision path.
    # It denies (fail closed) and says so, rather than pretend to be a policy.
    Reason("internal_error", 500, "api_error", "The gateway could not decide on this request; it was not forwarded."),
    Reason("upstream_error", 502, "api_error", "The provider could not be reached or its answer could not be read."),
    Reason("response_blocked", 502, "api_error", "The provider's answer was blocked by policy."),
    Reason("policy_unavailable", 503, "api_error", "No valid policy is loaded; the gateway denies all calls."),
    Reason("upstream_timeout", 504, "api_error", "The provider timed out."),
)}

STATUS_TEXT = {400: "Bad Request", 401: "Unauthorized", 403: "Forbidden", 404: "Not Found",
               405: "Method Not Allowed", 413: "Payload Too Large", 431: "Request Header Fields Too Large",
               500: "Internal Server Error", 502: "Bad Gateway", 503: "Service Unavailable",
               504: "Gateway Timeout"}


def status_line(status):
    return f"{status} {STATUS_TEXT.get(status, 'Error')}"


def new_request_id():
    """``req_`` + 24 hex digits: the time in milliseconds (12), then 48 random bits.

    Time first, so ids of successive calls sort together: the usage store's
    primary key then grows at its end instead of at random pages, which keeps
    the collector's inserts cheap however large the store is. An id names a
    call and grants nothing, so ``random`` (reseeded in each forked worker)
    serves; it saves a system call per request over ``os.urandom``.
    """
    return f"req_{time.time_ns() // 1_000_000:012x}{random.getrandbits(48):012x}"


def error_body(code, provider=None, message=None, error_type=None):
    """The JSON body for reason ``code``, shaped for ``provider``.

    ``provider`` is "anthropic", "openai", or None for an error not tied to a
    provider route (a body both SDKs can read).
    """
    reason = REASONS[code]
    message = message or reason.message
    error_type = error_type or reason.error_type
    if provider == "anthropic":
        doc = {"type": "error", "error": {"type": error_type, "message": message}}
    elif provider == "openai":
        doc = {"error": {"message": message, "type": error_type, "param": None, "code": code}}
    else:
        doc = {"type": "error", "error": {"type": error_type, "message": message, "param": None, "code": code}}
    return json.dumps(doc, separators=(",", ":")).encode()


def stream_error_event(code, provider, message=None, error_type=None):
    """The SSE event that ends a stream the gateway has to cut (SPEC section 5).

    SPEC gives a blocked stream the type ``permission_error`` (its table says
    ``api_error`` for the non-streamed 502), hence ``error_type``.
    """
    body = error_body(code, provider, message, error_type)
    if provider == "anthropic":
        return b"event: error\ndata: " + body + b"\n\n"
    return b"data: " + body + b"\n\n"


class BodyTimeout(Exception):
    """The agent did not send its whole body within server.body_timeout_s:
    the worker closes the connection without an answer."""
