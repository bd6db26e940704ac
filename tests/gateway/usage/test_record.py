"""The usage record built from a pipeline Call (SPEC section 6)."""

from gateway.pipeline import Call
from gateway.usage.prices import PriceCatalog
from gateway.usage.record import usage_record
from gateway.usage.tokens import Usage

FIELDS = ["id", "ts", "agent_id", "provider", "model", "decision", "reason", "status", "stream", "input_tokens",
          "output_tokens", "total_tokens", "cache_read_input_tokens", "cache_creation_input_tokens",
          "redaction_count", "estimated_cost_usd", "latency_ms"]
PRICES = PriceCatalog.builtin().with_overrides([
    {"provider": "anthropic", "model": "claude-sonnet-4-5", "input_usd_per_mtok": 3.0, "output_usd_per_mtok": 15.0,
     "cache_write_usd_per_mtok": 3.75, "cache_read_usd_per_mtok": 0.30}])


def call(**fields):
    c = Call("req_1", 0.0, started_at=1796400000.25, provider="anthropic", agent_id="bot", model="claude-sonnet-4-5",
             prices=PRICES)
    for key, value in fields.items():
        setattr(c, key, value)
    return c


def test_forwarded_call_with_cache_tokens_is_costed_from_the_answers_model():
    usage = Usage(1150, 20, 1000, 50, "claude-sonnet-4-5-20250929")
    record = usage_record(call(decision="redacted", status=200, forwarded=True, usage=usage, redactions=2), 12.3456)
    assert list(record)[:len(FIELDS)] == FIELDS and record["forwarded"] is True
    assert record["model"] == "claude-sonnet-4-5-20250929" and record["reason"] is None
    assert (record["input_tokens"], record["output_tokens"], record["total_tokens"]) == (1150, 20, 1170)
    # 100 uncached * 3 + 1000 * 0.30 + 50 * 3.75 + 20 * 15, per million
    assert record["estimated_cost_usd"] == round((100 * 3 + 1000 * 0.30 + 50 * 3.75 + 20 * 15) / 1e6, 9)
    assert record["ts"] == "2026-12-04T16:00:00.250000Z"
    assert record["latency_ms"] == 12.346 and record["redaction_count"] == 2


def test_blocked_before_forwarding_has_zero_tokens_and_its_reason():
    record = usage_record(call(decision="blocked", reason="mission_denied", status=403), 1.0)
    assert record["total_tokens"] == 0 and record["reason"] == "mission_denied" and record["forwarded"] is False
    assert record["estimated_cost_usd"] == 0.0


def test_uncatalogued_model_has_null_cost():
    record = usage_record(call(model="some-new-model", decision="allowed", status=200, usage=Usage(10, 5)), 1.0)
    assert record["estimated_cost_usd"] is None


def test_a_blocked_answer_blocks_the_call_and_keeps_the_providers_usage():
    record = usage_record(call(decision="redacted", reason="response_blocked", status=502, forwarded=True,
                               usage=Usage(40, 9)), 1.0)
    assert (record["decision"], record["reason"], record["total_tokens"]) == ("blocked", "response_blocked", 49)


def test_a_provider_failure_keeps_the_request_phase_decision():
    record = usage_record(call(decision="allowed", reason="upstream_error", status=502, forwarded=True), 1.0)
    assert (record["decision"], record["reason"], record["status"]) == ("allowed", None, 502)
