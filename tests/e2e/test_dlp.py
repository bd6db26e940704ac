"""DLP end to end (SPEC sections 4 and 5): the real gateway, the real SDKs, the fake provider.

- prompts: secrets and PII in scanned text are redacted in place as ``[REDACTED:<id>]`` and every other byte of
  the body reaches the provider as sent; text that is not prompt text (images, tool input, tool definitions)
  is not touched; a ``block`` pattern answers 403 ``dlp_blocked`` and nothing is forwarded;
- bundle patterns redact, honour ``applies_to``, and a pattern RE2 refuses rejects its whole bundle;
- answers: redacted whole, or blocked with 502 ``response_blocked``; an unreadable answer is never delivered;
- streams: a secret split across deltas is redacted, a blocked stream ends with the provider-shaped error
  event and nothing of the match; framing, usage and stop reasons arrive intact;
- ``dlp.response_scan: false`` and ``dlp.builtin_patterns: false`` do what they say;
- a pathological pattern cannot stall a worker (RE2, linear time);
- none of the secrets ever appears in the gateway's log.
"""

import asyncio
import json
import time

import anthropic
import httpx2 as httpx
import openai
import pytest

from tests.e2e.conftest import API_KEY, PROVIDER_KEY, anthropic_client, client_context, openai_client, policy, \
    provider_config
from tests.gateway.test_streaming_dlp import LONG_PEM, PEM, anthropic_stream, openai_multichoice, openai_stream
from tests.harness import Gateway

pytestmark = pytest.mark.usefixtures("fresh_provider")

AWS = "AKIAQYLPMN5HHHFPZAM2"
EMAIL = "jane.doe@example.com"
CARD = "4111 1111 1111 1111"
EMPLOYEE = "ACME-482913"
GITHUB = "ghp_R8k2Lq9ZxW4vT7nB3mC6pD1sF5gH0jK2aQwE"
PHONE = "+1 415-555-0132"
# Every secret this module sends; none of them may ever reach a log line.
SECRETS = [AWS, EMAIL, CARD, EMPLOYEE, GITHUB, PHONE, PEM.splitlines()[1], LONG_PEM.splitlines()[40]]
RED = {AWS: "[REDACTED:builtin.aws-access-key-id]", EMAIL: "[REDACTED:builtin.email]",
       CARD: "[REDACTED:builtin.credit-card]", GITHUB: "[REDACTED:builtin.github-token]",
       PHONE: "[REDACTED:builtin.phone-number]"}
PNG_WITH_KEY = ("iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJ+" + AWS
                + "/AAAADUlEQVR42mNk+M9QDwADhgGAWjR9awAAAABJRU5ErkJggg==")

DLP_PATTERNS = [
    {"id": "builtin.private-key", "action": "block"},
    {"id": "acme-employee-id", "regex": r"ACME-\d{6}", "action": "redact"},
    {"id": "acme-codename", "regex": r"PROJECT-[A-Z]{4,}", "action": "redact", "applies_to": ["response"]},
]
ANTHROPIC_MODEL = "claude-sonnet-4-5"
OPENAI_MODEL = "gpt-4o-mini"
GATEWAY_LOGS = []    # every gateway this module used, for the privacy check at the end


def dlp_policy(revision="dlp.1", patterns=DLP_PATTERNS):
    return {**policy(revision=revision), "dlp_patterns": list(patterns)}


@pytest.fixture(scope="module")
def dlp_gateway(tmp_path_factory, pki, provider, upstream_tls):
    """A gateway whose policy adds the bundle patterns above."""
    gw = Gateway(str(tmp_path_factory.mktemp("dlp-gateway")), pki, provider_config(provider, upstream_tls),
                 dlp_policy()).start()
    GATEWAY_LOGS.append(gw.log_path)
    yield gw
    gw.stop()


@pytest.fixture
def private_gateway(start_gateway):
    def start(**kwargs):
        gw = start_gateway(**kwargs)
        GATEWAY_LOGS.append(gw.log_path)
        return gw
    return start


@pytest.fixture
def shared_gateway(gateway):
    GATEWAY_LOGS.append(gateway.log_path)
    return gateway


def post(gw, path, body, headers=None):
    """A raw POST (bytes exactly as given) with the agent's API key."""
    headers = {"content-type": "application/json", "x-mitrity-api-key": API_KEY, "x-api-key": PROVIDER_KEY,
               "anthropic-version": "2023-06-01", **(headers or {})}
    with httpx.Client(verify=client_context(gw.pki), timeout=20) as http:
        return http.post(gw.url + path, content=body, headers=headers)


def fill(template, values):
    for name, value in values.items():
        template = template.replace(f"<<{name}>>", value)
    return template.encode("utf-8")


def scanned_and_not(template):
    """(what is sent, what the provider must receive): ``<<X>>`` placeholders are
    prompt text and get redacted; ``<<X_RAW>>`` ones are not prompt text."""
    sent = fill(template, {"AWS": AWS, "EMAIL": EMAIL, "CARD": CARD, "EMAIL_RAW": EMAIL, "IMAGE": PNG_WITH_KEY})
    redacted = fill(template, {"AWS": RED[AWS], "EMAIL": RED[EMAIL], "CARD": RED[CARD], "EMAIL_RAW": EMAIL,
                               "IMAGE": PNG_WITH_KEY})
    return sent, redacted


# -- prompts ---------------------------------------------------------------------------

ANTHROPIC_TEMPLATE = (
    '{"model":"claude-sonnet-4-5", "max_tokens" : 1.0E3,\n'
    '\t"temperature":0.50, "top_k":-0, "metadata":{"user_id":"caf\\u00E9-\\ud83d\\ude00 \\/ 日本"},\n'
    ' "system":[{"type":"text","text":"Escalations go to <<EMAIL>>.","cache_control":{"type":"ephemeral"}},\n'
    '           {"type":"text","text":"Unicode: \\u00e9t\\u00e9 日本 \\ud83d\\ude00"}],\n'
    ' "tools":[{"name":"lookup","description":"Find <<EMAIL_RAW>> records",'
    '"input_schema":{"type":"object","properties":{"email":{"type":"string"}}}}],\n'
    ' "messages":[\n'
    '  {"role":"user","content":"My key is <<AWS>> and my card is <<CARD>>, thanks"},\n'
    '  {"role":"assistant","content":[{"type":"text","text":"Looking up <<EMAIL>> now."},\n'
    '     {"type":"tool_use","id":"toolu_01","name":"lookup","input":{"email":"<<EMAIL_RAW>>","n":1e2}}]},\n'
    '  {"role":"user","content":[\n'
    '     {"type":"tool_result","tool_use_id":"toolu_01","content":"owner card <<CARD>>"},\n'
    '     {"type":"tool_result","tool_use_id":"toolu_02","content":[{"type":"text","text":"key <<AWS>>"}]},\n'
    '     {"type":"image","source":{"type":"base64","media_type":"image/png","data":"<<IMAGE>>"}},\n'
    '     {"type":"text","text":"Please \\"check\\" \\u00e9t\\u00e9 <<EMAIL>> \\ud83d\\ude00"}]}]}'
)

OPENAI_TEMPLATE = (
    '{"model":"gpt-4o-mini","temperature":1E0, "n":1,"seed":-12, "max_completion_tokens":100.0,\n'
    ' "messages":[\n'
    '  {"role":"system","content":"Escalate to <<EMAIL>>; caf\\u00e9"},\n'
    '  {"role":"user","content":[{"type":"text","text":"key <<AWS>> card <<CARD>>"},\n'
    '      {"type":"image_url","image_url":{"url":"data:image/png;base64,<<IMAGE>>","detail":"low"}}]},\n'
    '  {"role":"assistant","content":null,"tool_calls":[{"id":"call_1","type":"function",'
    '"function":{"name":"lookup","arguments":"{\\"email\\":\\"<<EMAIL_RAW>>\\"}"}}]},\n'
    '  {"role":"tool","tool_call_id":"call_1","content":"owner <<EMAIL>>"},\n'
    '  {"role":"developer","content":"\\u65e5\\u672c <<AWS>>"}],\n'
    ' "tools":[{"type":"function","function":{"name":"lookup","description":"mail <<EMAIL_RAW>>",'
    '"parameters":{"type":"object","properties":{}}}}]}'
)


@pytest.mark.parametrize("path,template", [("/v1/messages", ANTHROPIC_TEMPLATE),
                                           ("/v1/chat/completions", OPENAI_TEMPLATE)], ids=["anthropic", "openai"])
def test_prompt_secrets_are_redacted_in_place_and_nothing_else_changes(shared_gateway, provider, path, template):
    sent, redacted = scanned_and_not(template)
    json.loads(sent)  # the test's own body is valid JSON
    answer = post(shared_gateway, path, sent)
    assert answer.status_code == 200, answer.text
    assert answer.headers["x-mitrity-decision"] == "redacted"
    [received] = provider.wait_for_requests(1)
    assert received.body == redacted
    assert received.header("content-length") == str(len(redacted))


def test_prompt_redaction_keeps_the_other_bytes_of_the_same_string(shared_gateway, provider):
    """Only the matched span is rewritten (SPEC section 5), also inside the string that holds it:
    its other characters keep their spelling (``\\/``, ``\\u00E9``, ``\\u0041``)."""
    template = ('{"model":"claude-sonnet-4-5","max_tokens":8,"messages":[{"role":"user",'
                '"content":"caf\\u00E9 \\/ \\u0041BC mail <<EMAIL>> ok"}]}')
    sent, redacted = scanned_and_not(template)
    answer = post(shared_gateway, "/v1/messages", sent)
    assert answer.status_code == 200
    [received] = provider.wait_for_requests(1)
    assert json.loads(received.body) == json.loads(redacted)
    assert received.body == redacted


def test_sdk_prompt_redaction_both_providers(shared_gateway, provider):
    raw = anthropic_client(shared_gateway).messages.with_raw_response.create(
        model=ANTHROPIC_MODEL, max_tokens=16, system=f"Call {PHONE} if stuck.",
        messages=[{"role": "user", "content": f"Token {GITHUB}, mail {EMAIL}."}])
    assert raw.headers["x-mitrity-decision"] == "redacted"
    raw = openai_client(shared_gateway).chat.completions.with_raw_response.create(
        model=OPENAI_MODEL, messages=[{"role": "user", "content": [{"type": "text", "text": f"Token {GITHUB}."}]}])
    assert raw.headers["x-mitrity-decision"] == "redacted"
    first, second = [r.json() for r in provider.wait_for_requests(2)]
    assert first["system"] == f"Call {RED[PHONE]} if stuck."
    assert first["messages"][0]["content"] == f"Token {RED[GITHUB]}, mail {RED[EMAIL]}."
    assert second["messages"][0]["content"][0]["text"] == f"Token {RED[GITHUB]}."


def test_clean_prompt_is_allowed_and_forwarded_as_sent(shared_gateway, provider):
    body = b'{"model":"claude-sonnet-4-5","max_tokens":8,"messages":[{"role":"user","content":"Just prose, 42."}]}'
    answer = post(shared_gateway, "/v1/messages", body)
    assert answer.headers["x-mitrity-decision"] == "allowed"
    assert provider.wait_for_requests(1)[0].body == body


def test_block_pattern_on_a_prompt_denies_and_forwards_nothing(dlp_gateway, provider):
    with pytest.raises(anthropic.PermissionDeniedError) as caught:
        anthropic_client(dlp_gateway).messages.create(
            model=ANTHROPIC_MODEL, max_tokens=16,
            messages=[{"role": "user", "content": f"Deploy with this key:\n{PEM}\nthanks"}])
    assert caught.value.status_code == 403
    assert caught.value.response.headers["x-mitrity-reason"] == "dlp_blocked"
    assert caught.value.response.headers["x-mitrity-decision"] == "blocked"
    assert caught.value.body["error"]["type"] == "permission_error"
    assert "PRIVATE KEY" not in caught.value.response.text and "MIIB" not in caught.value.response.text
    with pytest.raises(openai.PermissionDeniedError) as caught:
        openai_client(dlp_gateway).chat.completions.create(
            model=OPENAI_MODEL, messages=[{"role": "system", "content": "ok"},
                                          {"role": "user", "content": [{"type": "text", "text": PEM}]}])
    assert caught.value.code == "dlp_blocked"
    time.sleep(0.2)
    assert provider.requests_snapshot() == []


def test_bundle_patterns_redact_and_respect_applies_to(dlp_gateway, provider):
    provider.script(reply_text="Codename PROJECT-ORCA confirmed for ACME-000001.")
    raw = anthropic_client(dlp_gateway).messages.with_raw_response.create(
        model=ANTHROPIC_MODEL, max_tokens=16,
        messages=[{"role": "user", "content": f"Employee {EMPLOYEE} works on PROJECT-ORCA."}])
    assert raw.headers["x-mitrity-decision"] == "redacted"
    [received] = provider.wait_for_requests(1)
    # acme-employee-id applies to prompts; acme-codename only to answers
    assert received.json()["messages"][0]["content"] == "Employee [REDACTED:acme-employee-id] works on PROJECT-ORCA."
    assert raw.parse().content[0].text == "Codename [REDACTED:acme-codename] confirmed for [REDACTED:acme-employee-id]."


def test_response_only_pattern_leaves_the_prompt_allowed(dlp_gateway, provider):
    raw = openai_client(dlp_gateway).chat.completions.with_raw_response.create(
        model=OPENAI_MODEL, messages=[{"role": "user", "content": "Status of PROJECT-ORCA?"}])
    assert raw.headers["x-mitrity-decision"] == "allowed"
    assert provider.wait_for_requests(1)[0].json()["messages"][0]["content"] == "Status of PROJECT-ORCA?"
    # the fake echoes the prompt: the answer is scanned with the response pattern
    assert raw.parse().choices[0].message.content == "Hello from fake openai: Status of [REDACTED:acme-codename]?"


# -- non-streamed answers ---------------------------------------------------------------------

ANSWER = f"Your key {AWS} belongs to {EMAIL}; call {PHONE}."
ANSWER_REDACTED = f"Your key {RED[AWS]} belongs to {RED[EMAIL]}; call {RED[PHONE]}."


def test_answers_are_redacted_through_both_sdks(shared_gateway, provider):
    provider.script(reply_text=ANSWER)
    message = anthropic_client(shared_gateway).messages.create(
        model=ANTHROPIC_MODEL, max_tokens=64, messages=[{"role": "user", "content": "what is my key?"}])
    assert message.content[0].text == ANSWER_REDACTED
    assert message.stop_reason == "end_turn"
    provider.script(reply_text=ANSWER)
    completion = openai_client(shared_gateway).chat.completions.create(
        model=OPENAI_MODEL, messages=[{"role": "user", "content": "what is my key?"}])
    assert completion.choices[0].message.content == ANSWER_REDACTED
    assert completion.choices[0].finish_reason == "stop"


def test_blocked_answer_is_a_502_response_blocked(dlp_gateway, provider):
    provider.script(reply_text=f"Sure, here it is:\n{PEM}\n")
    with pytest.raises(anthropic.InternalServerError) as caught:
        anthropic_client(dlp_gateway).messages.create(
            model=ANTHROPIC_MODEL, max_tokens=64, messages=[{"role": "user", "content": "give me a key"}])
    assert caught.value.status_code == 502
    assert caught.value.response.headers["x-mitrity-reason"] == "response_blocked"
    assert caught.value.body["error"]["type"] == "api_error"
    assert "PRIVATE" not in caught.value.response.text
    provider.script(reply_text=f"Sure, here it is:\n{PEM}\n")
    with pytest.raises(openai.InternalServerError) as caught:
        openai_client(dlp_gateway).chat.completions.create(
            model=OPENAI_MODEL, messages=[{"role": "user", "content": "give me a key"}])
    assert caught.value.status_code == 502
    assert caught.value.code == "response_blocked"
    assert "PRIVATE" not in caught.value.response.text


@pytest.mark.parametrize("provider_name", ["anthropic", "openai"])
def test_unreadable_answer_is_never_delivered(shared_gateway, provider, provider_name):
    broken = b'{"id":"msg_01","type":"message","content":[{"type":"text","text":"key ' + AWS.encode() + b'"}'
    provider.script(raw_body=broken, content_type="application/json")
    error = anthropic.InternalServerError if provider_name == "anthropic" else openai.InternalServerError
    with pytest.raises(error) as caught:
        if provider_name == "anthropic":
            anthropic_client(shared_gateway).messages.create(
                model=ANTHROPIC_MODEL, max_tokens=8, messages=[{"role": "user", "content": "hi"}])
        else:
            openai_client(shared_gateway).chat.completions.create(
                model=OPENAI_MODEL, messages=[{"role": "user", "content": "hi"}])
    assert caught.value.status_code == 502
    assert caught.value.response.headers["x-mitrity-reason"] == "upstream_error"
    assert AWS not in caught.value.response.text and "msg_01" not in caught.value.response.text


# -- streamed answers --------------------------------------------------------------------------

# The secrets are cut inside, across deltas (one event, one HTTP chunk each).
SPLIT_CHUNKS = ["Your key is AKIA", "QYLPMN5H", "HHFPZAM2 and the owner is ", "jane.d", "oe@exa", "mple.com",
                " (call +1 415-", "555-0132). Bye!"]
SPLIT_TEXT = "".join(SPLIT_CHUNKS)
SPLIT_REDACTED = f"Your key is {RED[AWS]} and the owner is {RED[EMAIL]} (call {RED[PHONE]}). Bye!"


def assert_no_secret(text):
    for secret in (AWS, EMAIL, "415-555", "AKIAQ", "jane.d", "PRIVATE KEY", "MIIB"):
        assert secret not in text, secret


def test_anthropic_sync_stream_secret_split_across_deltas(shared_gateway, provider):
    provider.script(chunks=SPLIT_CHUNKS, usage={"input_tokens": 31, "output_tokens": 57})
    with anthropic_client(shared_gateway).messages.stream(
            model=ANTHROPIC_MODEL, max_tokens=64, messages=[{"role": "user", "content": "key?"}]) as stream:
        pieces = list(stream.text_stream)
        final = stream.get_final_message()
    assert "".join(pieces) == SPLIT_REDACTED
    assert final.content[0].text == SPLIT_REDACTED
    assert final.stop_reason == "end_turn"
    assert final.usage.output_tokens == 57 and final.usage.input_tokens == 31
    assert "Your key is " in pieces[0] and len(pieces) >= 3  # released as it comes, not in one piece at the end


def test_openai_sync_stream_secret_split_across_deltas_with_usage(shared_gateway, provider):
    provider.script(chunks=SPLIT_CHUNKS, usage={"prompt_tokens": 12, "completion_tokens": 34})
    stream = openai_client(shared_gateway).chat.completions.create(
        model=OPENAI_MODEL, stream=True, stream_options={"include_usage": True},
        messages=[{"role": "user", "content": "key?"}])
    chunks = list(stream)
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == SPLIT_REDACTED
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == "stop"
    assert chunks[0].choices[0].delta.role == "assistant"
    usage = chunks[-1].usage
    assert chunks[-1].choices == []
    assert (usage.prompt_tokens, usage.completion_tokens, usage.total_tokens) == (12, 34, 46)


def test_async_streams_both_providers(shared_gateway, provider):
    async def run():
        client = anthropic_client(shared_gateway, async_=True)
        provider.script(chunks=SPLIT_CHUNKS)
        stream = await client.messages.create(model=ANTHROPIC_MODEL, max_tokens=64, stream=True,
                                              messages=[{"role": "user", "content": "k"}])
        events = [event async for event in stream]
        await client.close()
        oclient = openai_client(shared_gateway, async_=True)
        provider.script(chunks=SPLIT_CHUNKS)
        ostream = await oclient.chat.completions.create(model=OPENAI_MODEL, stream=True,
                                                        messages=[{"role": "user", "content": "k"}])
        ochunks = [c async for c in ostream]
        await oclient.close()
        return events, ochunks
    events, ochunks = asyncio.run(run())
    text = "".join(e.delta.text for e in events if e.type == "content_block_delta")
    assert text == SPLIT_REDACTED
    assert [e.type for e in events][:3] == ["message_start", "content_block_start", "content_block_delta"]
    assert [e.type for e in events][-3:] == ["content_block_stop", "message_delta", "message_stop"]
    assert events[-2].delta.stop_reason == "end_turn"
    assert "".join(c.choices[0].delta.content or "" for c in ochunks if c.choices) == SPLIT_REDACTED
    assert all(c.usage is None for c in ochunks)  # not asked for: no usage chunk


def test_anthropic_stream_with_tool_use_framing_intact(shared_gateway, provider):
    deltas = ["I'll check the weather for ", "jane.doe@exa", "mple.com", " now."]
    provider.script(raw_body=anthropic_stream(deltas, pings={1}, tool=True),
                    content_type="text/event-stream; charset=utf-8")
    with anthropic_client(shared_gateway).messages.stream(
            model=ANTHROPIC_MODEL, max_tokens=64, messages=[{"role": "user", "content": "weather?"}]) as stream:
        final = stream.get_final_message()
    assert final.content[0].text == f"I'll check the weather for {RED[EMAIL]} now."
    assert final.content[1].type == "tool_use" and final.content[1].input == {"city": "Paris"}
    assert final.stop_reason == "tool_use"
    assert final.usage.output_tokens == 517 and final.usage.input_tokens == 472


def test_openai_stream_with_tool_call_framing_intact(shared_gateway, provider):
    provider.script(raw_body=openai_stream(["Card on file: 4111 1111 ", "1111 1111", ". Checking."], tool=True),
                    content_type="text/event-stream; charset=utf-8")
    chunks = list(openai_client(shared_gateway).chat.completions.create(
        model=OPENAI_MODEL, stream=True, stream_options={"include_usage": True},
        messages=[{"role": "user", "content": "weather?"}]))
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == f"Card on file: {RED[CARD]}. Checking."
    calls = [c.choices[0].delta.tool_calls for c in chunks if c.choices and c.choices[0].delta.tool_calls]
    assert calls[0][0].function.name == "get_weather" and calls[1][0].function.arguments == '{"city": "Paris"}'
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == "tool_calls"
    assert chunks[-1].usage.total_tokens == 989


def test_openai_two_choices_each_redacted(shared_gateway, provider):
    """n=2: choice 0 finishes (its own finish chunk) while choice 1 is inside an email."""
    order = [(0, "Short answer. "), (1, "Write to jane.d"), (0, None), (1, "oe@example.com today."), (1, None)]
    provider.script(raw_body=openai_multichoice(order, None), content_type="text/event-stream; charset=utf-8")
    chunks = list(openai_client(shared_gateway).chat.completions.create(
        model=OPENAI_MODEL, n=2, stream=True, messages=[{"role": "user", "content": "k"}]))
    texts = {}
    for chunk in chunks:
        for choice in chunk.choices:
            texts[choice.index] = texts.get(choice.index, "") + (choice.delta.content or "")
    assert texts == {0: "Short answer. ", 1: f"Write to {RED[EMAIL]} today."}


def test_long_private_key_streamed_in_small_deltas_is_not_delivered_in_clear(shared_gateway, provider):
    """A 4096-bit key (about 3.2 kB) with the default 2048-byte window, as a model streams it."""
    text = "Here is the key:\n" + LONG_PEM + "\nDone."
    provider.script(chunks=[text[i:i + 4] for i in range(0, len(text), 4)])
    with anthropic_client(shared_gateway).messages.stream(
            model=ANTHROPIC_MODEL, max_tokens=64, messages=[{"role": "user", "content": "key?"}]) as stream:
        received = "".join(stream.text_stream)
    body_lines = LONG_PEM.splitlines()[1:-1]
    leaked = [line for line in body_lines if line[:16] in received]
    assert not leaked, f"{len(leaked)} of {len(body_lines)} lines of the key delivered in clear"
    assert received == "Here is the key:\n[REDACTED:builtin.private-key]\nDone."


PEM_CHUNKS = ["Here you go: ", "my mail is ", "jane.doe@", "example.com\n", PEM[:20], PEM[20:75], PEM[75:],
              "\nKeep it safe."]


def test_anthropic_blocked_stream_raises_and_delivers_nothing_of_the_match(dlp_gateway, provider):
    provider.script(chunks=PEM_CHUNKS)
    received = []
    with pytest.raises(anthropic.APIStatusError) as caught:
        with anthropic_client(dlp_gateway).messages.stream(
                model=ANTHROPIC_MODEL, max_tokens=64, messages=[{"role": "user", "content": "key?"}]) as stream:
            for text in stream.text_stream:
                received.append(text)
    # The SDK raises on the `event: error` it finds in the stream (the HTTP status was already 200).
    assert caught.value.status_code == 200
    assert caught.value.body["type"] == "error"
    assert caught.value.body["error"]["type"] == "permission_error"
    assert "".join(received) == f"Here you go: my mail is {RED[EMAIL]}\n"
    assert_no_secret("".join(received) + str(caught.value.body))


def test_openai_async_blocked_stream_raises_and_delivers_nothing_of_the_match(dlp_gateway, provider):
    async def run():
        client = openai_client(dlp_gateway, async_=True)
        provider.script(chunks=PEM_CHUNKS)
        stream = await client.chat.completions.create(model=OPENAI_MODEL, stream=True,
                                                      messages=[{"role": "user", "content": "k"}])
        received = []
        try:
            async for chunk in stream:
                if chunk.choices:
                    received.append(chunk.choices[0].delta.content or "")
        except openai.APIError as exc:
            return received, exc
        finally:
            await client.close()
        return received, None
    received, error = asyncio.run(run())
    # The SDK raises APIError (no status: the HTTP answer was a 200) for a `data: {"error": ...}` chunk.
    assert type(error) is openai.APIError, error
    assert error.code == "response_blocked" and error.type == "permission_error"
    assert "".join(received) == f"Here you go: my mail is {RED[EMAIL]}\n"
    assert_no_secret("".join(received))


@pytest.mark.parametrize("provider_name", ["anthropic", "openai"])
def test_blocked_stream_bytes_end_with_the_error_event(dlp_gateway, provider, provider_name):
    provider.script(chunks=PEM_CHUNKS)
    path = "/v1/messages" if provider_name == "anthropic" else "/v1/chat/completions"
    body = json.dumps({"model": ANTHROPIC_MODEL if provider_name == "anthropic" else OPENAI_MODEL,
                       "max_tokens": 64, "stream": True, "messages": [{"role": "user", "content": "k"}]})
    answer = post(dlp_gateway, path, body.encode())
    assert answer.status_code == 200
    assert answer.headers["x-mitrity-decision"] == "allowed"
    raw = answer.content
    assert raw.endswith(b"\n\n")
    last = raw[:-2].rsplit(b"\n\n", 1)[-1] + b"\n\n"
    if provider_name == "anthropic":
        assert last.startswith(b"event: error\ndata: ")
        data = json.loads(last.split(b"data: ", 1)[1])
        assert data["error"]["type"] == "permission_error"
        assert b"message_stop" not in raw and b"content_block_stop" not in raw
    else:
        data = json.loads(last[len(b"data: "):])
        assert data["error"]["code"] == "response_blocked"
        assert b"[DONE]" not in raw and b'"finish_reason":"stop"' not in raw
    assert_no_secret(raw.decode())


# -- settings -----------------------------------------------------------------------------------

def test_response_scan_off_and_builtins_off(private_gateway, provider):
    gw = private_gateway(config={"dlp": {"response_scan": False, "builtin_patterns": False}},
                         policy_doc=dlp_policy(patterns=[{"id": "acme-employee-id", "regex": r"ACME-\d{6}"}]))
    provider.script(reply_text=f"{ANSWER} Employee {EMPLOYEE}.")
    raw = anthropic_client(gw).messages.with_raw_response.create(
        model=ANTHROPIC_MODEL, max_tokens=16,
        messages=[{"role": "user", "content": f"Mail {EMAIL}, card {CARD}, employee {EMPLOYEE}."}])
    # builtin_patterns: false: the email and card stay; the bundle's own pattern still applies
    assert provider.wait_for_requests(1)[0].json()["messages"][0]["content"] == \
        f"Mail {EMAIL}, card {CARD}, employee [REDACTED:acme-employee-id]."
    assert raw.headers["x-mitrity-decision"] == "redacted"
    # response_scan: false: the answer is untouched, whole and streamed
    assert raw.parse().content[0].text == f"{ANSWER} Employee {EMPLOYEE}."
    provider.script(chunks=[*SPLIT_CHUNKS, " ACME-48", "2913"])
    stream = openai_client(gw).chat.completions.create(model=OPENAI_MODEL, stream=True,
                                                       messages=[{"role": "user", "content": "k"}])
    assert "".join(c.choices[0].delta.content or "" for c in stream if c.choices) == SPLIT_TEXT + " " + EMPLOYEE


def test_builtins_on_by_default_redact_the_same_prompt(shared_gateway, provider):
    anthropic_client(shared_gateway).messages.create(
        model=ANTHROPIC_MODEL, max_tokens=16, messages=[{"role": "user", "content": f"Mail {EMAIL}."}])
    assert provider.wait_for_requests(1)[0].json()["messages"][0]["content"] == f"Mail {RED[EMAIL]}."


def test_pathological_pattern_does_not_stall_the_gateway(private_gateway, provider):
    gw = private_gateway(policy_doc=dlp_policy(patterns=[{"id": "runaway", "regex": "(a+)+$"}]))
    prompt = "a" * (1 << 20) + "!"
    started = time.monotonic()
    client = anthropic.Anthropic(base_url=gw.url, api_key=PROVIDER_KEY, max_retries=0, timeout=30,
                                 default_headers={"x-mitrity-api-key": API_KEY},
                                 http_client=anthropic.DefaultHttpxClient(verify=client_context(gw.pki),
                                                                          trust_env=False))
    raw = client.messages.with_raw_response.create(model=ANTHROPIC_MODEL, max_tokens=8,
                                                   messages=[{"role": "user", "content": prompt}])
    elapsed = time.monotonic() - started
    assert raw.parse().content[0].text.endswith("a!")   # answered (the fake echoes the prompt back)
    assert raw.headers["x-mitrity-decision"] == "allowed"
    assert provider.wait_for_requests(1)[0].json()["messages"][0]["content"] == prompt
    assert elapsed < 10, elapsed
    # and the pattern does work where it matches
    anthropic_client(gw).messages.create(model=ANTHROPIC_MODEL, max_tokens=8,
                                         messages=[{"role": "user", "content": "banana"}])
    assert provider.wait_for_requests(2)[1].json()["messages"][0]["content"] == "banan[REDACTED:runaway]"


def test_bundle_with_a_pattern_re2_refuses_is_rejected_whole(dlp_gateway, provider):
    before = len(dlp_gateway.log())
    bad = dlp_policy(revision="dlp.bad", patterns=[
        {"id": "builtin.private-key", "action": "redact"},          # would turn the block into a redaction
        {"id": "acme-employee-id", "regex": r"ACME-\d{6}", "action": "redact"},
        {"id": "repeated-letter", "regex": r"(a)\1", "action": "redact"},
    ])
    dlp_gateway.write_policy(bad)
    try:
        deadline = time.monotonic() + 5
        line = None
        while line is None and time.monotonic() < deadline:
            line = next((x for x in dlp_gateway.log()[before:].splitlines() if "rejected" in x), None)
            time.sleep(0.05)
        assert line is not None, dlp_gateway.log()[before:]
        assert "repeated-letter" in line or "dlp_patterns[2]" in line, line
        time.sleep(0.5)
        for _ in range(4):
            status, document = dlp_gateway.admin("/readyz")
            assert (status, document["policy_revision"]) == (200, "dlp.1")
        # dlp.1 still decides: the private key is still blocked
        with pytest.raises(anthropic.PermissionDeniedError):
            anthropic_client(dlp_gateway).messages.create(
                model=ANTHROPIC_MODEL, max_tokens=8, messages=[{"role": "user", "content": PEM}])
        assert provider.requests_snapshot() == []
    finally:
        dlp_gateway.write_policy(dlp_policy())


# -- privacy (keep last: it reads the logs of every gateway above) ---------------------------------

def test_no_secret_ever_reaches_a_gateway_log(shared_gateway, dlp_gateway):
    for path in set(GATEWAY_LOGS):
        with open(path, "rb") as f:
            log = f.read().decode("utf-8", "replace")
        for secret in SECRETS:
            assert secret not in log, (path, secret)
        assert "PRIVATE KEY" not in log
