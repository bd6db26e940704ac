"""DLP scan throughput, per core: RE2 (the gateway's scanner) against Python's
``re`` running the same patterns the same way.

Patterns: the full built-in catalog plus 100 generated bundle patterns
(``ACME<n>-[0-9]{6}``, ``proj<n>_[a-f0-9]{32}``, ``(?i:int<n>-key-[a-z]{8})``,
``T<n>[A-Z]{3}-[0-9]{4}-[0-9]{4}`` in turn).

Texts (about 10 MB each, built in memory from what ships with Python, so no
download and the same text on every run):
- prose: paragraphs of Python's own documentation (``pydoc_data.topics``):
  English technical prose, with the odd number a phone pattern looks at;
- words: the same vocabulary with digits and symbols removed (no candidate
  at all: the prefilter's best case);
- dense: prose with a secret or PII sample about every 200 bytes.

Method, for both engines: one combined alternation searched first (no hit: no
finding); after a hit, RE2 asks an ``RE2::Set`` which patterns match and runs
only those, Python tries every pattern; matches are validated and merged
(Python reuses the scanner's merge). Then the streaming cost: the prose fed
through the holdback window in 4-character deltas. Then the reason RE2 is
mandatory: ``(a+)+$`` on ``"a" * n + "!"``.

    python -m bench.dlp_throughput [--mb 10] [--repeat 3]
"""

import argparse
import random
import re
import time

from pydoc_data.topics import topics

from gateway.engine.dlp.holdback import HoldbackScanner
from gateway.engine.dlp.scanner import Hit, Scanner, compile_scanner

SAMPLES = [
    "AKIAQ3EGRT5YZ2MXN7PL", "ghp_R8fLq2VxN5tKw9PzH3mYc7DjB1sAe4GuT6oI", "jane.roe@example.org",
    "4539 1488 0343 6467", "GB82 WEST 1234 5698 7654 32", "078-05-1121", "(415) 555-0134",
    'password = "Tr0ub4dor&3"', "postgres://app:Zq9xW2v@db.internal:5432/app", "ACME42-123456",
    "sk-proj-" + "Ab3dE" * 12, "xoxb-2048163242-5021398476-Zk3LmN8pQ2rS5tV7wX9yB1cD",
]


def bundle_patterns(count=100):
    shapes = [r"\bACME{n}-[0-9]{{6}}\b", r"\bproj{n}_[a-f0-9]{{32}}\b", r"\b(?i:int{n}-key-[a-z]{{8}})\b",
              r"\bT{n}[A-Z]{{3}}-[0-9]{{4}}-[0-9]{{4}}\b"]
    return [{"id": f"bench-{n}", "regex": shapes[n % len(shapes)].format(n=n)} for n in range(count)]


def make_texts(megabytes):
    rng = random.Random(7)
    paragraphs = [p for text in topics.values() for p in text.split("\n\n") if len(p) > 40]
    target = int(megabytes * 1_000_000)
    prose, size = [], 0
    while size < target:
        paragraph = rng.choice(paragraphs)
        prose.append(paragraph)
        size += len(paragraph) + 2
    prose = "\n\n".join(prose)
    words = "".join(ch if ch.isalpha() or ch in " \n.," else " " for ch in prose)
    dense, pos = [], 0
    while pos < len(prose):
        step = rng.randint(150, 250)
        dense.append(prose[pos:pos + step])
        dense.append(" " + rng.choice(SAMPLES) + " ")
        pos += step
    return {"prose": prose, "words": words, "dense": "".join(dense)}


class PythonReScanner:
    """The same method with Python's ``re`` (no Set: after a hit, every pattern)."""

    def __init__(self, scanner: Scanner, target="prompt"):
        self.entries = scanner.entries(target)
        self.compiled = [re.compile(e.pattern.regex) for e in self.entries]
        self.combined = re.compile("|".join(f"(?:{e.pattern.regex})" for e in self.entries))

    def scan(self, text):
        first = self.combined.search(text)
        if first is None:
            return []
        hits = []
        for entry, regex in zip(self.entries, self.compiled):
            for m in regex.finditer(text, first.start()):
                g = entry.group
                s, e = m.span(g)
                while s < 0 and g < regex.groups:
                    g += 1
                    s, e = m.span(g)
                valid = s < e and (entry.validator is None or entry.validator(text[s:e]))
                hits.append(Hit(s, e, m.start(), m.end(), entry, valid))
        return Scanner.merge(hits)


def timed(fn, repeat):
    best, result = None, None
    for _ in range(repeat):
        started = time.process_time()
        result = fn()
        elapsed = time.process_time() - started
        best = elapsed if best is None else min(best, elapsed)
    return best, result


def stream(scanner, text, window=2048, delta=4):
    hb = HoldbackScanner(scanner, window, "response")
    out, feeds = [], 0
    for i in range(0, len(text), delta):
        out.append(hb.feed(text[i:i + delta])[0])
        feeds += 1
    out.append(hb.finish()[0])
    return feeds, "".join(out)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mb", type=float, default=10.0)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    scanner = compile_scanner(True, bundle_patterns())
    pyre = PythonReScanner(scanner)
    texts = make_texts(args.mb)
    print(f"patterns: {len(scanner.patterns)} ({len(scanner.patterns) - 100} built-in + 100 bundle), one core\n")
    print("| text | MB (UTF-8) | findings | RE2 MB/s | Python re MB/s | RE2 speed-up |")
    print("|---|---:|---:|---:|---:|---:|")
    for name, text in texts.items():
        mb = len(text.encode("utf-8")) / 1e6
        t_re2, findings = timed(lambda: scanner.scan(text, "prompt"), args.repeat)
        t_py, _ = timed(lambda: pyre.scan(text), 1)
        print(f"| {name} | {mb:.1f} | {len(findings)} | {mb / t_re2:.0f} | {mb / t_py:.1f} | {t_py / t_re2:.0f}x |")

    prose = texts["prose"][:2_000_000]
    mb = len(prose.encode("utf-8")) / 1e6
    t_stream, (feeds, released) = timed(lambda: stream(scanner, prose), 1)
    assert released == scanner.redact(prose, scanner.scan(prose, "response"))
    print(f"\nStreaming (holdback window 2048 chars, 4-character deltas, {mb:.1f} MB of prose): "
          f"{mb / t_stream:.1f} MB/s, {t_stream / feeds * 1e6:.1f} us per delta; output equals the whole-text "
          "redaction.")

    print("\nCatastrophic backtracking, `(a+)+$` on `'a' * n + '!'`:\n")
    print("| engine | n | seconds |\n|---|---:|---:|")
    evil = Scanner([scanner.patterns[0].__class__("evil", r"(a+)+$")])
    for n in (100_000, 1_000_000):
        t, _ = timed(lambda: evil.scan("a" * n + "!", "prompt"), 1)
        print(f"| RE2 | {n:,} | {t:.4f} |")
    for n in (18, 20, 22):
        t, _ = timed(lambda: re.search(r"(a+)+$", "a" * n + "!"), 1)
        print(f"| Python re | {n} | {t:.4f} |")


if __name__ == "__main__":
    main()
