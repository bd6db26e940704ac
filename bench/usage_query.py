"""How fast the /llm-usage API answers over a big usage store (SPEC section 6).

1. Fill: a fresh SQLite store gets N records (default 1,000,000) through the
   real write path, UsageStore.insert_many, in batches of 10,000 (one
   transaction each: records, hourly and daily rollups, BOM). The data looks
   like a busy deployment: 30 days, 200 agents that each mostly use one or two
   of seven models, 92% allowed, 6% redacted, 2% blocked (blocked before
   forwarding, zero tokens), 3% uncosted (a model outside the price catalog),
   timestamps on whole milliseconds so that some records share one.
2. Queries: each API call runs through gateway.usage.query against a
   read-only store (as an admin worker opens it), once to warm the page cache,
   then ``--repeat`` times; the table gives the median and the slowest run in
   milliseconds, and the size of the answer. For scale, the same summary
   computed by a plain GROUP BY over all records (what the rollups avoid) is
   timed too.

    python -m bench.usage_query [--records 1000000] [--repeat 20] [--db PATH] [--keep]
"""

import argparse
import os
import random
import statistics
import tempfile
import time

from gateway.usage import query
from gateway.usage.store import COST_NANOS_SQL, UsageStore, format_rfc3339, parse_rfc3339

BATCH = 10_000
DAYS = 30
AGENTS = 200
END = "2025-06-30T17:23:41.250Z"           # deliberately not on an hour boundary
MODELS = [("anthropic", "claude-sonnet-4-5-20250929", 3e-6, 15e-6), ("anthropic", "claude-haiku-4-5", 1e-6, 5e-6),
          ("anthropic", "claude-opus-4-1", 15e-6, 75e-6), ("openai", "gpt-4o-2024-08-06", 2.5e-6, 10e-6),
          ("openai", "gpt-4o-mini", 0.15e-6, 0.6e-6), ("openai", "o3", 2e-6, 8e-6),
          ("openai", "ft:gpt-4o-mini:acme", None, None)]


def make_records(count, seed=7):
    """count records, oldest first, spread over DAYS days before END."""
    rng = random.Random(seed)
    end_us = parse_rfc3339(END)
    span_ms = DAYS * 86_400_000
    habits = []
    for _ in range(AGENTS):
        primary = rng.randrange(len(MODELS) - 1)
        secondary = rng.randrange(len(MODELS))
        habits.append((primary, secondary))
    offsets = sorted(rng.randrange(span_ms) for _ in range(count))
    for n, offset_ms in enumerate(offsets):
        agent = rng.randrange(AGENTS)
        primary, secondary = habits[agent]
        provider, model, input_price, output_price = MODELS[primary if rng.random() < 0.8 else secondary]
        roll = rng.random()
        decision = "allowed" if roll < 0.92 else "redacted" if roll < 0.98 else "blocked"
        forwarded = decision != "blocked"
        input_tokens = rng.randrange(200, 20_000) if forwarded else 0
        output_tokens = rng.randrange(10, 2_000) if forwarded else 0
        cost = None
        if input_price is not None:
            cost = input_tokens * input_price + output_tokens * output_price
        yield {
            "id": f"{n:08x}-{rng.getrandbits(64):016x}",
            "ts": format_rfc3339(end_us - span_ms * 1000 + offset_ms * 1000),
            "agent_id": f"agent-{agent:03d}", "provider": provider, "model": model, "decision": decision,
            "reason": "dlp_blocked" if decision == "blocked" else None,
            "status": 403 if decision == "blocked" else 200, "stream": rng.random() < 0.5,
            "input_tokens": input_tokens, "output_tokens": output_tokens,
            "total_tokens": input_tokens + output_tokens,
            "cache_read_input_tokens": 0, "cache_creation_input_tokens": 0,
            "redaction_count": 1 if decision == "redacted" else 0,
            "estimated_cost_usd": cost, "latency_ms": rng.randrange(50, 30_000), "forwarded": forwarded,
        }


def fill(path, count):
    store = UsageStore(path)
    started = time.perf_counter()
    batch = []
    for record in make_records(count):
        batch.append(record)
        if len(batch) == BATCH:
            store.insert_many(batch)
            batch = []
    if batch:
        store.insert_many(batch)
    elapsed = time.perf_counter() - started
    store.close()
    return elapsed


def timed(call, repeat):
    call()
    runs = []
    for _ in range(repeat):
        started = time.perf_counter()
        result = call()
        runs.append((time.perf_counter() - started) * 1000)
    return statistics.median(runs), max(runs), result


def size_of(result):
    status, document = result
    if status != 200:
        raise SystemExit(f"query failed: {status} {document}")
    for key in ("records", "groups", "entries"):
        if key in document:
            return f"{len(document[key])} {key}"
    return ""


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--records", type=int, default=1_000_000)
    parser.add_argument("--repeat", type=int, default=20)
    parser.add_argument("--db", help="reuse or create this database instead of a temporary one")
    parser.add_argument("--keep", action="store_true", help="keep the temporary database")
    args = parser.parse_args()

    directory = None
    path = args.db
    if path is None:
        directory = tempfile.mkdtemp(prefix="usage-bench-")
        path = os.path.join(directory, "usage.db")
    if not os.path.exists(path):
        seconds = fill(path, args.records)
        print(f"filled {args.records:,} records in {seconds:.1f} s "
              f"({args.records / seconds:,.0f} records/s, batches of {BATCH:,})")
    store = UsageStore(path, readonly=True)
    conn = store.connection
    total = conn.execute("SELECT count(*) FROM records").fetchone()[0]
    rollups = {table: conn.execute(f"SELECT count(*) FROM {table}").fetchone()[0]
               for table in ("rollup_day", "rollup_hour", "bom")}
    size_mb = sum(os.path.getsize(path + suffix) for suffix in ("", "-wal") if os.path.exists(path + suffix)) / 1e6
    print(f"{total:,} records, {size_mb:,.0f} MB; rows: " + ", ".join(f"{k} {v:,}" for k, v in rollups.items()))

    # A deep page: the cursor of the record half way down (found once, untimed).
    ts_us, record_id = conn.execute("SELECT ts_us, id FROM records ORDER BY ts_us DESC, id DESC LIMIT 1 OFFSET ?",
                                    (total // 2,)).fetchone()
    deep = query.encode_cursor(ts_us, record_id)
    agent_ts, agent_id = conn.execute("SELECT ts_us, id FROM records WHERE agent_id = 'agent-007' "
                                      "ORDER BY ts_us DESC, id DESC LIMIT 1 OFFSET 2000").fetchone()
    agent_deep = query.encode_cursor(agent_ts, agent_id)
    end_us = parse_rfc3339(END)
    last_day = format_rfc3339(end_us - 86_400_000_000 + 1_234_567)
    last_week = format_rfc3339(end_us - 7 * 86_400_000_000 - 999_999_999)
    mid = format_rfc3339(end_us - 10 * 86_400_000_000 + 3_333_333_333)

    cases = [
        ("summary group_by=model (all time)", query.summary, {"group_by": "model"}),
        ("summary group_by=agent (all time)", query.summary, {"group_by": "agent"}),
        ("summary group_by=day (all time)", query.summary, {"group_by": "day"}),
        ("summary group_by=model, last 24 h (unaligned)", query.summary, {"group_by": "model", "since": last_day}),
        ("summary group_by=agent, since/until unaligned (3 days)", query.summary,
         {"group_by": "agent", "since": mid, "until": format_rfc3339(parse_rfc3339(mid) + 3 * 86_400_000_000 + 7)}),
        ("summary group_by=day, agent=agent-007", query.summary, {"group_by": "day", "agent": "agent-007"}),
        ("summary group_by=model, decision=blocked, last 7 days", query.summary,
         {"group_by": "model", "decision": "blocked", "since": last_week}),
        ("records first page (100)", query.records, {}),
        ("records first page (1000)", query.records, {"limit": "1000"}),
        ("records deep page (cursor at 500,000th)", query.records, {"cursor": deep}),
        ("records first page, agent=agent-007", query.records, {"agent": "agent-007"}),
        ("records deep page, agent=agent-007 (after 2,000)", query.records,
         {"agent": "agent-007", "cursor": agent_deep}),
        ("records first page, provider=openai", query.records, {"provider": "openai"}),
        ("records first page, model=o3", query.records, {"model": "o3"}),
        ("records first page, provider=anthropic&model=claude-opus-4-1", query.records,
         {"provider": "anthropic", "model": "claude-opus-4-1"}),
        ("records first page, decision=blocked", query.records, {"decision": "blocked"}),
        ("records first page, agent=agent-007&decision=redacted", query.records,
         {"agent": "agent-007", "decision": "redacted"}),
        ("records first page, since/until (a 3-day window 10 days ago)", query.records,
         {"since": mid, "until": format_rfc3339(parse_rfc3339(mid) + 3 * 86_400_000_000)}),
        ("records deep page, decision=blocked (cursor at 500,000th)", query.records,
         {"decision": "blocked", "cursor": deep}),
        ("bom (all agents)", query.bom, {}),
        ("bom agent=agent-007", query.bom, {"agent": "agent-007"}),
    ]
    print()
    print("| query | median ms | max ms | answer |")
    print("|---|---:|---:|---|")
    for name, route, params in cases:
        median, slowest, result = timed(lambda: route(store, params), args.repeat)
        print(f"| {name} | {median:.2f} | {slowest:.2f} | {size_of(result)} |")

    raw = (f"SELECT provider, model, count(*), sum(input_tokens), sum(output_tokens), sum(total_tokens), "
           f"sum({COST_NANOS_SQL}), sum(estimated_cost_usd IS NULL) FROM records GROUP BY provider, model")
    median, slowest, _ = timed(lambda: conn.execute(raw).fetchall(), max(3, args.repeat // 4))
    print(f"| (without rollups: GROUP BY provider, model over all records) | {median:.2f} | {slowest:.2f} | |")
    store.close()
    if directory is not None and not args.keep:
        for suffix in ("", "-wal", "-shm"):
            if os.path.exists(path + suffix):
                os.unlink(path + suffix)
        os.rmdir(directory)
    elif directory is not None:
        print(f"kept {path}")


if __name__ == "__main__":
    main()
