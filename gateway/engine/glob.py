"""Shell-glob patterns over action strings: ``*`` matches any run of characters
(``:`` included); everything else is literal and case-sensitive.

A pattern is split at its stars into literal pieces; matching checks the first
piece as a prefix, the last as a suffix, and finds the middle ones left to
right. Leftmost greedy search is exact for star-only globs, and it runs in
O(len(action) * len(pattern)) whatever the pattern, so a semi-trusted bundle
cannot make matching slow the way a backtracking regex could.
"""


class Glob:
    __slots__ = ("pattern", "_pieces")

    def __init__(self, pattern):
        self.pattern = pattern
        self._pieces = pattern.split("*")

    def match(self, text):
        pieces = self._pieces
        if len(pieces) == 1:
            return text == pieces[0]
        head, tail = pieces[0], pieces[-1]
        if len(text) < len(head) + len(tail) or not text.startswith(head) or not text.endswith(tail):
            return False
        pos, end = len(head), len(text) - len(tail)
        for piece in pieces[1:-1]:
            if piece:
                pos = text.find(piece, pos, end)
                if pos < 0:
                    return False
                pos += len(piece)
        return True


class GlobSet:
    """Several globs; ``first_match`` names the one that matched."""

    __slots__ = ("_exact", "_globs")

    def __init__(self, patterns):
        self._exact = {p for p in patterns if "*" not in p}
        self._globs = tuple(Glob(p) for p in patterns if "*" in p)

    def first_match(self, text):
        if text in self._exact:
            return text
        for glob in self._globs:
            if glob.match(text):
                return glob.pattern
        return None

    def __bool__(self):
        return bool(self._exact or self._globs)
