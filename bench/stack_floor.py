"""The floor under the gateway's CPU per call: what the chosen stack costs
with the gateway's own work taken out, side by side with the full gateway.

1. Serving floor: the gateway's gunicorn config and TLS worker class serving
   bench.floor_app (read the body, answer a fixed JSON; no identity, policy,
   forwarding, record or log), at concurrency 32: CPU of every gunicorn
   process per call.
2. Forwarding floor: one pooled ``requests`` transport (gateway.upstream, as
   the workers use it) POSTing the same small call to a local fake provider
   over kept-alive TLS and reading the answer, sequentially, in a separate
   process whose own CPU time is measured: once plain, once after gevent's
   monkey-patching (as in a worker).
3. The full gateway (identity, mission, DLP on prompt and answer, forwarding,
   usage record, metrics, log line), same calls, same concurrency.

    python -m bench.stack_floor [--calls 2000] [--workers 2]
"""

import argparse
import os
import subprocess
import sys
import time

from bench.proxy_overhead import BODY, concurrent, cpu_seconds, sequential
from bench.world import bench_policy, gateway_config, local_world
from tests.harness import Gateway

HEADERS = {"content-type": "application/json", "x-api-key": "sk-bench", "anthropic-version": "2023-06-01"}


def serving_cpu_ms(gw, pki, calls):
    pids = [gw.process.pid] + gw.worker_pids()
    sequential(gw.url + "/v1/messages", pki.ca.cert_path, 100)
    cpu0 = cpu_seconds(pids)
    done, _ = concurrent(gw.url + "/v1/messages", pki.ca.cert_path, calls)
    return (cpu_seconds(pids) - cpu0) / done * 1000


def forwarding_cpu_ms(base_url, ca_file, calls):
    """Run in the child process: CPU ms of this process per forwarded call."""
    from gateway.upstream import Upstreams
    upstreams = Upstreams({"anthropic": base_url}, ca_file)
    for _ in range(50):
        upstreams.send("anthropic", "/v1/messages", HEADERS, BODY).raw.read()
    start = time.process_time()
    for _ in range(calls):
        answer = upstreams.send("anthropic", "/v1/messages", HEADERS, BODY)
        while answer.raw.read1(65536, decode_content=True):
            pass
        answer.raw.release_conn()
    spent = time.process_time() - start
    upstreams.close()
    return spent / calls * 1000


def forwarding_in_child(provider, ca_file, calls, patched):
    code = ("from gevent import monkey; monkey.patch_all()\n" if patched else "") + (
        "from bench.stack_floor import forwarding_cpu_ms\n"
        f"print(forwarding_cpu_ms({provider.base_url!r}, {ca_file!r}, {calls}))\n")
    out = subprocess.run([sys.executable, "-c", code], check=True, capture_output=True, text=True,
                         cwd=os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    return float(out.stdout.split()[-1])


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--calls", type=int, default=2000)
    parser.add_argument("--workers", type=int, default=2)
    args = parser.parse_args()
    with local_world() as world:
        results = {}
        for name, app in (("serving", "bench.floor_app"), ("gateway", "gateway.wsgi")):
            directory = os.path.join(world.tmp, name)
            os.makedirs(directory)
            gw = Gateway(directory, world.pki, gateway_config(world, args.workers), bench_policy(),
                         app=app).start(wait_ready=app == "gateway.wsgi")
            try:
                results[name] = serving_cpu_ms(gw, world.pki, args.calls)
            finally:
                gw.stop()
        ca = world.upstream_tls["ca"]
        results["forwarding"] = forwarding_in_child(world.provider, ca, args.calls, False)
        results["forwarding_gevent"] = forwarding_in_child(world.provider, ca, args.calls, True)

    floor = results["serving"] + results["forwarding_gevent"]
    print(f"# the stack's floor ({args.workers} workers, {os.cpu_count()} cores, {args.calls} calls)")
    print("| CPU per small call | ms |")
    print("|---|---|")
    print(f"| serving floor: gunicorn + gevent + TLS worker, empty app (concurrency 32) | {results['serving']:.3f} |")
    print(f"| forwarding: pooled requests POST over TLS, plain Python | {results['forwarding']:.3f} |")
    print(f"| forwarding floor: the same after gevent's monkey-patching | {results['forwarding_gevent']:.3f} |")
    print(f"| sum: the floor for a forwarded call | {floor:.3f} |")
    print(f"| the full gateway (concurrency 32) | {results['gateway']:.3f} |")
    print(f"| the gateway's own work above the floor | {results['gateway'] - floor:.3f} |")


if __name__ == "__main__":
    main()
