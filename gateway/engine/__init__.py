"""The decision engine: each check is a small module returning a Verdict; the
engine runs them in the declared order and the first denial wins.

Order (SPEC section 5): identity (done before the body is read), mission
(which includes blocked destinations), then threat intel indicators and
injection, DLP block, DLP redact as those checks are added.
"""

import time

from . import mission
from .verdict import ALLOWED


def decide(policy, agent, provider, model, now=None):
    """The request-phase verdict for ``agent`` calling ``provider``/``model``."""
    now = time.time() if now is None else now
    action = mission.action_for(provider, model)
    verdict = mission.check(policy, agent, action, now)
    if verdict.denied:
        return verdict
    return ALLOWED
