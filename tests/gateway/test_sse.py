"""Tests for gateway.sse: SSE framing fed whole, one byte at a time, and in random splits."""

import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.sse import MAX_EVENT_BYTES, EventSplitter, SSEError, event_data


def anthropic_event(name, data):
    return f"event: {name}\ndata: {json.dumps(data, separators=(',', ':'))}\n\n".encode()


# A realistic Anthropic Messages stream (shape of the real API's events).
EVENTS = [
    anthropic_event("message_start", {"type": "message_start", "message": {
        "id": "msg_01XFDUDYJgAACzvnptvVoYEL", "type": "message", "role": "assistant", "content": [],
        "model": "claude-sonnet-4-5-20250929", "stop_reason": None, "stop_sequence": None,
        "usage": {"input_tokens": 25, "cache_creation_input_tokens": 0, "cache_read_input_tokens": 0,
                  "output_tokens": 1}}}),
    anthropic_event("content_block_start", {"type": "content_block_start", "index": 0,
                                            "content_block": {"type": "text", "text": ""}}),
    anthropic_event("ping", {"type": "ping"}),
    anthropic_event("content_block_delta", {"type": "content_block_delta", "index": 0,
                                            "delta": {"type": "text_delta", "text": "Hello"}}),
    anthropic_event("content_block_delta", {"type": "content_block_delta", "index": 0,
                                            "delta": {"type": "text_delta", "text": "! Here is a \u00e9t\u00e9 \U0001f600"}}),
    anthropic_event("content_block_delta", {"type": "content_block_delta", "index": 0,
                                            "delta": {"type": "text_delta", "text": " key: ACME-123456\\n"}}),
    anthropic_event("content_block_stop", {"type": "content_block_stop", "index": 0}),
    anthropic_event("message_delta", {"type": "message_delta", "delta": {"stop_reason": "end_turn",
                                                                         "stop_sequence": None},
                                      "usage": {"output_tokens": 15}}),
    anthropic_event("message_stop", {"type": "message_stop"}),
]
STREAM = b"".join(EVENTS)


def with_line_ending(event, ending):
    return event.replace(b"\n", ending)


VARIANTS = {
    "lf": EVENTS,
    "crlf": [with_line_ending(e, b"\r\n") for e in EVENTS],
    "cr": [with_line_ending(e, b"\r") for e in EVENTS],
}


def feed_all(chunks):
    splitter = EventSplitter()
    events = []
    for chunk in chunks:
        events.extend(splitter.feed(chunk))
    return events, splitter.finish()


def split_at(data, cuts):
    cuts = sorted(set(c for c in cuts if 0 < c < len(data)))
    bounds = [0, *cuts, len(data)]
    return [data[a:b] for a, b in zip(bounds, bounds[1:])]


@pytest.mark.parametrize("ending", sorted(VARIANTS))
def test_whole_stream(ending):
    events = VARIANTS[ending]
    assert feed_all([b"".join(events)]) == (events, b"")


@pytest.mark.parametrize("ending", sorted(VARIANTS))
def test_byte_by_byte(ending):
    events = VARIANTS[ending]
    stream = b"".join(events)
    assert feed_all([stream[i:i + 1] for i in range(len(stream))]) == (events, b"")


@pytest.mark.parametrize("ending", sorted(VARIANTS))
def test_event_by_event(ending):
    events = VARIANTS[ending]
    splitter = EventSplitter()
    for event in events:
        assert splitter.feed(event) == [event]
    assert splitter.finish() == b""


@settings(max_examples=300, deadline=None)
@given(st.sampled_from(sorted(VARIANTS)), st.lists(st.integers(min_value=0, max_value=len(STREAM) * 2), max_size=40))
def test_random_splits(ending, cuts):
    events = VARIANTS[ending]
    stream = b"".join(events)
    chunks = split_at(stream, cuts)
    assert b"".join(chunks) == stream
    assert feed_all(chunks) == (events, b"")


def test_each_event_is_byte_for_byte_its_source():
    events, _ = feed_all([STREAM[:100], STREAM[100:101], STREAM[101:]])
    assert b"".join(events) == STREAM
    for event in events:
        assert STREAM.count(event) >= 1
        assert event.endswith(b"\n\n")


def test_nothing_before_the_event_ends():
    splitter = EventSplitter()
    first = EVENTS[0]
    assert splitter.feed(first[:-1]) == []
    assert splitter.feed(first[-1:]) == [first]


def test_crlf_terminator_split_between_cr_and_lf():
    event = b"data: {}\r\n\r\n"
    splitter = EventSplitter()
    assert splitter.feed(event[:-1]) == []
    assert splitter.feed(event[-1:]) == [event]


@pytest.mark.parametrize("terminator", [b"\n\n", b"\r\n\r\n", b"\r\r", b"\n\r\n", b"\r\n\n"])
def test_every_blank_line_form_ends_an_event(terminator):
    event = b"data: x" + terminator
    assert feed_all([event + event]) == ([event, event], b"")


def test_comment_lines_and_keepalives_pass_as_events():
    stream = b": keep-alive\n\ndata: [DONE]\n\n"
    assert feed_all([stream]) == ([b": keep-alive\n\n", b"data: [DONE]\n\n"], b"")


def test_finish_returns_the_unterminated_tail():
    splitter = EventSplitter()
    assert splitter.feed(EVENTS[0] + b"event: ping\ndata: {") == [EVENTS[0]]
    assert splitter.finish() == b"event: ping\ndata: {"
    assert splitter.finish() == b""


def test_finish_returns_a_tail_missing_only_its_blank_line():
    splitter = EventSplitter()
    assert splitter.feed(b"data: [DONE]\n") == []
    assert splitter.finish() == b"data: [DONE]\n"


def test_finish_of_an_empty_stream():
    assert EventSplitter().finish() == b""
    assert EventSplitter().feed(b"") == []


def test_splitter_is_reusable_after_finish():
    splitter = EventSplitter()
    splitter.feed(b"data: partial")
    splitter.finish()
    assert splitter.feed(b"data: x\n\n") == [b"data: x\n\n"]


def test_oversized_event_raises():
    splitter = EventSplitter(max_event_bytes=100)
    assert splitter.feed(b"data: " + b"x" * 94) == []  # exactly 100 bytes held
    with pytest.raises(SSEError):
        splitter.feed(b"x")


def test_oversized_event_raises_byte_by_byte():
    splitter = EventSplitter(max_event_bytes=64)
    with pytest.raises(SSEError):
        for _ in range(65):
            splitter.feed(b"x")


def test_complete_events_do_not_count_against_the_limit():
    splitter = EventSplitter(max_event_bytes=64)
    event = b"data: " + b"x" * 50 + b"\n\n"
    for _ in range(100):
        assert splitter.feed(event) == [event]
    big = b"data: " + b"y" * 200 + b"\n\n"  # a whole event in one chunk is handed on, not held
    assert splitter.feed(big) == [big]


def test_default_limit():
    splitter = EventSplitter()
    splitter.feed(b"x" * MAX_EVENT_BYTES)
    with pytest.raises(SSEError):
        splitter.feed(b"x")


def test_sse_error_is_a_value_error():
    assert issubclass(SSEError, ValueError)


# -- event_data -------------------------------------------------------------------------------------

def test_event_data_of_an_anthropic_event():
    data = event_data(EVENTS[3])
    assert json.loads(data)["delta"]["text"] == "Hello"


@pytest.mark.parametrize("ending", sorted(VARIANTS))
def test_event_data_with_every_line_ending(ending):
    for source, event in zip(EVENTS, VARIANTS[ending]):
        assert event_data(event) == event_data(source)
        assert json.loads(event_data(event))["type"]


def test_event_data_joins_data_lines():
    assert event_data(b"event: x\ndata: a\ndata: b\n\n") == b"a\nb"


def test_event_data_space_after_colon_is_optional():
    assert event_data(b"data:{}\n\n") == b"{}"
    assert event_data(b"data:  two\n\n") == b" two"
    assert event_data(b"data:\n\n") == b""


def test_event_data_of_an_event_without_data():
    assert event_data(b"event: ping\n\n") is None
    assert event_data(b": comment\n\n") is None
    assert event_data(b"") is None


def test_event_data_ignores_other_fields():
    assert event_data(b"id: 7\nevent: e\nretry: 10\ndata: d\n\n") == b"d"
    assert event_data(b"datum: no\ndata: yes\n\n") == b"yes"


def test_openai_done_marker():
    assert event_data(b"data: [DONE]\n\n") == b"[DONE]"
