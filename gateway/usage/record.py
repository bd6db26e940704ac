"""The usage record of one governed call (SPEC section 6): metadata only.

Built from the pipeline's ``Call`` once the call has ended. A call blocked
before forwarding has zero tokens; a call whose answer was blocked keeps the
provider's usage and is recorded as blocked (``response_blocked``), while the
``x-mitrity-decision`` header keeps the request-phase verdict (SPEC section 5);
``reason`` is null for allowed and redacted calls; the model is the answer's,
else the request's.
"""

from datetime import datetime, timezone

from .prices import estimate_cost_usd
from .tokens import Usage


def recorded_decision(call):
    """allowed | redacted | blocked: the request-phase verdict, unless the answer was blocked."""
    return "blocked" if call.reason == "response_blocked" else call.decision


def usage_record(call, latency_ms):
    usage = call.usage or Usage()
    model = usage.model or call.model or ""
    decision = recorded_decision(call)
    cost = None
    if call.prices is not None and call.provider and model:
        cost = estimate_cost_usd(call.prices.lookup(call.provider, model), usage.input_tokens, usage.output_tokens,
                                 usage.cache_read_input_tokens, usage.cache_creation_input_tokens)
    return {
        "id": call.request_id,
        "ts": datetime.fromtimestamp(call.started_at, timezone.utc).isoformat(timespec="microseconds")
                      .replace("+00:00", "Z"),
        "agent_id": call.agent_id or "",
        "provider": call.provider or "",
        "model": model,
        "decision": decision,
        "reason": None if decision in ("allowed", "redacted") else call.reason,
        "status": call.status,
        "stream": call.stream,
        "input_tokens": usage.input_tokens,
        "output_tokens": usage.output_tokens,
        "total_tokens": usage.total_tokens,
        "cache_read_input_tokens": usage.cache_read_input_tokens,
        "cache_creation_input_tokens": usage.cache_creation_input_tokens,
        "redaction_count": call.redactions,
        "estimated_cost_usd": cost,
        "latency_ms": round(latency_ms, 3),
        "forwarded": call.forwarded,
    }
