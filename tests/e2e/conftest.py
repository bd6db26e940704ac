"""End-to-end fixtures: the real gateway process, a fake provider over HTTPS,
and the official SDKs pointed at the gateway (API key or mTLS identity).

One gateway and one fake provider serve the whole session (``gateway``);
tests that change the policy restore it, and tests that need their own
configuration or kill processes start a private gateway (``start_gateway``).
"""

import hashlib
import ssl

import anthropic
import openai
import pytest

from tests.fakes.provider import FakeProvider
from tests.fakes.tlsfiles import make_test_ca
from tests.harness import BOUND_SPIFFE_ID, PKI, Gateway, deep_merge

API_KEY = "mtr_test_key_4b1d9c0e"           # bound to agent support-bot
UNBOUND_KEY = "mtr_unbound_key_77aa"        # bound to no agent
PROVIDER_KEY = "sk-ant-provider-key-canary-123"
UNBOUND_SPIFFE_ID = "spiffe://cluster.local/ns/other/sa/nobody"


def sha(text):
    return hashlib.sha256(text.encode()).hexdigest()


def policy(revision="test.1", allow=None, deny=(), require_approval=("llm:send:openai:o3*",),
           approvals=(), blocked=("llm:send:openai:gpt-3.5-turbo-instruct",)):
    return {
        "revision": revision,
        "agents": [{
            "id": "support-bot",
            "spiffe_ids": [BOUND_SPIFFE_ID],
            "api_key_sha256": [sha(API_KEY)],
            "mission": {
                "allow": list(allow if allow is not None else
                              ["llm:send:anthropic:claude-sonnet-4-5*", "llm:send:openai:gpt-4o-mini"]),
                "deny": list(deny),
                "require_approval": list(require_approval),
            },
        }],
        "threat_intel": {"blocked_destinations": list(blocked)},
        "approvals": list(approvals),
    }


@pytest.fixture(scope="session")
def upstream_tls(tmp_path_factory):
    return make_test_ca(tmp_path_factory.mktemp("upstream-tls"))


@pytest.fixture(scope="session")
def provider(upstream_tls):
    fake = FakeProvider(upstream_tls["cert"], upstream_tls["key"]).start()
    yield fake
    fake.stop()


@pytest.fixture(scope="session")
def pki(tmp_path_factory):
    return PKI(str(tmp_path_factory.mktemp("pki")))


def provider_config(provider, upstream_tls, **extra):
    config = {
        "providers": {"anthropic": {"upstream": provider.base_url}, "openai": {"upstream": provider.base_url}},
        "upstream": {"ca_file": upstream_tls["ca"], "read_timeout_s": 5, "connect_timeout_s": 2},
    }
    config.update(extra)
    return config


@pytest.fixture
def start_gateway(tmp_path, pki, provider, upstream_tls):
    """Start a private gateway: start_gateway(config_overrides=None, policy_doc=None)."""
    started = []

    def start(config=None, policy_doc=None, wait_ready=True, env=None):
        merged = deep_merge(provider_config(provider, upstream_tls), config or {})
        directory = tmp_path / f"gw{len(started)}"
        directory.mkdir()
        gw = Gateway(str(directory), pki, merged, policy_doc if policy_doc is not None else policy(), env)
        started.append(gw)
        return gw.start(wait_ready=wait_ready)

    yield start
    for gw in started:
        gw.stop()


@pytest.fixture(scope="session")
def gateway(tmp_path_factory, pki, provider, upstream_tls):
    directory = tmp_path_factory.mktemp("gateway")
    gw = Gateway(str(directory), pki, provider_config(provider, upstream_tls), policy()).start()
    yield gw
    gw.stop()


@pytest.fixture
def fresh_provider(provider):
    provider.reset()
    return provider


def client_context(pki, spiffe_id=None):
    context = ssl.create_default_context(cafile=pki.ca.cert_path)
    if spiffe_id:
        issued = pki.client(spiffe_id)
        context.load_cert_chain(issued.cert_path, issued.key_path)
    return context


def anthropic_client(gw, key=API_KEY, spiffe_id=None, async_=False, headers=None):
    module_client = anthropic.AsyncAnthropic if async_ else anthropic.Anthropic
    http = anthropic.DefaultAsyncHttpxClient if async_ else anthropic.DefaultHttpxClient
    default_headers = dict(headers or {})
    if key:
        default_headers["x-mitrity-api-key"] = key
    return module_client(base_url=gw.url, api_key=PROVIDER_KEY, max_retries=0, default_headers=default_headers,
                         http_client=http(verify=client_context(gw.pki, spiffe_id), trust_env=False))


def openai_client(gw, key=API_KEY, spiffe_id=None, async_=False, headers=None):
    module_client = openai.AsyncOpenAI if async_ else openai.OpenAI
    http = openai.DefaultAsyncHttpxClient if async_ else openai.DefaultHttpxClient
    default_headers = dict(headers or {})
    if key:
        default_headers["x-mitrity-api-key"] = key
    return module_client(base_url=gw.url + "/v1", api_key=PROVIDER_KEY, max_retries=0,
                         default_headers=default_headers,
                         http_client=http(verify=client_context(gw.pki, spiffe_id), trust_env=False))


@pytest.fixture(autouse=True)
def _no_stray_env(monkeypatch):
    # The SDKs read these; the tests pass everything explicitly.
    for name in ("ANTHROPIC_BASE_URL", "OPENAI_BASE_URL", "ANTHROPIC_API_KEY", "OPENAI_API_KEY"):
        monkeypatch.delenv(name, raising=False)
