"""The value every check returns, and the engine combines."""

from dataclasses import dataclass

ALLOW = "allow"
DENY = "deny"


@dataclass(frozen=True)
class Verdict:
    action: str                 # ALLOW or DENY
    reason: str | None = None   # a reason code of gateway.errors.REASONS when denied
    rule_ids: tuple = ()        # which rules decided, for logs and metrics (never content)
    message: str | None = None  # overrides the reason's default message (no content, ever)

    @property
    def denied(self):
        return self.action == DENY


ALLOWED = Verdict(ALLOW)


def deny(reason, *rule_ids, message=None):
    return Verdict(DENY, reason, tuple(rule_ids), message)
