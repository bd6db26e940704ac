"""Tests for gateway.headers: which headers cross the gateway, each way (SPEC section 5)."""

import pytest
from requests.structures import CaseInsensitiveDict

from gateway.headers import HOP_BY_HOP, request_headers, response_headers

IDENTITY = "x-mitrity-api-key"


def environ(**headers):
    """A WSGI environ as gunicorn builds it: HTTP_* for headers, CONTENT_TYPE/CONTENT_LENGTH bare."""
    env = {
        "REQUEST_METHOD": "POST", "PATH_INFO": "/v1/messages", "QUERY_STRING": "", "SERVER_NAME": "gw",
        "SERVER_PORT": "8443", "SERVER_PROTOCOL": "HTTP/1.1", "wsgi.url_scheme": "https",
        "REMOTE_ADDR": "127.0.0.1", "CONTENT_LENGTH": "42", "CONTENT_TYPE": "application/json",
    }
    for name, value in headers.items():
        env[name] = value
    return env


def forwarded(env, identity_header=IDENTITY):
    return request_headers(env, identity_header)


def names(headers):
    return [name for name, _ in headers]


def test_typical_anthropic_request():
    env = environ(HTTP_HOST="127.0.0.1:8443", HTTP_X_API_KEY="sk-ant-api03-secret",
                  HTTP_ANTHROPIC_VERSION="2023-06-01", HTTP_ANTHROPIC_BETA="prompt-caching-2024-07-31",
                  HTTP_USER_AGENT="Anthropic/Python 0.40.0", HTTP_ACCEPT="application/json",
                  HTTP_ACCEPT_ENCODING="gzip, deflate, br", HTTP_CONNECTION="keep-alive",
                  HTTP_X_MITRITY_API_KEY="mitrity-secret")
    headers = forwarded(env)
    assert dict(headers) == {
        "content-type": "application/json",
        "x-api-key": "sk-ant-api03-secret",
        "anthropic-version": "2023-06-01",
        "anthropic-beta": "prompt-caching-2024-07-31",
        "user-agent": "Anthropic/Python 0.40.0",
        "accept": "application/json",
        "accept-encoding": "identity",
    }
    assert len(headers) == len(dict(headers))


def test_provider_keys_are_forwarded_verbatim():
    env = environ(HTTP_AUTHORIZATION="Bearer sk-proj-AbC_123", HTTP_X_API_KEY="  sk-ant-key with spaces ",
                  HTTP_OPENAI_ORGANIZATION="org-XyZ")
    headers = dict(forwarded(env))
    assert headers["authorization"] == "Bearer sk-proj-AbC_123"
    assert headers["x-api-key"] == "  sk-ant-key with spaces "
    assert headers["openai-organization"] == "org-XyZ"


def test_identity_header_is_not_forwarded():
    headers = forwarded(environ(HTTP_X_MITRITY_API_KEY="k", HTTP_X_API_KEY="p"))
    assert "x-mitrity-api-key" not in names(headers)
    assert "k" not in [value for _, value in headers]


def test_custom_identity_header_is_not_forwarded():
    headers = forwarded(environ(HTTP_X_AGENT_KEY="mitrity-key", HTTP_X_API_KEY="p"), identity_header="x-agent-key")
    assert "x-agent-key" not in names(headers)
    assert dict(headers)["x-api-key"] == "p"


def test_identity_header_off_still_drops_x_mitrity_headers():
    headers = forwarded(environ(HTTP_X_MITRITY_API_KEY="k", HTTP_X_TRACE="t"), identity_header=None)
    assert names(headers).count("x-mitrity-api-key") == 0
    assert dict(headers)["x-trace"] == "t"


@pytest.mark.parametrize("key", ["HTTP_X_MITRITY_DECISION", "HTTP_X_MITRITY_REASON", "HTTP_X_MITRITY_AGENT",
                                 "HTTP_X_MITRITY_", "HTTP_X_MITRITY_ANYTHING_ELSE"])
def test_any_x_mitrity_header_is_not_forwarded(key):
    headers = forwarded(environ(**{key: "spoofed"}))
    assert not [n for n in names(headers) if n.startswith("x-mitrity-")]
    assert "spoofed" not in [value for _, value in headers]


@pytest.mark.parametrize("name", sorted(HOP_BY_HOP))
def test_hop_by_hop_headers_are_not_forwarded(name):
    key = "HTTP_" + name.upper().replace("-", "_")
    headers = forwarded(environ(**{key: "x", "HTTP_X_KEEP": "kept"}))
    assert name not in names(headers)
    assert dict(headers)["x-keep"] == "kept"


def test_all_standard_hop_by_hop_headers_are_known():
    assert {"connection", "keep-alive", "proxy-authenticate", "proxy-authorization", "te", "trailer",
            "transfer-encoding", "upgrade"} <= HOP_BY_HOP


def test_headers_named_in_connection_are_not_forwarded():
    env = environ(HTTP_CONNECTION="keep-alive, X-Hop-One ,x-hop-two,, ", HTTP_X_HOP_ONE="1", HTTP_X_HOP_TWO="2",
                  HTTP_X_END_TO_END="3")
    headers = dict(forwarded(env))
    assert "x-hop-one" not in headers
    assert "x-hop-two" not in headers
    assert headers["x-end-to-end"] == "3"


def test_connection_cannot_remove_the_accept_encoding_override():
    headers = forwarded(environ(HTTP_CONNECTION="accept-encoding", HTTP_ACCEPT_ENCODING="gzip"))
    assert ("accept-encoding", "identity") in headers


@pytest.mark.parametrize("key", ["HTTP_HOST", "CONTENT_LENGTH", "HTTP_CONTENT_LENGTH", "HTTP_EXPECT"])
def test_host_and_framing_are_not_forwarded(key):
    headers = forwarded(environ(**{key: "100-continue" if key == "HTTP_EXPECT" else "evil.example"}))
    assert not {"host", "content-length", "expect"} & set(names(headers))


def test_accept_encoding_becomes_identity():
    for env in (environ(HTTP_ACCEPT_ENCODING="gzip, br"), environ()):
        headers = forwarded(env)
        assert [value for name, value in headers if name == "accept-encoding"] == ["identity"]


def test_content_type_is_forwarded_and_empty_content_type_is_not():
    assert dict(forwarded(environ()))["content-type"] == "application/json"
    env = environ()
    env["CONTENT_TYPE"] = ""
    assert "content-type" not in names(forwarded(env))
    del env["CONTENT_TYPE"]
    assert "content-type" not in names(forwarded(env))


def test_cgi_variables_are_not_headers():
    headers = forwarded(environ())
    assert set(names(headers)) == {"content-type", "accept-encoding"}


def test_header_names_are_lower_case_with_dashes():
    headers = forwarded(environ(HTTP_X_STAINLESS_PACKAGE_VERSION="1.2.3"))
    assert ("x-stainless-package-version", "1.2.3") in headers


# -- response side ----------------------------------------------------------------------------------

def provider_answer(**extra):
    headers = CaseInsensitiveDict({
        "Date": "Thu, 04 Dec 2026 10:00:00 GMT",
        "Content-Type": "application/json",
        "Content-Length": "512",
        "Content-Encoding": "gzip",
        "Connection": "keep-alive",
        "Keep-Alive": "timeout=5",
        "Transfer-Encoding": "chunked",
        "X-Request-Id": "req_011CPfN3",
        "anthropic-ratelimit-requests-remaining": "49",
        "request-id": "req_011CPfN3",
        "Server": "cloudflare",
    })
    headers.update(extra)
    return headers


def test_response_headers_drop_framing_and_rename_the_request_id():
    headers = response_headers(provider_answer())
    assert headers == [
        ("Content-Type", "application/json"),
        ("x-provider-request-id", "req_011CPfN3"),
        ("anthropic-ratelimit-requests-remaining", "49"),
        ("request-id", "req_011CPfN3"),
    ]


@pytest.mark.parametrize("name", ["Content-Length", "content-encoding", "Transfer-Encoding", "Connection",
                                  "Keep-Alive", "Upgrade", "Trailer", "Proxy-Authenticate"])
def test_response_framing_and_hop_by_hop_are_dropped(name):
    headers = response_headers(CaseInsensitiveDict({name: "x", "X-Kept": "y"}))
    assert headers == [("X-Kept", "y")]


def test_response_headers_named_in_connection_are_dropped():
    headers = response_headers(CaseInsensitiveDict({"Connection": "X-Hop", "X-Hop": "1", "X-Kept": "2"}))
    assert headers == [("X-Kept", "2")]


def test_provider_cannot_set_x_mitrity_headers():
    headers = response_headers(CaseInsensitiveDict({"X-Mitrity-Decision": "allowed", "x-mitrity-reason": "none",
                                                    "X-Kept": "2"}))
    assert headers == [("X-Kept", "2")]


def test_provider_request_id_is_renamed_in_any_case():
    for name in ("x-request-id", "X-Request-ID", "X-REQUEST-ID"):
        assert response_headers(CaseInsensitiveDict({name: "r1"})) == [("x-provider-request-id", "r1")]


def test_response_headers_from_a_plain_lower_case_mapping():
    headers = response_headers({"content-type": "text/event-stream", "cache-control": "no-cache",
                                "x-request-id": "req_1", "content-length": "9"})
    assert headers == [("content-type", "text/event-stream"), ("cache-control", "no-cache"),
                       ("x-provider-request-id", "req_1")]
