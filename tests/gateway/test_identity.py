"""Tests for gateway.identity: SPIFFE IDs from real client certificates, API-key hashing, and agent resolution."""

import datetime
import hashlib

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from gateway import certs
from gateway.identity import Credential, credential, resolve, spiffe_id_from_der
from gateway.policy import Agent, Policy
from policy_sync.bundle import validate

SPIFFE_ID = "spiffe://cluster.local/ns/support/sa/support-bot"
TRUST = ("cluster.local",)
API_KEY = "mitrity-live-6f1c0e2a"
API_KEY_HASH = hashlib.sha256(API_KEY.encode()).hexdigest()


@pytest.fixture(scope="module")
def pki(tmp_path_factory):
    return {"dir": tmp_path_factory.mktemp("pki"),
            "ca": certs.create_ca(str(tmp_path_factory.mktemp("ca")))}


def der_for(pki, spiffe_id):
    issued = certs.issue_client_cert(pki["ca"], str(pki["dir"]), spiffe_id, overwrite=True,
                                     basename="c" + hashlib.sha256(spiffe_id.encode()).hexdigest()[:12])
    with open(issued.cert_path, "rb") as f:
        return x509.load_pem_x509_certificate(f.read()).public_bytes(serialization.Encoding.DER)


def der_with_sans(sans):
    """A certificate with arbitrary SANs (gateway.certs only issues exactly one valid SPIFFE URI)."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "test")])
    now = datetime.datetime.now(datetime.timezone.utc)
    builder = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
               .serial_number(x509.random_serial_number()).not_valid_before(now)
               .not_valid_after(now + datetime.timedelta(days=1)))
    if sans is not None:
        builder = builder.add_extension(x509.SubjectAlternativeName(sans), critical=False)
    return builder.sign(key, hashes.SHA256()).public_bytes(serialization.Encoding.DER)


@pytest.fixture(scope="module")
def policy():
    return Policy(validate({
        "revision": "r1",
        "agents": [{"id": "support-bot", "spiffe_ids": [SPIFFE_ID], "api_key_sha256": [API_KEY_HASH.upper()],
                    "mission": {"allow": ["llm:send:anthropic:*"]}}],
    }))


# -- SPIFFE ID from the certificate -----------------------------------------------------------------

def test_spiffe_id_in_a_configured_trust_domain(pki):
    assert spiffe_id_from_der(der_for(pki, SPIFFE_ID), TRUST) == SPIFFE_ID


def test_any_configured_trust_domain(pki):
    other = "spiffe://prod.example.org/ns/billing/sa/invoicer"
    der = der_for(pki, other)
    assert spiffe_id_from_der(der, ("cluster.local", "prod.example.org")) == other
    assert spiffe_id_from_der(der, TRUST) is None


@pytest.mark.parametrize("spiffe_id", [
    "spiffe://evil.local/ns/support/sa/support-bot",
    "spiffe://cluster.local.evil/ns/support/sa/support-bot",
    "spiffe://local/ns/support/sa/support-bot",
    "spiffe://sub.cluster.local/ns/support/sa/support-bot",
])
def test_other_trust_domains_are_no_identity(pki, spiffe_id):
    assert spiffe_id_from_der(der_for(pki, spiffe_id), TRUST) is None


@pytest.mark.parametrize("spiffe_id", [
    "spiffe://cluster.local/workload/support-bot",
    "spiffe://cluster.local/ns/support",
    "spiffe://cluster.local/ns/support/sa",
    "spiffe://cluster.local/ns/support/sa/support-bot/extra",
    "spiffe://cluster.local/sa/support-bot/ns/support",
    "spiffe://cluster.local/namespace/support/sa/support-bot",
    "spiffe://cluster.local/x/ns/support/sa/support-bot",
])
def test_paths_other_than_ns_sa_are_no_identity(pki, spiffe_id):
    assert spiffe_id_from_der(der_for(pki, spiffe_id), TRUST) is None


def test_no_trust_domains_means_no_spiffe_identity(pki):
    assert spiffe_id_from_der(der_for(pki, SPIFFE_ID), ()) is None


@pytest.mark.parametrize("der", [None, b"", b"not a certificate", b"\x30\x03\x02\x01\x00"])
def test_no_or_unreadable_certificate_is_no_identity(der):
    assert spiffe_id_from_der(der, TRUST) is None


def test_certificate_without_san_is_no_identity():
    assert spiffe_id_from_der(der_with_sans(None), TRUST) is None
    assert spiffe_id_from_der(der_with_sans([x509.DNSName("support-bot.local")]), TRUST) is None


def test_certificate_with_two_spiffe_ids_is_no_identity():
    der = der_with_sans([x509.UniformResourceIdentifier(SPIFFE_ID),
                         x509.UniformResourceIdentifier("spiffe://cluster.local/ns/admin/sa/root")])
    assert spiffe_id_from_der(der, TRUST) is None


def test_other_sans_beside_one_spiffe_id_are_ignored():
    der = der_with_sans([x509.DNSName("bot.local"), x509.UniformResourceIdentifier("https://bot.local/"),
                         x509.UniformResourceIdentifier(SPIFFE_ID)])
    assert spiffe_id_from_der(der, TRUST) == SPIFFE_ID


@pytest.mark.parametrize("uri", [
    "spiffe://cluster.local/ns/support/sa/support-bot?x=1",
    "spiffe://cluster.local/ns/support/sa/support-bot/",
    "spiffe://cluster.local/ns/support/sa/support-bot#f",
    "spiffe://cluster.local/ns/sup%2Fport/sa/support-bot",
    "spiffe://cluster.local/ns//sa/support-bot",
    "spiffe://Cluster.local/ns/support/sa/support-bot",
    "spiffe://cluster.local:443/ns/support/sa/support-bot",
])
def test_malformed_spiffe_uri_is_no_identity(uri):
    assert spiffe_id_from_der(der_with_sans([x509.UniformResourceIdentifier(uri)]), TRUST) is None


# -- credential -------------------------------------------------------------------------------------

def test_credential_prefers_the_spiffe_id():
    assert credential(SPIFFE_ID, API_KEY) == Credential("spiffe", SPIFFE_ID)


def test_credential_hashes_the_api_key_with_sha256():
    cred = credential(None, API_KEY)
    assert cred == Credential("apikey", API_KEY_HASH)
    assert cred.value == certs.hash_api_key(API_KEY)
    assert API_KEY not in repr(cred)


def test_credential_of_a_non_ascii_key():
    key = "cl\u00e9-\U0001f511"
    assert credential(None, key).value == hashlib.sha256(key.encode("utf-8")).hexdigest()


@pytest.mark.parametrize("spiffe_id, api_key", [(None, None), ("", ""), (None, ""), ("", None)])
def test_no_credential(spiffe_id, api_key):
    assert credential(spiffe_id, api_key) is None


def test_unbound_names():
    assert Credential("spiffe", SPIFFE_ID).unbound_name == "unbound:" + SPIFFE_ID
    assert Credential("apikey", API_KEY_HASH).unbound_name == "unbound:apikey:" + API_KEY_HASH[:12]


# -- resolve ----------------------------------------------------------------------------------------

def test_resolve_bound_spiffe_id(policy):
    agent = resolve(policy, credential(SPIFFE_ID, None), allow_unknown=False)
    assert agent.id == "support-bot"
    assert agent.mission is not None


def test_resolve_bound_api_key(policy):
    agent = resolve(policy, credential(None, API_KEY), allow_unknown=False)
    assert agent.id == "support-bot"


def test_resolve_spiffe_id_wins_even_when_only_the_key_is_bound(policy):
    other = "spiffe://cluster.local/ns/other/sa/bot"
    assert resolve(policy, credential(other, API_KEY), allow_unknown=False) is None


@pytest.mark.parametrize("cred", [Credential("spiffe", "spiffe://cluster.local/ns/x/sa/y"),
                                  Credential("apikey", hashlib.sha256(b"unknown").hexdigest())])
def test_resolve_unbound_is_denied_by_default(policy, cred):
    assert resolve(policy, cred, allow_unknown=False) is None


def test_resolve_unbound_spiffe_id_under_unknown_agent_allow(policy):
    spiffe_id = "spiffe://cluster.local/ns/x/sa/y"
    agent = resolve(policy, credential(spiffe_id, None), allow_unknown=True)
    assert agent == Agent("unbound:spiffe://cluster.local/ns/x/sa/y", None)


def test_resolve_unbound_api_key_under_unknown_agent_allow(policy):
    key = "sk-unknown-agent-key"
    agent = resolve(policy, credential(None, key), allow_unknown=True)
    assert agent.id == "unbound:apikey:" + hashlib.sha256(key.encode()).hexdigest()[:12]
    assert agent.mission is None
    assert key not in agent.id


def test_resolve_bound_identity_is_the_agent_even_under_unknown_agent_allow(policy):
    agent = resolve(policy, credential(SPIFFE_ID, None), allow_unknown=True)
    assert agent.id == "support-bot"
    assert agent.mission is not None


def test_identity_from_a_real_certificate_end_to_end(pki, policy):
    spiffe_id = spiffe_id_from_der(der_for(pki, SPIFFE_ID), TRUST)
    assert resolve(policy, credential(spiffe_id, "ignored"), allow_unknown=False).id == "support-bot"
