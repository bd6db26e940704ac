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
2. Claim: a match of ``T`` starting before ``h`` is a match of ``P`` ending
   before ``n``, and conversely. A match of ``T`` (or of ``P``) reaching ``n``
   would make its start a viable position, i.e. ``>= h``. Paths of the regex
   that end before ``n`` see the same characters (and the same one character
   of context) in ``P`` and ``T``, so each pattern's leftmost-first choice at
   a position ``< h`` is the same in both, and so is its chain of matches up
   to ``h`` (a match whose validator fails is no finding but still ends its
   chain step, so it counts here too). Validators see only the match.
3. So the scanner scans ``P[R:]`` (matches must end before ``n``), takes the
   matches that start before ``h`` as decided, and sets ``r = h``; then moves
   ``r`` back out of any decided match (context such as ``password =``
   included: the chain must restart at ``r`` exactly as in ``T``) and any
   merged group of decided findings that contains it, until none does.
   Undecided matches start at or after ``h >= r``, so they neither overlap a
   released group nor contain ``r``. ``P[R:r]`` is released, redacted with
   the groups inside it, and the next scan starts at ``r``.

Guarantee. If every connected run of overlapping matches (whole regex
matches, context and failed validations included) and findings in ``T`` is
at most ``window_chars`` long, then for *any* split of ``T`` into ``feed``
calls: the concatenation of everything released equals
``scanner.redact(T, scanner.scan(T))``; ``blocked`` is reported iff that
scan has a ``block`` finding, at the call that decides the first one, and
the text released with and before it is the redaction of ``T`` up to that
finding; no character of a finding is ever released; ``held <= window``
after every call. Text that cannot be part of a match (plain words followed
by a space, punctuation...) is released at once: time to first token costs
only the viable tail.

The window bounds the held text. When ``n - r`` would exceed it, the scanner
must release up to ``n - window``:
- Under the guarantee's condition, a match starting before ``n - window``
  ends before ``n`` and is chosen the same way in ``P`` and ``T`` (a preferred
  path reaching ``n`` would be a longer match), and so is every run crossing
  ``n - window``; ``r`` moves forward out of such runs (released whole,
  redacted). The output still equals the whole-text redaction.
- Beyond it (a run longer than the window), exactness is lost. A match still
  in progress that already matches through the last character received,
  whatever character comes next (the PEM pattern's unterminated form is built
  for this), and began before the forced point is *carried*: its replacement
  is released now; following text is absorbed while the text from the match
  start is still a possible prefix of a match (checked once per
  ``min(window, max(64, length/4))`` new characters; unchecked text counts as
  held); then the match's real end is computed and scanning resumes after
  it, after checking the absorbed text for ``block`` findings. A ``block``
  pattern blocks at once. Text absorbed while still a possible prefix but
  after the real end is redacted with it (over-redaction, never a leak). A
  carried match longer than MAX_CARRY_CHARS absorbs the rest of the stream
  (fail closed).
- Limit: an in-progress candidate that does not match yet (a 40-character
  token of which 30 have arrived, with a 16-character window) is cut: its
  first part is released in clear. The window must be at least the longest
  secret to protect (the configuration allows 256 bytes and more; an RSA-4096
  PEM block is 3.2 KB, which the carry covers).
- A pattern that cannot be analysed (prefixes.py) makes every position a
  possible match start: the whole window is held, and only the forced
  releases let text out.

After a block, nothing more is released: ``feed``/``finish`` return
``("", True)``.
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
    """A match being carried: its text so far (from one character before its
    start), how much of it is known to be part of it (``checked``)."""

    __slots__ = ("entry", "text", "pos", "checked", "unbounded")

    def __init__(self, entry, text, pos):
        self.entry, self.text, self.pos, self.unbounded = entry, text, pos, False
        self.checked = len(text)


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
        """Characters received, not yet released and not yet known to be
        part of a carried match (those may still be released)."""
        carry = self._carry
        unchecked = len(carry.text) - carry.checked if carry is not None and not carry.unbounded else 0
        return len(self._buf) + unchecked

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
        # Checking costs the length of the match so far: check once per
        # min(window, max(64, a quarter of it)) new characters, so a long
        # match fed character by character stays linear-ish; text not yet
        # checked counts as held.
        if not final and len(whole) - carry.checked < min(self._window, max(64, len(whole) // 4)):
            carry.text = whole
            return ""
        data = _encode(whole)
        pos = _byte_offset(whole, carry.pos)
        prefix = self._profile.prefix.get(carry.entry.index)
        if not final and (prefix is None or prefix.fullmatch(data, pos) is not None):
            carry.text, carry.checked = whole, len(whole)
            return ""
        # The match can no longer reach the end: it ends before it (or at it, at the end of the stream).
        m = carry.entry.regex.match(data, pos, len(data) if final else len(data) - len(_encode(whole[-1:])))
        # Resume after the whole match (where the pattern's chain resumes);
        # what was found to be part of it is redacted in any case.
        end = max(_char_offset(data, m.end()) if m is not None else 0, carry.checked)
        self._carry = None
        self._ctx = whole[end - 1:end]
        if any(x.valid and x.entry.block for x in self._scanner.hits(whole, self._target, carry.pos, end)):
            self.blocked = True         # a block finding inside the absorbed text
            return ""
        return whole[end:]
