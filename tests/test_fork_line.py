"""The master must not import the HTTP client stack before the workers' gevent
patching: urllib3 keeps references to the unpatched ``ssl`` classes, which
later block a whole gevent worker on upstream TLS. Nor prometheus-client: it
picks its storage at import, and the workers must pick the multiprocess files.
This runs what the master runs (gunicorn.conf.py and the worker class import)
and looks at sys.modules."""

import os
import subprocess
import sys

from tests.harness import ROOT

CHECK = """
import runpy, sys, os
namespace = runpy.run_path("gunicorn.conf.py")
import importlib
module, _, cls = namespace["worker_class"].rpartition(".")
getattr(importlib.import_module(module), cls)
print(",".join(sorted(m for m in ("requests", "urllib3", "gateway.pipeline", "gateway.upstream", "threading_started",
                                  "prometheus_client", "gateway.metrics")
                      if m in sys.modules)))
import threading
print(threading.active_count())
print(os.environ["PROMETHEUS_MULTIPROC_DIR"])
"""


def test_master_imports_no_http_client_and_starts_no_thread(tmp_path):
    from tests.harness import PKI
    pki = PKI(str(tmp_path))
    config = tmp_path / "gateway.yaml"
    config.write_text(f"server: {{tls: {{cert_file: {pki.server.cert_path}, key_file: {pki.server.key_path}}}}}\n"
                      f"usage: {{database: {tmp_path / 'usage.db'}}}\n")
    env = dict(os.environ, MITRITY_CONFIG=str(config))
    env.pop("PROMETHEUS_MULTIPROC_DIR", None)
    out = subprocess.run([sys.executable, "-c", CHECK], cwd=ROOT, env=env, capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    imported, threads, metrics_dir = out.stdout.split("\n")[:3]
    assert imported == ""
    assert threads == "1"
    # Set for the processes the master starts, next to the usage store, and created.
    assert metrics_dir == str(tmp_path / "metrics") and os.path.isdir(metrics_dir)
