"""Find string values in raw JSON bytes, and rewrite some of them in place.

Redaction must change only the matched text and keep the rest of the request
body byte for byte (SPEC section 5): field order, number spellings such as
``1.50e3``, whitespace and ``\\u00e9``-style escapes elsewhere. Decoding the
body and dumping it again would lose all of that, so instead:

Theory of operation
-------------------
``string_values`` tokenizes the document once, left to right, without
recursion (an explicit path stack, depth bounded by ``MAX_DEPTH``). Every
string *value* (never a key) is reported with its JSON path and the byte span
of its literal, quotes included. String literals are decoded by the standard
library's own ``json.decoder.scanstring``, so escapes, surrogate pairs and lone
surrogates decode exactly as ``json.loads`` decodes them. The grammar otherwise
follows ``json.loads`` too (it accepts ``NaN``, ``Infinity``, ``-Infinity``),
with one deliberate difference: the bytes must be strict UTF-8 without a BOM,
where ``json.loads(bytes)`` would also guess UTF-16/32 and let encoded
surrogates through. A body the gateway cannot read exactly is refused.

``replace_strings`` splices re-encoded literals into those spans; every other
byte is copied unchanged.

Most bodies need no rewrite, so the span-finding tokenizer (pure Python) runs
only when one is due: ``document_strings`` lists the same ``(path, value)``
pairs from the document ``json.loads`` decoded (C speed), as ``StringAt``
values without spans, and the replace functions ``locate`` their spans first,
in one tokenizer pass over just the paths they rewrite.

``loads`` is ``json.loads`` with the same strictness plus one more rule: an
object with a duplicate key is refused. Parsers disagree on which duplicate
wins, so a body whose meaning depends on the parser (``{"type": "image",
"type": "text"}``) could hide prompt text from the scan; it is refused rather
than guessed at.

Cost is linear in the document size (times the path depth, which is bounded).
"""

import json
import re
from dataclasses import dataclass
from json.decoder import scanstring

MAX_DEPTH = 512  # nested arrays/objects; deeper documents are refused

_WHITESPACE = re.compile(r"[ \t\n\r]*")
# ASCII digits only, like json's C scanner.
_NUMBER = re.compile(r"-?(?:0|[1-9][0-9]*)(?:\.[0-9]+)?(?:[eE][-+]?[0-9]+)?")
_LITERALS = ("true", "false", "null", "NaN", "Infinity", "-Infinity")


@dataclass(frozen=True)
class StringValue:
    path: tuple   # object keys as str, array indexes as int
    start: int    # byte offset of the opening quote
    end: int      # byte offset just after the closing quote
    value: str    # the decoded string


@dataclass(frozen=True)
class StringAt:
    """A string value known by its path only; ``locate`` finds its span."""
    path: tuple
    value: str


def _decode(raw):
    try:
        return bytes(raw).decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ValueError(f"JSON body is not valid UTF-8 at byte {exc.start}") from None


def _fail(what, pos):
    raise ValueError(f"invalid JSON: {what} at character {pos}")


def _at(text, pos):
    if pos >= len(text):
        _fail("unexpected end of document", pos)
    return text[pos]


def _key(text, pos):
    """Read ``"key" :`` at pos (whitespace before it skipped); return (key, pos after ':')."""
    pos = _WHITESPACE.match(text, pos).end()
    if _at(text, pos) != '"':
        _fail("expected a property name", pos)
    key, pos = scanstring(text, pos + 1, True)
    pos = _WHITESPACE.match(text, pos).end()
    if _at(text, pos) != ":":
        _fail("expected ':'", pos)
    return key, pos + 1


def string_values(raw, want=None):
    """All string values of the JSON document ``raw``, in document order.

    ``want(path) -> bool`` keeps only the values at the paths it accepts.
    Raises ValueError when ``raw`` is not one valid JSON document.
    """
    text = _decode(raw)
    ascii_only = len(text) == len(raw)
    # Byte offsets are computed incrementally: reported spans only move forward.
    last_char = last_byte = 0

    def byte_offset(char_pos):
        nonlocal last_char, last_byte
        if ascii_only:
            return char_pos
        last_byte += len(text[last_char:char_pos].encode("utf-8"))
        last_char = char_pos
        return last_byte

    found = []
    path = []      # the path of the value being read
    closers = []   # '}' or ']' for each open container
    pos = 0
    while True:
        # Read one value at `pos`.
        pos = _WHITESPACE.match(text, pos).end()
        c = _at(text, pos)
        if c in "{[":
            if len(closers) >= MAX_DEPTH:
                _fail(f"nesting deeper than {MAX_DEPTH}", pos)
            closer = "}" if c == "{" else "]"
            after = _WHITESPACE.match(text, pos + 1).end()
            if _at(text, after) == closer:
                pos = after + 1
            else:
                closers.append(closer)
                if c == "{":
                    key, pos = _key(text, pos + 1)
                    path.append(key)
                else:
                    path.append(0)
                    pos += 1
                continue  # read the first member
        elif c == '"':
            value, end = scanstring(text, pos + 1, True)
            if want is None or want(tuple(path)):
                found.append(StringValue(tuple(path), byte_offset(pos), byte_offset(end), value))
            pos = end
        else:
            number = _NUMBER.match(text, pos)
            if number:
                pos = number.end()
            else:
                literal = next((w for w in _LITERALS if text.startswith(w, pos)), None)
                if literal is None:
                    _fail("expected a value", pos)
                pos += len(literal)
        # The value ended: a separator, closers, or the end of the document.
        while closers:
            pos = _WHITESPACE.match(text, pos).end()
            c = _at(text, pos)
            if c == ",":
                if closers[-1] == "}":
                    path[-1], pos = _key(text, pos + 1)
                else:
                    path[-1] += 1
                    pos += 1
                break
            if c != closers[-1]:
                _fail(f"expected ',' or '{closers[-1]}'", pos)
            closers.pop()
            path.pop()
            pos += 1
        else:
            pos = _WHITESPACE.match(text, pos).end()
            if pos != len(text):
                _fail("extra data after the document", pos)
            return found


def document_strings(document):
    """``(path, value)`` of every string value of a decoded JSON document, in
    document order: what ``string_values`` reports, without spans. ValueError
    past ``MAX_DEPTH`` nested containers, as ``string_values`` refuses them."""
    if isinstance(document, str):
        return [((), document)]
    if not isinstance(document, (dict, list)):
        return []
    found, path = [], []
    stack = [iter(document.items()) if isinstance(document, dict) else enumerate(document)]
    while stack:
        for key, value in stack[-1]:
            if isinstance(value, str):
                found.append(((*path, key), value))
            elif isinstance(value, (dict, list)) and value:
                if len(stack) >= MAX_DEPTH:
                    raise ValueError(f"invalid JSON: nesting deeper than {MAX_DEPTH}")
                path.append(key)
                stack.append(iter(value.items()) if isinstance(value, dict) else enumerate(value))
                break
        else:  # this container is done
            stack.pop()
            if path:
                path.pop()
    return found


def locate(raw, strings):
    """``strings`` (StringAt or StringValue) as StringValues with their spans in ``raw``."""
    wanted = {s.path for s in strings if not isinstance(s, StringValue)}
    if not wanted:
        return list(strings)
    spans = {sv.path: sv for sv in string_values(raw, lambda path: path in wanted)}
    located = []
    for s in strings:
        if not isinstance(s, StringValue):
            found = spans.get(s.path)
            if found is None or found.value != s.value:
                raise ValueError("a string to rewrite is not in the document")
            s = found
        located.append(s)
    return located


def _located(raw, pairs):
    """``(string, change)`` pairs with each string located in ``raw``, in document order."""
    pairs = list(pairs)
    located = locate(raw, [string for string, _ in pairs])
    return sorted(((string, change) for string, (_, change) in zip(located, pairs)), key=lambda p: p[0].start)


def replace_strings(raw, replacements):
    """``raw`` with each ``(StringValue, new_text)`` literal replaced, all else unchanged.

    The new literal follows the old one's style: an all-ASCII literal (which
    may spell non-ASCII as ``\\u`` escapes) gets an all-ASCII literal, so an
    ASCII-only document stays ASCII-only; otherwise non-ASCII is written as
    UTF-8. A replacement equal to the old value leaves its bytes as they were.
    """
    raw = bytes(raw)
    pieces, pos = [], 0
    for old, new in _located(raw, replacements):
        if old.start < pos or not _is_literal_of(raw[old.start:old.end], old.value):
            raise ValueError("replacement spans overlap or do not match the document")
        if new == old.value:
            continue
        pieces += (raw[pos:old.start], _literal(new, raw[old.start:old.end].isascii()))
        pos = old.end
    pieces.append(raw[pos:])
    return b"".join(pieces)


def replace_spans(raw, edits):
    """``raw`` with parts of string literals replaced, every other byte unchanged.

    ``edits`` is a list of ``(StringValue, [(start, end, text), ...])`` with
    code-point offsets into the string's value. Only the bytes that spell
    ``value[start:end]`` change (escapes elsewhere in the literal keep their
    spelling); ``text`` is escaped in the literal's style (see replace_strings).
    """
    raw = bytes(raw)
    pieces, pos = [], 0
    for old, spans in _located(raw, edits):
        literal = raw[old.start:old.end]
        if old.start < pos or not _is_literal_of(literal, old.value):
            raise ValueError("replacement spans overlap or do not match the document")
        offsets = _char_offsets(literal)
        ascii_only = literal.isascii()
        for start, end, text in sorted(spans):
            begin = old.start + offsets[start]
            if begin < pos:
                raise ValueError("replacement spans overlap")
            pieces += (raw[pos:begin], _literal(text, ascii_only)[1:-1])
            pos = old.start + offsets[end]
    pieces.append(raw[pos:])
    return b"".join(pieces)


def _char_offsets(literal):
    """Byte offset, in a valid JSON string literal, where each decoded code
    point starts; one more entry for the closing quote."""
    offsets, i, end = [], 1, len(literal) - 1
    while i < end:
        offsets.append(i)
        byte = literal[i]
        if byte == 0x5C:  # backslash
            if literal[i + 1] == 0x75:  # \uXXXX, a surrogate pair is one code point
                high = int(literal[i + 2:i + 6], 16)
                pair = (0xD800 <= high < 0xDC00 and literal[i + 6:i + 8] == b"\\u"
                        and 0xDC00 <= int(literal[i + 8:i + 12], 16) < 0xE000)
                i += 12 if pair else 6
            else:
                i += 2
        else:  # one UTF-8 sequence
            i += 1 if byte < 0x80 else 2 if byte < 0xE0 else 3 if byte < 0xF0 else 4
    offsets.append(end)
    return offsets


def _is_literal_of(literal, value):
    """Whether ``literal`` is exactly one JSON string literal decoding to ``value``.

    Guards against spans taken from another document: a wrong splice would
    corrupt the body the provider receives.
    """
    try:
        text = literal.decode("utf-8")
        decoded, end = scanstring(text, 1, True) if text[:1] == '"' else (None, 0)
    except ValueError:  # UnicodeDecodeError and JSONDecodeError included
        return False
    return decoded == value and end == len(text)


def _literal(value, ascii_only):
    if ascii_only:
        return json.dumps(value).encode("ascii")
    # A lone surrogate has no UTF-8 form; "backslashreplace" writes it as the
    # \uXXXX escape JSON uses for it.
    return json.dumps(value, ensure_ascii=False).encode("utf-8", "backslashreplace")


def _unique_pairs(pairs):
    document = dict(pairs)
    if len(document) != len(pairs):
        raise ValueError("invalid JSON: duplicate key in an object")
    return document


def loads(raw):
    """``json.loads(raw)`` for strict UTF-8 without duplicate keys, else ValueError.

    Nesting is bounded by the interpreter's recursion limit here;
    ``document_strings`` applies ``MAX_DEPTH`` to the result.
    """
    try:
        return json.loads(_decode(raw), object_pairs_hook=_unique_pairs)
    except RecursionError:
        raise ValueError("invalid JSON: nesting too deep") from None
