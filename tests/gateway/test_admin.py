"""The admin routes as objects."""

import json
import os
import struct

from gateway.admin import Admin
from gateway.policy_store import PolicyStore


def call(admin, path):
    answered = {}

    def start_response(status, headers):
        answered["status"], answered["headers"] = status, dict(headers)
    body = b"".join(admin({"RAW_URI": path, "REQUEST_METHOD": "GET"}, start_response, "req_test"))
    return answered["status"], answered["headers"], body


def test_metrics_route_answers_prometheus_text_without_a_policy(tmp_path):
    no_segment = PolicyStore(f"/mitrity-test-absent-{os.getpid()}")
    admin = Admin(no_segment, spool_dir=str(tmp_path / "spool"))
    status, headers, body = call(admin, "/metrics")
    assert status.startswith("200") and headers["content-type"].startswith("text/plain; version=0.0.4")
    assert b"\nmitrity_policy_loaded 0.0\n" in body and b"mitrity_policy_generation" not in body
    assert call(admin, "/readyz")[0].startswith("503")


def test_a_route_that_fails_answers_500_json(tmp_path, monkeypatch):
    """A damaged metric file costs that answer only."""
    directory = tmp_path / "metrics"
    directory.mkdir()
    # "64 bytes used", then an entry claiming a 1000-byte key: prometheus-client refuses it.
    (directory / "counter_1.db").write_bytes(struct.pack("ii", 64, 0) + struct.pack("i", 1000) + bytes(52))
    monkeypatch.setenv("PROMETHEUS_MULTIPROC_DIR", str(directory))
    admin = Admin(PolicyStore(f"/mitrity-test-absent-{os.getpid()}"))
    status, headers, body = call(admin, "/metrics")
    assert status.startswith("500") and headers["content-type"] == "application/json"
    assert "failed" in json.loads(body)["error"]
    assert call(admin, "/healthz")[0].startswith("200")

