"""Token accounting from real provider answer shapes (SPEC section 6)."""

import json

from hypothesis import given
from hypothesis import strategies as st

from gateway.sse import EventSplitter
from gateway.usage.tokens import StreamUsage, from_answer, is_usage_only_chunk


def anthropic_answer(usage, model="claude-sonnet-4-5-20250929"):
    return json.dumps({"id": "msg_1", "type": "message", "role": "assistant", "model": model,
                       "content": [{"type": "text", "text": "hi"}], "stop_reason": "end_turn",
                       "usage": usage}).encode()


def test_anthropic_input_counts_cache_reads_and_writes():
    usage = from_answer("anthropic", anthropic_answer(
        {"input_tokens": 100, "output_tokens": 20, "cache_read_input_tokens": 1000,
         "cache_creation_input_tokens": 50}))
    assert (usage.input_tokens, usage.output_tokens, usage.total_tokens) == (1150, 20, 1170)
    assert (usage.cache_read_input_tokens, usage.cache_creation_input_tokens) == (1000, 50)
    assert usage.model == "claude-sonnet-4-5-20250929"


def test_openai_prompt_tokens_include_cached_ones():
    raw = json.dumps({"id": "c", "object": "chat.completion", "model": "gpt-4o-mini-2024-07-18",
                      "choices": [], "usage": {"prompt_tokens": 300, "completion_tokens": 7, "total_tokens": 307,
                                               "prompt_tokens_details": {"cached_tokens": 256}}}).encode()
    usage = from_answer("openai", raw)
    assert (usage.input_tokens, usage.output_tokens, usage.total_tokens) == (300, 7, 307)
    assert (usage.cache_read_input_tokens, usage.cache_creation_input_tokens) == (256, 0)
    assert usage.model == "gpt-4o-mini-2024-07-18"


def test_answers_without_usage_or_not_json():
    assert from_answer("anthropic", b"not json") is None
    assert from_answer("openai", b'{"choices": []}') is None
    bad = from_answer("anthropic", anthropic_answer({"input_tokens": -5, "output_tokens": True}))
    assert (bad.input_tokens, bad.output_tokens) == (0, 0)


ANTHROPIC_STREAM = (
    b'event: message_start\ndata: {"type":"message_start","message":{"id":"msg_1","type":"message",'
    b'"role":"assistant","model":"claude-sonnet-4-5","content":[],"stop_reason":null,"usage":'
    b'{"input_tokens":25,"output_tokens":1,"cache_read_input_tokens":100,"cache_creation_input_tokens":3}}}\n\n'
    b'event: ping\ndata: {"type":"ping"}\n\n'
    b'event: content_block_delta\ndata: {"type":"content_block_delta","index":0,'
    b'"delta":{"type":"text_delta","text":"Hi"}}\n\n'
    b'event: message_delta\ndata: {"type":"message_delta","delta":{"stop_reason":"end_turn"},'
    b'"usage":{"output_tokens":12}}\n\n'
    b'event: message_stop\ndata: {"type":"message_stop"}\n\n'
)

OPENAI_STREAM = (
    b'data: {"id":"c","object":"chat.completion.chunk","model":"gpt-4o-mini","choices":[{"index":0,'
    b'"delta":{"role":"assistant","content":""}}]}\n\n'
    b'data: {"id":"c","object":"chat.completion.chunk","model":"gpt-4o-mini","choices":[{"index":0,'
    b'"delta":{"content":"Hi"}}]}\n\n'
    b'data: {"id":"c","object":"chat.completion.chunk","model":"gpt-4o-mini","choices":[],'
    b'"usage":{"prompt_tokens":9,"completion_tokens":2,"total_tokens":11,"prompt_tokens_details":{"cached_tokens":0}}}\n\n'
    b'data: [DONE]\n\n'
)


def stream_usage(provider, raw, splits=()):
    splitter, counter = EventSplitter(), StreamUsage(provider)
    pieces, last = [], 0
    for cut in sorted(splits):
        pieces.append(raw[last:cut])
        last = cut
    pieces.append(raw[last:])
    for piece in pieces:
        for event in splitter.feed(piece):
            counter.feed(event)
    return counter


@given(st.lists(st.integers(0, len(ANTHROPIC_STREAM)), max_size=20))
def test_anthropic_stream_merges_start_and_cumulative_delta(splits):
    usage = stream_usage("anthropic", ANTHROPIC_STREAM, splits).usage()
    assert (usage.input_tokens, usage.output_tokens) == (128, 12)
    assert (usage.cache_read_input_tokens, usage.cache_creation_input_tokens) == (100, 3)
    assert usage.model == "claude-sonnet-4-5"


def test_a_cut_stream_keeps_what_was_seen():
    cut = ANTHROPIC_STREAM.index(b"event: message_delta")
    counter = stream_usage("anthropic", ANTHROPIC_STREAM[:cut])
    assert counter.seen and counter.usage().input_tokens == 128 and counter.usage().output_tokens == 1


@given(st.lists(st.integers(0, len(OPENAI_STREAM)), max_size=20))
def test_openai_stream_usage_chunk(splits):
    usage = stream_usage("openai", OPENAI_STREAM, splits).usage()
    assert (usage.input_tokens, usage.output_tokens, usage.model) == (9, 2, "gpt-4o-mini")


def test_openai_stream_without_usage_has_none_seen():
    raw = OPENAI_STREAM.replace(OPENAI_STREAM.split(b"\n\n")[2] + b"\n\n", b"")
    counter = stream_usage("openai", raw)
    assert not counter.seen and counter.usage().total_tokens == 0


def test_usage_only_chunk_is_recognised():
    events = EventSplitter().feed(OPENAI_STREAM)
    assert [is_usage_only_chunk(e) for e in events] == [False, False, True, False]


def test_absurdly_nested_answers_carry_no_usage():
    deep = b"[" * 100000 + b"]" * 100000
    assert from_answer("anthropic", b'{"usage": ' + deep + b"}") is None
    assert from_answer("openai", deep) is None
