"""Tests for gateway.streaming.StreamRelay: whole events relayed in order, and a clean provider-shaped cut."""

import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.errors import REASONS
from gateway.sse import MAX_EVENT_BYTES, EventSplitter, event_data
from gateway.streaming import StreamRelay

ANTHROPIC = [
    b'event: message_start\ndata: {"type":"message_start","message":{"id":"msg_1","model":"claude-sonnet-4-5"}}\n\n',
    b'event: content_block_start\ndata: {"type":"content_block_start","index":0,'
    b'"content_block":{"type":"text","text":""}}\n\n',
    b'event: content_block_delta\ndata: {"type":"content_block_delta","index":0,'
    b'"delta":{"type":"text_delta","text":"Hi"}}\n\n',
    b'event: content_block_stop\ndata: {"type":"content_block_stop","index":0}\n\n',
    b'event: message_stop\ndata: {"type":"message_stop"}\n\n',
]
OPENAI = [
    b'data: {"id":"chatcmpl-1","object":"chat.completion.chunk","choices":[{"index":0,'
    b'"delta":{"role":"assistant","content":""}}]}\n\n',
    b'data: {"id":"chatcmpl-1","object":"chat.completion.chunk","choices":[{"index":0,'
    b'"delta":{"content":"Hi"}}]}\n\n',
    b"data: [DONE]\n\n",
]
STREAMS = {"anthropic": ANTHROPIC, "openai": OPENAI}


def error_events(raw):
    splitter = EventSplitter()
    events = splitter.feed(raw)
    assert splitter.finish() == b""
    return events


@pytest.mark.parametrize("provider", sorted(STREAMS))
def test_events_are_relayed_as_soon_as_complete(provider):
    relay = StreamRelay(provider)
    for event in STREAMS[provider]:
        assert relay.feed(event) == event
    assert relay.finish() == b""
    assert relay.failure is None


def test_incomplete_event_is_held_until_it_ends():
    relay = StreamRelay("anthropic")
    first, second = ANTHROPIC[0], ANTHROPIC[1]
    assert relay.feed(first + second[:10]) == first
    assert relay.feed(second[10:-1]) == b""
    assert relay.feed(second[-1:]) == second


def test_several_events_in_one_chunk_go_out_together_in_order():
    relay = StreamRelay("anthropic")
    assert relay.feed(b"".join(ANTHROPIC)) == b"".join(ANTHROPIC)


@settings(max_examples=200, deadline=None)
@given(st.sampled_from(sorted(STREAMS)), st.lists(st.integers(min_value=1, max_value=600), max_size=30))
def test_random_splits_relay_the_stream_byte_for_byte(provider, cuts):
    stream = b"".join(STREAMS[provider])
    bounds = [0, *sorted({c for c in cuts if c < len(stream)}), len(stream)]
    relay = StreamRelay(provider)
    out = b""
    for a, b in zip(bounds, bounds[1:]):
        sent = relay.feed(stream[a:b])
        # Only whole events are ever handed on.
        assert sent == b"" or sent.endswith(b"\n\n")
        out += sent
    assert out == stream
    assert relay.finish() == b""


def test_finish_returns_the_unterminated_tail():
    relay = StreamRelay("openai")
    assert relay.feed(OPENAI[0] + b"data: [DONE]") == OPENAI[0]
    assert relay.finish() == b"data: [DONE]"


def test_anthropic_fail_sends_only_the_error_event():
    relay = StreamRelay("anthropic")
    assert relay.feed(ANTHROPIC[0] + ANTHROPIC[1][:20]) == ANTHROPIC[0]
    out = relay.fail("upstream_error")
    assert relay.failure == "upstream_error"
    assert ANTHROPIC[1][:20] not in out  # the incomplete event is dropped, not glued to the error
    [event] = error_events(out)
    assert event.startswith(b"event: error\ndata: ")
    assert json.loads(event_data(event)) == {"type": "error", "error": {
        "type": "api_error", "message": REASONS["upstream_error"].message}}


def test_openai_fail_sends_only_the_error_event():
    relay = StreamRelay("openai")
    relay.feed(OPENAI[0] + b'data: {"id":"chatcmpl-1","choi')
    out = relay.fail("upstream_timeout")
    [event] = error_events(out)
    assert event.startswith(b"data: ")
    assert b"event:" not in event
    assert json.loads(event_data(event)) == {"error": {"message": REASONS["upstream_timeout"].message,
                                                       "type": "api_error", "param": None,
                                                       "code": "upstream_timeout"}}


@pytest.mark.parametrize("provider", sorted(STREAMS))
def test_nothing_is_emitted_after_fail(provider):
    relay = StreamRelay(provider)
    relay.feed(STREAMS[provider][0])
    assert relay.fail("upstream_error")
    assert relay.feed(STREAMS[provider][1]) == b""
    assert relay.feed(b"".join(STREAMS[provider])) == b""
    assert relay.finish() == b""
    assert relay.fail("upstream_timeout") == b""
    assert relay.failure == "upstream_error"  # the first failure is the one recorded


def test_fail_before_any_event():
    relay = StreamRelay("anthropic")
    [event] = error_events(relay.fail("upstream_timeout"))
    assert json.loads(event_data(event))["error"]["type"] == "api_error"


def test_oversized_event_fails_the_stream_with_upstream_error():
    relay = StreamRelay("openai")
    assert relay.feed(OPENAI[0]) == OPENAI[0]
    out = relay.feed(b"data: " + b"x" * MAX_EVENT_BYTES)
    assert relay.failure == "upstream_error"
    [event] = error_events(out)
    assert json.loads(event_data(event))["error"]["code"] == "upstream_error"
    assert relay.feed(b"\n\n") == b""
    assert relay.finish() == b""
