"""What the gateway benchmarks start from, on 127.0.0.1: a temporary
directory, a fake provider over HTTPS with its own CA, the gateway's PKI, one
agent bound to an API key, and the gateway config pointing at the fake."""

import hashlib
import os
import tempfile
import threading
import time
from contextlib import contextmanager
from dataclasses import dataclass

from tests.fakes.provider import FakeProvider
from tests.fakes.tlsfiles import make_test_ca
from tests.harness import PKI

KEY = "mtr_bench_key"


@dataclass
class World:
    tmp: str
    upstream_tls: dict   # the fake provider's certificate files ("cert", "key", "ca")
    pki: PKI             # the gateway's CA, server and client certificates
    provider: FakeProvider


@contextmanager
def local_world():
    with tempfile.TemporaryDirectory() as tmp:
        upstream_tls = make_test_ca(os.path.join(tmp, "up"))
        os.makedirs(os.path.join(tmp, "pki"))
        pki = PKI(os.path.join(tmp, "pki"))
        provider = FakeProvider(upstream_tls["cert"], upstream_tls["key"]).start()
        try:
            yield World(tmp, upstream_tls, pki, provider)
        finally:
            provider.stop()


def bench_policy(allow=("llm:send:anthropic:claude-sonnet-4-5*",)):
    return {"revision": "bench", "agents": [{
        "id": "bench", "api_key_sha256": [hashlib.sha256(KEY.encode()).hexdigest()],
        "mission": {"allow": list(allow)}}]}


def gateway_config(world, workers, providers=("anthropic",)):
    return {"server": {"workers": workers, "log_level": "warning"},
            "providers": {name: {"upstream": world.provider.base_url} for name in providers},
            "upstream": {"ca_file": world.upstream_tls["ca"]}}


def run_threads(target, threads):
    """Run ``target`` in ``threads`` threads at once; the wall time in seconds until all are done."""
    workers = [threading.Thread(target=target) for _ in range(threads)]
    start = time.perf_counter()
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    return time.perf_counter() - start
