"""Mission scope: is ``llm:send:<provider>:<model>`` within the agent's mission?

Precedence (SPEC section 4): a matching ``deny`` denies; a matching
``threat_intel.blocked_destinations`` entry denies; a matching
``require_approval`` denies unless an unexpired approval for that agent and
exact action exists; a matching ``allow`` admits; anything else is denied.
An unbound agent (``unknown_agent: allow``) has no mission restriction, but
blocked destinations still apply to it.
"""

import hashlib

from .verdict import ALLOWED, deny


def action_for(provider, model):
    return f"llm:send:{provider}:{model}"


def approval_id(agent_id, action):
    """Stable for (agent, action), so a human can grant exactly what was asked."""
    digest = hashlib.sha256(f"{agent_id}\n{action}".encode()).hexdigest()
    return "apr_" + digest[:16]


def check(policy, agent, action, now):
    mission = agent.mission
    if mission is not None:
        rule = mission.deny.first_match(action)
        if rule is not None:
            return deny("mission_denied", "mission.deny:" + rule)
    rule = policy.blocked_destinations.first_match(action)
    if rule is not None:
        return deny("threat_detected", "threat_intel.blocked_destinations:" + rule)
    if mission is None:
        return ALLOWED
    rule = mission.require_approval.first_match(action)
    if rule is not None:
        if policy.approval_expires(agent.id, action) > now:
            return ALLOWED
        apr = approval_id(agent.id, action)
        return deny("approval_required", "mission.require_approval:" + rule,
                    message=f"This action needs a human approval: approval id {apr}.")
    rule = mission.allow.first_match(action)
    if rule is not None:
        return ALLOWED
    return deny("mission_denied")
