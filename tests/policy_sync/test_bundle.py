"""Tests for policy_sync.bundle: validation, normalization, parsing and the published payload (SPEC section 4)."""

import copy
import hashlib
import json
from datetime import datetime, timezone

import msgpack
import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gateway.policy import Policy
from policy_sync import bundle
from policy_sync.bundle import BundleError, decode, parse, prepare, validate

KEY_HASH = hashlib.sha256(b"mitrity-dev-key").hexdigest()
SPIFFE_ID = "spiffe://cluster.local/ns/support/sa/support-bot"

SPEC_EXAMPLE = f"""
revision: "2026-12-04.1"
agents:
  - id: support-bot
    spiffe_ids: ["spiffe://cluster.local/ns/support/sa/support-bot"]
    api_key_sha256: ["{KEY_HASH.upper()}"]
    mission:
      allow: ["llm:send:anthropic:claude-sonnet-4-5*", "llm:send:openai:gpt-4o-mini"]
      deny: []
      require_approval: ["llm:send:openai:o3*"]
dlp_patterns:                      # added to the built-in catalog; an entry with a built-in id overrides it
  - {{id: acme-employee-id, regex: 'ACME-\\d{{6}}', action: redact, applies_to: [prompt, response]}}
  - {{id: builtin.private-key, action: block}}
threat_intel:
  blocked_destinations: ["llm:send:openai:gpt-3.5-turbo-instruct"]
  indicators:                      # type: domain | ip | url | string; a match in the prompt blocks it
    - {{id: ti-1, type: domain, value: evil.example}}
  injection: true                  # built-in prompt-injection rules
approvals:                         # granted by a human in the control plane; expire
  - {{agent: support-bot, action: "llm:send:openai:o3-mini", expires_at: "2026-12-31T00:00:00Z"}}
prices:
  - {{provider: anthropic, model: claude-sonnet-4-5, input_usd_per_mtok: 3.0, output_usd_per_mtok: 15.0,
     cache_write_usd_per_mtok: 3.75, cache_read_usd_per_mtok: 0.30}}
"""

EXPIRES_EPOCH = datetime(2026, 12, 31, tzinfo=timezone.utc).timestamp()


def example():
    return yaml.safe_load(SPEC_EXAMPLE)


def rejected(document):
    with pytest.raises(BundleError) as info:
        validate(document)
    return str(info.value)


# -- the SPEC example and normalization -------------------------------------------------------------

def test_spec_example_validates_and_normalizes():
    document = validate(example())
    assert document == {
        "revision": "2026-12-04.1",
        "agents": [{
            "id": "support-bot",
            "spiffe_ids": [SPIFFE_ID],
            "api_key_sha256": [KEY_HASH],  # lower-cased
            "mission": {
                "allow": ["llm:send:anthropic:claude-sonnet-4-5*", "llm:send:openai:gpt-4o-mini"],
                "deny": [],
                "require_approval": ["llm:send:openai:o3*"],
            },
        }],
        "dlp_patterns": [
            {"id": "acme-employee-id", "regex": r"ACME-\d{6}", "action": "redact",
             "applies_to": ["prompt", "response"]},
            {"id": "builtin.private-key", "regex": None, "action": "block", "applies_to": ["prompt", "response"]},
        ],
        "threat_intel": {
            "blocked_destinations": ["llm:send:openai:gpt-3.5-turbo-instruct"],
            "indicators": [{"id": "ti-1", "type": "domain", "value": "evil.example"}],
            "injection": True,
        },
        "approvals": [{"agent": "support-bot", "action": "llm:send:openai:o3-mini", "expires_at": EXPIRES_EPOCH}],
        "prices": [{"provider": "anthropic", "model": "claude-sonnet-4-5", "input_usd_per_mtok": 3.0,
                    "output_usd_per_mtok": 15.0, "cache_write_usd_per_mtok": 3.75,
                    "cache_read_usd_per_mtok": 0.30}],
    }


def test_minimal_bundle_gets_defaults():
    assert validate({"revision": "r"}) == {
        "revision": "r", "agents": [], "dlp_patterns": [],
        "threat_intel": {"blocked_destinations": [], "indicators": [], "injection": True},
        "approvals": [], "prices": [],
    }


def test_null_sections_are_empty():
    document = validate({"revision": "r", "agents": None, "dlp_patterns": None, "threat_intel": None,
                         "approvals": None, "prices": None})
    assert document["agents"] == [] and document["threat_intel"]["indicators"] == []


def test_agent_defaults():
    document = validate({"revision": "r", "agents": [{"id": "a"}]})
    assert document["agents"] == [{"id": "a", "spiffe_ids": [], "api_key_sha256": [],
                                   "mission": {"allow": [], "deny": [], "require_approval": []}}]


def test_dlp_pattern_defaults():
    document = validate({"revision": "r", "dlp_patterns": [{"id": "x", "regex": "x+"}]})
    assert document["dlp_patterns"] == [{"id": "x", "regex": "x+", "action": "redact",
                                         "applies_to": ["prompt", "response"]}]


def test_price_cache_fields_default_to_none_and_numbers_become_floats():
    document = validate({"revision": "r", "prices": [
        {"provider": "openai", "model": "gpt-4o", "input_usd_per_mtok": 2, "output_usd_per_mtok": 0}]})
    price = document["prices"][0]
    assert price == {"provider": "openai", "model": "gpt-4o", "input_usd_per_mtok": 2.0, "output_usd_per_mtok": 0.0,
                     "cache_write_usd_per_mtok": None, "cache_read_usd_per_mtok": None}
    assert isinstance(price["input_usd_per_mtok"], float)


@pytest.mark.parametrize("revision, expected", [(7, "7"), (2026.1, "2026.1"), ("abc", "abc")])
def test_numeric_revision_becomes_text(revision, expected):
    assert validate({"revision": revision})["revision"] == expected


@pytest.mark.parametrize("expires_at", [
    "2026-12-31T00:00:00Z",
    "2026-12-31T00:00:00+00:00",
    "2026-12-31T01:00:00+01:00",
    "2026-12-30T19:00:00-05:00",
    datetime(2026, 12, 31, tzinfo=timezone.utc),
])
def test_expires_at_becomes_epoch_seconds(expires_at):
    document = validate({"revision": "r", "approvals": [
        {"agent": "a", "action": "llm:send:openai:o3-mini", "expires_at": expires_at}]})
    assert document["approvals"][0]["expires_at"] == EXPIRES_EPOCH


def test_unquoted_yaml_timestamp_is_accepted():
    document = validate(yaml.safe_load(
        "revision: r\napprovals:\n  - {agent: a, action: 'llm:send:openai:o3', expires_at: 2026-12-31T00:00:00Z}\n"))
    assert document["approvals"][0]["expires_at"] == EXPIRES_EPOCH


def test_validation_does_not_change_its_input():
    original = example()
    kept = copy.deepcopy(original)
    validate(original)
    assert original == kept


def test_validated_bundle_validates_again_to_itself_when_times_are_text():
    document = validate(example())
    again = dict(document, approvals=[])
    assert validate(again) == again


# -- rejections name their place --------------------------------------------------------------------

def mutate(path, value):
    """A mutation of the SPEC example: set ``path`` (a tuple of keys/indexes) to ``value``."""
    def apply(document):
        node = document
        for part in path[:-1]:
            node = node[part]
        node[path[-1]] = value
        return document
    return apply


def delete(path):
    def apply(document):
        node = document
        for part in path[:-1]:
            node = node[part]
        del node[path[-1]]
        return document
    return apply


def add_agent(**entry):
    def apply(document):
        document["agents"].append(entry)
        return document
    return apply


@pytest.mark.parametrize("change, place", [
    (mutate(("bogus",), 1), "bogus"),
    (mutate(("agents", 0, "bogus"), 1), "agents[0].bogus"),
    (mutate(("agents", 0, "mission", "bogus"), []), "agents[0].mission.bogus"),
    (mutate(("threat_intel", "bogus"), 1), "threat_intel.bogus"),
    (mutate(("dlp_patterns", 0, "bogus"), 1), "dlp_patterns[0].bogus"),
    (mutate(("approvals", 0, "bogus"), 1), "approvals[0].bogus"),
    (mutate(("prices", 0, "bogus"), 1), "prices[0].bogus"),
    (mutate(("threat_intel", "indicators", 0, "bogus"), 1), "threat_intel.indicators[0].bogus"),
    (delete(("revision",)), "revision"),
    (mutate(("revision",), ""), "revision"),
    (mutate(("revision",), None), "revision"),
    (mutate(("revision",), "r" * 129), "revision"),
    (mutate(("agents",), {"support-bot": {}}), "agents"),
    (mutate(("agents", 0), "support-bot"), "agents[0]"),
    (delete(("agents", 0, "id")), "agents[0].id"),
    (mutate(("agents", 0, "id"), ""), "agents[0].id"),
    (mutate(("agents", 0, "id"), 5), "agents[0].id"),
    (mutate(("agents", 0, "id"), "unbound:support-bot"), "agents[0].id"),
    (mutate(("agents", 0, "id"), "unbound:spiffe://cluster.local/ns/x/sa/y"), "agents[0].id"),
    (add_agent(id="support-bot"), "agents[1].id"),
    (add_agent(id="second", spiffe_ids=[SPIFFE_ID]), "agents[1].spiffe_ids[0]"),
    (add_agent(id="second", api_key_sha256=[KEY_HASH]), "agents[1].api_key_sha256[0]"),
    (mutate(("agents", 0, "spiffe_ids"), [SPIFFE_ID, SPIFFE_ID]), "agents[0].spiffe_ids[1]"),
    (mutate(("agents", 0, "spiffe_ids"), SPIFFE_ID), "agents[0].spiffe_ids"),
    (mutate(("agents", 0, "spiffe_ids", 0), "spiffe://Cluster.local/ns/a/sa/b"), "agents[0].spiffe_ids[0]"),
    (mutate(("agents", 0, "spiffe_ids", 0), "https://cluster.local/ns/a/sa/b"), "agents[0].spiffe_ids[0]"),
    (mutate(("agents", 0, "spiffe_ids", 0), "spiffe://cluster.local"), "agents[0].spiffe_ids[0]"),
    (mutate(("agents", 0, "spiffe_ids", 0), "spiffe://cluster.local/ns/../sa/b"), "agents[0].spiffe_ids[0]"),
    (mutate(("agents", 0, "spiffe_ids", 0), "spiffe://cluster.local/ns/a/sa/b?x=1"), "agents[0].spiffe_ids[0]"),
    (mutate(("agents", 0, "api_key_sha256", 0), "xyz"), "agents[0].api_key_sha256[0]"),
    (mutate(("agents", 0, "api_key_sha256", 0), KEY_HASH[:-1]), "agents[0].api_key_sha256[0]"),
    (mutate(("agents", 0, "api_key_sha256", 0), KEY_HASH + "0"), "agents[0].api_key_sha256[0]"),
    (mutate(("agents", 0, "api_key_sha256", 0), KEY_HASH + "\n"), "agents[0].api_key_sha256[0]"),
    (mutate(("agents", 0, "api_key_sha256", 0), "g" * 64), "agents[0].api_key_sha256[0]"),
    (mutate(("agents", 0, "api_key_sha256", 0), int(KEY_HASH[:15], 16)), "agents[0].api_key_sha256[0]"),
    (mutate(("agents", 0, "api_key_sha256"), [KEY_HASH, KEY_HASH.upper()]), "agents[0].api_key_sha256[1]"),
    (mutate(("agents", 0, "mission"), ["llm:send:*"]), "agents[0].mission"),
    (mutate(("agents", 0, "mission", "allow"), "llm:send:*"), "agents[0].mission.allow"),
    (mutate(("agents", 0, "mission", "allow", 1), ""), "agents[0].mission.allow[1]"),
    (mutate(("agents", 0, "mission", "deny"), [None]), "agents[0].mission.deny[0]"),
    (mutate(("agents", 0, "mission", "require_approval", 0), "x" * 513), "agents[0].mission.require_approval[0]"),
    (mutate(("dlp_patterns", 0, "regex"), "ACME-(\\d{6}"), "dlp_patterns[0].regex"),
    (mutate(("dlp_patterns", 0, "regex"), ""), "dlp_patterns[0].regex"),
    (delete(("dlp_patterns", 0, "regex")), "dlp_patterns[0].regex"),
    (mutate(("dlp_patterns", 1, "id"), "acme-employee-id"), "dlp_patterns[1].id"),
    (delete(("dlp_patterns", 0, "id")), "dlp_patterns[0].id"),
    (mutate(("dlp_patterns", 0, "action"), "allow"), "dlp_patterns[0].action"),
    (mutate(("dlp_patterns", 0, "action"), None), "dlp_patterns[0].action"),
    (mutate(("dlp_patterns", 0, "applies_to"), ["request"]), "dlp_patterns[0].applies_to"),
    (mutate(("dlp_patterns", 0, "applies_to"), []), "dlp_patterns[0].applies_to"),
    (mutate(("dlp_patterns", 0, "applies_to"), "prompt"), "dlp_patterns[0].applies_to"),
    (mutate(("threat_intel",), ["evil.example"]), "threat_intel"),
    (mutate(("threat_intel", "indicators", 0, "type"), "hash"), "threat_intel.indicators[0].type"),
    (mutate(("threat_intel", "indicators", 0, "type"), "DOMAIN"), "threat_intel.indicators[0].type"),
    (delete(("threat_intel", "indicators", 0, "value")), "threat_intel.indicators[0].value"),
    (mutate(("threat_intel", "indicators", 0, "value"), ""), "threat_intel.indicators[0].value"),
    (mutate(("threat_intel", "indicators", 0, "id"), 1), "threat_intel.indicators[0].id"),
    (mutate(("threat_intel", "injection"), "yes"), "threat_intel.injection"),
    (mutate(("threat_intel", "blocked_destinations", 0), 3), "threat_intel.blocked_destinations[0]"),
    (mutate(("approvals", 0, "action"), "llm:send:openai:o3*"), "approvals[0].action"),
    (mutate(("approvals", 0, "action"), "llm:send:*"), "approvals[0].action"),
    (mutate(("approvals", 0, "action"), "openai:o3-mini"), "approvals[0].action"),
    (mutate(("approvals", 0, "action"), "LLM:send:openai:o3-mini"), "approvals[0].action"),
    (delete(("approvals", 0, "agent")), "approvals[0].agent"),
    (delete(("approvals", 0, "expires_at")), "approvals[0].expires_at"),
    (mutate(("approvals", 0, "expires_at"), "tomorrow"), "approvals[0].expires_at"),
    (mutate(("approvals", 0, "expires_at"), "2026-12-31T00:00:00"), "approvals[0].expires_at"),
    (mutate(("approvals", 0, "expires_at"), "2026-12-31"), "approvals[0].expires_at"),
    (mutate(("approvals", 0, "expires_at"), 1798675200), "approvals[0].expires_at"),
    (mutate(("approvals", 0, "expires_at"), datetime(2026, 12, 31)), "approvals[0].expires_at"),
    (mutate(("prices", 0, "input_usd_per_mtok"), -1), "prices[0].input_usd_per_mtok"),
    (mutate(("prices", 0, "output_usd_per_mtok"), -0.01), "prices[0].output_usd_per_mtok"),
    (mutate(("prices", 0, "cache_read_usd_per_mtok"), -3), "prices[0].cache_read_usd_per_mtok"),
    (mutate(("prices", 0, "cache_write_usd_per_mtok"), "3.75"), "prices[0].cache_write_usd_per_mtok"),
    (mutate(("prices", 0, "input_usd_per_mtok"), True), "prices[0].input_usd_per_mtok"),
    (delete(("prices", 0, "output_usd_per_mtok")), "prices[0].output_usd_per_mtok"),
    (mutate(("prices", 0, "model"), ""), "prices[0].model"),
])
def test_rejection_names_its_place(change, place):
    message = rejected(change(example()))
    assert message.startswith(place + ": "), message


@pytest.mark.parametrize("document", [None, [], "revision: r", 5, ["revision"]])
def test_a_bundle_must_be_a_mapping(document):
    assert "must be a mapping" in rejected(document)


def test_dlp_builtin_override_may_omit_the_regex():
    document = validate({"revision": "r", "dlp_patterns": [{"id": "builtin.email", "action": "block"}]})
    assert document["dlp_patterns"][0]["regex"] is None


@pytest.mark.parametrize("value", [float("nan"), float("-inf")])
def test_price_must_be_a_real_non_negative_number(value):
    # A NaN price would make every cost computed from it NaN (not valid JSON in the usage API).
    document = example()
    document["prices"][0]["input_usd_per_mtok"] = value
    assert rejected(document).startswith("prices[0].input_usd_per_mtok: ")


# -- parse ------------------------------------------------------------------------------------------

def test_parse_json():
    raw = json.dumps({"revision": "r", "agents": [{"id": "a"}]}).encode()
    assert parse(raw) == {"revision": "r", "agents": [{"id": "a"}]}
    assert parse(b"  \n" + raw) == {"revision": "r", "agents": [{"id": "a"}]}


def test_parse_yaml():
    assert parse(SPEC_EXAMPLE.encode()) == example()


@pytest.mark.parametrize("raw", [
    b'{"revision": "r"',
    b'{"revision": "r",}',
    b"{'revision': 'r'}x",
    b"revision: [unclosed\n",
    b"a: 1\n b: 2\n",
    b"revision: 'r\n",
    b"\xff\xfe\x00garbage: [",
    b'{"revision": "\xff"}',
    b"- !!python/object:os.system ls\n",
])
def test_parse_rejects_invalid_documents(raw):
    with pytest.raises(BundleError, match="not valid YAML or JSON"):
        parse(raw)


def test_parse_names_the_yaml_line():
    with pytest.raises(BundleError, match="line 4"):
        parse(b"revision: r\nagents:\n  - id: x\n bad: 1\nprices: []\n")


def test_parse_rejects_oversized_input_before_parsing():
    raw = b"revision: r\n" + b"#" * bundle.MAX_BUNDLE_BYTES
    with pytest.raises(BundleError, match="larger than"):
        parse(raw)


def test_parse_accepts_input_at_the_limit():
    head, tail = b'{"revision": "r", "padding": "', b'"}'
    raw = head + b"x" * (bundle.MAX_BUNDLE_BYTES - len(head) - len(tail)) + tail
    assert len(raw) == bundle.MAX_BUNDLE_BYTES
    assert parse(raw)["revision"] == "r"


@pytest.mark.parametrize("raw", [
    b'{"revision": "r", "agents": ' + b"[" * 2000 + b"]" * 2000 + b"}",
    b"revision: r\nagents: " + b"[" * 1000 + b"]" * 1000 + b"\n",
])
def test_parse_rejects_absurdly_nested_documents_as_bundle_errors(raw):
    # A few kilobytes, far under MAX_BUNDLE_BYTES: a bad document must be a BundleError, not a RecursionError.
    with pytest.raises(BundleError):
        parse(raw)


# -- prepare and decode -----------------------------------------------------------------------------

def test_prepare_and_decode_round_trip():
    document, payload = prepare(SPEC_EXAMPLE.encode())
    assert document == validate(example())
    assert msgpack.unpackb(payload, raw=False) == document
    policy = decode(payload, generation=3, published_ns=42)
    assert isinstance(policy, Policy)
    assert policy.revision == "2026-12-04.1"
    assert policy.generation == 3
    assert policy.published_ns == 42
    agent = policy.agent_for_spiffe(SPIFFE_ID)
    assert agent is not None and agent.id == "support-bot"
    assert policy.agent_for_key_hash(KEY_HASH) is agent
    assert policy.agent_for_key_hash(KEY_HASH.upper()) is None  # look-ups are by the lower-case digest
    assert policy.agent_for_spiffe("spiffe://cluster.local/ns/support/sa/other") is None
    assert agent.mission.allow.first_match("llm:send:openai:gpt-4o-mini") == "llm:send:openai:gpt-4o-mini"
    assert agent.mission.require_approval.first_match("llm:send:openai:o3-mini") == "llm:send:openai:o3*"
    assert policy.blocked_destinations.first_match("llm:send:openai:gpt-3.5-turbo-instruct")
    assert policy.approval_expires("support-bot", "llm:send:openai:o3-mini") == EXPIRES_EPOCH
    assert policy.approval_expires("support-bot", "llm:send:openai:o3") == 0


def test_prepare_accepts_json():
    raw = json.dumps({"revision": "j1", "agents": [{"id": "bot", "api_key_sha256": [KEY_HASH]}]}).encode()
    document, payload = prepare(raw)
    policy = decode(payload)
    assert policy.revision == "j1"
    assert policy.agent_for_key_hash(KEY_HASH).id == "bot"
    assert policy.agent_for_key_hash(KEY_HASH).mission.allow.first_match("llm:send:openai:x") is None


@pytest.mark.parametrize("raw", [b"", b"revision: r\nbogus: 1\n", b"{not json", b"- a\n- b\n"])
def test_prepare_rejects_bad_bundles(raw):
    with pytest.raises(BundleError):
        prepare(raw)


# -- robustness -------------------------------------------------------------------------------------

KEYS = st.sampled_from([
    "revision", "agents", "dlp_patterns", "threat_intel", "approvals", "prices", "id", "spiffe_ids",
    "api_key_sha256", "mission", "allow", "deny", "require_approval", "regex", "action", "applies_to",
    "blocked_destinations", "indicators", "injection", "type", "value", "agent", "expires_at", "provider",
    "model", "input_usd_per_mtok", "output_usd_per_mtok", "cache_write_usd_per_mtok", "cache_read_usd_per_mtok",
])
SCALARS = st.one_of(
    st.none(), st.booleans(), st.integers(), st.floats(), st.text(max_size=20),
    st.sampled_from(["llm:send:openai:o3", "llm:send:*", SPIFFE_ID, KEY_HASH, "2026-12-31T00:00:00Z",
                     "builtin.email", "redact", "block", "prompt", "response", "domain", "unbound:x", "(", "x+"]),
    st.datetimes(timezones=st.one_of(st.none(), st.timezones())),
)
JUNK = st.recursive(
    SCALARS,
    lambda inner: st.one_of(st.lists(inner, max_size=4),
                            st.dictionaries(st.one_of(KEYS, st.text(max_size=5), st.integers()), inner, max_size=5)),
    max_leaves=30,
)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(JUNK)
def test_junk_either_validates_or_is_a_bundle_error(document):
    try:
        result = validate(document)
    except BundleError:
        return
    Policy(result)
    msgpack.packb(result, use_bin_type=True)


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.dictionaries(KEYS, JUNK, max_size=6), st.text(min_size=1, max_size=10))
def test_junk_sections_under_a_valid_revision(sections, revision):
    document = dict(sections, revision=revision)
    try:
        result = validate(document)
    except BundleError:
        return
    Policy(result)


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=200))
def test_junk_bytes_parse_or_are_a_bundle_error(raw):
    try:
        document = parse(raw)
    except BundleError:
        return
    try:
        validate(document)
    except BundleError:
        pass
