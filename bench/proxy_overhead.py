"""What the gateway adds to a call: latency, throughput and CPU per request.

Side by side in one run, against the same local fake provider over HTTPS:
- direct: the client calls the fake provider itself;
- gateway: the client calls the real gateway (gunicorn, gevent workers,
  policy-sync), which identifies the agent, checks the mission and forwards;
- denied: the gateway answers a call outside the mission itself.

Latency is measured at concurrency 1 (p50/p99 of N sequential calls over a
kept-alive connection); throughput and CPU at concurrency 32. Gateway CPU is
the user+system time of the master, the workers and policy-sync (from
/proc/<pid>/stat) over the run, divided by the calls made.

    python -m bench.proxy_overhead [--calls 2000] [--workers 2]
"""

import argparse
import json
import os
import time

import requests

from bench.world import KEY, bench_policy, gateway_config, local_world, run_threads
from tests.harness import Gateway
BODY = json.dumps({"model": "claude-sonnet-4-5", "max_tokens": 16,
                   "messages": [{"role": "user", "content": "Say hello in five words."}]}).encode()
DENIED_BODY = BODY.replace(b"claude-sonnet-4-5", b"claude-opus-4-1")
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pids):
    total = 0
    for pid in pids:
        try:
            with open(f"/proc/{pid}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
            total += int(fields[11]) + int(fields[12])  # utime, stime
        except OSError:
            pass
    return total / CLOCK_TICKS


def session(verify):
    s = requests.Session()
    s.verify = verify
    s.trust_env = False  # else REQUESTS_CA_BUNDLE from the environment wins over verify
    s.headers.update({"content-type": "application/json", "x-api-key": "sk-bench",
                      "anthropic-version": "2023-06-01", "x-mitrity-api-key": KEY})
    return s


def sequential(url, verify, calls, body=BODY, expect=200):
    s = session(verify)
    latencies = []
    for _ in range(calls):
        start = time.perf_counter()
        r = s.post(url, data=body)
        latencies.append((time.perf_counter() - start) * 1000)
        assert r.status_code == expect, r.status_code
    s.close()
    latencies.sort()
    return latencies[len(latencies) // 2], latencies[int(len(latencies) * 0.99) - 1]


def concurrent(url, verify, calls, threads=32, body=BODY, expect=200):
    per_thread = calls // threads
    errors = []

    def run():
        s = session(verify)
        for _ in range(per_thread):
            r = s.post(url, data=body)
            if r.status_code != expect:
                errors.append(r.status_code)
        s.close()
    elapsed = run_threads(run, threads)
    assert not errors, errors[:5]
    return per_thread * threads, elapsed


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--calls", type=int, default=2000)
    parser.add_argument("--workers", type=int, default=2)
    args = parser.parse_args()
    with local_world() as world:
        upstream_tls, pki, provider = world.upstream_tls, world.pki, world.provider
        os.makedirs(os.path.join(world.tmp, "gw"))
        gw = Gateway(os.path.join(world.tmp, "gw"), pki, gateway_config(world, args.workers), bench_policy()).start()
        try:
            direct_url, gw_url = provider.base_url + "/v1/messages", gw.url + "/v1/messages"
            sequential(gw_url, pki.ca.cert_path, 50)  # warm up pools
            sequential(direct_url, upstream_tls["ca"], 50)
            n1 = max(200, args.calls // 4)
            d50, d99 = sequential(direct_url, upstream_tls["ca"], n1)
            g50, g99 = sequential(gw_url, pki.ca.cert_path, n1)

            pids = [gw.process.pid] + gw.children()
            done, direct_s = concurrent(direct_url, upstream_tls["ca"], args.calls)
            cpu0, connections0 = cpu_seconds(pids), provider.connections
            done_g, gw_s = concurrent(gw_url, pki.ca.cert_path, args.calls)
            gw_cpu = cpu_seconds(pids) - cpu0
            upstream_connections = provider.connections - connections0
            cpu0 = cpu_seconds(pids)
            done_d, denied_s = concurrent(gw_url, pki.ca.cert_path, args.calls, body=DENIED_BODY, expect=403)
            denied_cpu = cpu_seconds(pids) - cpu0
        finally:
            gw.stop()

    print(f"# proxy overhead ({args.workers} workers, {os.cpu_count()} cores, {args.calls} calls at concurrency 32)")
    print("| measure | direct | through gateway | added / ratio |")
    print("|---|---|---|---|")
    print(f"| p50 latency, concurrency 1 (ms) | {d50:.2f} | {g50:.2f} | +{g50 - d50:.2f} |")
    print(f"| p99 latency, concurrency 1 (ms) | {d99:.2f} | {g99:.2f} | +{g99 - d99:.2f} |")
    print(f"| requests/s, concurrency 32 | {done / direct_s:.0f} | {done_g / gw_s:.0f} | "
          f"{(done_g / gw_s) / (done / direct_s):.2f}x |")
    print(f"| gateway CPU per forwarded call (ms) | | {gw_cpu / done_g * 1000:.3f} | |")
    print(f"| upstream TLS connections opened for {done_g} calls | | {upstream_connections} | |")
    print(f"| gateway CPU per locally denied call (ms) | | {denied_cpu / done_d * 1000:.3f} "
          f"({done_d / denied_s:.0f} req/s) | |")


if __name__ == "__main__":
    main()
