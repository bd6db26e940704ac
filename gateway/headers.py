"""Which headers cross the gateway, in each direction (SPEC section 5).

Toward the provider: every end-to-end header the agent sent, its provider key
included, verbatim. Never: the identity header, any ``x-mitrity-*`` header,
hop-by-hop headers (and any header the agent's ``Connection`` names), ``Host``
(the upstream's is used) and ``Content-Length`` (recomputed). The gateway asks
for an uncompressed answer, because it scans answers.

Toward the agent: the provider's headers minus hop-by-hop and framing headers,
plus ``x-request-id`` (the gateway's) and ``x-mitrity-decision``. The
provider's own ``x-request-id`` is kept as ``x-provider-request-id``.
"""

HOP_BY_HOP = frozenset((
    "connection", "keep-alive", "proxy-authenticate", "proxy-authorization", "proxy-connection",
    "te", "trailer", "trailers", "transfer-encoding", "upgrade",
))
# Set by the gateway itself on the way out.
_NOT_FORWARDED = frozenset(("host", "content-length", "accept-encoding", "expect"))
_NOT_RETURNED = frozenset(("content-length", "content-encoding", "date", "server"))


def request_headers(environ, identity_header):
    """The agent's headers from a WSGI environ, as (name, value) to forward."""
    named_by_connection = {
        token.strip().lower() for token in environ.get("HTTP_CONNECTION", "").split(",") if token.strip()
    }
    headers = []
    for key, value in environ.items():
        if key.startswith("HTTP_"):
            name = key[5:].replace("_", "-").lower()
        elif key == "CONTENT_TYPE" and value:
            name = "content-type"
        else:
            continue
        if (name in HOP_BY_HOP or name in _NOT_FORWARDED or name in named_by_connection
                or name == identity_header or name.startswith("x-mitrity-")):
            continue
        headers.append((name, value))
    headers.append(("accept-encoding", "identity"))
    return headers


def response_headers(upstream_headers):
    """The provider's answer headers to pass back (framing is the gateway's)."""
    named_by_connection = {
        token.strip().lower() for token in upstream_headers.get("connection", "").split(",") if token.strip()
    }
    headers = []
    for name, value in upstream_headers.items():
        lname = name.lower()
        if lname in HOP_BY_HOP or lname in _NOT_RETURNED or lname in named_by_connection:
            continue
        if lname.startswith("x-mitrity-"):
            continue
        if lname == "x-request-id":
            name = "x-provider-request-id"
        headers.append((name, value))
    return headers
