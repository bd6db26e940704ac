"""Pooled, verified TLS connections toward the providers.

One ``requests`` transport adapter (and its connection pools) per worker
process, built after the fork (after gevent has patched ``socket`` and
``ssl``), with its own SSL context: the system trust store plus
``upstream.ca_file``, TLS 1.2 minimum, hostname verification on.
Connections are kept alive and reused across calls; a stream the agent
abandons is closed, never returned to the pool half-read.
"""

import ssl

import requests
from requests.adapters import HTTPAdapter
from requests.structures import CaseInsensitiveDict
from urllib3.util.url import _encode_target

POOL_CONNECTIONS_PER_HOST = 64


class _TLSAdapter(HTTPAdapter):
    def __init__(self, ssl_context, **kwargs):
        self._ssl_context = ssl_context
        super().__init__(**kwargs)

    def init_poolmanager(self, *args, **kwargs):
        kwargs["ssl_context"] = self._ssl_context
        return super().init_poolmanager(*args, **kwargs)

    def proxy_manager_for(self, *args, **kwargs):
        kwargs["ssl_context"] = self._ssl_context
        return super().proxy_manager_for(*args, **kwargs)

    def build_response(self, req, resp):
        # requests' own also decodes cookies into a jar and guesses a text
        # encoding: the gateway reads neither (Set-Cookie passes as a header).
        response = requests.Response()
        response.status_code = resp.status
        response.headers = CaseInsensitiveDict(resp.headers)
        response.raw = resp
        response.reason = resp.reason
        response.url = req.url
        response.request = req
        response.connection = self
        return response

    def cert_verify(self, conn, url, verify, cert):
        # requests would point every new connection at certifi's bundle, which
        # reloads ~150 roots into the shared context per connection (and adds
        # them to the trust store). The context already holds the anchors.
        conn.cert_reqs = "CERT_REQUIRED"
        conn.ca_certs = None
        conn.ca_cert_dir = None


def forwards_unchanged(target):
    """Whether the request target (path and query) reaches the provider byte for byte.

    urllib3 percent-encodes what RFC 3986 does not allow in a request target
    (a raw ``|``, a stray ``%``) and upper-cases percent-escapes; the gateway
    refuses such a target rather than forward something other than what the
    agent sent (SPEC section 5: the query string is forwarded unchanged).
    """
    return _encode_target(target) == target


def client_context(ca_file=None):
    context = ssl.create_default_context()
    if ca_file:
        context.load_verify_locations(cafile=ca_file)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    return context


class Upstreams:
    def __init__(self, providers, ca_file=None, connect_timeout_s=10.0, read_timeout_s=600.0):
        self.providers = dict(providers)  # name -> https base URL (config allows only https://)
        self.timeout = (connect_timeout_s, read_timeout_s)
        self.adapter = _TLSAdapter(client_context(ca_file), pool_connections=len(self.providers) or 1,
                                   pool_maxsize=POOL_CONNECTIONS_PER_HOST, max_retries=0)

    def send(self, provider, path_and_query, headers, body):
        """POST to the provider; the answer's body is left unread (stream=True).

        The request goes straight to the transport adapter, without a Session:
        cookies, auth, hooks, redirects, environment proxies and default
        headers have no part in a proxied call (only the agent's headers go
        out). It is filled in directly rather than by ``prepare()``, whose
        work is done already: the base URL is the validated config's, the
        path and query are the agent's exact request target (forwarded
        unchanged, SPEC section 5), and gunicorn has validated the header
        names and values. Together that is a measurable share of the
        gateway's CPU per call.
        """
        request = requests.PreparedRequest()
        request.method = "POST"
        request.url = self.providers[provider] + path_and_query
        request.headers = CaseInsensitiveDict(headers)
        request.headers["Content-Length"] = str(len(body))
        request.body = body
        return self.adapter.send(request, stream=True, timeout=self.timeout, verify=True, proxies={})

    def close(self):
        self.adapter.close()
