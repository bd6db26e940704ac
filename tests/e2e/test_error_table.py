"""SPEC section 5's error table, row by row, end to end through the real gateway.

Every gateway-made error is checked four ways: its status, its headers
(``x-mitrity-reason``, ``x-request-id``, and ``x-mitrity-decision`` on a POST
to a provider route), its exact provider-shaped JSON body (Anthropic's on
``/v1/messages``, OpenAI's on ``/v1/chat/completions``, the shared shape off
the provider routes), and -- where an SDK can produce the request -- the
exception class the real ``anthropic`` / ``openai`` SDK raises for it. A
request denied before forwarding must never reach the fake provider.

The table below is written from the SPEC, not imported from ``gateway.errors``:
the test must not agree with the code just because it reads the same table.

Rows that need their own configuration share a few module-scoped private
gateways (starting one takes seconds):
- ``tight``: a 2 KiB ``max_request_bytes`` (413), ``read_timeout_s: 1`` (504) and
  a policy with approvals (one unexpired, one expired) and anthropic rows in
  ``require_approval`` / ``blocked_destinations``;
- ``broken_upstreams``: anthropic points at a closed port, openai at the fake
  provider whose certificate is not trusted (no ``upstream.ca_file``) (502);
- ``no_policy``: the policy file is not valid YAML (503).
"""

import hashlib
import json
import socket
import time

import anthropic
import httpx2 as httpx
import openai
import pytest

from gateway import certs
from tests.e2e.conftest import (API_KEY, UNBOUND_KEY, UNBOUND_SPIFFE_ID, anthropic_client, client_context,
                                openai_client, policy, provider_config)
from tests.harness import BOUND_SPIFFE_ID, Gateway, deep_merge, free_port, read_response

pytestmark = pytest.mark.usefixtures("fresh_provider")

# SPEC section 5: reason code -> (status, Anthropic error type; OpenAI's `type` is the same word).
TABLE = {
    "invalid_request": (400, "invalid_request_error"),
    "identity_missing": (401, "authentication_error"),
    "agent_unknown": (403, "permission_error"),
    "mission_denied": (403, "permission_error"),
    "approval_required": (403, "permission_error"),
    "threat_detected": (403, "permission_error"),
    "dlp_blocked": (403, "permission_error"),
    "not_found": (404, "not_found_error"),
    "method_not_allowed": (405, "invalid_request_error"),
    "request_too_large": (413, "request_too_large"),
    "headers_too_large": (431, "invalid_request_error"),
    "upstream_error": (502, "api_error"),
    "response_blocked": (502, "api_error"),
    "policy_unavailable": (503, "api_error"),
    "upstream_timeout": (504, "api_error"),
}
ROUTE = {"anthropic": "/v1/messages", "openai": "/v1/chat/completions"}
# A model each provider's route admits for support-bot under conftest.policy().
ALLOWED_MODEL = {"anthropic": "claude-sonnet-4-5", "openai": "gpt-4o-mini"}
PROVIDERS = ("anthropic", "openai")
SMALL_LIMIT = 2048  # the tight gateway's server.max_request_bytes


def approval_id(agent, action):
    return "apr_" + hashlib.sha256(f"{agent}\n{action}".encode()).hexdigest()[:16]


def call_body(provider, model=None, text="hello", **extra):
    doc = {"model": ALLOWED_MODEL[provider] if model is None else model,
           "messages": [{"role": "user", "content": text}], **extra}
    if provider == "anthropic":
        doc.setdefault("max_tokens", 16)
    return json.dumps(doc).encode()


def http_client(gw, spiffe_id=None):
    return httpx.Client(verify=client_context(gw.pki, spiffe_id), timeout=15, trust_env=False)


def post(gw, path, body, key=API_KEY, headers=None, method="POST", spiffe_id=None):
    sent = {"content-type": "application/json", **(headers or {})}
    if key is not None:
        sent["x-mitrity-api-key"] = key
    with http_client(gw, spiffe_id) as http:
        return http.request(method, gw.url + path, content=body, headers=sent)


def check_error(status, headers, body_bytes, code, shape, decision="blocked"):
    """Assert one gateway-made error: status, headers and the exact body shape.

    ``shape`` is "anthropic", "openai" or "generic" (off the provider routes);
    ``decision`` is the expected ``x-mitrity-decision``, or None when the
    request was not a POST on a provider route. Every mismatch is reported at
    once. Returns the error message.
    """
    want_status, error_type = TABLE[code]
    assert status == want_status, (status, body_bytes[:300])
    problems = []
    if headers.get("x-mitrity-reason") != code:
        problems.append(f"x-mitrity-reason is {headers.get('x-mitrity-reason')!r}, not {code!r}")
    request_id = headers.get("x-request-id") or ""
    if not (request_id.startswith("req_") and len(request_id) > len("req_")):
        problems.append(f"x-request-id is {request_id!r}")
    if decision is not None and headers.get("x-mitrity-decision") != decision:
        problems.append(f"x-mitrity-decision is {headers.get('x-mitrity-decision')!r}, not {decision!r}")
    if not (headers.get("content-type") or "").startswith("application/json"):
        problems.append(f"content-type is {headers.get('content-type')!r}")
    doc = json.loads(body_bytes)
    message = doc.get("error", {}).get("message") if isinstance(doc.get("error"), dict) else None
    if shape == "openai":
        expected = {"error": {"message": message, "type": error_type, "param": None, "code": code}}
    elif shape == "anthropic":
        expected = {"type": "error", "error": {"type": error_type, "message": message}}
    else:
        expected = {"type": "error", "error": {"type": error_type, "message": message, "param": None, "code": code}}
    if doc != expected:
        problems.append(f"body is {doc!r}, not the {shape} shape {expected!r}")
    if not (isinstance(message, str) and message.strip()):
        problems.append(f"message is {message!r}")
    assert not problems, "\n".join(problems)
    return message


def check_response(response, code, shape, decision="blocked"):
    return check_error(response.status_code, response.headers, response.content, code, shape, decision)


def sdk_error(exc_class, call):
    """Run an SDK call that must fail with exactly ``exc_class`` (or a subclass)."""
    with pytest.raises(exc_class) as caught:
        call()
    return caught.value


def check_sdk(exc, code, shape, decision="blocked"):
    """The SDK's exception carries the gateway's answer unchanged."""
    response = exc.response
    assert exc.status_code == TABLE[code][0]
    return check_error(response.status_code, response.headers, response.content, code, shape, decision)


def sdk_create(client, provider, model=None, text="hello", **extra):
    if provider == "anthropic":
        return client.messages.create(model=ALLOWED_MODEL[provider] if model is None else model, max_tokens=16,
                                      messages=[{"role": "user", "content": text}], **extra)
    return client.chat.completions.create(model=ALLOWED_MODEL[provider] if model is None else model,
                                          messages=[{"role": "user", "content": text}], **extra)


def make_client(provider, gw, **kwargs):
    return (anthropic_client if provider == "anthropic" else openai_client)(gw, **kwargs)


def sdk_module(provider):
    return anthropic if provider == "anthropic" else openai


def sdk_path(provider):
    # The OpenAI client's base URL already ends in /v1.
    return "/v1/messages" if provider == "anthropic" else "/chat/completions"


def assert_not_forwarded(provider_fake, settle_s=0.2):
    time.sleep(settle_s)
    assert provider_fake.requests == []


def raw_exchange(gw, data, timeout=5.0):
    """Send raw bytes over TLS (for request targets an HTTP client would
    normalize) and read one response: (status, headers, body)."""
    with socket.create_connection(("127.0.0.1", gw.port), timeout=timeout) as sock:
        with client_context(gw.pki).wrap_socket(sock, server_hostname="127.0.0.1") as tls:
            tls.sendall(data)
            return read_response(tls)


def raw_request(method, target, body=b"", key=API_KEY):
    lines = [f"{method} {target} HTTP/1.1", "Host: 127.0.0.1", "Content-Type: application/json",
             f"Content-Length: {len(body)}", "Connection: close"]
    if key:
        lines.append(f"x-mitrity-api-key: {key}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + body


# -- private gateways --------------------------------------------------------


def _private_gateway(tmp_path_factory, pki, provider, upstream_tls, name, config, policy_doc, wait_ready=True):
    merged = deep_merge(provider_config(provider, upstream_tls), config)
    # Idle keep-alive connections end after header_timeout_s; a short one keeps teardown quick.
    deep_merge(merged, {"server": {"header_timeout_s": 2}})
    gw = Gateway(str(tmp_path_factory.mktemp(name)), pki, merged, policy_doc)
    gw.start(wait_ready=wait_ready)
    # Each worker attaches the policy segment on its own schedule; give the
    # worker that did not answer /readyz a moment too.
    time.sleep(0.5)
    return gw


FUTURE = "2099-01-01T00:00:00Z"
PAST = "2020-01-01T00:00:00Z"


@pytest.fixture(scope="module")
def tight(tmp_path_factory, pki, provider, upstream_tls):
    doc = policy(require_approval=("llm:send:openai:o3*", "llm:send:anthropic:claude-opus-4*"),
                 blocked=("llm:send:openai:gpt-3.5-turbo-instruct", "llm:send:anthropic:claude-instant*"),
                 approvals=({"agent": "support-bot", "action": "llm:send:openai:o3-mini", "expires_at": FUTURE},
                            {"agent": "support-bot", "action": "llm:send:openai:o3-pro", "expires_at": PAST}))
    gw = _private_gateway(tmp_path_factory, pki, provider, upstream_tls, "tight",
                          {"server": {"max_request_bytes": SMALL_LIMIT}, "upstream": {"read_timeout_s": 1}}, doc)
    yield gw
    gw.stop()


@pytest.fixture(scope="module")
def broken_upstreams(tmp_path_factory, pki, provider, upstream_tls):
    config = {"providers": {"anthropic": {"upstream": f"https://127.0.0.1:{free_port()}"},
                            "openai": {"upstream": provider.base_url}},
              "upstream": {"ca_file": None}}
    gw = _private_gateway(tmp_path_factory, pki, provider, upstream_tls, "broken", config, policy())
    yield gw
    gw.stop()


@pytest.fixture(scope="module")
def no_policy(tmp_path_factory, pki, provider, upstream_tls):
    gw = _private_gateway(tmp_path_factory, pki, provider, upstream_tls, "nopolicy", {},
                          "revision: [unclosed\nagents: {{{\n", wait_ready=False)
    yield gw
    gw.stop()


@pytest.fixture(scope="module")
def gw(gateway):
    time.sleep(0.5)  # see _private_gateway: every worker has the policy attached
    return gateway


# -- 400 invalid_request ------------------------------------------------------

BAD_BODIES = {
    "not-json": b"this is not json {",
    "not-an-object": b'[{"model": "claude-sonnet-4-5"}]',
    "json-string": b'"claude-sonnet-4-5"',
    "no-model": b'{"max_tokens": 16, "messages": [{"role": "user", "content": "hi"}]}',
    "model-not-a-string": b'{"model": 42, "messages": []}',
    "empty-body": b"",
    "invalid-utf8": b'{"model": "claude-sonnet-4-5", "messages": [{"role": "user", "content": "\xff\xfe"}]}',
}


@pytest.mark.parametrize("provider_name", PROVIDERS)
@pytest.mark.parametrize("body_kind", sorted(BAD_BODIES))
def test_400_invalid_request_raw(gw, provider, provider_name, body_kind):
    answer = post(gw, ROUTE[provider_name], BAD_BODIES[body_kind])
    check_response(answer, "invalid_request", provider_name)
    assert_not_forwarded(provider, 0)


@pytest.mark.parametrize("provider_name", PROVIDERS)
@pytest.mark.parametrize("body_kind", ["not-json", "not-an-object", "no-model", "invalid-utf8"])
def test_400_invalid_request_sdk(gw, provider, provider_name, body_kind):
    module = sdk_module(provider_name)
    with make_client(provider_name, gw) as client:
        exc = sdk_error(module.BadRequestError, lambda: client.post(
            sdk_path(provider_name), cast_to=object, content=BAD_BODIES[body_kind],
            options={"headers": {"content-type": "application/json"}}))
    check_sdk(exc, "invalid_request", provider_name)
    assert_not_forwarded(provider, 0)


@pytest.mark.parametrize("provider_name", PROVIDERS)
def test_400_empty_model_through_the_typed_api(gw, provider, provider_name):
    with make_client(provider_name, gw) as client:
        exc = sdk_error(sdk_module(provider_name).BadRequestError, lambda: sdk_create(client, provider_name, model=""))
    check_sdk(exc, "invalid_request", provider_name)
    assert_not_forwarded(provider)


# -- 401 identity_missing ------------------------------------------------------


@pytest.mark.parametrize("provider_name", PROVIDERS)
def test_401_no_key_no_certificate(gw, provider, provider_name):
    with make_client(provider_name, gw, key=None) as client:
        exc = sdk_error(sdk_module(provider_name).AuthenticationError, lambda: sdk_create(client, provider_name))
    check_sdk(exc, "identity_missing", provider_name)
    check_response(post(gw, ROUTE[provider_name], call_body(provider_name), key=None),
                   "identity_missing", provider_name)
    check_response(post(gw, ROUTE[provider_name], call_body(provider_name), key=""),
                   "identity_missing", provider_name)
    assert_not_forwarded(provider)


@pytest.fixture(scope="module")
def foreign_domain_cert(tmp_path_factory, pki):
    """Signed by the trusted CA, but its SPIFFE ID is in an unconfigured trust domain."""
    return certs.issue_client_cert(pki.ca, str(tmp_path_factory.mktemp("foreign")),
                                   "spiffe://evil.example/ns/support/sa/support-bot")


@pytest.mark.parametrize("provider_name", PROVIDERS)
def test_401_certificate_from_another_trust_domain_is_no_identity(gw, provider, provider_name, foreign_domain_cert):
    context = client_context(gw.pki)
    context.load_cert_chain(foreign_domain_cert.cert_path, foreign_domain_cert.key_path)
    module = sdk_module(provider_name)
    client_class = anthropic.Anthropic if provider_name == "anthropic" else openai.OpenAI
    base = gw.url if provider_name == "anthropic" else gw.url + "/v1"
    with client_class(base_url=base, api_key="sk-provider", max_retries=0,
                      http_client=module.DefaultHttpxClient(verify=context, trust_env=False)) as client:
        exc = sdk_error(module.AuthenticationError, lambda: sdk_create(client, provider_name))
    check_sdk(exc, "identity_missing", provider_name)
    assert_not_forwarded(provider)
    # Being no identity, the certificate does not stand in the way of the API-key path.
    with httpx.Client(verify=context, timeout=15, trust_env=False) as http:
        answer = http.post(gw.url + ROUTE[provider_name], content=call_body(provider_name, text="key"),
                           headers={"x-mitrity-api-key": API_KEY, "content-type": "application/json"})
    assert answer.status_code == 200, answer.text
    assert len(provider.wait_for_requests(1)) == 1


# -- 403 agent_unknown / mission_denied / approval_required / threat_detected -----


@pytest.mark.parametrize("provider_name", PROVIDERS)
@pytest.mark.parametrize("how", ["api-key", "certificate"])
def test_403_agent_unknown(gw, provider, provider_name, how):
    kwargs = {"key": UNBOUND_KEY} if how == "api-key" else {"key": None, "spiffe_id": UNBOUND_SPIFFE_ID}
    with make_client(provider_name, gw, **kwargs) as client:
        exc = sdk_error(sdk_module(provider_name).PermissionDeniedError, lambda: sdk_create(client, provider_name))
    check_sdk(exc, "agent_unknown", provider_name)
    assert_not_forwarded(provider)


@pytest.mark.parametrize("provider_name,model", [("anthropic", "claude-opus-4-1"), ("openai", "gpt-4o")])
def test_403_mission_denied(gw, provider, provider_name, model):
    with make_client(provider_name, gw) as client:
        exc = sdk_error(sdk_module(provider_name).PermissionDeniedError,
                        lambda: sdk_create(client, provider_name, model=model))
    check_sdk(exc, "mission_denied", provider_name)
    # The same identity by certificate is the same agent, with the same mission.
    answer = post(gw, ROUTE[provider_name], call_body(provider_name, model), key=None, spiffe_id=BOUND_SPIFFE_ID)
    check_response(answer, "mission_denied", provider_name)
    assert_not_forwarded(provider)


def test_403_approval_required_names_a_stable_approval_id(gw, provider):
    expected = approval_id("support-bot", "llm:send:openai:o3-mini")
    assert expected == "apr_" + hashlib.sha256(b"support-bot\nllm:send:openai:o3-mini").hexdigest()[:16]
    with openai_client(gw) as client:
        exc = sdk_error(openai.PermissionDeniedError, lambda: sdk_create(client, "openai", model="o3-mini"))
        again = sdk_error(openai.PermissionDeniedError, lambda: sdk_create(client, "openai", model="o3-mini"))
    message = check_sdk(exc, "approval_required", "openai")
    assert expected in message
    assert expected in check_sdk(again, "approval_required", "openai")
    # Another action under the same require_approval glob has its own id.
    other = post(gw, "/v1/chat/completions", call_body("openai", "o3"))
    assert approval_id("support-bot", "llm:send:openai:o3") in check_response(other, "approval_required", "openai")
    assert_not_forwarded(provider)


def test_approval_admits_exactly_the_approved_action(tight, provider):
    with openai_client(tight) as client:
        completion = sdk_create(client, "openai", model="o3-mini", text="approved")
        assert completion.choices[0].message.content == "Hello from fake openai: approved"
        assert [r.json()["model"] for r in provider.wait_for_requests(1)] == ["o3-mini"]
        # An expired approval admits nothing.
        exc = sdk_error(openai.PermissionDeniedError, lambda: sdk_create(client, "openai", model="o3-pro"))
    message = check_sdk(exc, "approval_required", "openai")
    assert approval_id("support-bot", "llm:send:openai:o3-pro") in message
    # The approval is for exactly o3-mini: o3-mini-high is still held.
    held = post(tight, "/v1/chat/completions", call_body("openai", "o3-mini-high"))
    assert approval_id("support-bot", "llm:send:openai:o3-mini-high") in check_response(
        held, "approval_required", "openai")
    time.sleep(0.2)
    assert len(provider.requests) == 1


def test_403_approval_required_anthropic_shape(tight, provider):
    with anthropic_client(tight) as client:
        exc = sdk_error(anthropic.PermissionDeniedError,
                        lambda: sdk_create(client, "anthropic", model="claude-opus-4-1"))
    message = check_sdk(exc, "approval_required", "anthropic")
    assert approval_id("support-bot", "llm:send:anthropic:claude-opus-4-1") in message
    assert_not_forwarded(provider)


def test_403_threat_detected_blocked_destination(gw, provider):
    with openai_client(gw) as client:
        exc = sdk_error(openai.PermissionDeniedError,
                        lambda: sdk_create(client, "openai", model="gpt-3.5-turbo-instruct"))
    check_sdk(exc, "threat_detected", "openai")
    answer = post(gw, "/v1/chat/completions", call_body("openai", "gpt-3.5-turbo-instruct"), key=None,
                  spiffe_id=BOUND_SPIFFE_ID)
    check_response(answer, "threat_detected", "openai")
    assert_not_forwarded(provider)


def test_403_threat_detected_anthropic_shape(tight, provider):
    with anthropic_client(tight) as client:
        exc = sdk_error(anthropic.PermissionDeniedError,
                        lambda: sdk_create(client, "anthropic", model="claude-instant-1.2"))
    check_sdk(exc, "threat_detected", "anthropic")
    assert_not_forwarded(provider)


# -- 404 not_found / 405 method_not_allowed --------------------------------------

NOT_ROUTES = ["/v1/models", "//v1/messages", "/v1/./messages", "/v1/../v1/messages", "/v1%2Fmessages",
              "/v1/messages/", "/V1/messages", "/v1/messages%20", "/v1//chat/completions",
              "/v1/chat/completions/", "/v1/chat%2Fcompletions", "/", "/healthz"]


@pytest.mark.parametrize("target", NOT_ROUTES)
def test_404_unconfigured_paths_are_never_forwarded(gw, provider, target):
    status, headers, body = raw_exchange(gw, raw_request("POST", target, call_body("anthropic")))
    check_error(status, headers, body, "not_found", "generic", decision=None)
    assert_not_forwarded(provider, 0.1)


def test_404_get_on_an_unknown_path(gw, provider):
    status, headers, body = raw_exchange(gw, raw_request("GET", "/v1/models"))
    check_error(status, headers, body, "not_found", "generic", decision=None)
    status, headers, body = raw_exchange(gw, raw_request("GET", "/v1/models", key=None))
    check_error(status, headers, body, "not_found", "generic", decision=None)
    assert_not_forwarded(provider, 0.1)


@pytest.mark.parametrize("provider_name", PROVIDERS)
def test_404_sdk_models_list(gw, provider, provider_name):
    with make_client(provider_name, gw) as client:
        exc = sdk_error(sdk_module(provider_name).NotFoundError, lambda: client.models.list())
    check_sdk(exc, "not_found", "generic", decision=None)
    assert_not_forwarded(provider)


def test_404_for_a_provider_the_config_leaves_out(tmp_path, pki, provider, upstream_tls):
    """SPEC section 3: a missing provider's path answers 404, before identity, never forwarded."""
    config = provider_config(provider, upstream_tls)
    del config["providers"]["openai"]
    only_anthropic = Gateway(str(tmp_path), pki, config, policy()).start()
    try:
        for key in (API_KEY, None):
            status, headers, body = raw_exchange(only_anthropic,
                                                 raw_request("POST", "/v1/chat/completions", call_body("openai"), key))
            check_error(status, headers, body, "not_found", "generic", decision=None)
        assert_not_forwarded(provider, 0.1)
        with anthropic_client(only_anthropic) as client:
            assert sdk_create(client, "anthropic").content
    finally:
        only_anthropic.stop()


@pytest.mark.parametrize("provider_name", PROVIDERS)
@pytest.mark.parametrize("method", ["GET", "PUT", "DELETE"])
def test_405_other_methods_on_provider_routes(gw, provider, provider_name, method):
    answer = post(gw, ROUTE[provider_name], call_body(provider_name) if method == "PUT" else b"", method=method)
    check_error(answer.status_code, answer.headers, answer.content, "method_not_allowed", provider_name,
                decision=None)
    assert_not_forwarded(provider, 0)


@pytest.mark.parametrize("provider_name", PROVIDERS)
def test_405_sdk(gw, provider, provider_name):
    module = sdk_module(provider_name)
    with make_client(provider_name, gw) as client:
        exc = sdk_error(module.APIStatusError, lambda: client.get(sdk_path(provider_name), cast_to=object))
    assert exc.status_code == 405
    check_sdk(exc, "method_not_allowed", provider_name, decision=None)
    assert_not_forwarded(provider)


# -- 413 request_too_large ---------------------------------------------------------


def _padded_body(provider_name, size):
    """A valid call body of exactly ``size`` bytes."""
    base = call_body(provider_name, text="")
    body = call_body(provider_name, text="x" * (size - len(base)))
    assert len(body) == size
    return body


@pytest.mark.parametrize("provider_name", PROVIDERS)
def test_413_content_length_over_the_limit(tight, provider, provider_name):
    with make_client(provider_name, tight) as client:
        exc = sdk_error(sdk_module(provider_name).APIStatusError,
                        lambda: sdk_create(client, provider_name, text="x" * (2 * SMALL_LIMIT)))
    check_sdk(exc, "request_too_large", provider_name)
    answer = post(tight, ROUTE[provider_name], _padded_body(provider_name, SMALL_LIMIT + 1))
    check_response(answer, "request_too_large", provider_name)
    # A body far over the limit: the agent still reads the 413, not a reset.
    answer = post(tight, ROUTE[provider_name], _padded_body(provider_name, 1_000_000))
    check_response(answer, "request_too_large", provider_name)
    assert_not_forwarded(provider)
    # At exactly the limit the call is served.
    answer = post(tight, ROUTE[provider_name], _padded_body(provider_name, SMALL_LIMIT))
    assert answer.status_code == 200, answer.text
    assert len(provider.wait_for_requests(1)[0].body) == SMALL_LIMIT


@pytest.mark.parametrize("provider_name", PROVIDERS)
def test_413_chunked_upload_over_the_limit(tight, provider, provider_name):
    body = _padded_body(provider_name, 3 * SMALL_LIMIT)
    pieces = [body[i:i + 500] for i in range(0, len(body), 500)]
    with http_client(tight) as http:
        answer = http.post(tight.url + ROUTE[provider_name], content=iter(pieces),
                           headers={"x-mitrity-api-key": API_KEY, "content-type": "application/json"})
    assert answer.request.headers.get("transfer-encoding") == "chunked"
    check_response(answer, "request_too_large", provider_name)
    big = _padded_body(provider_name, 1_000_000)
    with http_client(tight) as http:
        answer = http.post(tight.url + ROUTE[provider_name],
                           content=iter([big[i:i + 65536] for i in range(0, len(big), 65536)]),
                           headers={"x-mitrity-api-key": API_KEY, "content-type": "application/json"})
    check_response(answer, "request_too_large", provider_name)
    assert_not_forwarded(provider)
    # A chunked upload under the limit is served and arrives whole.
    small = call_body(provider_name, text="chunked")
    with http_client(tight) as http:
        answer = http.post(tight.url + ROUTE[provider_name], content=iter([small[:10], small[10:]]),
                           headers={"x-mitrity-api-key": API_KEY, "content-type": "application/json"})
    assert answer.status_code == 200, answer.text
    assert provider.wait_for_requests(1)[0].body == small


# -- 431 headers_too_large ------------------------------------------------------------


@pytest.mark.parametrize("provider_name", PROVIDERS)
def test_431_sdk_with_a_20k_header(gw, provider, provider_name):
    big = {"x-big-header": "a" * 20_000}
    with make_client(provider_name, gw, headers=big) as client:
        exc = sdk_error(sdk_module(provider_name).APIStatusError, lambda: sdk_create(client, provider_name))
    assert exc.status_code == 431
    headers = exc.response.headers
    assert headers.get("x-mitrity-reason") == "headers_too_large"
    assert headers.get("x-request-id", "").startswith("req_")
    assert headers.get("x-mitrity-decision") == "blocked"
    error = exc.response.json()["error"]
    assert error["type"] == "invalid_request_error" and error["message"]
    assert_not_forwarded(provider)


@pytest.mark.parametrize("provider_name", PROVIDERS)
def test_431_on_a_provider_route_uses_the_shared_body(gw, provider, provider_name):
    """Oversized headers are refused while the request is still being parsed,
    before it has a route: the answer is the body both SDKs read (documented
    in docs/configuration.md), and nothing is forwarded."""
    answer = post(gw, ROUTE[provider_name], call_body(provider_name), headers={"x-big-header": "a" * 20_000})
    check_response(answer, "headers_too_large", "generic")
    assert_not_forwarded(provider)


# -- 502 upstream_error -----------------------------------------------------------------


def test_502_provider_unreachable(broken_upstreams, provider):
    with anthropic_client(broken_upstreams) as client:
        exc = sdk_error(anthropic.InternalServerError, lambda: sdk_create(client, "anthropic"))
    # The request was admitted (the verdict is the request phase's); the provider failed.
    check_sdk(exc, "upstream_error", "anthropic", decision="allowed")
    answer = post(broken_upstreams, "/v1/messages", call_body("anthropic"))
    check_response(answer, "upstream_error", "anthropic", decision="allowed")


def test_502_upstream_tls_failure(broken_upstreams, provider):
    """No upstream.ca_file: the fake provider's certificate is not trusted."""
    with openai_client(broken_upstreams) as client:
        exc = sdk_error(openai.InternalServerError, lambda: sdk_create(client, "openai"))
    check_sdk(exc, "upstream_error", "openai", decision="allowed")
    answer = post(broken_upstreams, "/v1/chat/completions", call_body("openai", stream=True))
    check_response(answer, "upstream_error", "openai", decision="allowed")
    assert_not_forwarded(provider)  # the handshake failed: no request was ever sent


@pytest.mark.parametrize("provider_name", PROVIDERS)
def test_502_answer_cut_mid_body(gw, provider, provider_name):
    """The provider resets the connection halfway through a non-streamed answer."""
    provider.script(reply_text="a long answer " * 50, reset_after_events=1)
    with make_client(provider_name, gw) as client:
        exc = sdk_error(sdk_module(provider_name).InternalServerError, lambda: sdk_create(client, provider_name))
    check_sdk(exc, "upstream_error", provider_name, decision="allowed")


@pytest.mark.parametrize("provider_name", PROVIDERS)
def test_502_for_an_answer_nested_too_deep_to_read(gw, provider, provider_name):
    """A 2xx answer the gateway cannot parse is the provider's fault: 502, not a 500 of the gateway's."""
    provider.script(raw_body=b'{"usage": ' + b"[" * 100_000 + b"]" * 100_000 + b"}")
    with make_client(provider_name, gw) as client:
        exc = sdk_error(sdk_module(provider_name).InternalServerError, lambda: sdk_create(client, provider_name))
    check_sdk(exc, "upstream_error", provider_name, decision="allowed")


def test_502_still_denies_first(broken_upstreams, provider):
    """Decisions come before forwarding: a broken upstream does not turn a denial into a 502."""
    answer = post(broken_upstreams, "/v1/messages", call_body("anthropic", "claude-opus-4-1"))
    check_response(answer, "mission_denied", "anthropic")


# -- 503 policy_unavailable ----------------------------------------------------------------


@pytest.mark.parametrize("provider_name", PROVIDERS)
def test_503_no_valid_policy(no_policy, provider, provider_name):
    assert no_policy.admin("/healthz")[0] == 200
    status, document = no_policy.admin("/readyz")
    assert status == 503, document
    with make_client(provider_name, no_policy) as client:
        exc = sdk_error(sdk_module(provider_name).InternalServerError, lambda: sdk_create(client, provider_name))
    check_sdk(exc, "policy_unavailable", provider_name)
    if provider_name == "anthropic":
        assert isinstance(exc, anthropic.ServiceUnavailableError)
    assert_not_forwarded(provider)


# -- 504 upstream_timeout -------------------------------------------------------------------


@pytest.mark.parametrize("provider_name", PROVIDERS)
def test_504_provider_slower_than_read_timeout(tight, provider, provider_name):
    provider.script(delay_s=3)
    started = time.monotonic()
    with make_client(provider_name, tight) as client:
        exc = sdk_error(sdk_module(provider_name).InternalServerError, lambda: sdk_create(client, provider_name))
    assert time.monotonic() - started < 2.5  # read_timeout_s is 1
    check_sdk(exc, "upstream_timeout", provider_name, decision="allowed")
    if provider_name == "anthropic":
        assert isinstance(exc, anthropic.GatewayTimeoutError)
    assert len(provider.wait_for_requests(1)) == 1  # it was forwarded; the provider was silent


@pytest.mark.parametrize("provider_name", PROVIDERS)
def test_504_provider_stalls_mid_body(tight, provider, provider_name):
    provider.script(reply_text="a long answer " * 50, stall_after_events=1)
    with make_client(provider_name, tight) as client:
        exc = sdk_error(sdk_module(provider_name).InternalServerError, lambda: sdk_create(client, provider_name))
    check_sdk(exc, "upstream_timeout", provider_name, decision="allowed")
