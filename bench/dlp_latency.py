"""What answer scanning (DLP) adds: time to first token of a stream, and CPU for big prompts.

Side by side in one run, against the same local fake provider over HTTPS:
- direct: the client calls the fake provider itself;
- gateway: the real gateway with the defaults (built-in catalog, answers
  scanned, ``dlp.stream_holdback_bytes`` 2048);
- gateway, no answer scan: a second gateway with ``dlp: {response_scan: false}``,
  to separate the holdback window from plain proxying.

1. Time to first token (TTFT) at concurrency 1: N streams per provider and
   path of a realistic answer (about 40 words, one text delta per word, each
   ending with a space, ``chunk_delay_s`` between events), Anthropic and
   OpenAI. TTFT is from sending the request to receiving the first event that
   carries text (Anthropic ``content_block_delta``; OpenAI the first chunk with
   ``delta.content``), read with ``http.client``'s ``read1`` over a kept-alive
   connection, so nothing is buffered on the client side. The three paths
   take turns request by request (rotating order) so that noise hits them
   alike. Every stream's text is checked against what the fake sent.
2. Gateway CPU per call with a 64 KB prompt (prose with an e-mail address and
   an AWS access key id sprinkled in, which the gateway redacts), versus a
   small prompt and a 64 KB prompt with nothing to redact, non-streamed, at
   concurrency 8 (threads). CPU is user+system of the master, the workers and
   policy-sync from /proc/<pid>/stat over the run, divided by the calls.

    python -m bench.dlp_latency [--streams 100] [--chunk-delay 0.01] [--cpu-calls 800] [--workers 2]
"""

import argparse
import http.client
import json
import os
import re
import ssl
import threading
import time
import urllib.parse

from bench.proxy_overhead import cpu_seconds
from bench.world import KEY, bench_policy, gateway_config, local_world, run_threads
from tests.harness import Gateway

ANTHROPIC_MODEL = "claude-sonnet-4-5"
OPENAI_MODEL = "gpt-4o-mini"
HEADERS = {
    "anthropic": {"content-type": "application/json", "x-api-key": "sk-bench",
                  "anthropic-version": "2023-06-01", "x-mitrity-api-key": KEY},
    "openai": {"content-type": "application/json", "authorization": "Bearer sk-bench",
               "x-mitrity-api-key": KEY},
}
PATHS = {"anthropic": "/v1/messages", "openai": "/v1/chat/completions"}

# The streamed answer: 40 words, one delta per word, each ending with a space.
ANSWER = ("The deployment finished without errors and the new release is now serving traffic in all three "
          "regions. Latency stayed flat during the rollout, error rates did not move, and the old version "
          "was drained cleanly before it was finally removed. ")
CHUNKS = re.findall(r"\S+\s+", ANSWER)
SHORT_REPLY = "Sure, here is a short answer."

EVENT_END = re.compile(rb"\r?\n\r?\n")

# --- prompts for the CPU part --------------------------------------------------------------

_PROSE = [
    "The incident began shortly after the nightly batch job started, when the queue depth on the ingest "
    "cluster grew faster than the consumers could drain it.",
    "Our first hypothesis was a slow downstream dependency, but the traces showed that most of the time "
    "was spent serialising records before they ever left the worker.",
    "We rolled back the configuration change from the afternoon, which reduced the backlog, although it "
    "did not explain why the memory usage kept climbing on two of the nodes.",
    "A closer look at the heap profiles pointed to a cache that was keyed on the full request object "
    "instead of its identifier, so every retry created a new entry.",
    "The fix is small: key the cache on the identifier, cap its size, and add a metric for evictions so "
    "that the same pattern is visible on the dashboard next time.",
    "Please review the attached summary, check whether the proposed timeline for the follow-up work is "
    "realistic, and suggest anything we should add to the postmortem.",
    "For context, the service handles roughly twelve thousand requests per minute at peak, with a p99 "
    "latency target of 250 milliseconds measured at the load balancer.",
    "The on-call engineer escalated at 02:40, the mitigation was in place by 03:15, and full recovery "
    "was confirmed at 04:05 after the backlog reached zero.",
]
_SECRETS = [  # (sentence with a secret, same-length-ish sentence without)
    ("If anything is unclear, write to jane.doe@example.com before Friday.",
     "If anything is unclear, write to the platform team before Friday."),
    ("The leaked credential was the access key AKIAIOSFODNN7EXAMPLE, now revoked.",
     "The leaked credential was an old deploy token, now revoked and rotated."),
    ("Copy the final report to ops-oncall@example.org as well.",
     "Copy the final report to the operations channel as well."),
]


def big_prompt(size, with_secrets):
    """About ``size`` bytes of prose; with_secrets sprinkles the secret sentences through it."""
    parts, n, i = [], 0, 0
    pending = [int(size * f) for f in (0.2, 0.5, 0.8)]  # where the three secret sentences go
    while n < size:
        if i % 6 == 0:
            parts.append(f"\n\nSection {i // 6 + 1}.")
            n += len(parts[-1])
        sentence = _PROSE[i % len(_PROSE)]
        if pending and n >= pending[0]:
            secret, plain = _SECRETS[3 - len(pending)]
            sentence = secret if with_secrets else plain
            pending.pop(0)
        parts.append(" " + sentence)
        n += len(parts[-1])
        i += 1
    return "".join(parts).strip()[:size].rsplit(" ", 1)[0] + "."


def anthropic_body(prompt, stream=False, max_tokens=256):
    return json.dumps({"model": ANTHROPIC_MODEL, "max_tokens": max_tokens, "stream": stream,
                       "messages": [{"role": "user", "content": prompt}]}).encode()


def openai_body(prompt, stream=False):
    return json.dumps({"model": OPENAI_MODEL, "stream": stream,
                       "messages": [{"role": "user", "content": prompt}]}).encode()


# --- a raw HTTP/1.1 client -----------------------------------------------------------------

class Client:
    """One kept-alive HTTPS connection (http.client), reconnecting only if the server closed it."""

    def __init__(self, base_url, ca):
        url = urllib.parse.urlsplit(base_url)
        ctx = ssl.create_default_context(cafile=ca)
        self.conn = http.client.HTTPSConnection(url.hostname, url.port, context=ctx, timeout=30)

    def post(self, provider, body):
        self.conn.request("POST", PATHS[provider], body=body, headers=HEADERS[provider])
        return self.conn.getresponse()

    def close(self):
        self.conn.close()


def event_text(event, provider):
    """The generated text an SSE event carries ("" if none)."""
    data = b"\n".join(line[5:].lstrip(b" ") for line in event.splitlines() if line.startswith(b"data:"))
    if not data or data == b"[DONE]":
        return ""
    obj = json.loads(data)
    if provider == "anthropic":
        if obj.get("type") == "content_block_delta" and obj["delta"].get("type") == "text_delta":
            return obj["delta"]["text"]
        return ""
    choices = obj.get("choices") or []
    return (choices[0].get("delta") or {}).get("content") or "" if choices else ""


def stream_once(client, provider, body):
    """(TTFT ms, whole stream ms, text received) for one streamed call."""
    start = time.perf_counter()
    resp = client.post(provider, body)
    if resp.status != 200:
        raise RuntimeError(f"{provider}: HTTP {resp.status}: {resp.read()[:300]!r}")
    buf, text, ttft = b"", [], None
    while True:
        chunk = resp.read1(65536)
        now = time.perf_counter()
        if not chunk:
            break
        buf += chunk
        while True:
            m = EVENT_END.search(buf)
            if m is None:
                break
            event, buf = buf[:m.start()], buf[m.end():]
            piece = event_text(event, provider)
            if piece:
                if ttft is None:
                    ttft = (now - start) * 1000
                text.append(piece)
    total = (time.perf_counter() - start) * 1000
    if ttft is None:
        raise RuntimeError(f"{provider}: stream carried no text")
    return ttft, total, "".join(text)


def percentile(values, q):
    values = sorted(values)
    return values[min(len(values) - 1, max(0, int(round(q * len(values))) - 1))]


# --- part 1: time to first token -----------------------------------------------------------

def measure_ttft(provider, targets, fake, n, warmup, chunk_delay):
    """targets: [(name, Client)]; returns {name: (ttfts, totals)}."""
    body = (anthropic_body if provider == "anthropic" else openai_body)("Summarise the rollout.", stream=True)
    results = {name: ([], []) for name, _ in targets}
    for i in range(warmup + n):
        k = i % len(targets)
        for name, client in targets[k:] + targets[:k]:  # rotate who goes first
            fake.script(chunks=CHUNKS, chunk_delay_s=chunk_delay)
            ttft, total, text = stream_once(client, provider, body)
            if text != ANSWER:
                raise RuntimeError(f"{provider} via {name}: text differs from the answer sent: {text[:120]!r}")
            if i >= warmup:
                results[name][0].append(ttft)
                results[name][1].append(total)
    return results


# --- part 2: CPU per call ------------------------------------------------------------------

def concurrent(base_url, ca, body, calls, threads=8):
    """(calls made, seconds, decisions seen) for ``calls`` non-streamed Anthropic calls on ``threads``."""
    per_thread = calls // threads
    errors, decisions, lock = [], {}, threading.Lock()

    def run():
        client = Client(base_url, ca)
        try:
            for _ in range(per_thread):
                resp = client.post("anthropic", body)
                resp.read()
                with lock:
                    if resp.status != 200:
                        errors.append(resp.status)
                    d = resp.getheader("x-mitrity-decision", "direct")
                    decisions[d] = decisions.get(d, 0) + 1
        finally:
            client.close()
    elapsed = run_threads(run, threads)
    if errors:
        raise RuntimeError(f"{len(errors)} calls failed: {errors[:5]}")
    return per_thread * threads, elapsed, decisions


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--streams", type=int, default=100, help="measured streams per provider and path")
    parser.add_argument("--warmup", type=int, default=5, help="unmeasured streams per provider and path")
    parser.add_argument("--chunk-delay", type=float, default=0.01, help="fake provider pause between events (s)")
    parser.add_argument("--cpu-calls", type=int, default=800, help="calls per prompt size in part 2")
    parser.add_argument("--prompt-kb", type=int, default=64)
    parser.add_argument("--workers", type=int, default=2)
    args = parser.parse_args()
    started = time.monotonic()

    prompts = {
        "small": "Say hello in five words.",
        "secrets": big_prompt(args.prompt_kb * 1024, with_secrets=True),
        "plain": big_prompt(args.prompt_kb * 1024, with_secrets=False),
    }

    with local_world() as world:
        tmp, upstream_tls, pki, fake = world.tmp, world.upstream_tls, world.pki, world.provider
        policy = bench_policy([f"llm:send:anthropic:{ANTHROPIC_MODEL}*", f"llm:send:openai:{OPENAI_MODEL}*"])
        fake.default_reply = SHORT_REPLY  # non-streamed answers: short, the same for every prompt
        common = gateway_config(world, args.workers, ("anthropic", "openai"))
        gateways = []
        clients = []
        try:
            for name, extra in (("scan", {}), ("noscan", {"dlp": {"response_scan": False}})):
                os.makedirs(os.path.join(tmp, name))
                gateways.append(Gateway(os.path.join(tmp, name), pki, dict(common, **extra), policy).start())
            gw, gw_noscan = gateways
            targets = [("direct", Client(fake.base_url, upstream_tls["ca"])),
                       ("gateway", Client(gw.url, pki.ca.cert_path)),
                       ("gateway-noscan", Client(gw_noscan.url, pki.ca.cert_path))]
            clients = [c for _, c in targets]

            # Part 1: TTFT at concurrency 1.
            ttft = {}
            for provider in ("anthropic", "openai"):
                ttft[provider] = measure_ttft(provider, targets, fake, args.streams, args.warmup, args.chunk_delay)
            # Sanity: the first gateway really scans answers, the second really does not.
            leak = "Write to jane.doe@example.com about it. "
            for name, client in targets[1:]:
                fake.script(chunks=re.findall(r"\S+\s+", leak), chunk_delay_s=args.chunk_delay)
                text = stream_once(client, "anthropic", anthropic_body("Who?", stream=True))[2]
                if ("jane.doe@example.com" in text) != (name == "gateway-noscan"):
                    raise RuntimeError(f"{name}: unexpected answer scanning: {text!r}")
            assert fake.pending_scripts == 0, fake.pending_scripts
            fake.reset()
            part1_s = time.monotonic() - started

            # Part 2: gateway CPU per non-streamed call, concurrency 8.
            pids = [gw.process.pid] + gw.children()
            cpu = {}
            for kind in ("small", "secrets", "plain"):
                body = anthropic_body(prompts[kind], max_tokens=64)
                concurrent(gw.url, pki.ca.cert_path, body, 40)  # warm up
                direct_calls, direct_s, _ = concurrent(fake.base_url, upstream_tls["ca"], body, args.cpu_calls)
                fake.reset()
                cpu0 = cpu_seconds(pids)
                calls, seconds, decisions = concurrent(gw.url, pki.ca.cert_path, body, args.cpu_calls)
                used = cpu_seconds(pids) - cpu0
                sent = fake.requests_snapshot()[-1].body.decode()
                fake.reset()
                cpu[kind] = (len(body), calls, seconds, used, decisions, direct_calls / direct_s, sent)
            secrets_sent = cpu["secrets"][6]
            assert "AKIAIOSFODNN7EXAMPLE" not in secrets_sent and "jane.doe@example.com" not in secrets_sent, \
                "the gateway forwarded the secrets unredacted"
            redaction_marks = sorted(set(re.findall(r"\[REDACTED:[^\]]+\]", secrets_sent)))
        finally:
            for c in clients:
                c.close()
            for g in gateways:
                g.stop()
    elapsed = time.monotonic() - started

    # --- report ------------------------------------------------------------------------------
    labels = {"direct": "direct", "gateway": "gateway (response scan, 2048-byte holdback)",
              "gateway-noscan": "gateway, `response_scan: false`"}
    print(f"# DLP latency and CPU ({args.workers} workers, {os.cpu_count()} cores, run took {elapsed:.0f} s)")
    print()
    print(f"## Time to first token, streamed, concurrency 1 ({args.streams} streams per row, "
          f"{len(CHUNKS)} word deltas, {args.chunk_delay * 1000:.0f} ms between events)")
    print()
    print("| provider | path | TTFT p50 (ms) | TTFT p99 (ms) | added p50 (ms) | added p99 (ms) | whole stream p50 (ms) |")
    print("|---|---|---|---|---|---|---|")
    added = {}
    for provider in ("anthropic", "openai"):
        res = ttft[provider]
        d50, d99 = percentile(res["direct"][0], 0.50), percentile(res["direct"][0], 0.99)
        for name in ("direct", "gateway", "gateway-noscan"):
            t, total = res[name]
            p50, p99 = percentile(t, 0.50), percentile(t, 0.99)
            add = "" if name == "direct" else f"{p50 - d50:+.2f}"
            add99 = "" if name == "direct" else f"{p99 - d99:+.2f}"
            added[(provider, name)] = (p50 - d50, p99 - d99)
            print(f"| {provider} | {labels[name]} | {p50:.2f} | {p99:.2f} | {add} | {add99} | "
                  f"{percentile(total, 0.50):.1f} |")
    print()
    print("| provider | added TTFT by the holdback itself, p50 (scan - no scan, ms) | "
          "target: added TTFT < 5 ms (p50 / p99) |")
    print("|---|---|---|")
    for provider in ("anthropic", "openai"):
        a50, a99 = added[(provider, "gateway")]
        n50, _ = added[(provider, "gateway-noscan")]
        verdict = f"{'met' if a50 < 5 else 'NOT met'} / {'met' if a99 < 5 else 'NOT met'}"
        print(f"| {provider} | {a50 - n50:+.2f} | {verdict} |")
    print()
    print(f"## Gateway CPU per non-streamed call, concurrency 8 ({args.cpu_calls} calls per row, "
          "default gateway, Anthropic)")
    print()
    print("| prompt | request body | gateway decision | gateway CPU per call (ms) | added vs small (ms) | "
          "requests/s through gateway | requests/s direct |")
    print("|---|---|---|---|---|---|---|")
    names = {"small": "small (24 chars)", "secrets": f"{args.prompt_kb} KB prose, 3 secrets (2 e-mails, 1 AWS key id)",
             "plain": f"{args.prompt_kb} KB prose, nothing to redact"}
    small_ms = cpu["small"][3] / cpu["small"][1] * 1000
    for kind in ("small", "secrets", "plain"):
        size, calls, seconds, used, decisions, direct_rps, _ = cpu[kind]
        ms = used / calls * 1000
        dec = ", ".join(f"{k} {v}" for k, v in sorted(decisions.items()))
        extra = "" if kind == "small" else f"+{ms - small_ms:.2f}"
        print(f"| {names[kind]} | {size / 1024:.1f} KB | {dec} | {ms:.2f} | {extra} | {calls / seconds:.0f} | "
              f"{direct_rps:.0f} |")
    print()
    print(f"Redactions seen upstream in the 64 KB prompt with secrets: {', '.join(redaction_marks) or 'none'}.")
    print(f"(Part 1 took {part1_s:.0f} s, part 2 {elapsed - part1_s:.0f} s.)")


if __name__ == "__main__":
    main()
