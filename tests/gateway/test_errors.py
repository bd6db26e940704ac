"""Tests for gateway.errors: the SPEC section 5 table and the provider-shaped error bodies."""

import json

import pytest

from gateway.errors import REASONS, error_body, status_line, stream_error_event
from gateway.sse import EventSplitter, event_data

# SPEC section 5, row by row: status, reason code, Anthropic (and OpenAI) type.
SPEC_TABLE = [
    (400, "invalid_request", "invalid_request_error"),
    (401, "identity_missing", "authentication_error"),
    (403, "agent_unknown", "permission_error"),
    (403, "mission_denied", "permission_error"),
    (403, "approval_required", "permission_error"),
    (403, "threat_detected", "permission_error"),
    (403, "dlp_blocked", "permission_error"),
    (404, "not_found", "not_found_error"),
    (405, "method_not_allowed", "invalid_request_error"),
    (413, "request_too_large", "request_too_large"),
    (431, "headers_too_large", "invalid_request_error"),
    (502, "upstream_error", "api_error"),
    (502, "response_blocked", "api_error"),
    (503, "policy_unavailable", "api_error"),
    (504, "upstream_timeout", "api_error"),
]
CODES = [code for _, code, _ in SPEC_TABLE]


@pytest.mark.parametrize("status, code, error_type", SPEC_TABLE)
def test_spec_row_is_in_the_table(status, code, error_type):
    reason = REASONS[code]
    assert reason.code == code
    assert reason.status == status
    assert reason.error_type == error_type
    assert reason.message.strip()


def test_extra_reasons_are_server_errors():
    # Anything beyond the SPEC table must not shadow a policy decision with a 4xx.
    for code in set(REASONS) - set(CODES):
        assert REASONS[code].status >= 500
        assert REASONS[code].error_type == "api_error"


def test_every_status_has_a_reason_phrase():
    for reason in REASONS.values():
        line = status_line(reason.status)
        assert line.startswith(f"{reason.status} ")
        assert line != f"{reason.status} Error"
    assert status_line(403) == "403 Forbidden"
    assert status_line(418) == "418 Error"


@pytest.mark.parametrize("code", CODES)
def test_anthropic_body(code):
    doc = json.loads(error_body(code, "anthropic"))
    assert doc == {"type": "error", "error": {"type": REASONS[code].error_type, "message": REASONS[code].message}}


@pytest.mark.parametrize("code", CODES)
def test_openai_body(code):
    doc = json.loads(error_body(code, "openai"))
    assert doc == {"error": {"message": REASONS[code].message, "type": REASONS[code].error_type,
                             "param": None, "code": code}}


@pytest.mark.parametrize("code", CODES)
def test_generic_body_both_sdks_read(code):
    doc = json.loads(error_body(code))
    assert doc == {"type": "error", "error": {"type": REASONS[code].error_type, "message": REASONS[code].message,
                                              "param": None, "code": code}}
    assert json.loads(error_body(code, None)) == doc


@pytest.mark.parametrize("provider", ["anthropic", "openai", None])
def test_message_override(provider):
    message = "This action needs a human approval: approval id apr_0123456789abcdef."
    doc = json.loads(error_body("approval_required", provider, message))
    assert doc["error"]["message"] == message


def test_body_is_compact_utf8_json_bytes():
    body = error_body("mission_denied", "anthropic", message="caf\u00e9 \"quoted\"")
    assert isinstance(body, bytes)
    assert b"\n" not in body
    assert json.loads(body.decode("utf-8"))["error"]["message"] == "caf\u00e9 \"quoted\""


def test_unknown_code_is_a_key_error():
    with pytest.raises(KeyError):
        error_body("no_such_reason", "anthropic")


# -- stream error events ----------------------------------------------------------------------------

def parse_event(raw):
    splitter = EventSplitter()
    events = splitter.feed(raw)
    assert splitter.finish() == b""
    assert events == [raw]
    return raw


@pytest.mark.parametrize("code", ["upstream_error", "upstream_timeout", "response_blocked"])
def test_anthropic_stream_error_event(code):
    event = parse_event(stream_error_event(code, "anthropic"))
    assert event.startswith(b"event: error\ndata: ")
    assert event.endswith(b"\n\n")
    assert json.loads(event_data(event)) == {"type": "error", "error": {"type": REASONS[code].error_type,
                                                                        "message": REASONS[code].message}}


@pytest.mark.parametrize("code", ["upstream_error", "upstream_timeout", "response_blocked"])
def test_openai_stream_error_event(code):
    event = parse_event(stream_error_event(code, "openai"))
    assert event.startswith(b"data: {")
    assert b"event:" not in event
    assert json.loads(event_data(event)) == {"error": {"message": REASONS[code].message,
                                                       "type": REASONS[code].error_type, "param": None,
                                                       "code": code}}


def test_stream_error_event_message_override():
    event = stream_error_event("response_blocked", "openai", message="Blocked by policy.")
    assert json.loads(event_data(event))["error"]["message"] == "Blocked by policy."


def test_request_ids_are_unique_and_sort_by_time():
    import re
    import time

    from gateway.errors import new_request_id
    first = [new_request_id() for _ in range(1000)]
    time.sleep(0.002)
    later = new_request_id()
    assert all(re.fullmatch(r"req_[0-9a-f]{24}", rid) for rid in first)
    assert len(set(first)) == 1000
    assert max(first)[:16] < later[:16]  # the time part (ms) orders them
