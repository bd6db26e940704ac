"""Data loss prevention: find secrets and personal data in text, sans I/O.

- catalog.py     the built-in patterns and the policy's ``dlp_patterns`` merged onto them
- validators.py  checksums and shape checks that turn a regex hit into a finding
- scanner.py     RE2 scanning of a whole text: findings, merging, redaction
- prefixes.py    the prefix language of a pattern (what may still become a match)
- holdback.py    the streaming scan of generated text through a holdback window

Typical use: ``scanner = compile_scanner(builtin_enabled, bundle["dlp_patterns"])``
once per policy generation (raises PatternError: reject the bundle); per
request ``findings = scanner.scan(text, "prompt")``, block when any finding's
action is ``block``, else ``scanner.redact(text, findings)``; per streamed
answer ``HoldbackScanner(scanner, window_chars)`` with ``feed``/``finish``.
No sockets, no gevent, no threads: plain functions over strings.
"""

from .catalog import BUILTIN, Pattern, merge_patterns
from .holdback import HoldbackScanner
from .scanner import Finding, PatternError, Scanner, compile_scanner

__all__ = ["BUILTIN", "Finding", "HoldbackScanner", "Pattern", "PatternError", "Scanner", "compile_scanner",
           "merge_patterns"]
