"""The DLP scanner: text in, findings out, in time linear in the text.

Theory of operation
-------------------
Every pattern is compiled with RE2 (``re2``), whose automata run in time
linear in the text whatever the pattern; Python's ``re`` is never used for
matching, because bundle patterns are only semi-trusted and a backtracking
engine turns ``(a+)+$`` into minutes. A pattern RE2 refuses (backreferences,
lookaround...) raises PatternError naming the pattern, and the caller rejects
the whole bundle.

Per target (``prompt``, ``response``) the scanner keeps:
1. one combined alternation ``(?:p1)|(?:p2)|...`` (no captures);
2. an ``RE2::Set`` of the same patterns;
3. each pattern compiled alone;
4. the prefix analysis (prefixes.py): ``viable`` finds, with a reverse DFA
   from a position ``q``, the earliest start from which the text before ``q``
   could still be the beginning of a match.
``scan`` encodes the text to UTF-8 once and searches it with (1). No hit: no
finding; clean text costs that one DFA pass. Every match of every pattern
starts inside some hit of the alternation (its leftmost-first search never
skips a position where any pattern matches), so the scan works region by
region: from a hit at ``p`` to the first *safe boundary* ``q`` after it, a
position no match crosses or ends at (``viable`` says nothing is in progress
at ``q``; tried just after a space). In ``[p, q)`` the Set (2) names the
patterns that match there, and only those run alone (3), leftmost-first,
their matches validated; then the alternation resumes at ``q``. When regions
come closer than 2 KB on average, the rest of the text is one region. If no
safe boundary turns up, the region runs to the end: correct, just slower.

Why (measured, ``bench/dlp_throughput.py``, one core, the built-in catalog
plus 100 generated bundle patterns, 10 MB texts): the combined alternation
runs at about 400 MB/s (RE2's DFA ceiling on this machine is about 530 MB/s
for any single pattern without a literal prefix); the Set pass at about
275-350 MB/s; one search per pattern, 150 patterns, about 10 MB/s; Python's
``re`` with the same alternation, 0.3 MB/s. Running the Set and the
candidate patterns over the whole rest of the text after the first hit cost
prose (a phone-like number every 60 KB) a third of its speed; regions bring
it back to the alternation's pace: about 200 MB/s on prose with non-ASCII
characters (a quarter of that time is UTF-8 encoding) and 260 MB/s on text
with no candidate at all. The Set alone would do for clean text, but when
its DFA runs out of memory it silently reports no match (the Python binding
drops the error), which would fail open; an RE2 regex falls back to its NFA
instead, slower but correct. So the Set only ever narrows a hit the
alternation has already proven, and an empty Set answer after a proven hit
runs every pattern.

Findings: each match's span (of the pattern's ``group``) becomes a finding;
overlapping findings (of any patterns) merge into one covering their union,
so a replacement never leaves a fragment of a secret. A merged finding is
``block`` if any member is; its id is that of the first member in the order
(block before redact, earliest start, longest, catalog order), so a block
names its blocking rule and a redaction the outermost, earliest secret.
Touching findings stay separate. Offsets are code points of the ``str``.

Context: ``scan(text, target, start, end)`` reports matches lying inside
``text[start:end]`` while assertions (``\\b``, ``^``, ``$``) see the text around
it, as RE2 does with startpos/endpos: ``$`` holds only at the end of ``text``.
The holdback window (holdback.py) relies on exactly that.
"""

from dataclasses import dataclass

import re2

from .catalog import ACTIONS, TARGETS, Pattern, PatternError, merge_patterns
from .prefixes import Unanalyzable, prefix_regex

__all__ = ["Finding", "PatternError", "Scanner", "compile_scanner"]

# RE2 memory budgets (bytes). A single pattern keeps RE2's default; the
# combined alternation and the Set get room for their larger DFAs. Running out
# costs speed (NFA fallback), never a missed match (see above).
PATTERN_MAX_MEM = 8 << 20
PREFILTER_MAX_MEM = 64 << 20
# Region scanning: tries to find a safe boundary after a hit; and when hits
# come closer than this on average (after that many regions), the rest of
# the text is one region (fewer, larger calls).
SAFE_END_TRIES = 4
DENSE_REGIONS = 32
DENSE_BYTES_PER_REGION = 2048
# Texts a pattern must not match with an empty span (a pattern that can match
# nothing would hit everywhere and defeat the prefilter).
_EMPTY_PROBES = (b"", b" ", b"a", b"0", b"a b", b"\n", b"-", b"a\n")


@dataclass(frozen=True)
class Finding:
    pattern_id: str
    action: str
    start: int   # str (code point) offsets
    end: int


def _options(max_mem, never_capture=False):
    options = re2.Options()
    options.log_errors = False
    options.max_mem = max_mem
    options.never_capture = never_capture
    return options


def _has_any_byte_escape(regex):
    r"""``\C`` matches one byte and could split a UTF-8 character."""
    i = 0
    while i < len(regex):
        if regex[i] == "\\":
            if regex[i + 1:i + 2] == "C":
                return True
            i += 2
        else:
            i += 1
    return False


class _Entry:
    __slots__ = ("index", "pattern", "regex", "group", "validator", "block")

    def __init__(self, index, pattern):
        self.index = index
        self.pattern = pattern
        self.group = pattern.group
        self.validator = pattern.validator
        self.block = pattern.action == "block"
        self.regex = _compile(pattern)


def _compile(pattern):
    pid = pattern.id
    if not isinstance(pid, str) or not pid:
        raise PatternError(str(pid), "id must be a non-empty string")
    if pattern.action not in ACTIONS:
        raise PatternError(pid, "action must be redact or block")
    if not pattern.applies_to or not frozenset(pattern.applies_to) <= TARGETS:
        raise PatternError(pid, "applies_to must list prompt and/or response")
    if not isinstance(pattern.regex, str) or not pattern.regex:
        raise PatternError(pid, "regex must be a non-empty string")
    if _has_any_byte_escape(pattern.regex):
        raise PatternError(pid, r"\C (any byte) is not supported")
    try:
        regex = re2.compile(pattern.regex, _options(PATTERN_MAX_MEM))
    except re2.error as exc:
        detail = exc.args[0].decode("utf-8", "replace") if exc.args and isinstance(exc.args[0], bytes) else exc
        raise PatternError(pid, f"RE2 cannot compile it ({detail}); RE2 has no backreferences or "
                                "lookaround") from None
    if not isinstance(pattern.group, int) or not 0 <= pattern.group <= regex.groups:
        raise PatternError(pid, f"group {pattern.group} does not exist")
    for probe in _EMPTY_PROBES:
        if any(m.start() == m.end() for m in regex.finditer(probe)):
            raise PatternError(pid, "can match the empty string")
    return regex


class _Target:
    """The patterns of one target and their prefilters, and the prefix
    analysis (prefixes.py) used for safe boundaries here and by the holdback
    window: ``prefix[index]`` matches the prefixes of one pattern's matches,
    ``viable`` (anchored at the end of the text) finds the earliest position
    from which the rest could still be part of a match. None: not analysable,
    every position counts as a possible match start."""

    def __init__(self, entries):
        self.entries = entries
        self.combined = self.set = self.viable = None
        self.prefix = {}
        if not entries:
            return
        alternation = "|".join(f"(?:{e.pattern.regex})" for e in entries)
        try:
            self.combined = re2.compile(alternation, _options(PREFILTER_MAX_MEM, never_capture=True))
        except re2.error:
            self.combined = None        # too big: every scan runs every pattern (slow, correct)
        try:
            pattern_set = re2.Set.SearchSet(_options(PREFILTER_MAX_MEM))
            for e in entries:
                pattern_set.Add(e.pattern.regex)
            pattern_set.Compile()
            self.set = pattern_set
        except re2.error:
            self.set = None
        parts = []
        for e in entries:
            try:
                source = prefix_regex(e.pattern.regex)
                self.prefix[e.index] = re2.compile(source, _options(PREFILTER_MAX_MEM, never_capture=True))
                parts.append(f"(?:{source})")
            except (Unanalyzable, re2.error):
                self.prefix[e.index] = None
        if len(parts) == len(entries):
            try:
                self.viable = re2.compile("(?:" + "|".join(parts) + ")$",
                                          _options(PREFILTER_MAX_MEM, never_capture=True))
            except re2.error:
                self.viable = None

    def safe_end(self, data, lo, at, bend):
        """A position ``q`` in ``[at, bend]`` no match starting at or after
        ``lo`` crosses or ends at: no suffix of ``data[lo:q]`` is a possible
        match prefix. Tried just after a space, a few times, further each
        time; ``bend`` when none is found (always safe, just slower)."""
        if self.viable is None:
            return bend
        q, step = at, 64
        view = memoryview(data)
        for _ in range(SAFE_END_TRIES):
            if q >= bend:
                return bend
            space = data.find(b" ", q, min(bend, q + 256))
            q = space + 1 if space >= 0 else q
            m = self.viable.search(view[:q], lo)
            if m is not None and m.start() == q:
                return q
            q, step = q + step, step * 4
        return bend


class Hit:
    """One validated match before merging: the finding span (the pattern's
    group), the whole regex match's span (code points) and the pattern."""

    __slots__ = ("start", "end", "match_start", "match_end", "entry", "valid")

    def __init__(self, start, end, match_start, match_end, entry, valid=True):
        self.start, self.end, self.entry, self.valid = start, end, entry, valid
        self.match_start, self.match_end = match_start, match_end

    def __repr__(self):
        return f"Hit({self.entry.pattern.id}, {self.start}, {self.end})"


class Scanner:
    def __init__(self, patterns: list[Pattern]):
        entries = [_Entry(i, p) for i, p in enumerate(patterns)]
        ids = [e.pattern.id for e in entries]
        for pid in ids:
            if ids.count(pid) > 1:
                raise PatternError(pid, "duplicate pattern id")
        self.patterns = tuple(patterns)
        self._targets = {t: _Target([e for e in entries if t in e.pattern.applies_to]) for t in TARGETS}

    def has_patterns(self, target) -> bool:
        return bool(self._target(target).entries)

    def entries(self, target):
        return self._target(target).entries

    def profile(self, target):
        """The target's compiled patterns and prefix analysis (for holdback.py)."""
        return self._target(target)

    def _target(self, target):
        try:
            return self._targets[target]
        except KeyError:
            raise ValueError(f"target must be prompt or response, not {target!r}") from None

    def scan(self, text: str, target: str, start: int = 0, end: int | None = None) -> list[Finding]:
        """Merged, sorted, non-overlapping findings inside ``text[start:end]``."""
        return self.merge(self.hits(text, target, start, end))

    def hits(self, text, target, start=0, end=None):
        """Matches inside ``text[start:end]``, unmerged: each pattern's own
        leftmost-first sequence (see the module docstring). A match whose
        group is empty or fails the validator is kept with ``valid=False``:
        it is no finding, but the pattern's next match starts after it."""
        tgt = self._target(target)
        n = len(text)
        end = n if end is None else max(0, min(end, n))
        start = max(0, min(start, n))
        if not tgt.entries or start >= end:
            return []
        # Encode only the range plus one code point either side: RE2's
        # assertions look at most one character beyond a match.
        cs, ce = max(0, start - 1), min(n, end + 1)
        piece = text[cs:ce]
        data = piece.encode("utf-8", "surrogatepass")
        ascii_only = len(data) == len(piece)
        if ascii_only:
            bpos, bend = start - cs, end - cs
        else:
            bpos = len(piece[:start - cs].encode("utf-8", "surrogatepass"))
            bend = len(data) - len(piece[end - cs:].encode("utf-8", "surrogatepass"))
        raw = []
        if tgt.combined is None:
            self._region(tgt, data, bpos, bend, raw)
        else:
            # Every match starts inside a hit of the alternation; work only
            # from a hit to the next safe boundary, unless hits are dense.
            pos, regions = bpos, 0
            while pos < bend:
                first = tgt.combined.search(data, pos, bend)
                if first is None:
                    break
                p = first.start()
                dense = regions >= DENSE_REGIONS and (p - bpos) < regions * DENSE_BYTES_PER_REGION
                q = bend if dense else tgt.safe_end(data, p, first.end(), bend)
                self._region(tgt, data, p, q, raw)
                pos, regions = q, regions + 1
        if not raw:
            return []
        if ascii_only:
            out = [Hit(s + cs, e + cs, ms + cs, me + cs, entry, v) for s, e, ms, me, entry, v in raw]
        else:
            chars = _char_offsets(data, {x for s, e, ms, me, *_ in raw for x in (s, e, ms, me)})
            out = [Hit(chars[s] + cs, chars[e] + cs, chars[ms] + cs, chars[me] + cs, entry, v)
                   for s, e, ms, me, entry, v in raw]
        out.sort(key=_hit_order)
        return out

    @staticmethod
    def _region(tgt, data, p, q, raw):
        """Matches starting in ``data[p:q]``, neither crossing ``p`` nor ``q``."""
        candidates = None
        if tgt.set is not None:
            found = tgt.set.Match(memoryview(data)[max(p - 1, 0):q + 1])
            # Empty after a proven hit: the Set's DFA gave up; run them all.
            candidates = [tgt.entries[i] for i in sorted(found)] if found else None
        for entry in candidates or tgt.entries:
            validator, group = entry.validator, entry.group
            for m in entry.regex.finditer(data, p, q):
                ms, me = m.span()
                s, e = m.span(group)
                g = group
                while s < 0 and g < entry.regex.groups:     # that group did not take part: the next one
                    g += 1
                    s, e = m.span(g)
                valid = s >= 0 and s < e and (
                    validator is None or validator(data[s:e].decode("utf-8", "surrogatepass")))
                if not valid:
                    s, e = ms, me         # kept for its span: it still ends the chain's step
                raw.append((s, e, ms, me, entry, valid))

    @staticmethod
    def merge(hits) -> list[Finding]:
        """Merge overlapping hits into findings (see the module docstring)."""
        findings, group, group_end = [], [], -1
        for hit in sorted((h for h in hits if h.valid), key=_hit_order):
            if group and hit.start < group_end:
                group.append(hit)
                group_end = max(group_end, hit.end)
                continue
            if group:
                findings.append(_finding(group, group_end))
            group, group_end = [hit], hit.end
        if group:
            findings.append(_finding(group, group_end))
        return findings

    def redact(self, text: str, findings: list[Finding]) -> str:
        """``text`` with each finding's span replaced by ``[REDACTED:<id>]``."""
        parts, pos = [], 0
        for f in sorted(findings, key=lambda f: (f.start, -f.end)):
            if f.end <= pos:
                continue                     # inside one already replaced
            parts.append(text[pos:max(pos, f.start)])
            parts.append(f"[REDACTED:{f.pattern_id}]")
            pos = f.end
        parts.append(text[pos:])
        return "".join(parts)


def _hit_order(hit):
    return (hit.start, -hit.end, hit.entry.index)


def _finding(group, end):
    blocking = [h for h in group if h.entry.block]
    lead = blocking[0] if blocking else group[0]
    return Finding(lead.entry.pattern.id, "block" if blocking else "redact", group[0].start, end)


def _char_offsets(data, offsets):
    """Map byte offsets of UTF-8 ``data`` (all on character boundaries) to
    code-point offsets, in one pass."""
    result, last, chars = {}, 0, 0
    for off in sorted(offsets):
        chunk = data[last:off]
        chars += len(chunk) if chunk.isascii() else len(chunk.decode("utf-8", "surrogatepass"))
        result[off] = chars
        last = off
    return result


def compile_scanner(builtin_enabled: bool, bundle_patterns: list[dict]) -> Scanner:
    """The scanner for a policy: built-ins (when enabled) plus the bundle's
    ``dlp_patterns``. Raises PatternError; the caller rejects the bundle."""
    return Scanner(merge_patterns(builtin_enabled, bundle_patterns))
