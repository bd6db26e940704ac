"""The prefix language of a pattern, for the holdback window.

``prefix_regex(r)`` returns an RE2 regex for a superset of the set of all
prefixes of the texts ``r`` matches (the empty string included). The holdback
window asks "could the text from position ``s`` to the end of what has arrived
still be the beginning of a match?": exactly when ``text[s:]`` is in that
language, so the earliest such ``s`` is the leftmost match of
``(?:P1|...|Pk)$``, which RE2 finds with a reverse DFA from the end of the
buffer in time linear in the distance it goes back.

Construction, on Python's parse tree of the pattern (``re._parser``, used for
this analysis only, never to match), writing RE2 syntax back out:
- a single character ``c`` (literal, class, dot): ``(?:c)?``
- concatenation ``x Y``: ``(?:E(x)P(Y)|P(x))``, where ``E`` is the pattern
  itself (so a prefix is a prefix of ``x``, or all of ``x`` and a prefix of
  the rest)
- alternation: the alternation of the prefixes
- ``x{m,n}``: ``(?:E(x)){0,n-1}P(x)``; ``x{m,}``: ``(?:E(x))*P(x)``
- assertions (``\\b``, ``^``, ``$``) are dropped: the language only grows,
  which holds more text back, never less.
Characters, classes and escapes are written back as RE2 reads them in the
original (``\\d`` stays ``\\d``, ASCII in RE2; case-insensitive parts become
``(?i:...)``), so the analysis follows RE2's semantics, not Python's.

Where the two syntaxes disagree on a pattern both accept (``[[:alpha:]]`` is
a class in RE2 and three pieces in Python; ``x{,3}`` is a repetition in Python
and literal text in RE2), or Python cannot parse what RE2 accepts (``\\pL``,
``\\z``, ``(?U)``), analysis fails with Unanalyzable and the caller treats
every position as a possible match start, which is always safe.
"""

import re

try:
    from re import _constants as C
    from re import _parser as sre_parse
except ImportError:  # Python < 3.11
    import sre_constants as C
    import sre_parse

_CATEGORIES = {
    C.CATEGORY_DIGIT: r"\d", C.CATEGORY_NOT_DIGIT: r"\D",
    C.CATEGORY_SPACE: r"\s", C.CATEGORY_NOT_SPACE: r"\S",
    C.CATEGORY_WORD: r"\w", C.CATEGORY_NOT_WORD: r"\W",
}
_MAX_OUTPUT = 200_000   # characters of generated regex; beyond that, give up


class Unanalyzable(ValueError):
    pass


def prefix_regex(regex: str) -> str:
    """RE2 syntax for (a superset of) the prefixes of the matches of ``regex``."""
    if _divergent(regex):
        raise Unanalyzable("syntax that Python and RE2 read differently")
    try:
        tree = sre_parse.parse(regex)
    except (re.error, RecursionError, OverflowError, ValueError) as exc:
        raise Unanalyzable(str(exc)) from None
    out = _prefix(list(tree), tree.state.flags)
    if len(out) > _MAX_OUTPUT:
        raise Unanalyzable("pattern too large to analyse")
    return out


def _divergent(regex):
    """A POSIX class inside a bracket (``[[:alpha:]]``) or a ``{,n}``
    repetition outside one: read differently by Python and RE2."""
    i, in_class = 0, False
    while i < len(regex):
        c = regex[i]
        if c == "\\":
            i += 2
            continue
        if in_class:
            if c == "[" and regex[i + 1:i + 2] == ":":
                return True
            in_class = c != "]"
        elif c == "[":
            in_class = True
            i += 1
            i += regex[i:i + 1] == "^"
            i += regex[i:i + 1] == "]"    # a leading ] is a literal
            continue
        elif c == "{" and regex[i + 1:i + 2] == ",":
            return True
        i += 1
    return False


def _char(code):
    ch = chr(code)
    if ch.isascii() and ch.isalnum():
        return ch
    return "\\x{%x}" % code


def _fold(text, flags):
    return f"(?i:{text})" if flags & C.SRE_FLAG_IGNORECASE else text


def _class(items, flags):
    parts, negate = [], False
    for op, av in items:
        if op is C.NEGATE:
            negate = True
        elif op is C.LITERAL:
            parts.append(_char(av))
        elif op is C.RANGE:
            parts.append(f"{_char(av[0])}-{_char(av[1])}")
        elif op is C.CATEGORY and av in _CATEGORIES:
            parts.append(_CATEGORIES[av])
        else:
            raise Unanalyzable(f"class item {op}")
    return _fold("[" + ("^" if negate else "") + "".join(parts) + "]", flags)


def _full(items, flags):
    """The pattern itself (assertions dropped), in RE2 syntax."""
    return "".join(_one(op, av, flags) for op, av in items)


def _one(op, av, flags):
    if op is C.LITERAL:
        return _fold(_char(av), flags)
    if op is C.NOT_LITERAL:
        return _fold(f"[^{_char(av)}]", flags)
    if op is C.ANY:
        return r"(?s:.)" if flags & C.SRE_FLAG_DOTALL else r"[^\n]"
    if op is C.IN:
        return _class(av, flags)
    if op is C.BRANCH:
        return "(?:" + "|".join(_full(list(b), flags) for b in av[1]) + ")"
    if op is C.SUBPATTERN:
        _, add, remove, body = av
        return "(?:" + _full(list(body), (flags | add) & ~remove) + ")"
    if op in (C.MAX_REPEAT, C.MIN_REPEAT):
        lo, hi, body = av
        inner = "(?:" + _full(list(body), flags) + ")"
        return inner + ("{%d,}" % lo if hi == C.MAXREPEAT else "{%d,%d}" % (lo, hi))
    if op is C.AT:
        return ""
    raise Unanalyzable(f"construct {op}")


def _prefix(items, flags):
    """Prefixes of the concatenation ``items`` ('' stands for: only empty)."""
    acc = ""
    for op, av in reversed(items):
        head = _prefix_one(op, av, flags)
        whole = _one(op, av, flags)
        if not acc:
            acc = head
        elif not head:
            acc = f"(?:{whole}{acc})?"
        else:
            acc = f"(?:{whole}{acc}|{head})"
    return acc


def _prefix_one(op, av, flags):
    if op in (C.LITERAL, C.NOT_LITERAL, C.ANY, C.IN):
        return f"(?:{_one(op, av, flags)})?"
    if op is C.AT:
        return ""
    if op is C.BRANCH:
        return "(?:" + "|".join(_prefix(list(b), flags) for b in av[1]) + ")"
    if op is C.SUBPATTERN:
        _, add, remove, body = av
        return _prefix(list(body), (flags | add) & ~remove)
    if op in (C.MAX_REPEAT, C.MIN_REPEAT):
        lo, hi, body = av
        if hi == 0:
            return ""
        inner_full = "(?:" + _full(list(body), flags) + ")"
        inner_prefix = _prefix(list(body), flags)
        if hi == C.MAXREPEAT:
            return f"{inner_full}*{inner_prefix}" if inner_prefix else f"{inner_full}*"
        if hi == 1:
            return inner_prefix
        return inner_full + "{0,%d}" % (hi - 1) + inner_prefix
    raise Unanalyzable(f"construct {op}")
