"""Bad input of every kind gets a clear error, and nothing is lost (SPEC sections 5 and 6).

Malformed HTTP, silent and trickling clients, unknown client certificates, old
TLS versions, agents and providers that go away mid-stream, the privacy of the
log, and a burst of concurrent calls -- all through the real gunicorn process,
real TLS and the real SDKs against the fake provider.

Module-scoped private gateways (starting one takes seconds):
- ``tight``: 1 s handshake, header, body and upstream read timeouts, debug
  logging, ``identity.unknown_agent: allow`` and an admin token
  (``MITRITY_ADMIN_TOKEN=tok-123``);
- ``strict``: ``server.tls.client_cert: required``.
Everything else uses the shared session gateway, whose policy is not touched.
"""

import concurrent.futures
import json
import socket
import ssl
import threading
import time
import warnings

import anthropic
import httpx2 as httpx
import openai
import pytest

from gateway import certs
from tests.e2e.conftest import (API_KEY, PROVIDER_KEY, UNBOUND_KEY, UNBOUND_SPIFFE_ID, anthropic_client,
                                client_context, openai_client, policy, provider_config)
from tests.e2e.test_error_table import ALLOWED_MODEL, PROVIDERS, call_body
from tests.harness import BOUND_SPIFFE_ID, Gateway, deep_merge, read_response

pytestmark = pytest.mark.usefixtures("fresh_provider")

ADMIN_TOKEN = "tok-123"
ROUTE = {"anthropic": "/v1/messages", "openai": "/v1/chat/completions"}


def make_client(provider, gw, **kwargs):
    return (anthropic_client if provider == "anthropic" else openai_client)(gw, **kwargs)


def sdk_create(client, provider, model=None, text="hello", **extra):
    model = ALLOWED_MODEL[provider] if model is None else model
    if provider == "anthropic":
        return client.messages.create(model=model, max_tokens=16, messages=[{"role": "user", "content": text}],
                                      **extra)
    return client.chat.completions.create(model=model, messages=[{"role": "user", "content": text}], **extra)


def answer_text(provider, answer):
    return answer.content[0].text if provider == "anthropic" else answer.choices[0].message.content


# -- raw TLS sockets ------------------------------------------------------------------


def tls_connect(gw, context=None, timeout=5.0):
    sock = socket.create_connection(("127.0.0.1", gw.port), timeout=timeout)
    try:
        return (context or client_context(gw.pki)).wrap_socket(sock, server_hostname="127.0.0.1")
    except BaseException:
        sock.close()
        raise




def closed_within(sock, seconds):
    """True when the peer closes (EOF or a reset/TLS error) within ``seconds``; a
    timeout means the connection is still open. Bytes received meanwhile are dropped."""
    deadline = time.monotonic() + seconds
    while True:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            return False
        sock.settimeout(remaining)
        try:
            if not sock.recv(65536):
                return True
        except socket.timeout:
            return False
        except (OSError, ValueError):  # reset, TLS alert, unexpected EOF
            return True


def trickle(sock, pieces, wait_s=0.2):
    """Send ``pieces`` one at a time, each followed by a wait of up to ``wait_s`` for the
    gateway to close: (whether it cut the connection, seconds from the first piece)."""
    started = time.monotonic()
    for piece in pieces:
        try:
            sock.sendall(piece)
        except OSError:
            return True, time.monotonic() - started
        if closed_within(sock, wait_s):
            return True, time.monotonic() - started
    return False, time.monotonic() - started


def chunked(body, size=64):
    out = b"".join(b"%x\r\n%s\r\n" % (len(body[i:i + size]), body[i:i + size]) for i in range(0, len(body), size))
    return out + b"0\r\n\r\n"


def head(*extra, target="/v1/messages"):
    lines = [f"POST {target} HTTP/1.1", "Host: 127.0.0.1", f"x-mitrity-api-key: {API_KEY}",
             "Content-Type: application/json", *extra]
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


BODY = call_body("anthropic", text="malformed")
MALFORMED = {
    "content-length-with-transfer-encoding":
        head(f"Content-Length: {len(BODY)}", "Transfer-Encoding: chunked") + chunked(BODY),
    "transfer-encoding-with-content-length":
        head("Transfer-Encoding: chunked", f"Content-Length: {len(BODY)}") + chunked(BODY),
    "two-different-content-lengths":
        head(f"Content-Length: {len(BODY)}", f"Content-Length: {len(BODY) + 1}") + BODY + b" ",
    "duplicate-identical-content-length":
        head(f"Content-Length: {len(BODY)}", f"Content-Length: {len(BODY)}") + BODY,
    "content-length-list": head(f"Content-Length: {len(BODY)}, {len(BODY)}") + BODY,
    "non-numeric-content-length": head("Content-Length: 12abc") + BODY,
    "negative-content-length": head("Content-Length: -1") + BODY,
    "obsolete-line-folding": head("X-Folded: first", " continued", f"Content-Length: {len(BODY)}") + BODY,
    "space-before-colon": head(f"Content-Length : {len(BODY)}") + BODY,
    "unsupported-transfer-coding": head("Transfer-Encoding: gzip") + BODY,
    "double-chunked": head("Transfer-Encoding: chunked, chunked") + chunked(BODY),
    "bad-chunk-size": head("Transfer-Encoding: chunked") + b"zz\r\n" + BODY + b"\r\n0\r\n\r\n",
    "chunk-longer-than-its-size": head("Transfer-Encoding: chunked") + b"4\r\n" + BODY + b"\r\n0\r\n\r\n",
}
OVERSIZED = {
    "request-line": b"POST /v1/messages?" + b"q" * 9000 + b" HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n",
    "one-20k-header": head("X-Big: " + "a" * 20_000, "Content-Length: 0"),
    "too-many-headers": head(*(f"X-Many-{i}: v" for i in range(150)), "Content-Length: 0"),
}


def check_plain_error(status, headers, body, want_status, code):
    assert status == want_status, body
    assert headers.get("x-mitrity-reason") == code
    assert headers.get("x-request-id", "").startswith("req_")
    assert headers.get("content-type", "").startswith("application/json")
    error = json.loads(body)["error"]
    assert error["type"] == "invalid_request_error"
    assert isinstance(error["message"], str) and error["message"]


def new_log(gw, since):
    return gw.log()[since:]


def assert_clean_log(text):
    """No traceback and no error line: a bad client is expected input, not a fault."""
    assert "Traceback" not in text
    errors = [line for line in text.splitlines() if "[ERROR]" in line or "[CRITICAL]" in line]
    assert not errors, "\n".join(errors)


@pytest.fixture(scope="module")
def gw(gateway):
    time.sleep(0.5)  # every worker has attached the policy segment, not only the one that answered /readyz
    return gateway


@pytest.mark.parametrize("kind", sorted(MALFORMED))
def test_malformed_http_gets_400_and_the_connection_is_closed(gw, provider, kind):
    log_start = len(gw.log())
    with tls_connect(gw) as sock:
        sock.sendall(MALFORMED[kind])
        status, headers, body = read_response(sock)
        check_plain_error(status, headers, body, 400, "invalid_request")
        assert closed_within(sock, 3), "the connection stayed open after malformed HTTP"
    time.sleep(0.1)
    assert provider.requests == []
    assert_clean_log(new_log(gw, log_start))


@pytest.mark.parametrize("kind", sorted(OVERSIZED))
def test_oversized_request_line_or_headers_get_431(gw, provider, kind):
    log_start = len(gw.log())
    with tls_connect(gw) as sock:
        sock.sendall(OVERSIZED[kind])
        status, headers, body = read_response(sock)
        check_plain_error(status, headers, body, 431, "headers_too_large")
        assert closed_within(sock, 3)
    assert provider.requests == []
    assert_clean_log(new_log(gw, log_start))


def test_a_good_request_after_malformed_ones_on_new_connections(gw, provider):
    """Malformed input costs only its own connection."""
    for kind in ("bad-chunk-size", "two-different-content-lengths"):
        with tls_connect(gw) as sock:
            sock.sendall(MALFORMED[kind])
            assert read_response(sock)[0] == 400
    with anthropic_client(gw) as client:
        assert answer_text("anthropic", sdk_create(client, "anthropic", text="after")) == \
            "Hello from fake anthropic: after"
    assert len(provider.wait_for_requests(1)) == 1


def test_keep_alive_then_malformed_second_request(gw, provider):
    """A good request then a malformed one on the same connection: the first is
    answered normally, the second gets 400 and the connection closes."""
    good = head(f"Content-Length: {len(BODY)}") + BODY
    with tls_connect(gw) as sock:
        sock.sendall(good)
        status, headers, body = read_response(sock)
        assert status == 200, body
        sock.sendall(MALFORMED["content-length-with-transfer-encoding"])
        status, headers, body = read_response(sock)
        check_plain_error(status, headers, body, 400, "invalid_request")
        assert closed_within(sock, 3)
    time.sleep(0.1)
    assert len(provider.requests) == 1


# -- the tight gateway: short timeouts, debug log, unknown_agent allow, admin token ----------


class TokenGateway(Gateway):
    """The harness polls /healthz and /readyz while starting; with an admin
    token they need it. Pass ``headers={}`` to call without one."""

    def admin(self, path, headers=None):
        if headers is None:
            headers = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
        return super().admin(path, headers)


@pytest.fixture(scope="module")
def tight(tmp_path_factory, pki, provider, upstream_tls):
    config = deep_merge(provider_config(provider, upstream_tls), {
        "server": {"tls": {"handshake_timeout_s": 1}, "header_timeout_s": 1, "body_timeout_s": 1,
                   "log_level": "debug"},
        "upstream": {"read_timeout_s": 1},
        "identity": {"unknown_agent": "allow"},
    })
    gw = TokenGateway(str(tmp_path_factory.mktemp("tight")), pki, config, policy(),
                      env={"MITRITY_ADMIN_TOKEN": ADMIN_TOKEN})
    gw.start()
    time.sleep(0.5)
    yield gw
    gw.stop()


@pytest.fixture(scope="module")
def strict(tmp_path_factory, pki, provider, upstream_tls):
    config = deep_merge(provider_config(provider, upstream_tls),
                         {"server": {"tls": {"client_cert": "required"}, "header_timeout_s": 2}})
    gw = Gateway(str(tmp_path_factory.mktemp("strict")), pki, config, policy())
    gw.start()
    time.sleep(0.5)
    yield gw
    gw.stop()


def test_silent_clients_are_dropped_after_the_handshake_timeout(tight, provider):
    log_start = len(tight.log())
    started = time.monotonic()
    silent = [socket.create_connection(("127.0.0.1", tight.port), timeout=5) for _ in range(3)]
    # A TLS record header announcing a ClientHello, and then nothing more.
    partial = socket.create_connection(("127.0.0.1", tight.port), timeout=5)
    partial.sendall(b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03")
    try:
        # Meanwhile the gateway serves others.
        with anthropic_client(tight) as client:
            assert answer_text("anthropic", sdk_create(client, "anthropic", text="meanwhile")) == \
                "Hello from fake anthropic: meanwhile"
        for sock in silent + [partial]:
            assert closed_within(sock, 3.5 - (time.monotonic() - started)), \
                "a client that never finished its TLS handshake was not dropped"
        assert time.monotonic() - started < 3.5
    finally:
        for sock in silent + [partial]:
            sock.close()
    # Still serving afterwards.
    with openai_client(tight) as client:
        assert sdk_create(client, "openai", text="after").choices
    assert_clean_log(new_log(tight, log_start))


def test_header_trickle_is_cut_after_the_header_timeout(tight, provider):
    log_start = len(tight.log())
    with tls_connect(tight) as sock:
        cut, elapsed = trickle(sock, [b"POST /v1/messages HTTP/1.1\r\n"]
                               + [f"X-Slow-{i}: v\r\n".encode() for i in range(40)])
    assert cut, "a client trickling its headers was never cut"
    assert elapsed < 3.0, elapsed
    assert provider.requests == []
    time.sleep(0.2)
    assert_clean_log(new_log(tight, log_start))


def test_body_trickle_is_cut_after_the_body_timeout(tight, provider):
    body = call_body("anthropic", text="trickled " * 20)
    log_start = len(tight.log())
    with tls_connect(tight) as sock:
        sock.sendall(head(f"Content-Length: {len(body)}"))
        cut, elapsed = trickle(sock, [bytes([byte]) for byte in body])
    assert cut, "a client trickling its body was never cut"
    assert elapsed < 3.0, elapsed
    time.sleep(0.3)
    assert provider.requests == []
    # The worker that cut it keeps serving.
    for _ in range(4):
        with anthropic_client(tight) as client:
            assert sdk_create(client, "anthropic").content
    assert_clean_log(new_log(tight, log_start))


def test_chunked_body_trickle_is_cut_too(tight, provider):
    body = call_body("openai", text="trickled chunks " * 10)
    log_start = len(tight.log())
    with tls_connect(tight) as sock:
        sock.sendall(head("Transfer-Encoding: chunked", target="/v1/chat/completions"))
        # One chunk at a time, never the terminating 0-chunk.
        cut, elapsed = trickle(sock, [chunked(body[i:i + 4])[:-5] for i in range(0, len(body), 4)], 0.25)
    assert cut and elapsed < 3.0, elapsed
    time.sleep(0.3)
    assert provider.requests == []
    assert_clean_log(new_log(tight, log_start))


# -- client certificates and TLS versions -----------------------------------------------------


@pytest.fixture(scope="module")
def rogue_cert(tmp_path_factory):
    """A client certificate for the bound SPIFFE ID, signed by a CA the gateway does not trust."""
    directory = str(tmp_path_factory.mktemp("rogue"))
    ca = certs.create_ca(directory, name="Rogue CA")
    return certs.issue_client_cert(ca, directory, BOUND_SPIFFE_ID)


@pytest.fixture(scope="module")
def foreign_domain_cert(tmp_path_factory, pki):
    return certs.issue_client_cert(pki.ca, str(tmp_path_factory.mktemp("foreign")),
                                   "spiffe://evil.example/ns/support/sa/support-bot")


def context_with(pki, issued):
    context = client_context(pki)
    if issued is not None:
        context.load_cert_chain(issued.cert_path, issued.key_path)
    return context


def post_with_context(gw, context, provider_name="anthropic", key=API_KEY):
    headers = {"content-type": "application/json"}
    if key:
        headers["x-mitrity-api-key"] = key
    with httpx.Client(verify=context, timeout=10, trust_env=False) as http:
        return http.post(gw.url + ROUTE[provider_name], content=call_body(provider_name), headers=headers)


TLS_REFUSED = (httpx.ConnectError, httpx.ReadError, httpx.RemoteProtocolError, httpx.WriteError)


def test_unknown_ca_certificate_with_optional_client_certs_fails_the_handshake(gw, provider, rogue_cert):
    """Documented behaviour (client_cert: optional): a certificate that does not
    verify against client_ca_file fails the TLS handshake -- it is not silently
    downgraded to "no certificate", so not even a valid API key on that
    connection is served."""
    with pytest.raises(TLS_REFUSED):
        post_with_context(gw, context_with(gw.pki, rogue_cert), key=API_KEY)
    with pytest.raises(TLS_REFUSED):
        post_with_context(gw, context_with(gw.pki, rogue_cert), key=None)
    time.sleep(0.1)
    assert provider.requests == []
    # Without any certificate, the API key alone is fine (optional means optional).
    assert post_with_context(gw, context_with(gw.pki, None)).status_code == 200


def test_required_client_certs_refuse_clients_without_one(strict, provider):
    with anthropic_client(strict) as client:
        with pytest.raises(anthropic.APIConnectionError):
            sdk_create(client, "anthropic")
    with pytest.raises(TLS_REFUSED):
        post_with_context(strict, context_with(strict.pki, None), provider_name="openai")
    time.sleep(0.1)
    assert provider.requests == []


def test_required_client_certs_refuse_an_unknown_ca(strict, provider, rogue_cert):
    with pytest.raises(TLS_REFUSED):
        post_with_context(strict, context_with(strict.pki, rogue_cert))
    time.sleep(0.1)
    assert provider.requests == []


def test_required_client_certs_serve_a_valid_bound_certificate(strict, provider):
    with anthropic_client(strict, key=None, spiffe_id=BOUND_SPIFFE_ID) as client:
        assert answer_text("anthropic", sdk_create(client, "anthropic", text="mtls")) == \
            "Hello from fake anthropic: mtls"
    with openai_client(strict, key=None, spiffe_id=BOUND_SPIFFE_ID) as client:
        assert answer_text("openai", sdk_create(client, "openai", text="mtls")) == "Hello from fake openai: mtls"
    assert len(provider.wait_for_requests(2)) == 2


def test_required_client_certs_foreign_trust_domain_is_no_identity(strict, provider, foreign_domain_cert):
    """The certificate verifies (same CA), so the handshake succeeds, but its
    trust domain is not configured: no identity, 401."""
    answer = post_with_context(strict, context_with(strict.pki, foreign_domain_cert), key=None)
    assert answer.status_code == 401
    assert answer.headers["x-mitrity-reason"] == "identity_missing"
    time.sleep(0.1)
    assert provider.requests == []


def _allow_tls_1_1(context):
    with warnings.catch_warnings():  # TLSVersion.TLSv1 and TLSv1_1 are deprecated, which is the point
        warnings.simplefilter("ignore", DeprecationWarning)
        context.minimum_version = ssl.TLSVersion.TLSv1
        context.maximum_version = ssl.TLSVersion.TLSv1_1
    context.set_ciphers("DEFAULT:@SECLEVEL=0")


def _local_tls11_works(directory):
    """Can this OpenSSL negotiate TLS 1.1 at all (client and server side)?"""
    ca = certs.create_ca(directory)
    server = certs.issue_server_cert(ca, directory, ["127.0.0.1"])
    server_ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server_ctx.load_cert_chain(server.cert_path, server.key_path)
    client_ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    client_ctx.load_verify_locations(ca.cert_path)
    for ctx in (server_ctx, client_ctx):
        try:
            _allow_tls_1_1(ctx)
        except (ValueError, ssl.SSLError):
            return False
    listener = socket.create_server(("127.0.0.1", 0))
    result = {}

    def serve():
        conn, _ = listener.accept()
        try:
            with server_ctx.wrap_socket(conn, server_side=True) as tls:
                result["server"] = tls.version()
        except (OSError, ssl.SSLError):
            conn.close()

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        with socket.create_connection(listener.getsockname(), timeout=3) as sock:
            with client_ctx.wrap_socket(sock, server_hostname="127.0.0.1") as tls:
                return tls.version() == "TLSv1.1"
    except (OSError, ssl.SSLError):
        return False
    finally:
        thread.join(3)
        listener.close()


def test_tls_1_1_and_lower_are_refused(gw, tmp_path):
    if not _local_tls11_works(str(tmp_path)):
        pytest.skip("the local OpenSSL cannot negotiate TLS 1.1 even with itself")
    context = client_context(gw.pki)
    _allow_tls_1_1(context)
    with pytest.raises(ssl.SSLError, match="PROTOCOL_VERSION|UNSUPPORTED_PROTOCOL|protocol version"):
        with tls_connect(gw, context) as sock:
            sock.sendall(b"GET /v1/models HTTP/1.1\r\nHost: x\r\n\r\n")
            sock.recv(1)


@pytest.mark.parametrize("version", ["TLSv1_2", "TLSv1_3"])
def test_tls_1_2_and_1_3_work(gw, version):
    context = client_context(gw.pki)
    context.minimum_version = context.maximum_version = getattr(ssl.TLSVersion, version)
    with tls_connect(gw, context) as sock:
        assert sock.version() == version.replace("_", ".")
        sock.sendall(head(f"Content-Length: {len(BODY)}", "Connection: close") + BODY)
        status, headers, body = read_response(sock)
    assert status == 200, body
    assert json.loads(body)["content"][0]["text"] == "Hello from fake anthropic: malformed"


# -- identity.unknown_agent: allow ----------------------------------------------------------------


@pytest.mark.parametrize("provider_name", PROVIDERS)
def test_unknown_agent_allow_serves_an_unbound_key(tight, provider, provider_name):
    with make_client(provider_name, tight, key=UNBOUND_KEY) as client:
        answer = sdk_create(client, provider_name, text="unbound")
        # No mission restriction: even an action support-bot would need an approval for.
        other = sdk_create(client, provider_name, model="o3-mini" if provider_name == "openai" else "claude-opus-4-1")
    assert answer_text(provider_name, answer) == f"Hello from fake {provider_name}: unbound"
    assert answer_text(provider_name, other)
    received = provider.wait_for_requests(2)
    assert len(received) == 2
    for request in received:
        assert not [n for n, _ in request.headers if n.lower().startswith("x-mitrity-")]


def test_unknown_agent_allow_serves_an_unbound_certificate(tight, provider):
    with anthropic_client(tight, key=None, spiffe_id=UNBOUND_SPIFFE_ID) as client:
        assert answer_text("anthropic", sdk_create(client, "anthropic", text="cert")) == \
            "Hello from fake anthropic: cert"
    assert len(provider.wait_for_requests(1)) == 1


def test_unknown_agent_allow_still_applies_threat_intel_and_bound_missions(tight, provider):
    with openai_client(tight, key=UNBOUND_KEY) as client:
        with pytest.raises(openai.PermissionDeniedError) as caught:
            sdk_create(client, "openai", model="gpt-3.5-turbo-instruct")
    assert caught.value.response.headers["x-mitrity-reason"] == "threat_detected"
    assert caught.value.body["code"] == "threat_detected"
    # A bound agent keeps its mission.
    with anthropic_client(tight) as client:
        with pytest.raises(anthropic.PermissionDeniedError) as caught:
            sdk_create(client, "anthropic", model="claude-opus-4-1")
    assert caught.value.response.headers["x-mitrity-reason"] == "mission_denied"
    # And no identity at all is still 401.
    with anthropic_client(tight, key=None) as client:
        with pytest.raises(anthropic.AuthenticationError):
            sdk_create(client, "anthropic")
    time.sleep(0.2)
    assert provider.requests == []


# -- admin listener ------------------------------------------------------------------------------


def test_admin_health_and_readiness(gw):
    assert gw.admin("/healthz") == (200, {"status": "ok"})
    status, document = gw.admin("/readyz")
    assert status == 200
    assert isinstance(document["policy_revision"], str) and document["policy_revision"]
    assert isinstance(document["policy_age_s"], (int, float)) and document["policy_age_s"] >= 0
    status, document = gw.admin("/no-such-admin-route")
    assert status == 404
    assert document["error"]["type"] == "not_found_error"


def test_admin_token_is_required_when_set(tight):
    good = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
    assert tight.admin("/healthz", good)[0] == 200
    status, document = tight.admin("/readyz", good)
    assert status == 200
    assert document["policy_revision"] == "test.1"
    assert isinstance(document["policy_age_s"], (int, float)) and document["policy_age_s"] >= 0
    content_type, samples, _ = tight.metrics(good)
    assert content_type.startswith("text/plain") and samples
    for path in ("/healthz", "/readyz", "/metrics", "/llm-usage/records", "/llm-usage/summary?group_by=model",
                 "/llm-usage/bom"):
        for headers in ({}, {"Authorization": "Bearer tok-124"}, {"Authorization": "Bearer "},
                        {"Authorization": "Basic dG9rLTEyMw=="}, {"Authorization": ADMIN_TOKEN},
                        {"Authorization": f"Bearer {ADMIN_TOKEN}x"}):
            status, _ = tight.admin(path, headers)
            assert status == 401, (path, headers)
    assert tight.admin("/no-such-admin-route", good)[0] == 404
    assert tight.admin("/no-such-admin-route", {})[0] == 401  # no route is revealed without the token


def test_admin_listener_does_not_serve_the_data_plane(gw, provider):
    status, _ = gw.admin("/v1/messages")
    assert status == 404
    assert provider.requests == []


# -- streams cut on either side ----------------------------------------------------------------


def test_agent_disconnect_mid_stream_releases_the_upstream_connection(gw, provider):
    provider.script(chunks=[f"piece{i} " for i in range(10)], chunk_delay_s=0.5)
    closed_before = provider.connections_closed
    body = call_body("anthropic", stream=True)
    with httpx.Client(verify=client_context(gw.pki), timeout=10, trust_env=False) as http:
        with http.stream("POST", gw.url + "/v1/messages", content=body,
                         headers={"x-mitrity-api-key": API_KEY, "content-type": "application/json"}) as answer:
            assert answer.status_code == 200
            for line in answer.iter_lines():
                if "text_delta" in line:
                    break
    # The agent is gone; the gateway must drop the provider's connection, not let it run to the end.
    connection_id = provider.wait_for_requests(1)[0].connection_id
    provider.wait_for(lambda: provider.connections_closed > closed_before, timeout=4)
    sent = sum(1 for kind, conn in provider.events if kind == "event" and conn == connection_id)
    assert sent < 3 + 10 + 3, "the provider streamed to the end: the upstream connection was not released"
    # And the gateway carries on.
    with anthropic_client(gw) as client:
        assert sdk_create(client, "anthropic").content


def sse_events(raw):
    """Split an SSE byte stream into (event name, data) pairs."""
    events = []
    for block in raw.replace(b"\r\n", b"\n").split(b"\n\n"):
        if not block.strip():
            continue
        name, data = None, []
        for line in block.decode().split("\n"):
            if line.startswith("event:"):
                name = line[6:].strip()
            elif line.startswith("data:"):
                data.append(line[5:].strip())
        events.append((name, "\n".join(data)))
    return events


def stream_raw(gw, provider_name, text="cut"):
    body = call_body(provider_name, text=text, stream=True)
    started = time.monotonic()
    with httpx.Client(verify=client_context(gw.pki), timeout=10, trust_env=False) as http:
        with http.stream("POST", gw.url + ROUTE[provider_name], content=body,
                         headers={"x-mitrity-api-key": API_KEY, "content-type": "application/json"}) as answer:
            assert answer.status_code == 200
            assert answer.headers["x-mitrity-decision"] == "allowed"
            raw = b"".join(answer.iter_raw())
    return sse_events(raw), time.monotonic() - started


def check_cut_stream(events, provider_name, code, provider_events=3):
    before, last = events[:-1], events[-1]
    assert len(before) == provider_events, events
    if provider_name == "anthropic":
        assert [name for name, _ in before] == ["message_start", "content_block_start", "ping"]
        assert last[0] == "error"
        error = json.loads(last[1])
        assert error == {"type": "error", "error": {"type": "api_error", "message": error["error"]["message"]}}
    else:
        assert json.loads(before[0][1])["choices"][0]["delta"]["role"] == "assistant"
        assert all(json.loads(data)["object"] == "chat.completion.chunk" for _, data in before)
        error = json.loads(last[1])
        assert error == {"error": {"message": error["error"]["message"], "type": "api_error", "param": None,
                                   "code": code}}
        assert "[DONE]" not in [data for _, data in events]
    assert error["error"]["message"]


@pytest.mark.parametrize("provider_name", PROVIDERS)
def test_provider_reset_mid_stream_ends_with_an_error_event(gw, provider, provider_name):
    provider.script(chunks=["one ", "two ", "three ", "four"], reset_after_events=3)
    events, _ = stream_raw(gw, provider_name)
    check_cut_stream(events, provider_name, "upstream_error")


@pytest.mark.parametrize("provider_name", PROVIDERS)
def test_provider_stall_mid_stream_ends_with_a_timeout_event(tight, provider, provider_name):
    provider.script(chunks=["one ", "two ", "three ", "four"], stall_after_events=3)
    events, elapsed = stream_raw(tight, provider_name)
    check_cut_stream(events, provider_name, "upstream_timeout")
    assert elapsed < 4, elapsed  # read_timeout_s is 1


def test_sdks_raise_on_the_cut_stream(gw, provider):
    provider.script(chunks=["one ", "two ", "three "], reset_after_events=4)
    with anthropic_client(gw) as client:
        seen = []
        with pytest.raises(anthropic.APIStatusError) as caught:
            with client.messages.stream(model="claude-sonnet-4-5", max_tokens=16,
                                        messages=[{"role": "user", "content": "x"}]) as stream:
                for text in stream.text_stream:
                    seen.append(text)
    assert seen == ["one "]
    assert caught.value.body["error"]["type"] == "api_error"
    provider.script(chunks=["one ", "two ", "three "], reset_after_events=3)
    with openai_client(gw) as client:
        seen = []
        with pytest.raises(openai.APIError) as caught:
            for chunk in client.chat.completions.create(model="gpt-4o-mini", stream=True,
                                                        messages=[{"role": "user", "content": "x"}]):
                seen.append(chunk.choices[0].delta.content)
    assert seen == ["", "one ", "two "]
    assert caught.value.body["code"] == "upstream_error"


# -- privacy of the log ----------------------------------------------------------------------------

CANARY_PROMPT = "The quokka canary sings at midnight 7f3a9c."
CANARY_ANSWER = "The platypus canary answers at dawn 4e81b2."
BEARER = "sk-provider-bearer-canary-55aa"


def test_log_holds_no_content_and_no_keys(tight, provider):
    assert "DEBUG" in tight.log(), "the tight gateway should log at debug level"
    log_start = len(tight.log())
    provider.script(reply_text=CANARY_ANSWER)
    with anthropic_client(tight, headers={"authorization": f"Bearer {BEARER}"}) as client:
        assert answer_text("anthropic", sdk_create(client, "anthropic", text=CANARY_PROMPT)) == CANARY_ANSWER
        with pytest.raises(anthropic.PermissionDeniedError):  # mission_denied, with the canary in the prompt
            sdk_create(client, "anthropic", model="claude-opus-4-1", text=CANARY_PROMPT)
        provider.script(status=500, error_body={"type": "error", "error": {"type": "api_error",
                                                                           "message": CANARY_ANSWER}})
        with pytest.raises(anthropic.InternalServerError):  # a provider error, passed through
            sdk_create(client, "anthropic", text=CANARY_PROMPT)
        provider.script(chunks=CANARY_ANSWER.split(" "), reset_after_events=5)
        with pytest.raises(anthropic.APIStatusError):  # a stream cut by the provider
            with client.messages.stream(model="claude-sonnet-4-5", max_tokens=16,
                                        messages=[{"role": "user", "content": CANARY_PROMPT}]) as stream:
                list(stream.text_stream)
    provider.script(chunks=[w + " " for w in CANARY_ANSWER.split(" ")])
    with openai_client(tight, key=UNBOUND_KEY) as client:
        text = "".join(c.choices[0].delta.content or "" for c in sdk_create(client, "openai", text=CANARY_PROMPT,
                                                                             stream=True) if c.choices)
        assert text.strip() == CANARY_ANSWER
    with openai_client(tight, key=None) as client:
        with pytest.raises(openai.AuthenticationError):
            sdk_create(client, "openai", text=CANARY_PROMPT)
    # A body that is not JSON, quoting the canary and a key.
    with httpx.Client(verify=client_context(tight.pki), timeout=10, trust_env=False) as http:
        answer = http.post(tight.url + "/v1/messages", content=f'{{"model": "{CANARY_PROMPT} {API_KEY}'.encode(),
                           headers={"x-mitrity-api-key": API_KEY, "x-api-key": PROVIDER_KEY})
        assert answer.status_code == 400
    # Malformed HTTP whose offending lines carry the keys and the canary.
    for raw in (head(f"x-api-key: {PROVIDER_KEY}", f" {CANARY_PROMPT}", "Content-Length: 0"),
                head(f"X-Canary: {CANARY_PROMPT} {API_KEY}", "Content-Length: 1", "Content-Length: 2"),
                head(f"X-Big: {CANARY_PROMPT} {API_KEY} " + "a" * 20_000, "Content-Length: 0"),
                head("Transfer-Encoding: chunked") + f"{CANARY_PROMPT}\r\n{API_KEY}\r\n".encode()):
        with tls_connect(tight) as sock:
            sock.sendall(raw)
            assert read_response(sock)[0] in (400, 431)
    time.sleep(0.5)  # let the log lines land
    log = new_log(tight, log_start)
    assert "call req_" in log, "the calls were not logged at all"
    for secret in (CANARY_PROMPT, CANARY_ANSWER, "quokka", "platypus", PROVIDER_KEY, API_KEY, UNBOUND_KEY,
                   BEARER):
        assert secret not in log, f"the gateway log holds {secret!r}"
    assert_clean_log(log)


# -- concurrency ------------------------------------------------------------------------------------


def test_twenty_concurrent_sdk_calls_all_succeed(gw, provider):
    def one(i):
        provider_name = PROVIDERS[i % 2]
        with make_client(provider_name, gw) as client:
            if i % 4 < 2:
                return provider_name, i, answer_text(provider_name, sdk_create(client, provider_name, text=f"n{i}"))
            if provider_name == "anthropic":
                with client.messages.stream(model="claude-sonnet-4-5", max_tokens=16,
                                            messages=[{"role": "user", "content": f"n{i}"}]) as stream:
                    return provider_name, i, "".join(stream.text_stream)
            chunks = sdk_create(client, provider_name, text=f"n{i}", stream=True)
            return provider_name, i, "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)

    with concurrent.futures.ThreadPoolExecutor(max_workers=20) as pool:
        results = list(pool.map(one, range(20)))
    for provider_name, i, text in results:
        assert text == f"Hello from fake {provider_name}: n{i}"
    assert len(provider.wait_for_requests(20)) == 20
