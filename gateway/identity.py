"""Who is calling: a SPIFFE ID from a verified client certificate, else the
MITRITY API key header, matched by its SHA-256 (SPEC section 5).

The certificate is read once per TLS connection by the worker
(``spiffe_id_from_der``); the per-request part only looks the identity up in
the policy. Keys are never kept or compared in clear: only their digest is.
"""

import re
from dataclasses import dataclass

from .certs import hash_api_key, spiffe_ids_from_der
from .policy import Agent

# SPEC: spiffe://<trust-domain>/ns/<ns>/sa/<sa>
_WORKLOAD_PATH = re.compile(r"/ns/(?!\.\.?/)[A-Za-z0-9._-]+/sa/(?!\.\.?\Z)[A-Za-z0-9._-]+\Z")


@dataclass(frozen=True)
class Credential:
    kind: str    # "spiffe" or "apikey"
    value: str   # the SPIFFE ID, or the key's SHA-256 in hex

    @property
    def unbound_name(self):
        """The agent id under ``unknown_agent: allow`` (SPEC section 4)."""
        if self.kind == "spiffe":
            return "unbound:" + self.value
        return "unbound:apikey:" + self.value[:12]


def spiffe_id_from_der(der, trust_domains):
    """The workload's SPIFFE ID from a verified peer certificate, or None.

    An X.509-SVID carries exactly one SPIFFE URI; a certificate with several is
    ambiguous and identifies nobody.
    """
    if not der:
        return None
    try:
        ids = spiffe_ids_from_der(der)
    except ValueError:
        return None
    if len(ids) != 1:
        return None
    rest = ids[0][len("spiffe://"):]
    domain, slash, path = rest.partition("/")
    if domain not in trust_domains or not _WORKLOAD_PATH.match(slash + path):
        return None
    return ids[0]


def credential(spiffe_id, api_key):
    """The caller's credential: the certificate's identity first, else the key."""
    if spiffe_id:
        return Credential("spiffe", spiffe_id)
    if api_key:
        return Credential("apikey", hash_api_key(api_key))
    return None


def resolve(policy, cred, allow_unknown):
    """The agent this credential is bound to; None when unbound and denied."""
    if cred.kind == "spiffe":
        agent = policy.agent_for_spiffe(cred.value)
    else:
        agent = policy.agent_for_key_hash(cred.value)
    if agent is None and allow_unknown:
        return Agent(cred.unbound_name, None)
    return agent
