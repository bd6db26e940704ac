"""Tests for gateway.engine.mission and gateway.engine.decide: mission precedence of SPEC section 4,
decided with real Policy objects compiled from bundles that policy_sync.bundle validated."""

import hashlib
from datetime import datetime, timezone

import pytest

from gateway.engine import decide, mission
from gateway.engine.verdict import ALLOWED
from gateway.policy import Agent, Policy
from policy_sync.bundle import validate

AGENT = "support-bot"
EXPIRES = "2026-12-31T00:00:00Z"
EXPIRES_EPOCH = datetime(2026, 12, 31, tzinfo=timezone.utc).timestamp()
BEFORE = EXPIRES_EPOCH - 3600
AFTER = EXPIRES_EPOCH + 1


def make_policy(allow=(), deny=(), require_approval=(), blocked=(), approvals=()):
    document = validate({
        "revision": "test",
        "agents": [
            {"id": AGENT, "spiffe_ids": ["spiffe://cluster.local/ns/support/sa/support-bot"],
             "mission": {"allow": list(allow), "deny": list(deny), "require_approval": list(require_approval)}},
            {"id": "other-bot", "mission": {"allow": ["llm:send:*"]}},
        ],
        "threat_intel": {"blocked_destinations": list(blocked)},
        "approvals": [dict(a) for a in approvals],
    })
    return Policy(document)


def agent(policy):
    """The bound agent, looked up the way the gateway does."""
    found = policy.agent_for_spiffe("spiffe://cluster.local/ns/support/sa/support-bot")
    assert found is not None and found.id == AGENT
    return found


def check(policy, action, now=BEFORE, who=None):
    return mission.check(policy, who or agent(policy), action, now)


def expected_approval_id(agent_id, action):
    return "apr_" + hashlib.sha256(f"{agent_id}\n{action}".encode()).hexdigest()[:16]


# -- actions and approval ids ------------------------------------------------------------------------

def test_action_string():
    assert mission.action_for("openai", "gpt-4o-mini") == "llm:send:openai:gpt-4o-mini"


@pytest.mark.parametrize("agent_id, action", [
    ("support-bot", "llm:send:openai:o3-mini"),
    ("support-bot", "llm:send:openai:o3"),
    ("other-bot", "llm:send:openai:o3-mini"),
    ("unbound:apikey:0123456789ab", "llm:send:anthropic:claude-opus-4"),
])
def test_approval_id_is_apr_and_16_hex_of_sha256(agent_id, action):
    apr = mission.approval_id(agent_id, action)
    assert apr == expected_approval_id(agent_id, action)
    assert len(apr) == 4 + 16
    assert apr == mission.approval_id(agent_id, action)  # stable


def test_approval_ids_differ_by_agent_and_action():
    ids = {mission.approval_id(a, b) for a in ("x", "y") for b in ("llm:send:openai:o3", "llm:send:openai:o3-mini")}
    assert len(ids) == 4


# -- precedence -------------------------------------------------------------------------------------

def test_allow_admits():
    policy = make_policy(allow=["llm:send:anthropic:claude-sonnet-4-5*", "llm:send:openai:gpt-4o-mini"])
    assert check(policy, "llm:send:anthropic:claude-sonnet-4-5-20250929") == ALLOWED
    assert check(policy, "llm:send:openai:gpt-4o-mini") == ALLOWED


def test_no_match_denies_mission_denied():
    policy = make_policy(allow=["llm:send:openai:gpt-4o-mini"])
    for action in ("llm:send:openai:gpt-4o", "llm:send:openai:gpt-4o-mini-2024", "llm:send:OpenAI:gpt-4o-mini",
                   "llm:send:anthropic:claude-opus-4"):
        verdict = check(policy, action)
        assert verdict.denied
        assert verdict.reason == "mission_denied"


def test_empty_mission_denies_everything():
    verdict = check(make_policy(), "llm:send:openai:gpt-4o-mini")
    assert verdict.denied and verdict.reason == "mission_denied"


def test_deny_beats_allow():
    policy = make_policy(allow=["llm:send:openai:*"], deny=["llm:send:openai:gpt-4o*"])
    verdict = check(policy, "llm:send:openai:gpt-4o-mini")
    assert verdict.denied
    assert verdict.reason == "mission_denied"
    assert verdict.rule_ids == ("mission.deny:llm:send:openai:gpt-4o*",)
    assert check(policy, "llm:send:openai:o1") == ALLOWED


def test_deny_beats_require_approval_and_an_approval():
    action = "llm:send:openai:o3-mini"
    policy = make_policy(allow=["llm:send:openai:*"], deny=[action], require_approval=["llm:send:openai:o3*"],
                         approvals=[{"agent": AGENT, "action": action, "expires_at": EXPIRES}])
    verdict = check(policy, action)
    assert verdict.denied and verdict.reason == "mission_denied"


def test_blocked_destination_denies_with_threat_detected():
    policy = make_policy(allow=["llm:send:openai:*"], blocked=["llm:send:openai:gpt-3.5-turbo-instruct"])
    verdict = check(policy, "llm:send:openai:gpt-3.5-turbo-instruct")
    assert verdict.denied
    assert verdict.reason == "threat_detected"
    assert verdict.rule_ids == ("threat_intel.blocked_destinations:llm:send:openai:gpt-3.5-turbo-instruct",)
    assert check(policy, "llm:send:openai:gpt-3.5-turbo") == ALLOWED


def test_blocked_destination_beats_require_approval_and_an_approval():
    action = "llm:send:openai:o3-mini"
    policy = make_policy(allow=["llm:send:openai:*"], require_approval=["llm:send:openai:o3*"],
                         blocked=["llm:send:*:o3-*"],
                         approvals=[{"agent": AGENT, "action": action, "expires_at": EXPIRES}])
    verdict = check(policy, action)
    assert verdict.denied and verdict.reason == "threat_detected"


def test_require_approval_denies_with_the_approval_id():
    action = "llm:send:openai:o3-mini"
    policy = make_policy(allow=["llm:send:openai:*"], require_approval=["llm:send:openai:o3*"])
    verdict = check(policy, action)
    assert verdict.denied
    assert verdict.reason == "approval_required"
    assert verdict.rule_ids == ("mission.require_approval:llm:send:openai:o3*",)
    apr = expected_approval_id(AGENT, action)
    assert apr in verdict.message
    assert "o3-mini" not in verdict.message.replace(apr, "")  # names the id, does not need the action


def test_require_approval_without_allow_still_says_approval_required():
    verdict = check(make_policy(require_approval=["llm:send:openai:o3*"]), "llm:send:openai:o3")
    assert verdict.reason == "approval_required"


def test_unexpired_approval_admits_the_exact_action_only():
    action = "llm:send:openai:o3-mini"
    policy = make_policy(allow=["llm:send:openai:gpt-4o-mini"], require_approval=["llm:send:openai:o3*"],
                         approvals=[{"agent": AGENT, "action": action, "expires_at": EXPIRES}])
    assert check(policy, action, now=BEFORE) == ALLOWED
    other = check(policy, "llm:send:openai:o3", now=BEFORE)
    assert other.reason == "approval_required"
    assert expected_approval_id(AGENT, "llm:send:openai:o3") in other.message
    assert check(policy, "llm:send:openai:o3-mini-2025-01-31", now=BEFORE).reason == "approval_required"


def test_approval_is_for_its_agent_only():
    action = "llm:send:openai:o3-mini"
    policy = make_policy(require_approval=["llm:send:openai:o3*"],
                         approvals=[{"agent": "other-bot", "action": action, "expires_at": EXPIRES}])
    verdict = check(policy, action)
    assert verdict.reason == "approval_required"


@pytest.mark.parametrize("now", [EXPIRES_EPOCH, AFTER, AFTER + 86400 * 365])
def test_expired_approval_does_not_admit(now):
    action = "llm:send:openai:o3-mini"
    policy = make_policy(require_approval=["llm:send:openai:o3*"],
                         approvals=[{"agent": AGENT, "action": action, "expires_at": EXPIRES}])
    verdict = check(policy, action, now=now)
    assert verdict.denied
    assert verdict.reason == "approval_required"
    assert expected_approval_id(AGENT, action) in verdict.message


def test_the_latest_of_several_approvals_counts():
    action = "llm:send:openai:o3-mini"
    policy = make_policy(require_approval=["llm:send:openai:o3*"], approvals=[
        {"agent": AGENT, "action": action, "expires_at": EXPIRES},
        {"agent": AGENT, "action": action, "expires_at": "2026-01-01T00:00:00Z"},
    ])
    assert check(policy, action, now=BEFORE) == ALLOWED


def test_approval_with_a_zone_offset():
    action = "llm:send:openai:o3-mini"
    # 2026-12-31T02:00:00+02:00 is EXPIRES.
    policy = make_policy(require_approval=["llm:send:openai:o3*"],
                         approvals=[{"agent": AGENT, "action": action, "expires_at": "2026-12-31T02:00:00+02:00"}])
    assert check(policy, action, now=EXPIRES_EPOCH - 1) == ALLOWED
    assert check(policy, action, now=EXPIRES_EPOCH).reason == "approval_required"


# -- unbound agents ---------------------------------------------------------------------------------

def test_unbound_agent_has_no_mission_restriction():
    policy = make_policy(allow=["llm:send:openai:gpt-4o-mini"], deny=["llm:send:anthropic:*"],
                         require_approval=["llm:send:openai:o3*"])
    unbound = Agent("unbound:spiffe://cluster.local/ns/x/sa/y", None)
    for action in ("llm:send:anthropic:claude-opus-4", "llm:send:openai:o3", "llm:send:anything:at-all"):
        assert mission.check(policy, unbound, action, BEFORE) == ALLOWED


def test_unbound_agent_still_meets_blocked_destinations():
    policy = make_policy(blocked=["llm:send:openai:gpt-3.5-turbo-instruct"])
    unbound = Agent("unbound:apikey:0123456789ab", None)
    verdict = mission.check(policy, unbound, "llm:send:openai:gpt-3.5-turbo-instruct", BEFORE)
    assert verdict.denied and verdict.reason == "threat_detected"


# -- the engine -------------------------------------------------------------------------------------

def test_decide_applies_the_mission():
    policy = make_policy(allow=["llm:send:openai:gpt-4o-mini"], require_approval=["llm:send:openai:o3*"],
                         blocked=["llm:send:openai:gpt-3.5-turbo-instruct"],
                         approvals=[{"agent": AGENT, "action": "llm:send:openai:o3-mini", "expires_at": EXPIRES}])
    bot = agent(policy)
    assert decide(policy, bot, "openai", "gpt-4o-mini", now=BEFORE).verdict == ALLOWED
    assert decide(policy, bot, "openai", "o3-mini", now=BEFORE).verdict == ALLOWED
    assert decide(policy, bot, "openai", "o3-mini", now=AFTER).verdict.reason == "approval_required"
    assert decide(policy, bot, "openai", "gpt-3.5-turbo-instruct", now=BEFORE).verdict.reason == "threat_detected"
    assert decide(policy, bot, "anthropic", "claude-opus-4", now=BEFORE).verdict.reason == "mission_denied"
    unbound = Agent("unbound:apikey:0123456789ab", None)
    assert decide(policy, unbound, "anthropic", "claude-opus-4", now=BEFORE).verdict == ALLOWED
    assert decide(policy, unbound, "openai", "gpt-3.5-turbo-instruct", now=BEFORE).verdict.reason == "threat_detected"


def test_decide_message_names_the_approval_id():
    policy = make_policy(require_approval=["llm:send:openai:o3*"])
    verdict = decide(policy, agent(policy), "openai", "o3", now=BEFORE).verdict
    assert expected_approval_id(AGENT, "llm:send:openai:o3") in verdict.message


def test_decide_uses_the_clock_when_now_is_not_given():
    # An approval that expired long ago never admits, whatever the clock says today.
    action = "llm:send:openai:o3"
    policy = make_policy(require_approval=[action],
                         approvals=[{"agent": AGENT, "action": action, "expires_at": "2000-01-01T00:00:00Z"}])
    assert decide(policy, agent(policy), "openai", "o3").verdict.reason == "approval_required"
    policy = make_policy(require_approval=[action],
                         approvals=[{"agent": AGENT, "action": action, "expires_at": "9999-01-01T00:00:00Z"}])
    assert decide(policy, agent(policy), "openai", "o3").verdict == ALLOWED
