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
    gpt.chat.completions.create(model="gpt-4o-mini",
                                messages=[{"role": "user", "content": "mail jane.doe@example.com"}])

    everything = records_of(gw, 6)
    records = {(r["provider"], r["model"], r["stream"], r["decision"]): r for r in everything}
    redacted = records[("openai", "gpt-4o-mini", False, "redacted")]
    assert redacted["redaction_count"] == 1 and redacted["reason"] is None and redacted["total_tokens"] > 0
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

    # Every summary, to the cent, from the records themselves.
    def expected_groups(key):
        groups = {}
        for r in everything:
            g = groups.setdefault(key(r), {"calls": 0, "input_tokens": 0, "output_tokens": 0, "total_tokens": 0,
                                           "cost": 0.0, "costed": 0, "uncosted_calls": 0})
            g["calls"] += 1
            for field in ("input_tokens", "output_tokens", "total_tokens"):
                g[field] += r[field]
            if r["estimated_cost_usd"] is None:
                g["uncosted_calls"] += 1
            else:
                g["cost"] += r["estimated_cost_usd"]
                g["costed"] += 1
        return groups

    for group_by, key, name in (("model", lambda r: (r["provider"], r["model"]), lambda g: (g["provider"], g["model"])),
                                ("agent", lambda r: r["agent_id"], lambda g: g["agent_id"]),
                                ("day", lambda r: r["ts"][:10], lambda g: g["day"])):
        status, summary = gw.admin(f"/llm-usage/summary?group_by={group_by}")
        assert status == 200 and summary["group_by"] == group_by
        expected = expected_groups(key)
        assert {name(g) for g in summary["groups"]} == set(expected)
        for g in summary["groups"]:
            want = expected[name(g)]
            for field in ("calls", "input_tokens", "output_tokens", "total_tokens", "uncosted_calls"):
                assert g[field] == want[field], (group_by, name(g), field)
            if want["costed"]:
                assert round(g["estimated_cost_usd"], 2) == round(want["cost"], 2)
                assert g["estimated_cost_usd"] == pytest.approx(want["cost"], abs=1e-9)
            else:
                assert g["estimated_cost_usd"] is None

    # The BOM: one entry per (agent, provider, model) forwarded, first and last seen, totals.
    status, bom = gw.admin("/llm-usage/bom?agent=support-bot")
    assert status == 200
    entries = {(e["provider"], e["model"]): e for e in bom["entries"]}
    assert ("anthropic", "claude-opus-4-1") not in entries  # never forwarded
    forwarded = [r for r in everything if r["reason"] != "mission_denied"]  # the one call denied before forwarding
    assert set(entries) == {(r["provider"], r["model"]) for r in forwarded}
    for (provider_name, model), entry in entries.items():
        mine = [r for r in forwarded if (r["provider"], r["model"]) == (provider_name, model)]
        assert entry["agent_id"] == "support-bot" and entry["calls"] == len(mine)
        assert entry["first_seen"] == min(r["ts"] for r in mine) and entry["last_seen"] == max(r["ts"] for r in mine)
        for field in ("input_tokens", "output_tokens", "total_tokens"):
            assert entry[field] == sum(r[field] for r in mine)
    assert entries[("anthropic", "claude-sonnet-4-5")]["calls"] == 2
    assert gw.admin("/llm-usage/records?limit=5000")[0] == 400


def test_no_content_or_key_reaches_any_file(gw, provider):
    """Prompts, answers, provider keys and MITRITY keys appear in no log line,
    record, spool, metrics or database file the gateway writes, nor in /metrics."""
    import os

    from tests.e2e.conftest import API_KEY, PROVIDER_KEY
    secret = "AKIAQYLPMN5HHHFPZAM2"  # redacted from the prompt
    sentence = "the heron flies at midnight over violet harbour " + secret
    answer = "canary answer: marmalade typewriter seventeen"
    provider.script(reply_text=answer)
    anthropic_client(gw).messages.create(model="claude-sonnet-4-5", max_tokens=16,
                                         messages=[{"role": "user", "content": sentence}])
    provider.script(chunks=["canary ", "answer: ", "marmalade ", "typewriter ", "seventeen"])
    list(openai_client(gw).chat.completions.create(model="gpt-4o-mini", stream=True,
                                                   messages=[{"role": "user", "content": sentence}]))
    records_of(gw, 2)
    canaries = [sentence[:30], secret, "marmalade typewriter", API_KEY, PROVIDER_KEY]
    metrics_text = gw.metrics()[2]
    assert 'phase="request"' in metrics_text  # the redaction was counted...
    for canary in canaries:
        assert canary not in metrics_text      # ...and nothing of it kept
    for root, _, files in os.walk(gw.dir):
        for name in files:
            path = os.path.join(root, name)
            if path.endswith((".crt", ".key")) or name == "policy.yaml":
                continue
            with open(path, "rb") as f:
                data = f.read()
            for canary in canaries:
                assert canary.encode() not in data, f"{canary!r} found in {path}"


def all_records(gw, count, timeout=15.0):
    """Every record, page by page (newest first), once at least ``count`` are stored."""
    deadline = time.monotonic() + timeout
    while True:
        records, cursor = [], ""
        while True:
            status, body = gw.admin("/llm-usage/records?limit=1000" + (f"&cursor={cursor}" if cursor else ""))
            assert status == 200, body
            records += body["records"]
            cursor = body["next_cursor"]
            if not cursor:
                break
        if len(records) >= count or time.monotonic() > deadline:
            return records
        time.sleep(0.1)


def test_killing_the_collector_during_a_burst_loses_and_duplicates_no_record(gw):
    """SIGKILL the collector twice while 8 clients keep calling: every call's
    record is in the store exactly once after the supervisor restarts it."""
    import os
    import signal
    import threading

    import requests

    from tests.e2e.conftest import API_KEY
    body = b'{"model":"claude-sonnet-4-5","max_tokens":8,"messages":[{"role":"user","content":"hi"}]}'
    done, failures, stop = [], [], threading.Event()

    def client():
        with requests.Session() as session:
            session.verify, session.trust_env = gw.pki.ca.cert_path, False
            while not stop.is_set():
                answer = session.post(gw.url + "/v1/messages", data=body, timeout=10, headers={
                    "content-type": "application/json", "x-api-key": "sk-x", "anthropic-version": "2023-06-01",
                    "x-mitrity-api-key": API_KEY})
                (done if answer.status_code == 200 else failures).append(answer.headers["x-request-id"])

    def wait_for_calls(count):
        deadline = time.monotonic() + 30
        while len(done) < count and time.monotonic() < deadline:
            time.sleep(0.005)

    clients = [threading.Thread(target=client) for _ in range(8)]
    for thread in clients:
        thread.start()
    killed = []
    try:
        wait_for_calls(100)
        for _ in range(2):
            pid = gw.collector_pid()
            os.kill(pid, signal.SIGKILL)
            killed.append((pid, len(done)))
            deadline = time.monotonic() + 30
            while gw.collector_pid() in (None, pid) and time.monotonic() < deadline:
                time.sleep(0.05)   # restarted by the master (after its backoff)
            wait_for_calls(len(done) + 50)
    finally:
        stop.set()
        for thread in clients:
            thread.join(30)
    calls = len(done)
    assert not failures and len({pid for pid, _ in killed}) == 2
    assert all(at + 50 <= calls for _, at in killed), (killed, calls)  # calls went on after each kill
    stored = [r["id"] for r in all_records(gw, calls)]
    assert len(stored) == len(set(stored)) == calls
    assert set(stored) == set(done)
    assert gw.log().count("usage collector (pid: ") >= 2  # the master noticed and restarted it
