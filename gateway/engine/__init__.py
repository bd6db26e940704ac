"""The decision engine: each check is a small module returning a Verdict; the
engine runs them in the declared order and the first denial wins.

Order (SPEC section 5): identity (done before the body is read), mission
(which includes blocked destinations), DLP block, DLP redact. Threat-intel
indicators and prompt-injection rules will sit between mission and DLP.
"""

import time
from dataclasses import dataclass

from . import mission
from .redaction import scan_strings
from .verdict import ALLOWED, Verdict


@dataclass(frozen=True)
class Decision:
    verdict: Verdict
    edits: tuple = ()          # (StringValue, spans): the prompt rewrites to make
    redactions: int = 0


def decide(policy, agent, provider, model, prompt_strings=(), now=None):
    """The request-phase decision for ``agent`` sending ``prompt_strings`` to ``provider``/``model``."""
    now = time.time() if now is None else now
    verdict = mission.check(policy, agent, mission.action_for(provider, model), now)
    if verdict.denied:
        return Decision(verdict)
    scan = scan_strings(policy.scanner, prompt_strings, "prompt", "dlp_blocked")
    if scan.verdict.denied:
        return Decision(scan.verdict)
    return Decision(ALLOWED, scan.edits, scan.redactions)
