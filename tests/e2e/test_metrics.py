"""Prometheus metrics end to end: after a known sequence of calls through the
real gateway, ``/metrics`` on the admin listener parses with the Prometheus
text parser and counts exactly those calls, merged over every process (both
workers, the collector, policy-sync), and a killed worker's counts stay."""

import os
import re
import signal
import time

import anthropic
import pytest

from tests.e2e.conftest import anthropic_client, openai_client, policy
from tests.e2e.test_error_table import raw_exchange, raw_request
from tests.e2e.test_usage import PRICES, records_of

AWS = "AKIAQYLPMN5HHHFPZAM2"


def value(samples, name, **labels):
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)


def total(samples, name, **labels):
    """The sum over every sample of ``name`` whose labels include ``labels``."""
    return sum(v for (n, pairs), v in samples.items()
               if n == name and all(dict(pairs).get(k) == w for k, w in labels.items()))


def wait_for_metrics(gw, predicate, timeout=5.0):
    deadline = time.monotonic() + timeout
    while True:
        _, samples, _ = gw.metrics()
        if predicate(samples) or time.monotonic() > deadline:
            return samples
        time.sleep(0.1)


@pytest.fixture
def gw(start_gateway, fresh_provider):
    doc = policy(allow=["llm:send:anthropic:claude-sonnet-4-5*", "llm:send:openai:gpt-4o-mini",
                        "llm:send:openai:brand-new-model"])
    doc["prices"] = PRICES
    doc["dlp_patterns"] = [{"id": "codename", "regex": r"PROJECT-[A-Z]{4,}", "action": "block",
                            "applies_to": ["response"]}]
    return start_gateway(policy_doc=doc)


def test_metrics_count_a_known_sequence_of_calls(gw, provider):
    claude = anthropic_client(gw)
    say = {"max_tokens": 16, "model": "claude-sonnet-4-5"}
    provider.script(usage={"input_tokens": 100, "output_tokens": 20, "cache_read_input_tokens": 1000,
                           "cache_creation_input_tokens": 50})
    claude.messages.create(messages=[{"role": "user", "content": "one"}], **say)
    with claude.messages.stream(messages=[{"role": "user", "content": "two"}], **say) as stream:
        stream.get_final_message()
    with pytest.raises(anthropic.PermissionDeniedError):
        claude.messages.create(model="claude-opus-4-1", max_tokens=16, messages=[{"role": "user", "content": "x"}])
    claude.messages.create(messages=[{"role": "user", "content": f"my key is {AWS}"}], **say)  # redacted
    provider.script(reply_text=f"the key is {AWS}")
    claude.messages.create(messages=[{"role": "user", "content": "three"}], **say)  # answer redacted
    provider.script(reset_after_events=-1)
    with pytest.raises(anthropic.APIStatusError) as failed:
        claude.messages.create(messages=[{"role": "user", "content": "four"}], **say)
    assert failed.value.status_code == 502
    provider.script(reply_text="the codename is PROJECT-FALCON")
    with pytest.raises(anthropic.APIStatusError) as failed:
        claude.messages.create(messages=[{"role": "user", "content": "five"}], **say)
    assert failed.value.status_code == 502 and failed.value.response.headers["x-mitrity-decision"] == "allowed"
    openai_client(gw).chat.completions.create(model="brand-new-model", messages=[{"role": "user", "content": "5"}])
    assert raw_exchange(gw, raw_request("POST", "/v1/other", b"{}"))[0] == 404
    assert raw_exchange(gw, b"POST /v1/messages HTTP/1.1\r\nContent-Length: x\r\n\r\n")[0] == 400

    records = records_of(gw, 8)
    blocked_answer = [r for r in records if r["reason"] == "response_blocked"]
    assert [r["decision"] for r in blocked_answer] == ["blocked"] and blocked_answer[0]["total_tokens"] > 0
    content_type, samples, text = gw.metrics()
    assert content_type.startswith("text/plain; version=0.0.4")
    assert "sk-" not in text and AWS not in text

    requests = {labels: v for (name, labels), v in samples.items() if name == "mitrity_requests_total"}
    assert requests == {
        (("decision", "allowed"), ("provider", "anthropic"), ("reason", "none")): 3,
        (("decision", "redacted"), ("provider", "anthropic"), ("reason", "none")): 1,
        (("decision", "blocked"), ("provider", "anthropic"), ("reason", "mission_denied")): 1,
        (("decision", "allowed"), ("provider", "anthropic"), ("reason", "upstream_error")): 1,
        (("decision", "blocked"), ("provider", "anthropic"), ("reason", "response_blocked")): 1,
        (("decision", "allowed"), ("provider", "openai"), ("reason", "none")): 1,
        (("decision", "blocked"), ("provider", "none"), ("reason", "not_found")): 1,
        (("decision", "blocked"), ("provider", "none"), ("reason", "invalid_request")): 1,
    }
    assert value(samples, "mitrity_upstream_errors_total", provider="anthropic", reason="upstream_error") == 1
    assert value(samples, "mitrity_redactions_total", provider="anthropic", phase="request") == 1
    assert value(samples, "mitrity_redactions_total", provider="anthropic", phase="response") == 1

    # Latency: every routed call once; the provider's answer time for the 6 answered calls.
    assert total(samples, "mitrity_request_duration_seconds_count") == 9
    assert value(samples, "mitrity_request_duration_seconds_count", provider="anthropic", stream="true") == 1
    assert value(samples, "mitrity_upstream_response_seconds_count", provider="anthropic") == 5
    assert value(samples, "mitrity_upstream_response_seconds_count", provider="openai") == 1
    assert value(samples, "mitrity_upstream_response_seconds_bucket", provider="openai", le="+Inf") == 1

    # Tokens and cost agree with the usage records; an uncatalogued model is "other".
    by_label = {"claude-sonnet-4-5": [r for r in records if r["model"].startswith("claude-sonnet-4-5")],
                "other": [r for r in records if r["model"] == "brand-new-model"]}
    assert len(by_label["claude-sonnet-4-5"]) == 6 and len(by_label["other"]) == 1
    for model, group in by_label.items():
        provider_name = group[0]["provider"]
        for kind in ("input", "output", "cache_read_input", "cache_creation_input"):
            expected = sum(r[kind + "_tokens"] for r in group)
            assert value(samples, "mitrity_tokens_total", provider=provider_name, model=model, kind=kind) == expected
    assert value(samples, "mitrity_tokens_total", provider="anthropic", model="claude-sonnet-4-5",
                 kind="cache_read_input") == 1000
    cost = sum(r["estimated_cost_usd"] or 0 for r in by_label["claude-sonnet-4-5"])
    assert value(samples, "mitrity_estimated_cost_usd_total", provider="anthropic",
                 model="claude-sonnet-4-5") == pytest.approx(cost, abs=1e-9)
    assert total(samples, "mitrity_estimated_cost_usd_total", model="other") == 0

    # Scrape-time state and the other processes' counters.
    assert value(samples, "mitrity_policy_loaded") == 1
    assert value(samples, "mitrity_policy_generation") >= 1
    assert 0 <= value(samples, "mitrity_policy_age_seconds") < 600
    assert 0 <= value(samples, "mitrity_policy_sync_heartbeat_age_seconds") < 5
    assert value(samples, "mitrity_usage_records_dropped_total") == 0
    settled = wait_for_metrics(gw, lambda s: value(s, "mitrity_usage_spool_backlog_bytes") == 0)
    assert value(settled, "mitrity_usage_spool_backlog_bytes") == 0
    assert value(settled, "mitrity_usage_records_stored_total") == 8  # counted by the collector process


def test_counts_survive_a_killed_worker_and_merge_across_workers(gw, provider):
    """The counts of a worker that served calls and was then killed stay in the
    totals, merged with those of the worker that serves after it."""
    calls = 6
    for n in range(calls):
        anthropic_client(gw).messages.create(model="claude-sonnet-4-5", max_tokens=16,
                                             messages=[{"role": "user", "content": str(n)}])
    _, samples, _ = gw.metrics()
    assert total(samples, "mitrity_requests_total", provider="anthropic") == calls
    served_by = {int(pid) for pid in re.findall(r"\[(\d+)\] \[INFO\] call req_", gw.log())}
    victim = next(iter(served_by & set(gw.worker_pids())))
    os.kill(victim, signal.SIGKILL)
    deadline = time.monotonic() + 10
    while (victim in gw.worker_pids() or len(gw.worker_pids()) < 2) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert victim not in gw.worker_pids()
    anthropic_client(gw).messages.create(model="claude-sonnet-4-5", max_tokens=16,
                                         messages=[{"role": "user", "content": "after"}])
    _, samples, _ = gw.metrics()
    assert total(samples, "mitrity_requests_total", provider="anthropic") == calls + 1
    assert total(samples, "mitrity_request_duration_seconds_count", provider="anthropic") == calls + 1
