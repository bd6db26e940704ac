"""Start the real gateway (``gunicorn -c gunicorn.conf.py gateway.wsgi``) for tests and benchmarks.

Everything listens on 127.0.0.1 on free ports, and every process is stopped by
PID (the master's process group) at the end.
"""

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request

import yaml

from gateway import certs

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
GUNICORN = os.path.join(os.path.dirname(sys.executable), "gunicorn")
BOUND_SPIFFE_ID = "spiffe://cluster.local/ns/support/sa/support-bot"
HELPER_MODULES = ("policy_sync", "gateway.usage.collector")  # the master's non-worker children


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class PKI:
    """A CA, the gateway's server certificate and agents' client certificates."""

    def __init__(self, directory):
        self.dir = directory
        self.ca = certs.create_ca(directory)
        self.server = certs.issue_server_cert(self.ca, directory, ["localhost", "127.0.0.1"])
        self._clients = {}

    def client(self, spiffe_id):
        if spiffe_id not in self._clients:
            self._clients[spiffe_id] = certs.issue_client_cert(self.ca, self.dir, spiffe_id)
        return self._clients[spiffe_id]


class Gateway:
    """One gunicorn master with its workers and policy-sync."""

    def __init__(self, directory, pki, config, policy, env=None, app="gateway.wsgi"):
        self.dir = directory
        self.app = app
        self.pki = pki
        self.port = free_port()
        self.admin_port = free_port()
        self.policy_path = os.path.join(directory, "policy.yaml")
        self.config_path = os.path.join(directory, "gateway.yaml")
        self.log_path = os.path.join(directory, "gateway.log")
        self.write_policy(policy)
        base = {
            "server": {"bind": f"127.0.0.1:{self.port}", "workers": 2,
                       "tls": {"enabled": True, "cert_file": pki.server.cert_path, "key_file": pki.server.key_path,
                               "client_ca_file": pki.ca.cert_path, "client_cert": "optional"}},
            "policy": {"file": self.policy_path, "cache_dir": os.path.join(directory, "policy-cache")},
            "usage": {"database": os.path.join(directory, "usage.db")},
            "admin": {"bind": f"127.0.0.1:{self.admin_port}"},
        }
        deep_merge(base, config or {})
        with open(self.config_path, "w") as f:
            yaml.safe_dump(base, f)
        self.env = dict(os.environ)
        self.env.pop("WEB_CONCURRENCY", None)
        self.env.pop("MITRITY_POLICY_SEGMENT", None)
        self.env.pop("PROMETHEUS_MULTIPROC_DIR", None)
        self.env.update(env or {}, MITRITY_CONFIG=self.config_path)
        self.process = None

    @property
    def url(self):
        return f"https://127.0.0.1:{self.port}"

    @property
    def admin_url(self):
        return f"http://127.0.0.1:{self.admin_port}"

    def write_policy(self, policy):
        text = policy if isinstance(policy, str) else yaml.safe_dump(policy)
        tmp = self.policy_path + ".tmp"
        with open(tmp, "w") as f:
            f.write(text)
        os.replace(tmp, self.policy_path)

    def start(self, wait_ready=True, timeout=20):
        self._log = open(self.log_path, "ab")
        self.process = subprocess.Popen([GUNICORN, "-c", "gunicorn.conf.py", self.app], cwd=ROOT,
                                        env=self.env, stdout=self._log, stderr=subprocess.STDOUT,
                                        stdin=subprocess.DEVNULL, start_new_session=True)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"gateway exited with {self.process.returncode}:\n{self.log()[-3000:]}")
            status, _ = self.admin("/healthz")
            if status == 200 and (not wait_ready or self.admin("/readyz")[0] == 200):
                if len(self.worker_pids()) >= 1:
                    return self
            time.sleep(0.1)
        self.stop()
        raise RuntimeError("gateway did not become ready:\n" + self.log()[-3000:])

    def admin(self, path, headers=None):
        request = urllib.request.Request(self.admin_url + path, headers=headers or {})
        try:
            with urllib.request.urlopen(request, timeout=2) as response:
                return response.status, json.loads(response.read() or b"null")
        except urllib.error.HTTPError as exc:
            return exc.code, json.loads(exc.read() or b"null")
        except OSError:
            return None, None

    def metrics(self, headers=None):
        """GET /metrics: (content type, {sample name + sorted labels: value}) parsed by
        prometheus-client's text parser (which raises on anything malformed)."""
        from prometheus_client.parser import text_string_to_metric_families
        request = urllib.request.Request(self.admin_url + "/metrics", headers=headers or {})
        with urllib.request.urlopen(request, timeout=5) as response:
            content_type, text = response.headers["content-type"], response.read().decode()
        samples = {}
        for family in text_string_to_metric_families(text):
            for sample in family.samples:
                samples[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
        return content_type, samples, text

    def children(self):
        try:
            with open(f"/proc/{self.process.pid}/task/{self.process.pid}/children") as f:
                return [int(p) for p in f.read().split()]
        except OSError:
            return []

    def _cmdline(self, pid):
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                return f.read().replace(b"\0", b" ").decode()
        except OSError:
            return ""

    def worker_pids(self):
        return [p for p in self.children() if not any(h in self._cmdline(p) for h in HELPER_MODULES)]

    def collector_pid(self):
        pids = [p for p in self.children() if "gateway.usage.collector" in self._cmdline(p)]
        return pids[0] if pids else None

    def policy_sync_pid(self):
        pids = [p for p in self.children() if "policy_sync" in self._cmdline(p)]
        return pids[0] if pids else None

    def log(self):
        with open(self.log_path, "rb") as f:
            return f.read().decode("utf-8", "replace")

    def signal(self, signum):
        os.kill(self.process.pid, signum)

    def stop(self, timeout=30):
        if self.process is None:
            return
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                pass
        try:
            os.killpg(self.process.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        self.process.wait()
        self._log.close()


def read_response(sock):
    """One HTTP response with a Content-Length: (status, headers, body)."""
    buffer = b""
    while b"\r\n\r\n" not in buffer:
        piece = sock.recv(65536)
        assert piece, f"connection closed before a response: {buffer!r}"
        buffer += piece
    head, _, body = buffer.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split(" ")[1])
    headers = {}
    for line in lines[1:]:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    length = int(headers["content-length"])
    while len(body) < length:
        piece = sock.recv(65536)
        assert piece, "connection closed inside the body"
        body += piece
    return status, headers, body[:length]


def deep_merge(base, override):
    """``override`` merged into ``base`` (nested dicts merged, other values replaced); returns ``base``."""
    for key, value in override.items():
        if isinstance(value, dict) and isinstance(base.get(key), dict):
            deep_merge(base[key], value)
        else:
            base[key] = value
    return base