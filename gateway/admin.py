"""The admin listener (SPEC section 6): liveness and readiness, Prometheus
metrics, and the usage API.

When the admin token variable is set, every admin route needs
``Authorization: Bearer <token>``; the presented token is compared by digest in
constant time. ``/llm-usage/records|summary|bom`` read the usage store;
``/metrics`` merges every gateway process's counters (gateway.metrics).
"""

import functools
import hashlib
import hmac
import json
import logging
from urllib.parse import parse_qs

from . import metrics
from .errors import error_body, status_line
from .usage import query


log = logging.getLogger("mitrity.admin")


def _digest(token):
    return hashlib.sha256(token.encode("utf-8", "surrogateescape")).digest()


class Admin:
    def __init__(self, policies, token=None, usage_store=None, spool_dir=None):
        self.policies = policies
        self.usage_store = usage_store  # a read-only gateway.usage.store.UsageStore
        self.spool_dir = spool_dir      # the usage spool, for the backlog gauge
        self._token_digest = _digest(token) if token else None
        self.routes = {"/healthz": self.healthz, "/readyz": self.readyz, "/metrics": self.prometheus}
        if usage_store is not None:
            for name, route in (("records", query.records), ("summary", query.summary), ("bom", query.bom)):
                self.routes["/llm-usage/" + name] = self._usage_route(route)

    def _usage_route(self, route):
        # SQLite answers these in milliseconds (indexes and rollups); the
        # worker waits for it, as admin traffic is light.
        return functools.partial(route, self.usage_store)

    def __call__(self, environ, start_response, request_id):
        # The token first: without it, the listener tells nothing, not even which routes exist.
        if not self._authorized(environ):
            body = json.dumps({"error": "a valid admin bearer token is required"}).encode()
            return self._answer(start_response, request_id, 401, body, "unauthorized",
                                [("www-authenticate", "Bearer")])
        path, _, query_string = environ.get("RAW_URI", "/").partition("?")
        route = self.routes.get(path)
        if route is None:
            return self._answer(start_response, request_id, 404, error_body("not_found"), "not_found")
        if environ["REQUEST_METHOD"] not in ("GET", "HEAD"):
            return self._answer(start_response, request_id, 405, error_body("method_not_allowed"),
                                "method_not_allowed")
        try:
            status, document = route(parse_qs(query_string, keep_blank_values=True))
        except Exception as exc:  # a damaged metrics file, a database error: this answer only
            log.error("admin %s failed: %s", path, type(exc).__name__)
            status, document = 500, {"error": f"{path} failed ({type(exc).__name__}); see the gateway log"}
        if isinstance(document, bytes):  # the Prometheus text
            return self._answer(start_response, request_id, status, document, content_type=metrics.CONTENT_TYPE)
        return self._answer(start_response, request_id, status, json.dumps(document).encode())

    def _authorized(self, environ):
        if self._token_digest is None:
            return True
        scheme, _, presented = environ.get("HTTP_AUTHORIZATION", "").partition(" ")
        if scheme.lower() != "bearer" or not presented:
            return False
        return hmac.compare_digest(_digest(presented.strip()), self._token_digest)

    def prometheus(self, params):
        return 200, metrics.exposition(self.policies, self.spool_dir)

    def healthz(self, params):
        return 200, {"status": "ok"}

    def readyz(self, params):
        policy = self.policies.current()
        if policy is None:
            return 503, {"ready": False, "reason": "policy_unavailable"}
        heartbeat = self.policies.heartbeat_age_s()
        return 200, {
            "ready": True,
            "policy_revision": policy.revision,
            "policy_generation": policy.generation,
            "policy_age_s": round(policy.age_s(), 3),
            "policy_sync_heartbeat_age_s": None if heartbeat is None else round(heartbeat, 3),
        }

    @staticmethod
    def _answer(start_response, request_id, status, body, reason=None, extra=(), content_type="application/json"):
        headers = [("content-type", content_type), ("content-length", str(len(body))),
                   ("x-request-id", request_id)]
        if reason:
            headers.append(("x-mitrity-reason", reason))
        start_response(status_line(status), headers + list(extra))
        return [body]
