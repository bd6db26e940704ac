"""The official SDKs through the real gateway: calls succeed, and the provider
receives exactly what SPEC section 5 says."""

import asyncio
import json

import httpx2 as httpx
import pytest

from tests.e2e.conftest import (API_KEY, PROVIDER_KEY, anthropic_client, client_context, openai_client)
from tests.harness import BOUND_SPIFFE_ID

pytestmark = pytest.mark.usefixtures("fresh_provider")


def test_anthropic_sync(gateway, provider):
    client = anthropic_client(gateway)
    raw = client.messages.with_raw_response.create(
        model="claude-sonnet-4-5", max_tokens=64, messages=[{"role": "user", "content": "ping"}])
    message = raw.parse()
    assert message.content[0].text == "Hello from fake anthropic: ping"
    assert message.usage.input_tokens > 0
    assert raw.headers["x-mitrity-decision"] == "allowed"
    assert raw.headers["x-request-id"].startswith("req_")


def test_anthropic_stream_sync(gateway, provider):
    provider.script(chunks=["Hel", "lo, ", "wor", "ld"])
    client = anthropic_client(gateway)
    with client.messages.stream(model="claude-sonnet-4-5", max_tokens=64,
                                messages=[{"role": "user", "content": "hi"}]) as stream:
        pieces = list(stream.text_stream)
        final = stream.get_final_message()
    assert pieces == ["Hel", "lo, ", "wor", "ld"]
    assert final.stop_reason == "end_turn"
    assert final.usage.output_tokens > 0


def test_anthropic_async_and_async_stream(gateway, provider):
    async def run():
        client = anthropic_client(gateway, async_=True)
        message = await client.messages.create(model="claude-sonnet-4-5-20250929", max_tokens=16,
                                               messages=[{"role": "user", "content": "async"}])
        provider.script(chunks=["a", "b", "c"])
        stream = await client.messages.create(model="claude-sonnet-4-5", max_tokens=16, stream=True,
                                              messages=[{"role": "user", "content": "s"}])
        kinds = [event.type async for event in stream]
        await client.close()
        return message, kinds
    message, kinds = asyncio.run(run())
    assert message.content[0].text == "Hello from fake anthropic: async"
    assert kinds[0] == "message_start" and kinds[-1] == "message_stop"
    assert kinds.count("content_block_delta") == 3


def test_openai_sync_and_stream(gateway, provider):
    client = openai_client(gateway)
    completion = client.chat.completions.create(model="gpt-4o-mini", messages=[{"role": "user", "content": "yo"}])
    assert completion.choices[0].message.content == "Hello from fake openai: yo"
    provider.script(chunks=["x", "y", "z"])
    stream = client.chat.completions.create(model="gpt-4o-mini", stream=True,
                                            stream_options={"include_usage": True},
                                            messages=[{"role": "user", "content": "s"}])
    chunks = list(stream)
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == "xyz"
    assert chunks[-1].usage is not None and chunks[-1].usage.total_tokens > 0


def test_openai_async_stream(gateway, provider):
    async def run():
        client = openai_client(gateway, async_=True)
        provider.script(chunks=["1", "2"])
        stream = await client.chat.completions.create(model="gpt-4o-mini", stream=True,
                                                      messages=[{"role": "user", "content": "s"}])
        text = "".join([c.choices[0].delta.content or "" async for c in stream if c.choices])
        await client.close()
        return text
    assert asyncio.run(run()) == "12"


def test_mtls_identity_without_api_key(gateway, provider):
    client = anthropic_client(gateway, key=None, spiffe_id=BOUND_SPIFFE_ID)
    message = client.messages.create(model="claude-sonnet-4-5", max_tokens=8,
                                     messages=[{"role": "user", "content": "cert"}])
    assert message.content[0].text.endswith("cert")
    client = openai_client(gateway, key=None, spiffe_id=BOUND_SPIFFE_ID)
    assert client.chat.completions.create(model="gpt-4o-mini", messages=[{"role": "user", "content": "c"}]).choices


def test_provider_receives_exact_request(gateway, provider):
    body = (b'{"model": "claude-sonnet-4-5",  "max_tokens": 7, "messages": '
            b'[{"role": "user", "content": "caf\\u00e9 \xe2\x98\x83 1.50e3"}], "metadata": {"k": [1, 2.0]}}')
    headers = {
        "content-type": "application/json",
        "x-api-key": PROVIDER_KEY,
        "authorization": "Bearer sk-provider-bearer",
        "anthropic-version": "2023-06-01",
        "anthropic-beta": "tools-2024-05-16",
        "x-mitrity-api-key": API_KEY,
        "x-mitrity-debug": "1",
        "x-custom-trace": "abc",
        "connection": "keep-alive, x-hop-me",
        "x-hop-me": "gone",
        "te": "trailers",
        "accept-encoding": "gzip",
    }
    with httpx.Client(verify=client_context(gateway.pki)) as http:
        answer = http.post(gateway.url + "/v1/messages?beta=true&x=%2F", content=body, headers=headers)
    assert answer.status_code == 200
    received = provider.wait_for_requests(1)[0]
    assert received.body == body
    assert received.path == "/v1/messages" and received.query == "beta=true&x=%2F"
    names = {name.lower() for name, _ in received.headers}
    assert received.header("x-api-key") == PROVIDER_KEY
    assert received.header("authorization") == "Bearer sk-provider-bearer"
    assert received.header("anthropic-version") == "2023-06-01"
    assert received.header("anthropic-beta") == "tools-2024-05-16"
    assert received.header("x-custom-trace") == "abc"
    assert received.header("content-length") == str(len(body))
    assert received.header("host") == f"127.0.0.1:{provider.port}"
    assert received.header("accept-encoding") == "identity"
    assert not {n for n in names if n.startswith("x-mitrity-")}
    assert "x-hop-me" not in names and "te" not in names
    assert received.header("connection") in (None, "keep-alive")


def test_query_string_is_forwarded_byte_for_byte_or_refused(gateway, provider):
    """A query reaches the provider exactly as sent; one the HTTP client would
    re-encode (a raw '|', a stray '%', a lower-case escape) is refused, never altered."""
    from tests.e2e.test_error_table import raw_exchange, raw_request
    body = json.dumps({"model": "claude-sonnet-4-5", "max_tokens": 8,
                       "messages": [{"role": "user", "content": "q"}]}).encode()

    def send(query):
        request = raw_request("POST", "/v1/messages?" + query, body).replace(
            b"Connection: close", b"Connection: close\r\nx-api-key: sk-x\r\nanthropic-version: 2023-06-01")
        return raw_exchange(gateway, request)

    provider.reset()
    exact = "a=1&b=%2F%C3%A9&c=x~y-z._!$'()*+,;=:@/?&d=&&e"
    assert send(exact)[0] == 200
    assert provider.wait_for_requests(1)[0].query == exact
    provider.reset()
    for query in ("a=%zz", "b=x|y", "c=%7e", "d=%2f"):
        status, headers, answer = send(query)
        assert status == 400 and headers["x-mitrity-reason"] == "invalid_request", query
        assert "forwarded unchanged" in json.loads(answer)["error"]["message"]
    assert provider.requests == []


def test_stream_events_arrive_as_sent(gateway, provider):
    """Each event reaches the agent while the provider is still generating."""
    provider.script(chunks=["One. ", "Two. ", "Three. "], chunk_delay_s=0.6)
    body = json.dumps({"model": "claude-sonnet-4-5", "max_tokens": 8, "stream": True,
                       "messages": [{"role": "user", "content": "x"}]})
    import time
    with httpx.Client(verify=client_context(gateway.pki), timeout=10) as http:
        with http.stream("POST", gateway.url + "/v1/messages", content=body,
                         headers={"x-mitrity-api-key": API_KEY, "content-type": "application/json"}) as answer:
            assert answer.headers["x-mitrity-decision"] == "allowed"
            seen, start = [], time.monotonic()
            for chunk in answer.iter_raw():
                if b"text_delta" in chunk:
                    seen.append(time.monotonic() - start)
    assert len(seen) >= 3
    assert seen[-1] - seen[0] > 0.9  # delivered as produced, not buffered to the end


def test_provider_error_passes_through(gateway, provider):
    error = {"type": "error", "error": {"type": "rate_limit_error", "message": "slow down"}}
    provider.script(status=429, error_body=error, headers=[("retry-after", "7")])
    client = anthropic_client(gateway)
    import anthropic
    with pytest.raises(anthropic.RateLimitError) as caught:
        client.messages.create(model="claude-sonnet-4-5", max_tokens=8, messages=[{"role": "user", "content": "x"}])
    assert caught.value.body == error
    assert caught.value.response.headers["retry-after"] == "7"
    assert caught.value.response.headers["x-mitrity-decision"] == "allowed"
