"""The compiled policy a worker decides with.

policy-sync validates a bundle (``policy_sync.bundle``) into plain data and
publishes it; each worker compiles that data once per generation into the
objects below, so the request path only does dictionary look-ups and glob
matches. policy-sync compiles it too before publishing, so a bundle that
cannot compile is never published.
"""

import time
from dataclasses import dataclass

from .engine.dlp.scanner import compile_scanner
from .engine.glob import GlobSet
from .usage.prices import PriceCatalog


@dataclass(frozen=True)
class Mission:
    allow: GlobSet
    deny: GlobSet
    require_approval: GlobSet


@dataclass(frozen=True)
class Agent:
    id: str
    mission: Mission | None  # None: unbound identity admitted by unknown_agent: allow


class Policy:
    def __init__(self, document, generation=0, published_ns=0, builtin_patterns=True):
        self.document = document
        self.revision = document["revision"]
        self.generation = generation
        self.published_ns = published_ns
        self._by_spiffe = {}
        self._by_key_hash = {}
        for entry in document["agents"]:
            mission = entry["mission"]
            agent = Agent(entry["id"], Mission(GlobSet(mission["allow"]), GlobSet(mission["deny"]),
                                               GlobSet(mission["require_approval"])))
            self._by_spiffe.update(dict.fromkeys(entry["spiffe_ids"], agent))
            self._by_key_hash.update(dict.fromkeys(entry["api_key_sha256"], agent))
        self.blocked_destinations = GlobSet(document["threat_intel"]["blocked_destinations"])
        # RE2 automata for the built-in catalog plus the bundle's patterns.
        self.scanner = compile_scanner(builtin_patterns, document["dlp_patterns"])
        # The built-in price catalog with the bundle's prices over it.
        self.prices = PriceCatalog.builtin().with_overrides(document["prices"])
        self._approvals = {}
        for approval in document["approvals"]:
            key = (approval["agent"], approval["action"])
            self._approvals[key] = max(self._approvals.get(key, 0), approval["expires_at"])

    def agent_for_spiffe(self, spiffe_id):
        return self._by_spiffe.get(spiffe_id)

    def agent_for_key_hash(self, key_sha256):
        return self._by_key_hash.get(key_sha256)

    def approval_expires(self, agent_id, action):
        """Epoch seconds the approval for exactly this action expires, 0 if none."""
        return self._approvals.get((agent_id, action), 0)

    def age_s(self):
        """Seconds since policy-sync published this policy."""
        return max(0.0, time.time() - self.published_ns / 1e9)

