"""Tests for gateway.providers.openai: scanned prompt text, answer text, and streamed content chunks."""

import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.errors import stream_error_event
from gateway.jsonspans import replace_strings
from gateway.providers.openai import TextDelta, answer_strings, prompt_strings, text_delta, with_text
from gateway.sse import EventSplitter

AUDIO = "UklGRiQAAABXQVZFZm10IBAAAAABAAEAQB8AAEAfAAABAAgAZGF0YQAAAAA="

# A realistic Chat Completions request: system/developer, content parts, images, audio, a tool round trip.
REQUEST = {
    "model": "gpt-4o-2024-08-06",
    "messages": [
        {"role": "system", "content": "You are a travel agent. Key sk-proj-AAAA"},
        {"role": "developer", "content": [{"type": "text", "text": "Answer in French."}]},
        {"role": "user", "name": "alice", "content": [
            {"type": "text", "text": "What is in this image? caf\u00e9 \U0001f600"},
            {"type": "image_url", "image_url": {"url": "data:image/png;base64,iVBORw0KGgo=", "detail": "low"}},
            {"type": "input_audio", "input_audio": {"data": AUDIO, "format": "wav"}},
            {"type": "file", "file": {"file_data": "JVBERi0x", "filename": "a.pdf"}},
        ]},
        {"role": "assistant", "content": None, "tool_calls": [
            {"id": "call_abc123", "type": "function",
             "function": {"name": "get_weather", "arguments": "{\"city\": \"Paris\", \"text\": \"args\"}"}}]},
        {"role": "tool", "tool_call_id": "call_abc123", "content": "18C and sunny"},
        {"role": "assistant", "content": "It is sunny.", "refusal": None},
        {"role": "user", "content": "Thanks! My SSN is 078-05-1120"},
    ],
    "tools": [{"type": "function", "function": {
        "name": "get_weather", "description": "Get the weather",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}}],
    "temperature": 0.2,
    "stream": True,
    "stream_options": {"include_usage": True},
}
SCANNED = [
    "You are a travel agent. Key sk-proj-AAAA", "Answer in French.", "What is in this image? caf\u00e9 \U0001f600",
    "18C and sunny", "It is sunny.", "Thanks! My SSN is 078-05-1120",
]
STYLES = [{}, {"separators": (",", ":")}, {"indent": 2, "ensure_ascii": False}, {"indent": "\t", "sort_keys": True}]


@pytest.mark.parametrize("style", STYLES)
def test_prompt_strings_are_the_spec_text(style):
    raw = json.dumps(REQUEST, **style).encode()
    found = prompt_strings(raw)
    assert sorted(sv.value for sv in found) == sorted(SCANNED)
    if not style.get("sort_keys"):
        assert [sv.value for sv in found] == SCANNED
    assert not any(AUDIO in sv.value or "args" in sv.value or "base64" in sv.value for sv in found)


def test_redaction_rewrites_only_the_matched_text():
    raw = json.dumps(REQUEST, indent=1).encode()
    out = replace_strings(raw, [(sv, sv.value.replace("078-05-1120", "[REDACTED:ssn]"))
                                for sv in prompt_strings(raw) if "078" in sv.value])
    assert out == raw.replace(b"078-05-1120", b"[REDACTED:ssn]")


@pytest.mark.parametrize("raw", [
    b"", b"[", b'{"model": "m"}}', b"[]", b"null", b"\xc3",
    b'{"messages": [{"role": "user", "content": [{"type": "image_url", "type": "text", "text": "hidden"}]}]}',
    b'{"messages": [{"content": "a", "content": "b"}]}',
])
def test_unreadable_or_ambiguous_bodies_are_refused(raw):
    with pytest.raises(ValueError):
        prompt_strings(raw)


def reference(document):
    for message in document.get("messages") or []:
        content = message.get("content") if isinstance(message, dict) else None
        if isinstance(content, str):
            yield content
        elif isinstance(content, list):
            for part in content:
                if isinstance(part, dict) and part.get("type") == "text" and isinstance(part.get("text"), str):
                    yield part["text"]


leaf = st.text(max_size=5)
junk = st.recursive(st.none() | st.integers() | leaf,
                    lambda c: st.lists(c, max_size=2) | st.dictionaries(st.sampled_from(["type", "text", "x"]), c,
                                                                        max_size=2), max_leaves=4)
part = (st.fixed_dictionaries({"type": st.sampled_from(["text", "image_url", "input_audio", "refusal"]),
                               "text": leaf | junk}) | junk)
message = st.fixed_dictionaries({"role": st.sampled_from(["system", "user", "assistant", "tool"]),
                                 "content": leaf | st.lists(part, max_size=3) | junk},
                                optional={"tool_calls": junk, "name": leaf})
requests = st.fixed_dictionaries({"model": leaf, "messages": st.lists(message | junk, max_size=4)},
                                 optional={"tools": junk, "user": leaf})


@given(requests, st.sampled_from(STYLES))
@settings(max_examples=300)
def test_prompt_strings_match_the_reference_reading(document, style):
    raw = json.dumps(document, **style).encode()
    assert sorted(sv.value for sv in prompt_strings(raw)) == sorted(reference(json.loads(raw)))


# ---------------------------------------------------------------------------
# Non-streamed answers
# ---------------------------------------------------------------------------

ANSWER = {
    "id": "chatcmpl-B9MBs8CjcvOU2jLn4n570S5qMJKcT", "object": "chat.completion", "created": 1741569952,
    "model": "gpt-4o-2024-08-06",
    "choices": [
        {"index": 0, "message": {"role": "assistant", "content": "Your key is sk-proj-BBBB", "refusal": None,
                                 "annotations": []}, "logprobs": None, "finish_reason": "stop"},
        {"index": 1, "message": {"role": "assistant", "content": None, "tool_calls": [
            {"id": "call_1", "type": "function", "function": {"name": "f", "arguments": "{\"content\":\"x\"}"}}]},
         "logprobs": None, "finish_reason": "tool_calls"},
    ],
    "usage": {"prompt_tokens": 19, "completion_tokens": 10, "total_tokens": 29},
    "service_tier": "default", "system_fingerprint": "fp_fake0001",
}


def test_answer_strings_are_the_message_contents():
    raw = json.dumps(ANSWER).encode()
    assert [(sv.path, sv.value) for sv in answer_strings(raw)] == [
        (("choices", 0, "message", "content"), "Your key is sk-proj-BBBB")]


@pytest.mark.parametrize("raw", [b"", b'"x"', b'{"choices": [{"message": {"content": "a", "content": "b"}}]}'])
def test_unreadable_answers_are_refused(raw):
    with pytest.raises(ValueError):
        answer_strings(raw)


# ---------------------------------------------------------------------------
# Streamed answers (framing as tests/fakes/provider.py and the real API emit it)
# ---------------------------------------------------------------------------

def chunk(choices, **extra):
    obj = {"id": "chatcmpl-abc", "object": "chat.completion.chunk", "created": 1741569952, "model": "gpt-4o",
           "service_tier": "default", "system_fingerprint": "fp_fake0001", "choices": choices, "usage": None}
    obj.update(extra)
    return b"data: " + json.dumps(obj, separators=(",", ":")).encode() + b"\n\n"


def choice(delta, finish=None, index=0):
    return [{"index": index, "delta": delta, "logprobs": None, "finish_reason": finish}]


STREAM = [
    chunk(choice({"role": "assistant", "content": "", "refusal": None})),
    chunk(choice({"content": "Hello"})),
    chunk(choice({"content": " w\u00f6rld \U0001f600 \"q\"\n"})),
    chunk(choice({"tool_calls": [{"index": 0, "id": "call_1", "type": "function",
                                  "function": {"name": "f", "arguments": ""}}]})),
    chunk(choice({"tool_calls": [{"index": 0, "function": {"arguments": "{\"content\":\"x\"}"}}]})),
    chunk(choice({"content": "second choice"}, index=1)),
    chunk(choice({}, "stop")),
    chunk([], usage={"prompt_tokens": 19, "completion_tokens": 10, "total_tokens": 29}),
    b"data: [DONE]\n\n",
]
DELTAS = {1: TextDelta("Hello", 0), 2: TextDelta(" w\u00f6rld \U0001f600 \"q\"\n", 0), 5: TextDelta("second choice", 1)}


def test_text_deltas_of_a_stream():
    assert [text_delta(e) for e in STREAM] == [DELTAS.get(i) for i in range(len(STREAM))]


def test_stream_split_byte_by_byte_yields_the_same_deltas():
    raw = b"".join(STREAM)
    splitter = EventSplitter()
    events = [e for i in range(len(raw)) for e in splitter.feed(raw[i:i + 1])]
    assert events == STREAM
    assert [text_delta(e) for e in events] == [text_delta(e) for e in STREAM]


@pytest.mark.parametrize("event", [
    b"data: [DONE]\r\n\r\n",
    b": keep-alive\n\n",
    b'data: {"error":{"message":"The server had an error","type":"server_error","param":null,"code":null}}\n\n',
    stream_error_event("upstream_error", "openai"),
    chunk([{"index": 0, "finish_reason": None, "content_filter_results": {}}]),  # Azure: a choice without delta
    chunk(choice({"content": None, "refusal": "I can't help with that."})),
])
def test_framing_without_text_is_not_a_delta(event):
    assert text_delta(event) is None


def test_a_chunk_with_text_for_two_choices_is_refused():
    event = chunk(choice({"content": "a"}) + choice({"content": "b"}, index=1))
    with pytest.raises(ValueError, match="multi-choice"):
        text_delta(event)
    # One content-bearing choice among several is fine.
    event = chunk(choice({"role": "assistant", "content": ""}) + choice({"content": "b"}, index=1))
    assert text_delta(event) == TextDelta("b", 1)
    assert text_delta(with_text(event, "B")) == TextDelta("B", 1)
    assert json.loads(with_text(event, "B")[6:])["choices"][0]["delta"]["content"] == ""


@pytest.mark.parametrize("new", ["", "[REDACTED:ssn]", "\u00e9\U0001f600 \"\\ \n\r\t\x00\u2028", "\udfff"])
@pytest.mark.parametrize("event", [STREAM[1], STREAM[2], STREAM[5]])
def test_with_text_round_trips(event, new):
    out = with_text(event, new)
    # Empty content carries no text: such a chunk is framing, like the role chunk.
    assert text_delta(out) == (TextDelta(new, text_delta(event).index) if new else None)
    head = event[:event.index(b'"content":"') + 11]
    tail = event[event.index(b'"},"logprobs"'):]
    assert out.startswith(head) and out.endswith(tail)
    assert with_text(event, text_delta(event).text) == event


def test_with_text_keeps_split_data_lines_and_line_endings():
    event = b'data: {"choices": [{"index": 0,\r\ndata: "delta": {"content": "078-05-1120"}}]}\r\n\r\n'
    assert text_delta(event) == TextDelta("078-05-1120", 0)
    assert with_text(event, "[REDACTED:ssn]") == event.replace(b"078-05-1120", b"[REDACTED:ssn]")


@pytest.mark.parametrize("event", [
    b"data: {oops\n\n",
    b"data: [DONE] \n\n",
    b"data: 42\n\n",
    b'data: {"choices": {"0": {"delta": {"content": "a"}}}}\n\n',
    b'data: {"choices": ["a"]}\n\n',
    b'data: {"choices": [{"index": 0, "delta": "a"}]}\n\n',
    b'data: {"choices": [{"index": 0, "delta": {"content": ["a"]}}]}\n\n',
    b'data: {"choices": [{"delta": {"content": "a"}}]}\n\n',
    b'data: {"choices": [{"index": 0, "delta": {"content": "secret", "content": "ok"}}]}\n\n',
    STREAM[1][:-12] + b"\n\n",
])
def test_malformed_events_are_refused(event):
    with pytest.raises(ValueError):
        text_delta(event)
    with pytest.raises(ValueError):
        with_text(event, "x")


@pytest.mark.parametrize("event", [STREAM[0], STREAM[3], STREAM[6], STREAM[7], STREAM[8]])
def test_with_text_refuses_events_without_text(event):
    with pytest.raises(ValueError):
        with_text(event, "x")


def test_with_text_keeps_data_prefixes_and_other_fields_in_place():
    event = b'id: 1\ndata:{"choices":[{"index":0,\ndata: "delta":{"content":"a"}}]}\nretry: 5\n\n'
    assert text_delta(event) == TextDelta("a", 0)
    assert with_text(event, "b") == event.replace(b'"a"', b'"b"')
