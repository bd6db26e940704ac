"""Tests for the fake LLM provider, driven through the official SDKs.

How the SDKs are made to trust the test CA (reuse this in the e2e tests):

* anthropic 2.x and openai 3.x do NOT use ``httpx``; they use the fork ``httpx2``
  (``import httpx2``), and reject ``httpx.Client`` objects.  ``http_client`` must be an
  ``httpx2.Client`` / ``httpx2.AsyncClient``.
* Preferred: ``http_client=anthropic.DefaultHttpxClient(verify=ssl_ctx)`` (resp.
  ``DefaultAsyncHttpxClient``, and the same names in ``openai``), where
  ``ssl_ctx = ssl.create_default_context(cafile=ca_path)`` (``tlsfiles.client_ssl_context``).
  ``DefaultHttpxClient`` keeps the SDK's own defaults (timeouts, pool limits, TCP keepalive);
  ``verify=<path str>`` still works but is deprecated in httpx2, so pass an SSLContext.
  ``trust_env=False`` additionally ignores HTTP(S)_PROXY/SSL_CERT_* from the environment.
* Alternative: set ``SSL_CERT_FILE=<ca>`` *before* constructing the client (httpcore2 reads it
  when the transport's SSL context is built, i.e. at client construction, not per request).
  Note this environment already exports SSL_CERT_FILE (system bundle), so the explicit
  ``verify=`` context is the robust choice.
* The Anthropic SDK takes ``base_url=provider.base_url`` (it appends ``/v1/messages``); the
  OpenAI SDK takes ``base_url=provider.openai_base_url`` (``.../v1``; it appends
  ``/chat/completions``).  Always ``max_retries=0`` so scripted errors are seen once.
"""

from __future__ import annotations

import asyncio
import json
import os
import socket
import ssl
import subprocess
import sys
import threading
import time
from pathlib import Path

import anthropic
import httpx2
import openai
import pytest

from tests.fakes.provider import FakeProvider, Received
from tests.fakes.tlsfiles import client_ssl_context, make_test_ca

REPO_ROOT = Path(__file__).resolve().parents[2]
USER = [{"role": "user", "content": "ping me back"}]


# ---------------------------------------------------------------------------------------
# fixtures / helpers
# ---------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def tls(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    return make_test_ca(tmp_path_factory.mktemp("tls"))


@pytest.fixture
def provider(tls: dict[str, str]):
    p = FakeProvider(tls["cert"], tls["key"]).start()
    try:
        yield p
    finally:
        p.stop()
    assert p.errors == [], "fake provider hit unexpected errors"


def anthropic_client(provider: FakeProvider, ca: str, **kw) -> anthropic.Anthropic:
    return anthropic.Anthropic(
        api_key="sk-ant-test",
        base_url=provider.base_url,
        max_retries=0,
        http_client=anthropic.DefaultHttpxClient(verify=client_ssl_context(ca), trust_env=False, **kw),
    )


def async_anthropic_client(provider: FakeProvider, ca: str) -> anthropic.AsyncAnthropic:
    return anthropic.AsyncAnthropic(
        api_key="sk-ant-test",
        base_url=provider.base_url,
        max_retries=0,
        http_client=anthropic.DefaultAsyncHttpxClient(verify=client_ssl_context(ca), trust_env=False),
    )


def openai_client(provider: FakeProvider, ca: str, **kw) -> openai.OpenAI:
    return openai.OpenAI(
        api_key="sk-test",
        base_url=provider.openai_base_url,
        max_retries=0,
        http_client=openai.DefaultHttpxClient(verify=client_ssl_context(ca), trust_env=False, **kw),
    )


def async_openai_client(provider: FakeProvider, ca: str) -> openai.AsyncOpenAI:
    return openai.AsyncOpenAI(
        api_key="sk-test",
        base_url=provider.openai_base_url,
        max_retries=0,
        http_client=openai.DefaultAsyncHttpxClient(verify=client_ssl_context(ca), trust_env=False),
    )


def raw_exchange(provider: FakeProvider, ca: str, request: bytes, timeout: float = 5.0) -> bytes:
    """Send raw bytes over TLS and read until the server closes the connection."""
    ctx = client_ssl_context(ca)
    with socket.create_connection(("127.0.0.1", provider.port), timeout=timeout) as raw:
        with ctx.wrap_socket(raw, server_hostname="127.0.0.1") as s:
            s.sendall(request)
            out = bytearray()
            while True:
                try:
                    data = s.recv(65536)
                except (ssl.SSLEOFError, ConnectionResetError):
                    break
                if not data:
                    break
                out += data
            return bytes(out)


def dechunk(body: bytes) -> list[bytes]:
    """Parse a chunked body into its chunks (asserting correct framing)."""
    chunks = []
    while True:
        size_line, body = body.split(b"\r\n", 1)
        size = int(size_line, 16)
        if size == 0:
            assert body == b"\r\n"
            return chunks
        chunks.append(body[:size])
        assert body[size : size + 2] == b"\r\n"
        body = body[size + 2 :]


# ---------------------------------------------------------------------------------------
# Anthropic
# ---------------------------------------------------------------------------------------


def test_anthropic_sync_non_stream(provider, tls):
    with anthropic_client(provider, tls["ca"]) as client:
        msg = client.messages.create(model="claude-test-1", max_tokens=64, messages=USER)
    assert msg.id.startswith("msg_")
    assert msg.type == "message" and msg.role == "assistant"
    assert msg.model == "claude-test-1"
    assert [b.type for b in msg.content] == ["text"]
    assert msg.content[0].text == "Hello from fake anthropic: ping me back"
    assert msg.stop_reason == "end_turn" and msg.stop_sequence is None
    assert msg.usage.input_tokens > 0 and msg.usage.output_tokens > 0
    assert msg.usage.cache_creation_input_tokens == 0 and msg.usage.cache_read_input_tokens == 0

    (rec,) = provider.wait_for_requests(1)
    assert (rec.method, rec.path, rec.query) == ("POST", "/v1/messages", "")
    assert rec.header("X-API-KEY") == "sk-ant-test" or rec.header("authorization") == "Bearer sk-ant-test"
    assert rec.header("anthropic-version")
    assert rec.json()["messages"] == USER


def test_anthropic_raw_json_shape(provider, tls):
    with anthropic_client(provider, tls["ca"]) as client:
        resp = client.messages.with_raw_response.create(model="m", max_tokens=5, messages=USER)
    assert resp.headers["content-type"] == "application/json"
    assert resp.headers["request-id"].startswith("req_")
    body = json.loads(resp.http_response.content)
    assert set(body) == {"id", "type", "role", "model", "content", "stop_reason", "stop_sequence", "usage"}
    assert set(body["usage"]) == {
        "input_tokens", "output_tokens", "cache_creation_input_tokens", "cache_read_input_tokens"}


def test_anthropic_sync_stream_text(provider, tls):
    with anthropic_client(provider, tls["ca"]) as client:
        with client.messages.stream(model="claude-test-1", max_tokens=64, messages=USER) as stream:
            pieces = list(stream.text_stream)
            final = stream.get_final_message()
    assert "".join(pieces) == "Hello from fake anthropic: ping me back"
    assert len(pieces) > 1
    assert final.stop_reason == "end_turn"
    assert final.usage.output_tokens > 0
    assert provider.wait_for_requests(1)[0].json()["stream"] is True


def test_anthropic_sse_wire_framing(provider, tls):
    """Exact SSE event sequence, one event per HTTP chunk, chunked transfer-encoding."""
    provider.script(chunks=["Hi", " there"], usage={"input_tokens": 7, "output_tokens": 3})
    body = json.dumps({"model": "m", "max_tokens": 5, "stream": True, "messages": USER}).encode()
    raw = raw_exchange(provider, tls["ca"], (
        b"POST /v1/messages HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
        b"x-api-key: k\r\nanthropic-version: 2023-06-01\r\nConnection: close\r\n"
        b"Content-Length: %d\r\n\r\n%s" % (len(body), body)))
    head, _, payload = raw.partition(b"\r\n\r\n")
    head_lines = head.decode().split("\r\n")
    assert head_lines[0] == "HTTP/1.1 200 OK"
    hdrs = {k.lower(): v.strip() for k, v in (line.split(":", 1) for line in head_lines[1:])}
    assert hdrs["content-type"].startswith("text/event-stream")
    assert hdrs["transfer-encoding"] == "chunked"
    assert "content-length" not in hdrs

    chunks = dechunk(payload)
    names, datas = [], []
    for c in chunks:
        text = c.decode()
        assert text.endswith("\n\n") and text.count("\n\n") == 1
        ev_line, data_line = text[:-2].split("\n")
        assert ev_line.startswith("event: ") and data_line.startswith("data: ")
        names.append(ev_line[len("event: "):])
        datas.append(json.loads(data_line[len("data: "):]))
    assert names == ["message_start", "content_block_start", "ping", "content_block_delta",
                     "content_block_delta", "content_block_stop", "message_delta", "message_stop"]
    assert all(d["type"] == n for n, d in zip(names, datas))
    assert datas[0]["message"]["usage"]["input_tokens"] == 7
    assert [d["delta"] for d in datas[3:5]] == [{"type": "text_delta", "text": "Hi"},
                                                {"type": "text_delta", "text": " there"}]
    assert datas[6]["delta"] == {"stop_reason": "end_turn", "stop_sequence": None}
    assert datas[6]["usage"]["output_tokens"] == 3


def test_anthropic_async_non_stream(provider, tls):
    async def run():
        async with async_anthropic_client(provider, tls["ca"]) as client:
            return await client.messages.create(
                model="claude-async", max_tokens=16,
                messages=[{"role": "user", "content": [{"type": "text", "text": "block one"},
                                                        {"type": "text", "text": "block two"}]}])

    msg = asyncio.run(run())
    assert msg.model == "claude-async"
    assert msg.content[0].text == "Hello from fake anthropic: block one\nblock two"


def test_anthropic_scripted_chunks_are_separate_deltas(provider, tls):
    provider.script(chunks=["alpha", " be", "ta", ""])
    with anthropic_client(provider, tls["ca"]) as client:
        stream = client.messages.create(model="m", max_tokens=5, messages=USER, stream=True)
        deltas = [ev.delta.text for ev in stream if ev.type == "content_block_delta"]
    # an empty chunk is still a (legal, empty) text_delta event
    assert deltas == ["alpha", " be", "ta", ""]


def test_anthropic_rate_limit_error(provider, tls):
    provider.script(status=429, headers={"retry-after": "7"})
    with anthropic_client(provider, tls["ca"]) as client:
        with pytest.raises(anthropic.RateLimitError) as ei:
            client.messages.create(model="m", max_tokens=5, messages=USER)
    err = ei.value
    assert err.status_code == 429
    assert err.body["type"] == "error" and err.body["error"]["type"] == "rate_limit_error"
    assert err.body["request_id"].startswith("req_")
    assert err.response.headers["retry-after"] == "7"


def test_anthropic_custom_error_body_and_overloaded(provider, tls):
    provider.script(status=529)
    provider.script(status=500, error_body={"type": "error", "error": {"type": "api_error", "message": "boom"}})
    with anthropic_client(provider, tls["ca"]) as client:
        with pytest.raises(anthropic.APIStatusError) as ei:
            client.messages.create(model="m", max_tokens=5, messages=USER)
        assert ei.value.status_code == 529 and ei.value.body["error"]["type"] == "overloaded_error"
        with pytest.raises(anthropic.InternalServerError, match="boom"):
            client.messages.create(model="m", max_tokens=5, messages=USER)
        # queue drained -> default behaviour again
        assert client.messages.create(model="m", max_tokens=5, messages=USER).content[0].text.startswith("Hello")


def test_anthropic_stream_reset_raises(provider, tls):
    provider.script(chunks=["one ", "two ", "three"], reset_after_events=4)  # start, block_start, ping, delta
    got = []
    with anthropic_client(provider, tls["ca"]) as client:
        with pytest.raises((httpx2.TransportError, anthropic.APIConnectionError)):
            with client.messages.stream(model="m", max_tokens=5, messages=USER) as stream:
                for piece in stream.text_stream:
                    got.append(piece)
    assert got == ["one "]
    provider.wait_for(lambda: ("reset", 1) in provider.events)


# ---------------------------------------------------------------------------------------
# OpenAI
# ---------------------------------------------------------------------------------------


def test_openai_sync_non_stream(provider, tls):
    with openai_client(provider, tls["ca"]) as client:
        comp = client.chat.completions.create(
            model="gpt-test", messages=[{"role": "system", "content": "be nice"},
                                        {"role": "user", "content": [{"type": "text", "text": "hey"}]}])
    assert comp.id.startswith("chatcmpl-") and comp.object == "chat.completion"
    assert comp.model == "gpt-test"
    (choice,) = comp.choices
    assert choice.index == 0 and choice.finish_reason == "stop"
    assert choice.message.role == "assistant" and choice.message.refusal is None
    assert choice.message.content == "Hello from fake openai: hey"
    u = comp.usage
    assert u.total_tokens == u.prompt_tokens + u.completion_tokens
    assert u.prompt_tokens_details.cached_tokens == 0 and u.completion_tokens_details.reasoning_tokens == 0
    (rec,) = provider.wait_for_requests(1)
    assert rec.path == "/v1/chat/completions" and rec.header("authorization") == "Bearer sk-test"


def test_openai_stream_include_usage(provider, tls):
    provider.script(reply_text="streamed reply text", usage={"prompt_tokens": 11, "completion_tokens": 4})
    with openai_client(provider, tls["ca"]) as client:
        chunks = list(client.chat.completions.create(
            model="gpt-test", messages=USER, stream=True, stream_options={"include_usage": True}))
    assert all(c.object == "chat.completion.chunk" for c in chunks)
    assert chunks[0].choices[0].delta.role == "assistant"
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == "streamed reply text"
    finish = [c for c in chunks if c.choices and c.choices[0].finish_reason]
    assert len(finish) == 1 and finish[0].choices[0].finish_reason == "stop"
    last = chunks[-1]
    assert last.choices == [] and last.usage is not None
    assert (last.usage.prompt_tokens, last.usage.completion_tokens, last.usage.total_tokens) == (11, 4, 15)
    assert all(c.usage is None for c in chunks[:-1])


def test_openai_stream_without_usage_and_done_framing(provider, tls):
    provider.script(chunks=["a", "b"])
    body = json.dumps({"model": "g", "stream": True, "messages": USER}).encode()
    raw = raw_exchange(provider, tls["ca"], (
        b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer k\r\n"
        b"Connection: close\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body)))
    head, _, payload = raw.partition(b"\r\n\r\n")
    assert b"Transfer-Encoding: chunked" in head
    events = dechunk(payload)
    assert events[-1] == b"data: [DONE]\n\n"
    objs = [json.loads(e[len(b"data: "):]) for e in events[:-1]]
    assert [o["choices"][0]["delta"] for o in objs] == [
        {"role": "assistant", "content": "", "refusal": None}, {"content": "a"}, {"content": "b"}, {}]
    assert [o["choices"][0]["finish_reason"] for o in objs] == [None, None, None, "stop"]
    assert all("usage" not in o for o in objs)


def test_openai_async_stream(provider, tls):
    provider.script(chunks=["x", "y", "z"])

    async def run():
        async with async_openai_client(provider, tls["ca"]) as client:
            stream = await client.chat.completions.create(model="gpt-a", messages=USER, stream=True)
            return [c.choices[0].delta.content async for c in stream if c.choices]

    deltas = asyncio.run(run())
    assert deltas == ["", "x", "y", "z", None]


def test_openai_scripted_chunks_are_separate_deltas(provider, tls):
    provider.script(chunks=["Hel", "lo", ", ", "world"])
    with openai_client(provider, tls["ca"]) as client:
        stream = client.chat.completions.create(model="g", messages=USER, stream=True)
        deltas = [c.choices[0].delta.content for c in stream if c.choices and c.choices[0].delta.content]
    assert deltas == ["Hel", "lo", ", ", "world"]


def test_openai_rate_limit_error(provider, tls):
    provider.script(status=429)
    with openai_client(provider, tls["ca"]) as client:
        with pytest.raises(openai.RateLimitError) as ei:
            client.chat.completions.create(model="g", messages=USER)
    assert ei.value.status_code == 429
    assert ei.value.code == "rate_limit_exceeded"
    assert ei.value.response.headers["x-request-id"].startswith("req_")


def test_openai_stream_reset_raises(provider, tls):
    provider.script(chunks=["a", "b", "c"], reset_after_events=2)
    got = []
    with openai_client(provider, tls["ca"]) as client:
        with pytest.raises((httpx2.TransportError, openai.APIConnectionError)):
            for c in client.chat.completions.create(model="g", messages=USER, stream=True):
                got.append(c.choices[0].delta.content)
    assert got == ["", "a"]


# ---------------------------------------------------------------------------------------
# Cross-cutting behaviour
# ---------------------------------------------------------------------------------------


def test_unknown_path_404_provider_style(provider, tls):
    with anthropic_client(provider, tls["ca"]) as client:
        with pytest.raises(anthropic.NotFoundError) as ei:
            client.models.list()
    assert ei.value.body["error"]["type"] == "not_found_error"
    with openai_client(provider, tls["ca"]) as client:
        with pytest.raises(openai.NotFoundError) as ei2:
            client.models.list()
    assert ei2.value.body["message"] == "Invalid URL (GET /v1/models)"
    recs = provider.wait_for_requests(2)
    assert [(r.method, r.path) for r in recs] == [("GET", "/v1/models"), ("GET", "/v1/models")]


def test_unknown_path_does_not_consume_script(provider, tls):
    provider.script(reply_text="scripted")
    with httpx2.Client(verify=client_ssl_context(tls["ca"]), trust_env=False) as http:
        r = http.post(provider.base_url + "/v1/complete?beta=true", content=b"{}")
        assert r.status_code == 404 and r.json()["error"]["type"] == "not_found_error"
        assert provider.pending_scripts == 1
        r = http.post(provider.base_url + "/v1/messages", json={"model": "m", "messages": USER})
        assert r.json()["content"][0]["text"] == "scripted"
    recs = provider.wait_for_requests(2)
    assert recs[0].query == "beta=true" and recs[0].target == "/v1/complete?beta=true"
    assert [r.scripted for r in recs] == [False, True]


def test_exact_body_bytes_and_header_order(provider, tls):
    body = b'{ "model" : "m",\n  "messages": [{"role":"user","content":"caf\xc3\xa9"}],  "max_tokens":1 }'
    headers = [("X-First", "1"), ("x-dup", "a"), ("X-Dup", "b"), ("Content-Type", "application/json")]
    with httpx2.Client(verify=client_ssl_context(tls["ca"]), trust_env=False) as http:
        r = http.post(provider.base_url + "/v1/messages", content=body, headers=headers)
    assert r.status_code == 200
    assert r.json()["content"][0]["text"] == "Hello from fake anthropic: café"
    (rec,) = provider.wait_for_requests(1)
    assert rec.body == body
    names = [k for k, _ in rec.headers]
    assert names.index("X-First") < names.index("x-dup") < names.index("X-Dup")
    assert rec.header_values("X-DUP") == ["a", "b"]
    assert rec.header("content-length") == str(len(body))


def test_chunked_request_body(provider, tls):
    parts = [b'{"model":"m","messages":[{"role":"user",', b'"content":"chunky"}]', b"}"]
    with httpx2.Client(verify=client_ssl_context(tls["ca"]), trust_env=False) as http:
        r = http.post(provider.base_url + "/v1/chat/completions", content=iter(parts),
                      headers={"Authorization": "Bearer k", "Content-Type": "application/json"})
    assert r.json()["choices"][0]["message"]["content"] == "Hello from fake openai: chunky"
    (rec,) = provider.wait_for_requests(1)
    assert rec.header("transfer-encoding") == "chunked"
    assert rec.body == b"".join(parts)
    assert rec.wire_body.endswith(b"0\r\n\r\n") and rec.wire_body != rec.body


def test_keepalive_pooling_and_close_tracking(provider, tls):
    client = anthropic_client(provider, tls["ca"])
    for _ in range(3):
        client.messages.create(model="m", max_tokens=5, messages=USER)
    with client.messages.stream(model="m", max_tokens=5, messages=USER) as s:
        s.until_done()  # body read to the end -> connection goes back to the pool
    client.messages.create(model="m", max_tokens=5, messages=USER)
    assert provider.connections == 1
    assert {r.connection_id for r in provider.wait_for_requests(5)} == {1}
    assert provider.active_connections == 1
    client.close()
    provider.wait_for_idle(timeout=5)
    assert provider.connections_closed == 1


def test_openai_stream_stops_reading_at_done(provider, tls):
    """Observed SDK behaviour worth knowing for e2e tests: openai's Stream stops at
    ``data: [DONE]`` and closes the response; if the terminating zero-length chunk was not
    read yet, httpcore drops the pooled connection instead of reusing it."""
    with openai_client(provider, tls["ca"]) as client:
        client.chat.completions.create(model="g", messages=USER)
        assert provider.active_connections == 1
        with client.chat.completions.create(model="g", messages=USER, stream=True) as s:
            list(s)
        client.chat.completions.create(model="g", messages=USER)
    provider.wait_for_idle(timeout=5)
    assert 1 <= provider.connections <= 2


def test_delay_and_custom_headers_and_default_reply(provider, tls):
    provider.default_reply = lambda prov, rec, req: f"{prov}:{req['model']}"
    provider.script(delay_s=0.4, headers=[("x-fake", "yes")])
    with anthropic_client(provider, tls["ca"]) as client:
        t0 = time.monotonic()
        resp = client.messages.with_raw_response.create(model="mm", max_tokens=5, messages=USER)
        assert time.monotonic() - t0 >= 0.35
        assert resp.headers["x-fake"] == "yes"
        assert resp.parse().content[0].text == "anthropic:mm"


def test_raw_body_garbage(provider, tls):
    provider.script(raw_body=b"\x00not json{", content_type="application/json")
    provider.script(raw_body=[b"data: {\"broken\n\n", b"garbage"], content_type="text/event-stream")
    with httpx2.Client(verify=client_ssl_context(tls["ca"]), trust_env=False) as http:
        r = http.post(provider.base_url + "/v1/messages", json={})
        assert r.content == b"\x00not json{" and r.headers["content-length"] == "10"
        r = http.post(provider.base_url + "/v1/messages", json={})
        assert r.headers["transfer-encoding"] == "chunked"
        assert r.content == b"data: {\"broken\n\ngarbage"
    provider.script(raw_body=b"<html>bad gateway</html>", status=502, content_type="text/html")
    with anthropic_client(provider, tls["ca"]) as client:
        with pytest.raises(anthropic.APIStatusError) as ei:
            client.messages.create(model="m", max_tokens=5, messages=USER)
    assert ei.value.status_code == 502


def test_invalid_json_request_is_400(provider, tls):
    with httpx2.Client(verify=client_ssl_context(tls["ca"]), trust_env=False) as http:
        r = http.post(provider.base_url + "/v1/chat/completions", content=b"{nope",
                      headers={"Authorization": "Bearer k"})
    assert r.status_code == 400 and r.json()["error"]["type"] == "invalid_request_error"


def test_stall_times_out_client_and_stop_is_prompt(tls):
    provider = FakeProvider(tls["cert"], tls["key"]).start()
    provider.script(chunks=["a", "b"], stall_after_events=3)
    got = []
    client = anthropic_client(provider, tls["ca"], timeout=httpx2.Timeout(5.0, read=0.5))
    with pytest.raises((httpx2.TimeoutException, anthropic.APITimeoutError)):
        stream = client.messages.create(model="m", max_tokens=5, messages=USER, stream=True)
        for ev in stream:
            got.append(ev.type)
    assert got == ["message_start", "content_block_start"]  # ping is swallowed by the SDK
    # a second stalled request that stays open until the server stops
    provider.script(stall_after_events=0)
    stalled = []
    t = threading.Thread(target=lambda: stalled.append(_swallow(lambda: list(
        anthropic_client(provider, tls["ca"]).messages.create(
            model="m", max_tokens=5, messages=USER, stream=True)))), daemon=True)
    t.start()
    provider.wait_for(lambda: sum(kind == "stall" for kind, _ in provider.events) == 2, timeout=5)
    t0 = time.monotonic()
    provider.stop()
    assert time.monotonic() - t0 < 2.0
    t.join(5)
    assert not t.is_alive() and isinstance(stalled[0], Exception)
    client.close()
    assert provider.errors == []


def _swallow(fn):
    try:
        return fn()
    except Exception as exc:  # noqa: BLE001
        return exc


def test_client_disconnect_mid_stream_is_quiet(provider, tls, capfd):
    provider.script(chunks=[f"w{i} " for i in range(50)], chunk_delay_s=0.02)
    with anthropic_client(provider, tls["ca"]) as client:
        stream = client.messages.create(model="m", max_tokens=5, messages=USER, stream=True)
        for i, _ in enumerate(stream):
            if i == 4:
                break
        stream.close()  # drops the connection mid-stream (body not fully read)
    provider.wait_for_idle(timeout=5)
    provider.script(stall_after_events=2)
    with anthropic_client(provider, tls["ca"]) as client:
        stream = client.messages.create(model="m", max_tokens=5, messages=USER, stream=True)
        next(iter(stream))
        stream.close()  # peer leaves while the server is stalled -> handler notices and exits
    provider.wait_for_idle(timeout=5)
    # server still healthy
    with anthropic_client(provider, tls["ca"]) as client:
        assert client.messages.create(model="m", max_tokens=5, messages=USER).content[0].text
    # TLS handshake failures (client does not trust the cert) are quiet too
    with pytest.raises(anthropic.APIConnectionError):
        anthropic.Anthropic(api_key="k", base_url=provider.base_url, max_retries=0,
                            http_client=anthropic.DefaultHttpxClient(
                                verify=ssl.create_default_context(), trust_env=False)
                            ).messages.create(model="m", max_tokens=5, messages=USER)
    provider.stop()
    out, err = capfd.readouterr()
    assert "Traceback" not in err and "Exception" not in err, err
    assert provider.errors == []


def test_ssl_cert_file_env_alternative(provider, tls, monkeypatch):
    # SSL_CERT_FILE is read when the client is constructed (httpcore2.default_ssl_context).
    monkeypatch.setenv("SSL_CERT_FILE", tls["ca"])
    monkeypatch.delenv("SSL_CERT_DIR", raising=False)
    with openai.OpenAI(api_key="k", base_url=provider.openai_base_url, max_retries=0) as client:
        assert client.chat.completions.create(model="g", messages=USER).choices[0].message.content


def test_localhost_name_is_valid(provider, tls):
    with httpx2.Client(verify=client_ssl_context(tls["ca"]), trust_env=False) as http:
        r = http.post(f"https://localhost:{provider.port}/v1/messages", json={"model": "m", "messages": USER})
    assert r.status_code == 200


def test_wait_for_requests_timeout(provider):
    with pytest.raises(TimeoutError):
        provider.wait_for_requests(1, timeout=0.1)
    assert isinstance(provider.requests, list) and not provider.requests
    assert Received  # re-exported type used by e2e tests


def test_subprocess_mode_with_control_api(tls):
    proc = subprocess.Popen(
        [sys.executable, "-m", "tests.fakes.provider", "--cert", tls["cert"], "--key", tls["key"], "--port", "0"],
        cwd=REPO_ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        env={**os.environ, "PYTHONPATH": str(REPO_ROOT)},
    )
    try:
        line = proc.stdout.readline().strip()
        assert line.startswith("READY https://127.0.0.1:"), line + proc.stderr.read()
        base_url = line.split()[1]
        with httpx2.Client(base_url=base_url, verify=client_ssl_context(tls["ca"]), trust_env=False) as http:
            assert http.post("/_fake/script", json={"reply_text": "from control"}).json()["pending"] == 1
            client = anthropic.Anthropic(api_key="k", base_url=base_url, max_retries=0,
                                         http_client=anthropic.DefaultHttpxClient(
                                             verify=client_ssl_context(tls["ca"]), trust_env=False))
            with client:
                assert client.messages.create(model="m", max_tokens=5, messages=USER).content[0].text == "from control"
            recs = http.get("/_fake/requests").json()
            assert [r["path"] for r in recs] == ["/v1/messages"]
            assert http.get("/_fake/stats").json()["requests"] == 1
    finally:
        proc.terminate()
        assert proc.wait(timeout=10) == 0
        err = proc.stderr.read()
        proc.stdout.close()
        proc.stderr.close()
    assert "Traceback" not in err, err
