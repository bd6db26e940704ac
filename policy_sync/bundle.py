"""Policy bundle validation (SPEC section 4).

``validate()`` takes the parsed document and returns it normalized to plain
data (defaults filled in, times as epoch seconds, hashes lower-case) or raises
``BundleError`` naming the first offending place, e.g.
``agents[2].mission.allow[0]: must be a non-empty string``. A bundle is
accepted or rejected whole: nothing of an invalid bundle is ever published.
``prepare()`` also compiles the result exactly as a worker will, so a bundle
that validates but cannot compile is rejected here, not in a worker.
"""

import json
import re
from datetime import datetime

import msgpack
import re2
import yaml

from gateway.certs import parse_spiffe_id
from gateway.policy import Policy
from gateway.usage.prices import PRICE_FIELDS

MAX_BUNDLE_BYTES = 16 * 1024 * 1024
MAX_PATTERN_CHARS = 512
MAX_ID_CHARS = 256
_HEX64 = re.compile(r"[0-9a-fA-F]{64}\Z")
_ACTION_PREFIX = "llm:send:"
INDICATOR_TYPES = ("domain", "ip", "url", "string")
DLP_ACTIONS = ("redact", "block")
DLP_TARGETS = ("prompt", "response")
_RE2_QUIET = re2.Options()
_RE2_QUIET.log_errors = False  # the rejection is reported once, by policy-sync


class BundleError(ValueError):
    def __init__(self, where, reason):
        super().__init__(f"{where}: {reason}" if where else reason)


def _mapping(value, where, keys, required=()):
    if not isinstance(value, dict):
        raise BundleError(where, "must be a mapping")
    for key in value:
        if key not in keys:
            raise BundleError(f"{where}.{key}" if where else str(key), "unknown key")
    for key in required:
        if key not in value:
            raise BundleError(f"{where}.{key}" if where else key, "is required")
    return value


def _list(value, where):
    if value is None:
        return []
    if not isinstance(value, list):
        raise BundleError(where, "must be a list")
    return value


def _text(value, where, limit=MAX_ID_CHARS):
    if not isinstance(value, str) or not value:
        raise BundleError(where, "must be a non-empty string")
    if len(value) > limit:
        raise BundleError(where, f"must be at most {limit} characters")
    return value


def _texts(value, where, limit=MAX_PATTERN_CHARS):
    return [_text(v, f"{where}[{i}]", limit) for i, v in enumerate(_list(value, where))]


def _time(value, where):
    # YAML turns an unquoted timestamp into a datetime; a quoted one stays text.
    if isinstance(value, str):
        try:
            value = datetime.fromisoformat(value.replace("Z", "+00:00"))
        except ValueError:
            raise BundleError(where, "must be an RFC 3339 time") from None
    if not isinstance(value, datetime) or value.tzinfo is None:
        raise BundleError(where, "must be an RFC 3339 time with a zone")
    return value.timestamp()


def _number(value, where):
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value < float("inf"):
        raise BundleError(where, "must be a number >= 0")
    return float(value)


def _agents(value):
    agents, seen_ids, seen_spiffe, seen_keys = [], set(), set(), set()
    for i, entry in enumerate(_list(value, "agents")):
        where = f"agents[{i}]"
        _mapping(entry, where, ("id", "spiffe_ids", "api_key_sha256", "mission"), ("id",))
        agent_id = _text(entry["id"], f"{where}.id")
        if agent_id.startswith("unbound:"):
            raise BundleError(f"{where}.id", "the prefix unbound: is reserved")
        if agent_id in seen_ids:
            raise BundleError(f"{where}.id", f"duplicate agent id {agent_id!r}")
        seen_ids.add(agent_id)
        spiffe_ids = _texts(entry.get("spiffe_ids"), f"{where}.spiffe_ids", 2048)
        for j, sid in enumerate(spiffe_ids):
            try:
                parse_spiffe_id(sid)
            except ValueError as exc:
                raise BundleError(f"{where}.spiffe_ids[{j}]", str(exc)) from None
            if sid in seen_spiffe:
                raise BundleError(f"{where}.spiffe_ids[{j}]", "bound to more than one agent")
            seen_spiffe.add(sid)
        hashes = []
        for j, digest in enumerate(_list(entry.get("api_key_sha256"), f"{where}.api_key_sha256")):
            if not isinstance(digest, str) or not _HEX64.match(digest):
                raise BundleError(f"{where}.api_key_sha256[{j}]", "must be 64 hex digits (SHA-256 of the key)")
            digest = digest.lower()
            if digest in seen_keys:
                raise BundleError(f"{where}.api_key_sha256[{j}]", "bound to more than one agent")
            seen_keys.add(digest)
            hashes.append(digest)
        mission = entry.get("mission")
        mission = {} if mission is None else mission
        _mapping(mission, f"{where}.mission", ("allow", "deny", "require_approval"))
        agents.append({
            "id": agent_id, "spiffe_ids": spiffe_ids, "api_key_sha256": hashes,
            "mission": {k: _texts(mission.get(k), f"{where}.mission.{k}")
                        for k in ("allow", "deny", "require_approval")},
        })
    return agents


def _dlp_patterns(value):
    patterns, seen = [], set()
    for i, entry in enumerate(_list(value, "dlp_patterns")):
        where = f"dlp_patterns[{i}]"
        _mapping(entry, where, ("id", "regex", "action", "applies_to"), ("id",))
        pattern_id = _text(entry["id"], f"{where}.id")
        if pattern_id in seen:
            raise BundleError(f"{where}.id", f"duplicate pattern id {pattern_id!r}")
        seen.add(pattern_id)
        regex = entry.get("regex")
        if regex is None and not pattern_id.startswith("builtin."):
            raise BundleError(f"{where}.regex", "is required (only a builtin.* override may omit it)")
        if regex is not None:
            regex = _text(regex, f"{where}.regex", 4096)
            # RE2 refuses what it cannot run in time linear in the text
            # (backreferences, lookaround): such a pattern rejects the bundle.
            try:
                re2.compile(regex, _RE2_QUIET)
            except re2.error as exc:
                raise BundleError(f"{where}.regex", f"not a linear-time (RE2) pattern: {exc}") from None
        action = entry.get("action", "redact")
        if action not in DLP_ACTIONS:
            raise BundleError(f"{where}.action", "must be redact or block")
        applies_to = _list(entry.get("applies_to", list(DLP_TARGETS)), f"{where}.applies_to")
        if not applies_to or any(t not in DLP_TARGETS for t in applies_to):
            raise BundleError(f"{where}.applies_to", "must list prompt and/or response")
        patterns.append({"id": pattern_id, "regex": regex, "action": action, "applies_to": applies_to})
    return patterns


def _threat_intel(value):
    value = _mapping({} if value is None else value, "threat_intel", ("blocked_destinations", "indicators", "injection"))
    indicators = []
    for i, entry in enumerate(_list(value.get("indicators"), "threat_intel.indicators")):
        where = f"threat_intel.indicators[{i}]"
        _mapping(entry, where, ("id", "type", "value"), ("id", "type", "value"))
        if entry["type"] not in INDICATOR_TYPES:
            raise BundleError(f"{where}.type", "must be one of " + ", ".join(INDICATOR_TYPES))
        indicators.append({"id": _text(entry["id"], f"{where}.id"), "type": entry["type"],
                           "value": _text(entry["value"], f"{where}.value", 2048)})
    injection = value.get("injection", True)
    if not isinstance(injection, bool):
        raise BundleError("threat_intel.injection", "must be true or false")
    return {"blocked_destinations": _texts(value.get("blocked_destinations"), "threat_intel.blocked_destinations"),
            "indicators": indicators, "injection": injection}


def _approvals(value):
    approvals = []
    for i, entry in enumerate(_list(value, "approvals")):
        where = f"approvals[{i}]"
        _mapping(entry, where, ("agent", "action", "expires_at"), ("agent", "action", "expires_at"))
        action = _text(entry["action"], f"{where}.action", MAX_PATTERN_CHARS)
        if not action.startswith(_ACTION_PREFIX) or "*" in action:
            raise BundleError(f"{where}.action", "must be an exact llm:send:<provider>:<model> action")
        approvals.append({"agent": _text(entry["agent"], f"{where}.agent"), "action": action,
                          "expires_at": _time(entry["expires_at"], f"{where}.expires_at")})
    return approvals


def _prices(value):
    """The entries as gateway.usage.prices reads them (its field names)."""
    prices = []
    for i, entry in enumerate(_list(value, "prices")):
        where = f"prices[{i}]"
        _mapping(entry, where, ("provider", "model") + PRICE_FIELDS,
                 ("provider", "model", "input_usd_per_mtok", "output_usd_per_mtok"))
        price = {"provider": _text(entry["provider"], f"{where}.provider"),
                 "model": _text(entry["model"], f"{where}.model")}
        for field in PRICE_FIELDS:
            price[field] = _number(entry[field], f"{where}.{field}") if field in entry else None
        prices.append(price)
    return prices


def validate(document):
    """Check a parsed bundle and return it as normalized plain data."""
    _mapping(document, "", ("revision", "agents", "dlp_patterns", "threat_intel", "approvals", "prices"),
             ("revision",))
    revision = document["revision"]
    if isinstance(revision, (int, float)) and not isinstance(revision, bool):
        revision = str(revision)
    return {
        "revision": _text(revision, "revision", 128),
        "agents": _agents(document.get("agents")),
        "dlp_patterns": _dlp_patterns(document.get("dlp_patterns")),
        "threat_intel": _threat_intel(document.get("threat_intel")),
        "approvals": _approvals(document.get("approvals")),
        "prices": _prices(document.get("prices")),
    }


def parse(raw):
    """Bytes of a YAML or JSON bundle -> the parsed document."""
    if len(raw) > MAX_BUNDLE_BYTES:
        raise BundleError(None, f"bundle is larger than {MAX_BUNDLE_BYTES} bytes")
    try:
        if raw.lstrip()[:1] == b"{":
            return json.loads(raw)
        return yaml.safe_load(raw)
    except RecursionError:
        raise BundleError(None, "nested too deeply") from None
    except (ValueError, yaml.YAMLError) as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark else ""
        raise BundleError(None, f"not valid YAML or JSON{where}") from None


def prepare(raw):
    """Bytes of a bundle -> (normalized document, msgpack payload to publish)."""
    document = validate(parse(raw))
    Policy(document)  # compiles exactly as a worker will; raises if it cannot
    return document, msgpack.packb(document, use_bin_type=True)


def decode(payload, generation=0, published_ns=0, builtin_patterns=True):
    """What a worker does with a published payload."""
    return Policy(msgpack.unpackb(payload, raw=False), generation, published_ns, builtin_patterns)
