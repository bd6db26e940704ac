"""Tests for gateway.engine.glob: star-only shell globs over action strings (SPEC section 4)."""

import re

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from gateway.engine.glob import Glob, GlobSet


def reference(pattern, text):
    """An independent oracle: ``*`` is ``.*`` (spanning anything), every other character is literal."""
    regex = "".join(".*" if c == "*" else re.escape(c) for c in pattern)
    return re.fullmatch(regex, text, re.DOTALL) is not None


@pytest.mark.parametrize("pattern, text, expected", [
    # exact match, no star
    ("llm:send:openai:gpt-4o-mini", "llm:send:openai:gpt-4o-mini", True),
    ("llm:send:openai:gpt-4o-mini", "llm:send:openai:gpt-4o-mini-2024", False),
    ("llm:send:openai:gpt-4o-mini", "llm:send:openai:gpt-4o-min", False),
    ("", "", True),
    ("", "a", False),
    # a star spans ':'
    ("llm:send:*", "llm:send:openai:gpt-4o", True),
    ("llm:*:gpt-4o", "llm:send:openai:gpt-4o", True),
    ("*", "", True),
    ("*", "llm:send:anthropic:claude", True),
    ("llm:send:anthropic:claude-sonnet-4-5*", "llm:send:anthropic:claude-sonnet-4-5", True),
    ("llm:send:anthropic:claude-sonnet-4-5*", "llm:send:anthropic:claude-sonnet-4-5-20250929", True),
    ("llm:send:anthropic:claude-sonnet-4-5*", "llm:send:anthropic:claude-sonnet-4", False),
    ("*:gpt-4o", "llm:send:openai:gpt-4o", True),
    ("*:gpt-4o", "llm:send:openai:gpt-4o-mini", False),
    # case-sensitive
    ("llm:send:openai:GPT-4o", "llm:send:openai:gpt-4o", False),
    ("LLM:send:*", "llm:send:openai:gpt-4o", False),
    ("llm:send:OpenAI:*", "llm:send:openai:gpt-4o", False),
    # '?' and '[' are literal, unlike fnmatch
    ("llm:send:openai:gpt-4?", "llm:send:openai:gpt-4o", False),
    ("llm:send:openai:gpt-4?", "llm:send:openai:gpt-4?", True),
    ("llm:send:openai:gpt-[34]o", "llm:send:openai:gpt-4o", False),
    ("llm:send:openai:gpt-[34]o", "llm:send:openai:gpt-[34]o", True),
    ("llm:send:openai:gpt-4o.", "llm:send:openai:gpt-4ox", False),
    ("a\\*", "a\\bc", True),
    ("a\\*", "a*", False),
    # multiple stars and empty pieces
    ("llm:*:openai:*", "llm:send:openai:o3-mini", True),
    ("llm:*:openai:*", "llm:send:anthropic:o3-mini", False),
    ("**", "", True),
    ("a**b", "ab", True),
    ("a**b", "axyzb", True),
    ("*a*", "bab", True),
    ("*a*", "bbb", False),
    ("*ab*ab*", "abab", True),
    ("*ab*ab*", "aba", False),
    ("*ab*ab*", "abxab", True),
    # head and tail must not overlap
    ("a*a", "a", False),
    ("a*a", "aa", True),
    ("ab*bc", "abc", False),
    ("ab*bc", "abbc", True),
    ("*aa*aa", "aaa", False),
    ("*aa*aa", "aaaa", True),
    # middle pieces must fit between head and tail
    ("x*y*z", "xzy", False),
    ("x*y*z", "xyz", True),
    ("x*b*b", "xb", False),
    ("x*b*b", "xbb", True),
    ("x*bc*c", "xbc", False),
])
def test_glob_semantics(pattern, text, expected):
    assert Glob(pattern).match(text) is expected
    assert reference(pattern, text) is expected  # the oracle agrees with the table


PATTERN = st.text(alphabet="ab:*", max_size=12)
TEXT = st.text(alphabet="ab:*", max_size=16)


@settings(max_examples=500, deadline=None)
@given(PATTERN, TEXT)
@example("*a*", "a")
@example("a*a", "a")
@example("*ab*ab*", "abab")
@example("**:*", ":")
def test_glob_equals_the_regex_reference(pattern, text):
    assert Glob(pattern).match(text) == reference(pattern, text)


@settings(max_examples=300, deadline=None)
@given(st.lists(st.text(alphabet="ab:", max_size=3), min_size=1, max_size=5), st.data())
def test_a_pattern_matches_any_filling_of_its_stars(pieces, data):
    pattern = "*".join(pieces)
    fillings = [data.draw(st.text(alphabet="ab:*", max_size=4)) for _ in pieces[1:]]
    text = pieces[0] + "".join(f + p for f, p in zip(fillings, pieces[1:]))
    assert Glob(pattern).match(text)


class CountingText(str):
    """Text that counts the searches a matcher makes in it."""

    calls = 0

    def find(self, *args):
        CountingText.calls += 1
        return str.find(self, *args)


@pytest.mark.parametrize("pattern, text", [
    ("*a" * 30 + "b", "a" * 5000),
    ("*a" * 30 + "*b", "a" * 5000),
    ("a" + "*a" * 30 + "*b*", "a" * 5000),
    ("*" + "*".join(["a" * 10 + "b"] * 30) + "*", "a" * 5000),
    ("*" + "*".join(["ab"] * 200) + "*", "ab" * 199 + "a" * 4000),
])
def test_adversarial_patterns_do_not_backtrack(pattern, text):
    CountingText.calls = 0
    assert Glob(pattern).match(CountingText(text)) is False
    # One left-to-right search per literal piece at most: no backtracking.
    assert CountingText.calls <= pattern.count("*")


def test_adversarial_match_succeeds_with_one_search_per_piece():
    pattern = "*a" * 30 + "*b"
    CountingText.calls = 0
    assert Glob(pattern).match(CountingText("a" * 5000 + "b")) is True
    assert CountingText.calls <= 30


def test_pattern_is_kept():
    assert Glob("llm:send:*").pattern == "llm:send:*"


def test_globset_names_the_matching_pattern():
    globs = GlobSet(["llm:send:openai:gpt-4o-mini", "llm:send:anthropic:*", "llm:send:*:o3*"])
    assert globs.first_match("llm:send:openai:gpt-4o-mini") == "llm:send:openai:gpt-4o-mini"
    assert globs.first_match("llm:send:anthropic:claude-opus-4") == "llm:send:anthropic:*"
    assert globs.first_match("llm:send:openai:o3-mini") == "llm:send:*:o3*"
    assert globs.first_match("llm:send:openai:gpt-4o") is None
    assert bool(globs)


def test_globset_exact_pattern_is_literal():
    globs = GlobSet(["llm:send:openai:gpt-4?"])
    assert globs.first_match("llm:send:openai:gpt-4?") == "llm:send:openai:gpt-4?"
    assert globs.first_match("llm:send:openai:gpt-4o") is None


def test_globset_prefers_the_first_glob_in_order():
    globs = GlobSet(["llm:send:openai:*", "llm:*"])
    assert globs.first_match("llm:send:openai:gpt-4o") == "llm:send:openai:*"
    globs = GlobSet(["llm:*", "llm:send:openai:*"])
    assert globs.first_match("llm:send:openai:gpt-4o") == "llm:*"


def test_empty_globset_matches_nothing():
    globs = GlobSet([])
    assert not globs
    assert globs.first_match("") is None
    assert globs.first_match("llm:send:openai:gpt-4o") is None


@settings(max_examples=200, deadline=None)
@given(st.lists(PATTERN, max_size=5), TEXT)
def test_globset_agrees_with_its_globs(patterns, text):
    found = GlobSet(patterns).first_match(text)
    matching = [p for p in patterns if reference(p, text)]
    if matching:
        assert found in matching
    else:
        assert found is None
