"""What usage recording costs: CPU per call with it on versus off, and the
hand-off's throughput (issue: usage pipeline; SPEC section 6).

1. CPU per call, on versus off, side by side in one run. Two real gateways
   (gunicorn, gevent workers, policy-sync, usage collector) serve the same
   local fake provider: one as shipped, one started with bench.usage_off_app
   (identical, but no record is built or spooled; its collector idles). They
   take turns (alternating who goes first), ``--rounds`` times each, ``--calls`` small forwarded calls at
   concurrency 32; a run's CPU is the user+system time of every gateway process
   (master, workers, policy-sync, collector, from /proc) divided by its calls.
   The table gives the median run of each and their ratio.
2. Attribution, which is steadier than a difference of two noisy runs: the
   worker-side cost of one call's recording (building the record, one spool
   append, its metrics) timed in this process with the real objects over
   ``--records`` calls, plus the collector's CPU per call measured in the
   "on" runs, as a share of the gateway's CPU per call.
3. Hand-off throughput: records per second one SpoolWriter appends, and
   records per second one Collector moves from spool files into a fresh
   SQLite store.

    python -m bench.usage_overhead [--calls 2000] [--rounds 3] [--records 50000]
"""

import argparse
import os
import statistics
import time

from bench.proxy_overhead import concurrent, cpu_seconds, sequential
from bench.world import bench_policy, gateway_config, local_world
from tests.harness import Gateway


def start_gateways(world, workers):
    gateways = {}
    for name, app in (("on", "gateway.wsgi"), ("off", "bench.usage_off_app")):
        directory = os.path.join(world.tmp, name)
        os.makedirs(directory)
        gateways[name] = Gateway(directory, world.pki, gateway_config(world, workers), bench_policy(),
                                 app=app).start()
    return gateways


def cpu_per_call(gw, pki, calls):
    """(gateway CPU ms per call, of which the collector's) over one run at concurrency 32."""
    pids = [gw.process.pid] + gw.children()
    collector = gw.collector_pid()
    cpu0, collector0 = cpu_seconds(pids), cpu_seconds([collector])
    done, _ = concurrent(gw.url + "/v1/messages", pki.ca.cert_path, calls)
    time.sleep(0.5)  # the collector's last pass over this run's records
    return ((cpu_seconds(pids) - cpu0) / done * 1000, (cpu_seconds([collector]) - collector0) / done * 1000)


def worker_side_us(records, tmp):
    """Microseconds per call of Gateway.record()'s usage part, with the real objects."""
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = os.path.join(tmp, "metrics")
    os.makedirs(os.environ["PROMETHEUS_MULTIPROC_DIR"])
    from gateway import metrics
    from gateway.pipeline import Call
    from gateway.usage.prices import PriceCatalog
    from gateway.usage.record import usage_record
    from gateway.usage.spool import SpoolWriter
    from gateway.usage.tokens import Usage
    spool = SpoolWriter(os.path.join(tmp, "spool"), "bench", max_bytes=1 << 40)
    prices = PriceCatalog.builtin()
    call = Call("req_0123456789abcdef01234567", 0.0, provider="anthropic", agent_id="support-bot",
                model="claude-sonnet-4-5", decision="allowed", status=200, forwarded=True, prices=prices,
                started_at=time.time(), usage=Usage(1200, 85, 0, 0, "claude-sonnet-4-5-20250929"), upstream_s=0.01)
    start = time.process_time()
    for _ in range(records):
        record = usage_record(call, 3.2)
        spool.write(record)
        metrics.observe_call(call, 0.0032, record)
    with_usage = time.process_time() - start
    start = time.process_time()
    for _ in range(records):
        metrics.observe_call(call, 0.0032, None)
    without = time.process_time() - start
    spool.close()
    return (with_usage - without) / records * 1e6, spool, call


def handoff_throughput(records, tmp, call):
    from gateway.errors import new_request_id
    from gateway.usage.collector import Collector
    from gateway.usage.record import usage_record
    from gateway.usage.spool import SpoolWriter
    spool_dir = os.path.join(tmp, "handoff")
    writer = SpoolWriter(spool_dir, "bench", max_bytes=1 << 40)
    lines = []
    for n in range(records):
        record = usage_record(call, 3.2)
        record["id"] = new_request_id()  # as the workers make them
        lines.append(record)
    start = time.perf_counter()
    for record in lines:
        writer.write(record)
    append_s = time.perf_counter() - start
    writer.close()
    collector = Collector(spool_dir, os.path.join(tmp, "handoff.db"))
    start = time.perf_counter()
    try:
        while collector.step():
            pass
        collector.step()
    finally:
        collector.close()
    ingest_s = time.perf_counter() - start
    assert collector.stored == records, collector.stored
    return records / append_s, records / ingest_s


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--calls", type=int, default=2000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--records", type=int, default=50_000)
    args = parser.parse_args()
    with local_world() as world:
        pki = world.pki
        gateways = start_gateways(world, args.workers)
        runs = {"on": [], "off": []}
        try:
            for gw in gateways.values():
                sequential(gw.url + "/v1/messages", pki.ca.cert_path, 100)  # warm up
            for round_number in range(args.rounds):
                order = ("on", "off") if round_number % 2 == 0 else ("off", "on")  # no order bias
                for name in order:
                    runs[name].append(cpu_per_call(gateways[name], pki, args.calls))
        finally:
            for gw in gateways.values():
                gw.stop()
        worker_us, _, call = worker_side_us(args.records, world.tmp)
        append_rate, ingest_rate = handoff_throughput(args.records, world.tmp, call)

    on = statistics.median(total for total, _ in runs["on"])
    off = statistics.median(total for total, _ in runs["off"])
    collector_on = statistics.median(collector for _, collector in runs["on"])
    collector_off = statistics.median(collector for _, collector in runs["off"])
    rest_on = statistics.median(total - collector for total, collector in runs["on"])
    rest_off = statistics.median(total - collector for total, collector in runs["off"])
    attributed = worker_us / 1000 + collector_on
    print(f"# usage recording overhead ({args.workers} workers, {os.cpu_count()} cores, {args.rounds} rounds of "
          f"{args.calls} calls at concurrency 32)")
    print("| measure | usage off | usage on | on / off |")
    print("|---|---|---|---|")
    print(f"| gateway CPU per call, median run (ms) | {off:.3f} | {on:.3f} | {on / off:.3f} |")
    print(f"| of which master, workers, policy-sync (ms) | {rest_off:.3f} | {rest_on:.3f} | {rest_on / rest_off:.3f} |")
    print(f"| of which the usage collector (ms) | {collector_off:.3f} | {collector_on:.3f} | |")
    print(f"| all runs (ms) | {' '.join(f'{t:.3f}' for t, _ in runs['off'])} | "
          f"{' '.join(f'{t:.3f}' for t, _ in runs['on'])} | |")
    print()
    print("| attribution per call | CPU |")
    print("|---|---|")
    print(f"| worker: build the record, append it, its metrics | {worker_us:.1f} us |")
    print(f"| usage collector process | {collector_on * 1000:.1f} us |")
    print(f"| share of the gateway's CPU per call | {attributed / (on - attributed) * 100:.1f} % |")
    print()
    print("| hand-off | records/s |")
    print("|---|---|")
    print(f"| SpoolWriter.write (one worker) | {append_rate:,.0f} |")
    print(f"| Collector, spool to SQLite | {ingest_rate:,.0f} |")


if __name__ == "__main__":
    main()
