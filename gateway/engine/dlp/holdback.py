"""The streaming scan over generated text: the holdback window.

``feed(text) -> (safe text, blocked?)`` and ``finish() -> (safe text,
blocked?)``. Generated text arrives in arbitrary pieces; what is released is
already redacted, and no character of a match is ever released in clear.

Theory of operation
-------------------
Notation: ``T`` is the whole text the stream will have produced, ``P`` the
part received so far (``n`` characters), ``R`` how much of it has been
released. The scanner keeps ``P[R:]`` (the *held* text) plus the last released
character (assertions such as ``\\b`` look one character back).

The whole-text result is ``scanner.redact(T, scanner.scan(T))``: per pattern
the leftmost-first chain of matches, validated, overlaps merged. On every
``feed`` the scanner releases up to a point ``r`` chosen so that this result
is already decided on ``T[:r]``, whatever text comes next:

1. Hold point ``h``: the earliest ``s >= R`` such that ``P[s:]`` is a prefix of
   a possible match of some pattern (prefixes.py derives, per pattern, a regex
   for a superset of its match prefixes; the leftmost match of their
   alternation anchored at the end of ``P`` is ``h``). A complete match ending
   exactly at ``n`` is its own prefix, so it is held too: it could still grow
   or change. If a pattern cannot be analysed, ``h = R``: hold everything.
2. Claim: every match of ``T`` starting before ``h`` is a match of ``P``
   ending before ``n``, and conversely. A match of ``T`` (or of ``P``) reaching
   ``n`` would make its start a viable position, i.e. ``>= h``. Paths of the
   regex that end before ``n`` see the same characters (and the same one
   character of context) in ``P`` and ``T``, so each pattern's leftmost-first
   choice at a position ``< h`` is the same in both, and so is its chain of
   matches up to ``h``. Validators see only the match.
3. So the scanner scans ``P[R:]`` (matches must end before ``n``), keeps the
   findings starting before ``h`` (decided), and sets ``r = h``; if a merged
   group of decided findings straddles ``r``, ``r`` moves back to its start.
   Undecided findings start at or after ``h >= r``, so they can neither
   overlap a released group nor straddle ``r``. The released text
   ``P[R:r]`` is redacted with the decided groups inside it.

Hence, while the held text stays within the window, the concatenation of all
released strings equals the whole-text redaction for *any* split of ``T``
into feeds, and a ``block`` finding is reported when its group is decided,
before any character of it (or after it) is released. Text that cannot be the
start of a match (plain words followed by a space, punctuation...) is
released at once: time to first token costs only the viable tail.

The window (``window_chars``) bounds the held text. When ``n - r`` would exceed
it, the scanner is forced to release up to ``n - window``:
- Findings are then taken from the scan of ``P`` with matches ending before
  ``n``. If every match of ``T`` and every merged group of overlapping findings
  is at most ``window`` characters long, each match starting before
  ``n - window`` ends before ``n``, is chosen the same way in ``P`` and ``T``
  (a preferred path reaching ``n`` would be a longer match), and so is every
  group crossing ``n - window``; a group crossing the forced point is released
  whole, redacted (``r`` moves after it). The output then still equals the
  whole-text redaction, and held text never exceeds the window.
- A match still in progress at the end of ``P`` that began before the forced
  point is longer than the window (a long PEM block with a small window).
  Rather than release part of it in clear, the scanner releases its
  replacement now and *carries* the pattern: following text is absorbed
  (released as nothing) while the text from the match start is still a
  possible prefix of a match, then the match's real end is computed and
  normal scanning resumes after it. A ``block`` pattern blocks at that
  moment. Out of the exact guarantee: the output may differ from the
  whole-text redaction (one replacement instead of several, or, for a
  pattern whose match depends on the end of the text such as ``[a-z]+$``, a
  redaction the whole text would not have), but no character of the match is
  released. A carried match longer than MAX_CARRY_CHARS absorbs the rest of
  the stream (fail closed).

After a block, nothing more is released: ``feed``/``finish`` return
``("", True)``; the text returned with the block is the redacted text before
the blocking finding.
"""

# The longest match the carry keeps text for (characters); beyond it the rest
# of the stream is absorbed.
MAX_CARRY_CHARS = 1 << 16
# Characters tried after an in-progress match to see that it does not depend
# on the end of the text: a word character, a digit, space, newline, symbol.
_FOLLOWERS = (b"a", b"0", b" ", b"\n", b"-")


def _encode(text):
    return text.encode("utf-8", "surrogatepass")


def _byte_offset(text, chars):
    return chars if text.isascii() else len(_encode(text[:chars]))


def _char_offset(data, offset):
    return len(data[:offset].decode("utf-8", "surrogatepass"))


def _spans(scanner, hits):
    """Where a release point must not fall: inside a match (its chain would
    restart differently) or inside a merged group (it would be cut)."""
    return [(x.match_start, x.match_end) for x in hits] + [(g.start, g.end) for g in scanner.merge(hits)]


def _settle(r, spans, back):
    """Move ``r`` out of every span it falls inside: back to the span's start,
    or forward to its end; repeat until it falls inside none."""
    moved = True
    while moved:
        moved = False
        for start, end in spans:
            if start < r < end:
                r = start if back else end
                moved = True
    return r


class _Carry:
    __slots__ = ("entry", "text", "pos", "unbounded")

    def __init__(self, entry, text, pos):
        self.entry, self.text, self.pos, self.unbounded = entry, text, pos, False


class HoldbackScanner:
    def __init__(self, scanner, window_chars: int, target: str = "response"):
        if not isinstance(window_chars, int) or window_chars < 1:
            raise ValueError("window_chars must be a positive integer")
        self._scanner = scanner
        self._target = target
        self._window = window_chars
        self._active = scanner.has_patterns(target)     # also validates target
        self._profile = scanner.profile(target)     # prefix analysis, compiled with the scanner
        self._ctx = ""          # the last released character ("" at the start of the text)
        self._buf = ""          # received, not yet released
        self._carry = None
        self.blocked = False
        self._finished = False

    @property
    def held(self) -> int:
        """Characters received and not yet released."""
        return len(self._buf)

    def feed(self, text: str) -> tuple[str, bool]:
        if self._finished:
            raise RuntimeError("feed() after finish()")
        if self.blocked:
            return "", True
        if not self._active:
            return text, False
        if self._carry is not None:
            text = self._absorb(text, final=False)
            if self._carry is not None or self.blocked:
                return "", self.blocked
        self._buf += text
        return self._release(final=False)

    def finish(self) -> tuple[str, bool]:
        if self._finished or self.blocked:
            self._finished = True
            return "", self.blocked
        self._finished = True
        if not self._active:
            return "", False
        if self._carry is not None:
            self._buf = self._absorb("", final=True)
            if self.blocked:
                return "", True
        return self._release(final=True)

    # -- the release decision ----------------------------------------------

    def _hold_point(self, full, k):
        viable = self._profile.viable
        if viable is None:
            return k
        data = _encode(full)
        m = viable.search(data, _byte_offset(full, k))
        if m is None:          # cannot happen (the empty prefix always matches); be safe
            return k
        return m.start() if full.isascii() else _char_offset(data, m.start())

    def _release(self, final):
        if not self._buf:
            return "", False
        sc, full, k = self._scanner, self._ctx + self._buf, len(self._ctx)
        n = len(full)
        carry = None
        if final:
            hits = sc.hits(full, self._target, k, n)
            r = n
        else:
            h = self._hold_point(full, k)
            if h == k and n - k <= self._window:
                return "", False           # everything held is still a possible match
            hits = sc.hits(full, self._target, k, n - 1)
            decided = [x for x in hits if x.match_start < h]
            r = _settle(h, _spans(sc, decided), back=True)
            if n - r > self._window:
                # Forced: the window is full (see "The window" above).
                r = _settle(n - self._window, _spans(sc, hits), back=False)
                carry = self._carry_candidate(full, k, n, r)
                if carry is not None:
                    r = _settle(carry.start, _spans(sc, hits), back=True)
        groups = [g for g in sc.merge(hits) if g.end <= r]
        return self._emit(full, k, r, groups, carry)

    def _carry_candidate(self, full, k, n, r):
        """A match still in progress at the end that starts before ``r``: it
        reaches the end of what has arrived whatever character comes next
        (so it does not merely rest on ``$`` or a ``\\b`` at the end)."""
        data = _encode(full)
        for x in self._scanner.hits(full, self._target, k, n):
            if x.valid and x.match_end == n and x.start < r:
                pos = _byte_offset(full, x.match_start)
                if all(x.entry.regex.fullmatch(data + follow, pos, len(data)) for follow in _FOLLOWERS):
                    return x
        return None

    def _emit(self, full, k, r, groups, carry):
        parts, pos = [], k
        for group in groups:
            if group.action == "block":
                parts.append(full[pos:group.start])
                return self._block(parts)
            parts.append(full[pos:group.start])
            parts.append(f"[REDACTED:{group.pattern_id}]")
            pos = group.end
        parts.append(full[pos:r])
        if carry is not None:
            if carry.entry.block:
                return self._block(parts)
            parts.append(f"[REDACTED:{carry.entry.pattern.id}]")
            start = max(carry.match_start - 1, 0)
            self._carry = _Carry(carry.entry, full[start:], carry.match_start - start)
            self._ctx, self._buf = "", ""
        elif r > k:
            self._ctx, self._buf = full[r - 1:r], full[r:]
        return "".join(parts), False

    def _block(self, parts):
        self.blocked = True
        self._buf, self._carry = "", None
        return "".join(parts), True

    # -- carrying a match longer than the window ------------------------------

    def _absorb(self, text, final):
        """Absorb ``text`` into the carried match; return what follows it
        once its end is known (the carry is then over)."""
        carry = self._carry
        if carry.unbounded:
            return ""
        whole = carry.text + text
        if len(whole) > MAX_CARRY_CHARS and not final:
            carry.unbounded, carry.text = True, ""
            return ""
        data = _encode(whole)
        pos = _byte_offset(whole, carry.pos)
        prefix = self._profile.prefix.get(carry.entry.index)
        if not final and (prefix is None or prefix.fullmatch(data, pos) is not None):
            carry.text = whole
            return ""
        # The match can no longer reach the end: it ends before it (or at it, at the end of the stream).
        m = carry.entry.regex.match(data, pos, len(data) if final else len(data) - len(_encode(whole[-1:])))
        end = 0
        if m is not None:
            span_end = m.end(carry.entry.group) if m.start(carry.entry.group) >= 0 else m.end()
            end = _char_offset(data, span_end)
        end = max(end, len(carry.text))
        self._carry = None
        self._ctx = whole[end - 1:end]
        if any(x.valid and x.entry.block for x in self._scanner.hits(whole, self._target, carry.pos, end)):
            self.blocked = True         # a block finding inside the absorbed text
            return ""
        return whole[end:]
