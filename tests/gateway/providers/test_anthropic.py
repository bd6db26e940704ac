"""Tests for gateway.providers.anthropic: scanned prompt text, answer text, and text-delta events."""

import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.jsonspans import replace_strings
from gateway.providers.anthropic import TextDelta, answer_strings, prompt_strings, text_delta, with_text
from gateway.sse import EventSplitter

PNG = "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNk+M9QDwADhgGAWjR9awAAAABJRU5ErkJggg=="

# A realistic Messages request: cached system blocks, tools, a tool round trip, an image, a document.
REQUEST = {
    "model": "claude-sonnet-4-5-20250929",
    "max_tokens": 1024,
    "system": [
        {"type": "text", "text": "You are a travel agent.", "cache_control": {"type": "ephemeral"}},
        {"type": "text", "text": "Internal key: ACME-111111"},
    ],
    "tools": [{"name": "get_weather", "description": "Weather for a city, e.g. text",
               "input_schema": {"type": "object", "properties": {"city": {"type": "string"}},
                                "required": ["city"]}}],
    "messages": [
        {"role": "user", "content": "What's the weather in Paris? My card is 4111 1111 1111 1111."},
        {"role": "assistant", "content": [
            {"type": "thinking", "thinking": "The user wants weather.", "signature": "EqQBCgIYAhIM"},
            {"type": "text", "text": "Let me check."},
            {"type": "tool_use", "id": "toolu_01A09q90qw90lq917835lq9", "name": "get_weather",
             "input": {"city": "Paris", "note": {"type": "text", "text": "tool input, not prompt text"}}},
        ]},
        {"role": "user", "content": [
            {"type": "tool_result", "tool_use_id": "toolu_01A09q90qw90lq917835lq9", "content": "18\u00b0C, sunny"},
            {"type": "text", "text": "And here is a photo \u00e9t\u00e9 \U0001f600"},
            {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": PNG}},
        ]},
        {"role": "assistant", "content": [
            {"type": "tool_use", "id": "toolu_02", "name": "get_weather", "input": {"city": "Lyon"}}]},
        {"role": "user", "content": [
            {"type": "tool_result", "tool_use_id": "toolu_02", "is_error": False, "content": [
                {"type": "text", "text": "Lyon: 20C"},
                {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": PNG}},
            ]},
            {"type": "document", "source": {"type": "base64", "media_type": "application/pdf", "data": "JVBERi0x"},
             "title": "report.pdf"},
            {"type": "image", "text": "a text key on a non-text block", "source": {"type": "url",
                                                                                 "url": "https://x/y.png"}},
        ]},
        {"role": "assistant", "content": "Lyon is warmer."},
    ],
    "metadata": {"user_id": "user-1234"},
    "stream": True,
}
SCANNED = [
    "You are a travel agent.", "Internal key: ACME-111111",
    "What's the weather in Paris? My card is 4111 1111 1111 1111.",
    "Let me check.",
    "18\u00b0C, sunny", "And here is a photo \u00e9t\u00e9 \U0001f600",
    "Lyon: 20C",
    "Lyon is warmer.",
]
STYLES = [{}, {"separators": (",", ":")}, {"indent": 2, "ensure_ascii": False}, {"indent": "\t", "sort_keys": True}]


@pytest.mark.parametrize("style", STYLES)
def test_prompt_strings_are_the_spec_text(style):
    raw = json.dumps(REQUEST, **style).encode()
    found = prompt_strings(raw)
    assert sorted(sv.value for sv in found) == sorted(SCANNED)
    if not style.get("sort_keys"):
        assert [sv.value for sv in found] == SCANNED
    assert all(PNG not in sv.value and "tool input" not in sv.value for sv in found)


def test_system_as_a_string():
    raw = json.dumps({"model": "m", "system": "Be brief. sk-ant-secret",
                      "messages": [{"role": "user", "content": "hi"}]}).encode()
    assert [(sv.path, sv.value) for sv in prompt_strings(raw)] == [
        (("system",), "Be brief. sk-ant-secret"), (("messages", 0, "content"), "hi")]


def test_redaction_rewrites_only_the_matched_text():
    raw = json.dumps(REQUEST, indent=1).encode()
    found = prompt_strings(raw)
    out = replace_strings(raw, [(sv, sv.value.replace("ACME-111111", "[REDACTED:acme]"))
                                for sv in found if "ACME" in sv.value])
    assert out == raw.replace(b"ACME-111111", b"[REDACTED:acme]")


@pytest.mark.parametrize("raw", [
    b"", b"{", b'{"model": "m"} x', b"[]", b'"text"', b"\xff",
    b'{"messages": [{"role": "user", "content": [{"type": "image", "type": "text", "text": "hidden"}]}]}',
    b'{"system": "a", "system": [{"type": "text", "text": "b"}]}',
    b'{"messages": ' + b"[" * 600 + b"]" * 600 + b"}",
])
def test_unreadable_or_ambiguous_bodies_are_refused(raw):
    with pytest.raises(ValueError):
        prompt_strings(raw)


# A reference reading of the SPEC rules over the decoded document, to compare with.
def reference(document):
    def texts(value, in_message):
        if isinstance(value, str):
            yield value
        elif isinstance(value, list):
            for block in value:
                kind = block.get("type") if isinstance(block, dict) else None
                if kind == "text" and isinstance(block.get("text"), str):
                    yield block["text"]
                elif kind == "tool_result" and in_message:
                    yield from texts(block.get("content"), False)

    yield from texts(document.get("system"), False)
    for message in document.get("messages") or []:
        if isinstance(message, dict):
            yield from texts(message.get("content"), True)


leaf = st.text(max_size=5)
junk = st.recursive(st.none() | st.integers() | leaf,
                    lambda c: st.lists(c, max_size=2) | st.dictionaries(st.sampled_from(["type", "text", "x"]), c,
                                                                        max_size=2), max_leaves=4)
text_block = st.fixed_dictionaries({"type": st.just("text"), "text": leaf})
other_block = st.fixed_dictionaries({"type": st.sampled_from(["image", "tool_use", "thinking", "document"]),
                                     "text": leaf, "input": junk, "source": junk})
inner = st.lists(text_block | other_block | junk, max_size=3)
tool_result = st.fixed_dictionaries({"type": st.just("tool_result"), "tool_use_id": leaf},
                                    optional={"content": leaf | inner | junk})
content = leaf | st.lists(text_block | other_block | tool_result | junk, max_size=4) | junk
requests = st.fixed_dictionaries(
    {"model": leaf, "messages": st.lists(st.fixed_dictionaries({"role": st.sampled_from(["user", "assistant"]),
                                                                "content": content}) | junk, max_size=4)},
    optional={"system": leaf | inner | junk, "metadata": junk})


@given(requests, st.sampled_from(STYLES))
@settings(max_examples=300)
def test_prompt_strings_match_the_reference_reading(document, style):
    raw = json.dumps(document, **style).encode()
    found = [sv.value for sv in prompt_strings(raw)]
    assert sorted(found) == sorted(reference(json.loads(raw)))


# ---------------------------------------------------------------------------
# Non-streamed answers
# ---------------------------------------------------------------------------

ANSWER = {
    "id": "msg_01XFDUDYJgAACzvnptvVoYEL", "type": "message", "role": "assistant",
    "model": "claude-sonnet-4-5-20250929",
    "content": [
        {"type": "thinking", "thinking": "Let me think.", "signature": "EqQBCgIYAhIM"},
        {"type": "text", "text": "Here is the key: ACME-222222"},
        {"type": "tool_use", "id": "toolu_03", "name": "get_weather", "input": {"city": "Nice", "text": "x"}},
        {"type": "text", "text": "Done \u00e9."},
    ],
    "stop_reason": "tool_use", "stop_sequence": None,
    "usage": {"input_tokens": 25, "output_tokens": 30, "cache_creation_input_tokens": 0,
              "cache_read_input_tokens": 0},
}


def test_answer_strings_are_the_text_blocks():
    raw = json.dumps(ANSWER).encode()
    assert [(sv.path, sv.value) for sv in answer_strings(raw)] == [
        (("content", 1, "text"), "Here is the key: ACME-222222"), (("content", 3, "text"), "Done \u00e9.")]


@pytest.mark.parametrize("raw", [b"not json", b"[1]", b'{"content": [{"type": "text", "type": "x", "text": "a"}]}'])
def test_unreadable_answers_are_refused(raw):
    with pytest.raises(ValueError):
        answer_strings(raw)


# ---------------------------------------------------------------------------
# Streamed answers (framing as tests/fakes/provider.py and the real API emit it)
# ---------------------------------------------------------------------------

def ev(name, data):
    return f"event: {name}\ndata: {json.dumps(data, separators=(',', ':'))}\n\n".encode()


def delta(text, index=0):
    return ev("content_block_delta", {"type": "content_block_delta", "index": index,
                                      "delta": {"type": "text_delta", "text": text}})


STREAM = [
    ev("message_start", {"type": "message_start", "message": {
        "id": "msg_01abc", "type": "message", "role": "assistant", "model": "claude-sonnet-4-5", "content": [],
        "stop_reason": None, "stop_sequence": None, "usage": {"input_tokens": 25, "output_tokens": 1}}}),
    ev("content_block_start", {"type": "content_block_start", "index": 0,
                               "content_block": {"type": "text", "text": ""}}),
    ev("ping", {"type": "ping"}),
    delta("Hello"),
    delta(" w\u00f6rld \U0001f600 \"quoted\"\n"),
    ev("content_block_stop", {"type": "content_block_stop", "index": 0}),
    ev("content_block_start", {"type": "content_block_start", "index": 1, "content_block": {
        "type": "tool_use", "id": "toolu_01", "name": "get_weather", "input": {}}}),
    ev("content_block_delta", {"type": "content_block_delta", "index": 1,
                               "delta": {"type": "input_json_delta", "partial_json": "{\"city\": \"Pa"}}),
    ev("content_block_stop", {"type": "content_block_stop", "index": 1}),
    ev("content_block_delta", {"type": "content_block_delta", "index": 2,
                               "delta": {"type": "thinking_delta", "thinking": "hmm"}}),
    delta("more", index=3),
    ev("message_delta", {"type": "message_delta", "delta": {"stop_reason": "end_turn", "stop_sequence": None},
                         "usage": {"output_tokens": 15}}),
    ev("message_stop", {"type": "message_stop"}),
]
DELTAS = {3: TextDelta("Hello", 0), 4: TextDelta(" w\u00f6rld \U0001f600 \"quoted\"\n", 0), 10: TextDelta("more", 3)}


def test_text_deltas_of_a_stream():
    assert [text_delta(e) for e in STREAM] == [DELTAS.get(i) for i in range(len(STREAM))]


def test_stream_split_byte_by_byte_yields_the_same_deltas():
    splitter = EventSplitter()
    events = [e for i in range(len(b"".join(STREAM))) for e in splitter.feed(b"".join(STREAM)[i:i + 1])]
    assert events == STREAM
    assert "".join(d.text for d in map(text_delta, events) if d) == "Hello w\u00f6rld \U0001f600 \"quoted\"\nmore"


@pytest.mark.parametrize("event", [
    b": keep-alive\n\n",
    b"event: ping\n\n",
    b'event: error\ndata: {"type":"error","error":{"type":"overloaded_error","message":"Overloaded"}}\n\n',
])
def test_framing_without_text_is_not_a_delta(event):
    assert text_delta(event) is None


def test_a_mislabelled_event_is_still_read_by_its_data_type():
    event = delta("secret").replace(b"event: content_block_delta", b"event: message_delta")
    assert text_delta(event) == TextDelta("secret", 0)


@pytest.mark.parametrize("new", ["", "[REDACTED:acme]", "\u00e9\U0001f600 \"\\ \n\r\t\x00\u2028", "\ud800"])
@pytest.mark.parametrize("event", [STREAM[3], STREAM[4], STREAM[10]])
def test_with_text_round_trips(event, new):
    out = with_text(event, new)
    assert text_delta(out) == TextDelta(new, text_delta(event).index)
    head = event[:event.index(b'"text":"') + 8]
    assert out.startswith(head) and out.endswith(b'"}}\n\n')
    assert with_text(event, text_delta(event).text) == event


def test_with_text_keeps_framing_line_endings_and_split_data_lines():
    event = (b"event: content_block_delta\r\nid: 7\r\ndata: {\"type\": \"content_block_delta\",\r\n"
             b"data:  \"index\": 0,\r\ndata: \"delta\": {\"type\": \"text_delta\", \"text\": \"ACME-1\"}}\r\n\r\n")
    assert text_delta(event) == TextDelta("ACME-1", 0)
    out = with_text(event, "[REDACTED:acme]")
    assert out == event.replace(b"ACME-1", b"[REDACTED:acme]")
    assert text_delta(out) == TextDelta("[REDACTED:acme]", 0)


def test_with_text_keeps_the_rest_of_the_json_bytes():
    event = (b'event: content_block_delta\ndata: {"type":"content_block_delta", "index":0,'
             b'"delta":{"type":"text_delta","text":"caf\\u00e9 ACME-1"},"extra":1.50e3}\n\n')
    assert with_text(event, "caf\u00e9 [REDACTED]") == event.replace(b"ACME-1", b"[REDACTED]")


@pytest.mark.parametrize("event", [
    b"event: content_block_delta\ndata: {not json\n\n",
    b"event: content_block_delta\ndata: [1, 2]\n\n",
    b"event: content_block_delta\ndata: \n\n",
    b'event: content_block_delta\ndata: {"type":"content_block_delta","index":0,"delta":"x"}\n\n',
    b'event: content_block_delta\ndata: {"type":"content_block_delta","index":0,'
    b'"delta":{"type":"text_delta","text":5}}\n\n',
    b'event: content_block_delta\ndata: {"type":"content_block_delta",'
    b'"delta":{"type":"text_delta","text":"a"}}\n\n',
    b'event: content_block_delta\ndata: {"type":"content_block_delta","index":"0",'
    b'"delta":{"type":"text_delta","text":"a"}}\n\n',
    b'event: content_block_delta\ndata: {"type":"content_block_delta","index":0,'
    b'"delta":{"type":"text_delta","text":"secret","text":"ok"}}\n\n',
    delta("truncated")[:-20] + b"\n\n",
])
def test_malformed_events_are_refused(event):
    with pytest.raises(ValueError):
        text_delta(event)
    with pytest.raises(ValueError):
        with_text(event, "x")


@pytest.mark.parametrize("event", [STREAM[0], STREAM[2], STREAM[7], b": comment\n\n"])
def test_with_text_refuses_events_without_text(event):
    with pytest.raises(ValueError):
        with_text(event, "x")
