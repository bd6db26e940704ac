"""The prefix language: every prefix of every match is in it (soundness),
and text that cannot start a match is not (precision where it matters)."""

import pytest
import re2
from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.engine.dlp.catalog import BUILTIN
from gateway.engine.dlp.prefixes import Unanalyzable, prefix_regex
from gateway.engine.dlp.scanner import compile_scanner

from .samples import STRATEGIES

SCANNER = compile_scanner(True, [])
PREFIX = {p.id: re2.compile(prefix_regex(p.regex)) for p in BUILTIN}


def accepts(regex, text):
    return re2.compile(regex).fullmatch(text) is not None


def test_literal_counted_and_alternative_prefixes():
    r = prefix_regex(r"\bAKIA[0-9]{2}\b")
    assert all(accepts(r, t) for t in ["", "A", "AK", "AKIA", "AKIA1", "AKIA12"])
    assert not any(accepts(r, t) for t in ["B", "AKIB", "AKIA123", "AKIAx"])
    r = prefix_regex(r"(?i)pass(?:word|phrase)\s*=\s*\w+")
    assert all(accepts(r, t) for t in ["PASS", "passWo", "Passphrase  =", "password= x1"])
    assert not accepts(r, "password is")


@pytest.mark.parametrize("regex", [r"[[:digit:]]{6}", r"x{,3}y", r"\pL+", r"a\z", r"(?U)a+"])
def test_syntax_read_differently_by_python_and_re2_is_not_analysed(regex):
    with pytest.raises(Unanalyzable):
        prefix_regex(regex)


@given(st.sampled_from(sorted(STRATEGIES)).flatmap(
    lambda k: st.tuples(st.just(k), STRATEGIES[k], st.sampled_from(["", " ", "x", "\n", "-"]))))
@settings(max_examples=200, deadline=None)
def test_every_prefix_of_every_match_is_accepted(case):
    pattern_id, secret, follow = case
    text = "see " + secret + follow
    for hit in SCANNER.hits(text, "prompt"):
        matched = text[hit.match_start:hit.match_end].encode()
        prefix = PREFIX[hit.entry.pattern.id]
        for cut in range(len(matched) + 1):
            assert prefix.fullmatch(matched[:cut]) is not None, (hit.entry.pattern.id, matched[:cut])
