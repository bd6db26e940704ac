"""DLP over whole texts: a request's prompt strings, or a non-streamed answer's.

Each string the provider adapter names is scanned on its own (a secret cannot
span two JSON strings). A ``block`` finding anywhere decides the verdict;
otherwise every finding becomes an edit of exactly its span, and the body is
rewritten in place (``gateway.jsonspans.replace_spans``): every other byte,
escapes in the same string included, stays as it was. Streamed answers go through the
holdback window instead (``gateway.streaming``).
"""

from dataclasses import dataclass

from .verdict import ALLOWED, deny


@dataclass(frozen=True)
class TextScan:
    verdict: object          # ALLOWED, or the denial (reason given by the caller)
    edits: tuple = ()        # (StringValue, [(start, end, "[REDACTED:<id>]"), ...])
    redactions: int = 0      # findings replaced


def scan_strings(scanner, strings, target, block_reason):
    """Scan adapter-named StringValues; block with ``block_reason`` or list the rewrites."""
    if not strings or not scanner.has_patterns(target):
        return TextScan(ALLOWED)
    edits, count = [], 0
    for string in strings:
        findings = scanner.scan(string.value, target)
        if not findings:
            continue
        blocking = next((f for f in findings if f.action == "block"), None)
        if blocking is not None:
            return TextScan(deny(block_reason, blocking.pattern_id))
        edits.append((string, [(f.start, f.end, f"[REDACTED:{f.pattern_id}]") for f in findings]))
        count += len(findings)
    return TextScan(ALLOWED, tuple(edits), count)
