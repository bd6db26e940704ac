"""Usage records end to end: calls through the real gateway reach the SQLite
store through the workers' spool and the collector, and the admin API reads
them back (SPEC section 6)."""

import time

import anthropic
import pytest

from tests.e2e.conftest import anthropic_client, openai_client, policy

PRICES = [{"provider": "anthropic", "model": "claude-sonnet-4-5", "input_usd_per_mtok": 3.0,
           "output_usd_per_mtok": 15.0, "cache_write_usd_per_mtok": 3.75, "cache_read_usd_per_mtok": 0.30}]


@pytest.fixture
def gw(start_gateway, fresh_provider):
    doc = policy(allow=["llm:send:anthropic:claude-sonnet-4-5*", "llm:send:openai:gpt-4o-mini",
                        "llm:send:openai:brand-new-model"])
    doc["prices"] = PRICES
    return start_gateway(policy_doc=doc)


def records_of(gw, count, timeout=5.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        status, body = gw.admin("/llm-usage/records?limit=1000")
        if status == 200 and len(body["records"]) >= count:
            return body["records"]
        time.sleep(0.1)
    raise AssertionError(f"records did not arrive: {gw.admin('/llm-usage/records')}")


def test_known_calls_leave_exact_records_summaries_and_bom(gw, provider):
    claude = anthropic_client(gw)
    provider.script(usage={"input_tokens": 100, "output_tokens": 20, "cache_read_input_tokens": 1000,
                           "cache_creation_input_tokens": 50})
    claude.messages.create(model="claude-sonnet-4-5", max_tokens=16, messages=[{"role": "user", "content": "one"}])
    with claude.messages.stream(model="claude-sonnet-4-5", max_tokens=16,
                                messages=[{"role": "user", "content": "two"}]) as stream:
        streamed = stream.get_final_message()
    with pytest.raises(anthropic.PermissionDeniedError):
        claude.messages.create(model="claude-opus-4-1", max_tokens=16, messages=[{"role": "user", "content": "x"}])
    gpt = openai_client(gw)
    chunks = list(gpt.chat.completions.create(model="gpt-4o-mini", stream=True,
                                              messages=[{"role": "user", "content": "three"}]))
    assert all(chunk.usage is None for chunk in chunks)  # the agent did not ask for usage
    gpt.chat.completions.create(model="brand-new-model", messages=[{"role": "user", "content": "four"}])

    records = {(r["provider"], r["model"], r["stream"], r["decision"]): r for r in records_of(gw, 5)}
    first = records[("anthropic", "claude-sonnet-4-5", False, "allowed")]
    assert (first["input_tokens"], first["output_tokens"], first["total_tokens"]) == (1150, 20, 1170)
    assert first["estimated_cost_usd"] == round((100 * 3 + 1000 * 0.30 + 50 * 3.75 + 20 * 15) / 1e6, 9)
    assert first["reason"] is None and first["status"] == 200
    second = records[("anthropic", "claude-sonnet-4-5", True, "allowed")]
    assert second["output_tokens"] == streamed.usage.output_tokens > 0
    blocked = records[("anthropic", "claude-opus-4-1", False, "blocked")]
    assert blocked["reason"] == "mission_denied" and blocked["total_tokens"] == 0 and blocked["status"] == 403
    openai_stream = records[("openai", "gpt-4o-mini", True, "allowed")]
    assert openai_stream["input_tokens"] > 0 and openai_stream["output_tokens"] > 0  # recorded all the same
    uncosted = records[("openai", "brand-new-model", False, "allowed")]
    assert uncosted["estimated_cost_usd"] is None

    status, summary = gw.admin("/llm-usage/summary?group_by=model")
    assert status == 200
    groups = {(g["provider"], g["model"]): g for g in summary["groups"]}
    assert groups[("openai", "brand-new-model")]["estimated_cost_usd"] is None
    assert groups[("openai", "brand-new-model")]["uncosted_calls"] == 1
    sonnet = groups[("anthropic", "claude-sonnet-4-5")]
    assert sonnet["calls"] == 2 and sonnet["uncosted_calls"] == 0

    status, bom = gw.admin("/llm-usage/bom?agent=support-bot")
    assert status == 200
    entries = {(e["provider"], e["model"]): e for e in bom["entries"]}
    assert ("anthropic", "claude-opus-4-1") not in entries  # never forwarded
    assert entries[("anthropic", "claude-sonnet-4-5")]["calls"] == 2
    assert gw.admin("/llm-usage/records?limit=5000")[0] == 400


def test_no_content_or_key_reaches_any_file(gw, provider):
    """Prompts, answers, provider keys and MITRITY keys appear in no log line,
    record, spool or database file the gateway writes."""
    import os

    from tests.e2e.conftest import API_KEY, PROVIDER_KEY
    sentence = "the heron flies at midnight over violet harbour"
    answer = "canary answer: marmalade typewriter seventeen"
    provider.script(reply_text=answer)
    anthropic_client(gw).messages.create(model="claude-sonnet-4-5", max_tokens=16,
                                         messages=[{"role": "user", "content": sentence}])
    provider.script(chunks=["canary ", "answer: ", "marmalade ", "typewriter ", "seventeen"])
    list(openai_client(gw).chat.completions.create(model="gpt-4o-mini", stream=True,
                                                   messages=[{"role": "user", "content": sentence}]))
    records_of(gw, 2)
    canaries = [sentence, "marmalade typewriter", API_KEY, PROVIDER_KEY]
    for root, _, files in os.walk(gw.dir):
        for name in files:
            path = os.path.join(root, name)
            if path.endswith((".crt", ".key")) or name == "policy.yaml":
                continue
            with open(path, "rb") as f:
                data = f.read()
            for canary in canaries:
                assert canary.encode() not in data, f"{canary!r} found in {path}"
