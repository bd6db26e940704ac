"""Tests for gateway.jsonspans: string values agree with json.loads, and rewrites touch only their spans."""

import json
import time

import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from gateway.jsonspans import (MAX_DEPTH, StringAt, StringValue, document_strings, loads, locate, replace_spans,
                               replace_strings, string_values)

# ---------------------------------------------------------------------------
# Documents: json.dumps with random options, and hand-rendered raw JSON
# ---------------------------------------------------------------------------

scalars = (st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text())
values = st.recursive(scalars, lambda children: st.lists(children, max_size=5)
                      | st.dictionaries(st.text(max_size=8), children, max_size=5), max_leaves=25)
dump_options = st.fixed_dictionaries({
    "indent": st.sampled_from([None, 0, 2, "\t"]),
    "separators": st.sampled_from([None, (",", ":"), (", ", ": "), (" ,\n", " :\t")]),
    "ensure_ascii": st.booleans(),
    "sort_keys": st.booleans(),
})
dumped = st.builds(lambda value, options: json.dumps(value, **options).encode(), values, dump_options)

whitespace = st.text(alphabet=" \t\n\r", max_size=3)
number_literals = st.from_regex(r"-?(0|[1-9][0-9]{0,5})(\.[0-9]{1,4})?([eE][-+]?[0-9]{1,3})?", fullmatch=True)
SHORT = {'"': '\\"', "\\": "\\\\", "/": "\\/", "\b": "\\b", "\f": "\\f", "\n": "\\n", "\r": "\\r", "\t": "\\t"}


def _escape(c, style):
    """One character as a JSON literal piece in one of the spellings json.loads accepts."""
    if style == "short" and c in SHORT:
        return SHORT[c]
    if style == "raw" and c not in SHORT and c >= " " and not "\ud800" <= c <= "\udfff":
        return c
    fmt = "\\u%04x" if style == "lower" else "\\u%04X"
    if ord(c) > 0xFFFF:  # a surrogate pair
        v = ord(c) - 0x10000
        return fmt % (0xD800 + (v >> 10)) + fmt % (0xDC00 + (v & 0x3FF))
    return fmt % ord(c)


char_pieces = st.builds(_escape, st.characters(), st.sampled_from(["raw", "raw", "short", "lower", "upper"]))
lone_surrogates = st.integers(0xD800, 0xDFFF).map(lambda n: "\\u%04x" % n)
string_literals = st.lists(char_pieces | lone_surrogates, max_size=12).map(lambda p: '"' + "".join(p) + '"')


def _array(items, ws):
    return "[" + ws + ",".join(ws + item + ws for item in items) + "]"


def _object(members, ws):
    return "{" + ",".join(f"{ws}{k}{ws}:{ws}{v}{ws}" for k, v in members) + ws + "}"


raw_values = st.recursive(
    number_literals | string_literals | st.sampled_from(["true", "false", "null", "Infinity", "-Infinity"]),
    lambda children: st.builds(_array, st.lists(children, max_size=4), whitespace)
    | st.builds(_object, st.lists(st.tuples(string_literals, children), max_size=4,
                                  unique_by=lambda kv: json.loads(kv[0])), whitespace),
    max_leaves=20)
rendered = st.builds(lambda ws1, v, ws2: (ws1 + v + ws2).encode(),
                     whitespace, raw_values, whitespace)
documents = dumped | rendered


def all_strings(document, path=()):
    """{path: value} of every string value of a decoded document."""
    if isinstance(document, str):
        return {path: document}
    items = document.items() if isinstance(document, dict) else (
        enumerate(document) if isinstance(document, list) else ())
    found = {}
    for key, child in items:
        found.update(all_strings(child, path + (key,)))
    return found


def set_at(document, path, value):
    if not path:
        return value
    document[path[0]] = set_at(document[path[0]], path[1:], value)
    return document


def ordered_paths(document, path=()):
    """Every path to a value, in document order (dicts keep it)."""
    yield path
    if isinstance(document, dict):
        for key, child in document.items():
            yield from ordered_paths(child, path + (key,))
    elif isinstance(document, list):
        for i, child in enumerate(document):
            yield from ordered_paths(child, path + (i,))


# ---------------------------------------------------------------------------
# string_values
# ---------------------------------------------------------------------------

@given(documents)
@settings(max_examples=400)
def test_string_values_agree_with_json_loads(raw):
    document = json.loads(raw)
    found = string_values(raw)
    strings = all_strings(document)
    assert [sv.path for sv in found] == [p for p in ordered_paths(document) if p in strings]
    for sv in found:
        assert sv.value == strings[sv.path]
        # The span is exactly the literal, in bytes.
        assert json.loads(raw[sv.start:sv.end]) == sv.value
    assert [sv.start for sv in found] == sorted(sv.start for sv in found)


@given(documents, st.data())
def test_want_filters_paths(raw, data):
    everything = string_values(raw)
    chosen = data.draw(st.sets(st.sampled_from([sv.path for sv in everything]))) if everything else set()
    assert string_values(raw, lambda path: path in chosen) == [sv for sv in everything if sv.path in chosen]


@given(documents)
@settings(max_examples=400)
def test_document_strings_are_string_values_without_spans(raw):
    assert document_strings(loads(raw)) == [(sv.path, sv.value) for sv in string_values(raw)]


@given(documents, st.data())
def test_locate_finds_the_spans_of_chosen_strings(raw, data):
    everything = string_values(raw)
    chosen = data.draw(st.lists(st.sampled_from(everything), unique=True)) if everything else []
    assert locate(raw, [StringAt(sv.path, sv.value) for sv in chosen]) == chosen
    assert locate(raw, chosen) == chosen  # already located: unchanged


def test_locate_refuses_strings_not_in_the_document():
    raw = b'{"a": "x", "b": ["y"]}'
    for stray in (StringAt(("a",), "other"), StringAt(("c",), "x"), StringAt(("b", 1), "y")):
        with pytest.raises(ValueError):
            locate(raw, [stray])
    with pytest.raises(ValueError):
        replace_spans(raw, [(StringAt(("a",), "X"), [(0, 1, "z")])])
    assert replace_spans(raw, [(StringAt(("b", 0), "y"), [(0, 1, "[R]")])]) == b'{"a": "x", "b": ["[R]"]}'


def test_document_strings_depth_limit_matches_string_values():
    fits = b"[" * MAX_DEPTH + b'"x"' + b"]" * MAX_DEPTH
    assert document_strings(loads(fits)) == [((0,) * MAX_DEPTH, "x")] == [(sv.path, sv.value) for sv in string_values(fits)]
    too_deep = b"[" + fits + b"]"
    with pytest.raises(ValueError):
        string_values(too_deep)
    with pytest.raises(ValueError):
        document_strings(loads(too_deep))


def test_keys_are_not_reported():
    raw = b'{"secret-key": "value", "nested": {"another key": ["x", {"k": 1}]}}'
    assert [(sv.path, sv.value) for sv in string_values(raw)] == [
        (("secret-key",), "value"), (("nested", "another key", 0), "x")]


def test_spans_are_byte_offsets_in_utf8():
    raw = '{"é": "ü€😀", "b": "\\u00e9", "c": "x"}'.encode()
    found = string_values(raw)
    assert [raw[sv.start:sv.end] for sv in found] == ['"ü€😀"'.encode(), b'"\\u00e9"', b'"x"']
    assert [sv.value for sv in found] == ["ü€😀", "é", "x"]


@pytest.mark.parametrize("raw, values", [
    (b'"top"', [((), "top")]),
    (b' [ 1.50e3 , -0.0E+00, "a" , NaN, Infinity, -Infinity, true, false, null ] ', [((2,), "a")]),
    (b'{"a":"\\ud83d\\ude00", "b": "\\ud800", "c": "\\udc00\\ud800x", "d": "\\/\\b\\f"}',
     [(("a",), "\U0001f600"), (("b",), "\ud800"), (("c",), "\udc00\ud800x"), (("d",), "/\b\f")]),
    (b'{}', []), (b'[]', []), (b'[[],{},[{}]]', []), (b'{"a":{"b":[[], "x"]}}', [(("a", "b", 1), "x")]),
])
def test_hand_written_documents(raw, values):
    assert [(sv.path, sv.value) for sv in string_values(raw)] == values
    assert [sv.value for sv in string_values(raw)] == [v for _, v in values]


@pytest.mark.parametrize("raw", [
    b"", b" ", b"{", b"[", b'{"a"', b'{"a":', b'{"a":1', b'{"a":1,}', b"[1,]", b"[,1]", b"[1 2]", b'{"a" 1}',
    b'{1:2}', b'{"a":1}}', b'[1]]', b'{"a":1} x', b'"abc', b'"a\\x"', b'"a\nb"', b'"\\u12"', b"01", b"1.", b".5",
    b"-", b"+1", b"1e", b"tru", b"nul", b"nan", b"infinity", b"[1,2", b"'a'", b'\xef\xbb\xbf{}', b'{"a":"\xff"}',
    b'"\xed\xa0\x80"', b'{"a":"\xc3"}', "[\u0661]".encode(), b"\x00",
])
def test_invalid_json_is_refused(raw):
    with pytest.raises(ValueError):
        string_values(raw)
    with pytest.raises(ValueError):
        loads(raw)


def test_depth_limit():
    string_values(b"[" * MAX_DEPTH + b"]" * MAX_DEPTH)
    string_values(b'{"a":' * MAX_DEPTH + b'"x"' + b"}" * MAX_DEPTH)
    with pytest.raises(ValueError, match="deeper"):
        string_values(b"[" * (MAX_DEPTH + 1) + b"]" * (MAX_DEPTH + 1))
    with pytest.raises(ValueError, match="deeper"):
        string_values(b"[" * 200_000)  # no RecursionError, no quadratic blow-up


def _mutations(raw):
    edits = st.tuples(st.integers(0, len(raw)), st.integers(0, 2), st.binary(max_size=2))
    return st.lists(edits, min_size=1, max_size=3).map(lambda es: _apply(raw, es))


def _apply(raw, edits):
    for at, cut, insert in edits:
        raw = raw[:at] + insert + raw[at + cut:]
    return raw


@given(documents.flatmap(_mutations))
@settings(max_examples=500)
def test_accepts_exactly_what_json_loads_accepts(raw):
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        with pytest.raises(ValueError):
            string_values(raw)
        return
    try:
        document = json.loads(text)
    except ValueError:
        with pytest.raises(ValueError):
            string_values(raw)
        return
    strings = all_strings(document)
    found = string_values(raw)
    # Duplicate keys (a mutation can make one) are reported at every occurrence;
    # json.loads keeps the last.
    assert {sv.path for sv in found} == set(strings)
    assert {sv.path: sv.value for sv in found} == strings


def test_truncations_are_refused():
    raw = json.dumps({"model": "m", "messages": [{"role": "user", "content": "hé \u2028 😀"}], "n": 1.5}).encode()
    for end in range(len(raw)):
        with pytest.raises(ValueError):
            string_values(raw[:end])


def test_time_is_linear_in_size():
    def elapsed(n):
        raw = json.dumps({"messages": [{"content": "é" * 50, "n": [1.5, None]}] * n}, ensure_ascii=False).encode()
        start = time.perf_counter()
        assert len(string_values(raw)) == n
        return time.perf_counter() - start
    elapsed(1000)  # warm up
    small, large = elapsed(5_000), elapsed(40_000)
    assert large < small * 8 * 3  # 8x the input; quadratic would be 64x


# ---------------------------------------------------------------------------
# replace_strings
# ---------------------------------------------------------------------------

new_texts = st.text() | st.sampled_from(["[REDACTED:aws-key]", "", "é\u2028\"\\\n😀", "\ud800 lone", "\x7f\x00"])


@given(documents, st.data())
@settings(max_examples=400)
def test_replace_changes_only_the_chosen_values(raw, data):
    found = string_values(raw)
    assume(found)
    chosen = data.draw(st.lists(st.sampled_from(found), unique=True))
    replacements = [(sv, data.draw(new_texts)) for sv in chosen]
    out = replace_strings(raw, replacements)

    expected = json.loads(raw)
    for sv, new in replacements:
        expected = set_at(expected, sv.path, new)
    assert json.loads(out) == expected

    # Outside the replaced literals, the bytes are the original ones.
    after = string_values(out)
    assert [sv.path for sv in after] == [sv.path for sv in found]
    replaced = {sv.path: new for sv, new in replacements}
    cursor_old = cursor_new = 0
    for old, new in zip(found, after):
        assert out[cursor_new:new.start] == raw[cursor_old:old.start]
        literal = out[new.start:new.end]
        if old.path not in replaced or replaced[old.path] == old.value:
            assert literal == raw[old.start:old.end]
        elif raw[old.start:old.end].isascii():
            assert literal.isascii()  # an ASCII-only literal stays ASCII-only
        cursor_old, cursor_new = old.end, new.end
    assert out[cursor_new:] == raw[cursor_old:]


def test_replace_keeps_document_style():
    raw = (b'{"model" : "claude",\n  "price": 1.50e3, "n": -0.0,\n'
           b'  "messages": [{"content": "caf\\u00e9 key AKIAABCDEFGHIJKLMNOP"},'
           b' {"content": "th\xc3\xa9 AKIAABCDEFGHIJKLMNOP"}, {"content": "a\\/b"}]}')
    found = string_values(raw, lambda p: p[-1] == "content")
    out = replace_strings(raw, [(sv, sv.value.replace("AKIAABCDEFGHIJKLMNOP", "[REDACTED:aws]"))
                                for sv in found])
    assert out == (b'{"model" : "claude",\n  "price": 1.50e3, "n": -0.0,\n'
                   b'  "messages": [{"content": "caf\\u00e9 key [REDACTED:aws]"},'
                   b' {"content": "th\xc3\xa9 [REDACTED:aws]"}, {"content": "a\\/b"}]}')


def test_replace_lone_surrogate_into_utf8_literal_is_escaped():
    raw = '["é"]'.encode()
    (sv,) = string_values(raw)
    out = replace_strings(raw, [(sv, "é\ud800")])
    assert out == '["é\\ud800"]'.encode()
    assert json.loads(out) == ["é\ud800"]


def test_replace_nothing_is_identity():
    raw = b'{"a": "b"}'
    assert replace_strings(raw, []) == raw


@pytest.mark.parametrize("bad", [
    lambda found: [(found[0], "x"), (found[0], "y")],                      # the same span twice
    lambda found: [(StringValue(("a",), 2, 8, "a"), "x")],                  # not a literal's span
    lambda found: [(StringValue(("a",), 6, 9, "c"), "x")],                  # another value's span
    lambda found: [(StringValue(("a",), 6, 99, "b"), "x")],                 # beyond the document
    lambda found: [(StringValue(("a",), 6, 8, "b"), "x")],                  # a cut literal
])
def test_replace_refuses_spans_that_do_not_fit(bad):
    raw = b'{"a": "b"}'
    with pytest.raises(ValueError):
        replace_strings(raw, bad(string_values(raw)))


def test_loads_refuses_duplicate_keys():
    assert loads(b'{"a": {"b": 1}, "c": [{"b": 2}]}') == {"a": {"b": 1}, "c": [{"b": 2}]}
    with pytest.raises(ValueError, match="duplicate"):
        loads(b'[{"type": "image", "type": "text"}]')
