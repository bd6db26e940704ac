"""The holdback window: whatever the split, the released text is the
whole-text redaction; no match goes out in clear; held text stays within the
window; text that cannot be part of a match goes out at once."""

import base64
import hashlib

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.engine.dlp.holdback import HoldbackScanner
from gateway.engine.dlp.scanner import compile_scanner

from .samples import EXAMPLES, STRATEGIES

SCANNER = compile_scanner(True, [{"id": "acme", "regex": r"\bACME-\d{6}\b"}])
BLOCKING = compile_scanner(True, [{"id": "builtin.jwt", "action": "block"},
                                  {"id": "builtin.private-key", "action": "block"},
                                  {"id": "acme", "regex": r"\bACME-\d{6}\b", "action": "block"}])

FILLER = st.sampled_from(["the ", "answer ", "is ", "é ", "中文 ", "😀 ", "\n", ". ", ", ", "42 ", "x", "-", ":",
                          "token ", "password ", "key: ", "call ", "AKIA", "@", "'", '"', "ACME-12", "  "])
SECRET = st.sampled_from(sorted(STRATEGIES) + ["acme"]).flatmap(
    lambda k: STRATEGIES[k] if k in STRATEGIES else st.from_regex(r"\AACME-[0-9]{6}\Z"))


def pieces(text, cuts):
    bounds = [0] + sorted(set(c for c in cuts if 0 < c < len(text))) + [len(text)]
    return [text[a:b] for a, b in zip(bounds, bounds[1:])]


def run(scanner, text, cuts, window):
    hb = HoldbackScanner(scanner, window)
    out, blocked = [], False
    for piece in pieces(text, cuts):
        released, blocked = hb.feed(piece)
        out.append(released)
        assert hb.held <= window
        if blocked:
            break
    if not blocked:
        released, blocked = hb.finish()
        out.append(released)
    return "".join(out), blocked


def expected(scanner, text):
    findings = scanner.scan(text, "response")
    blocks = [f for f in findings if f.action == "block"]
    if blocks:
        cut = blocks[0].start
        return scanner.redact(text[:cut], [f for f in findings if f.end <= cut]), True
    return scanner.redact(text, findings), False


def longest_component(scanner, text):
    """The longest run of overlapping matches (context included) and findings:
    the window the exact guarantee needs."""
    spans = sorted([(h.match_start, h.match_end) for h in scanner.hits(text, "response")]
                   + [(f.start, f.end) for f in scanner.scan(text, "response")])
    longest, start, end = 0, None, -1
    for a, b in spans:
        if a < end:
            end = max(end, b)
        else:
            start, end = a, b
        longest = max(longest, end - start)
    return longest


@st.composite
def stream(draw):
    text = "".join(draw(st.lists(st.one_of(FILLER, SECRET), min_size=1, max_size=10)))
    mode = draw(st.sampled_from(["chars", "random", "random", "whole"]))
    if mode == "chars":
        cuts = range(1, len(text))
    elif mode == "random":
        cuts = draw(st.lists(st.integers(1, max(1, len(text) - 1)), max_size=30))
    else:
        cuts = []
    return text, cuts, draw(st.sampled_from([256, 512, 2048]))


@given(stream())
@settings(max_examples=120, deadline=None)
def test_released_text_is_the_whole_text_redaction_for_any_split(case):
    text, cuts, window = case
    window = max(window, longest_component(SCANNER, text))
    assert run(SCANNER, text, cuts, window) == expected(SCANNER, text)


@given(stream())
@settings(max_examples=60, deadline=None)
def test_block_is_reported_iff_the_whole_text_has_a_block_finding(case):
    text, cuts, window = case
    window = max(window, longest_component(BLOCKING, text))
    assert run(BLOCKING, text, cuts, window) == expected(BLOCKING, text)


@given(stream(), st.sampled_from([8, 16, 40, 100]))
@settings(max_examples=50, deadline=None)
def test_held_text_never_exceeds_a_small_window(case, window):
    text, cuts, _ = case
    run(SCANNER, text, cuts, window)      # asserts held <= window after every feed


VOCABULARY = ("the a model answer is here and this will be on of for with as you that it can text line code output "
              "result value when then there their because about which would could should").split()


@given(st.lists(st.sampled_from(VOCABULARY), min_size=1, max_size=80))
@settings(max_examples=60, deadline=None)
def test_plain_words_go_out_as_they_arrive(words):
    # Words and spaces cannot start any built-in match: nothing is held.
    hb = HoldbackScanner(SCANNER, 2048)
    for word in words:
        assert hb.feed(word + " ") == (word + " ", False)
        assert hb.held == 0


# After a space, only keyword-led built-ins can still be in progress
# ("password ... is ", "token: "): at most the keyword (10), 40 characters up
# to " is"/" was" (5) and a space: 56.
KEYWORD_TAIL = 56


@given(st.lists(st.sampled_from(VOCABULARY + ["password", "token", "secret", "passphrase", "key"]), min_size=1,
                max_size=80))
@settings(max_examples=60, deadline=None)
def test_time_to_first_token_holds_only_a_short_tail(words):
    hb = HoldbackScanner(SCANNER, 2048)
    fed = released = 0
    for word in words:
        released += len(hb.feed(word + " ")[0])
        fed += len(word) + 1
        assert released >= fed - KEYWORD_TAIL
    assert released + len(hb.finish()[0]) == fed


def test_only_a_possible_match_is_held():
    hb = HoldbackScanner(SCANNER, 2048)
    assert hb.feed("Your key is AKIAQ3EG") == ("Your key is ", False)
    assert hb.feed("RT5YZ2MXN7PL") == ("", False)
    assert hb.feed(" ok") == ("[REDACTED:builtin.aws-access-key-id] ", False)
    assert hb.finish() == ("ok", False)


def test_one_character_feeds_inside_every_secret():
    for pattern_id, secret in EXAMPLES.items():
        text = f"value: {secret}\nnext"
        assert run(SCANNER, text, range(1, len(text)), 2048) == expected(SCANNER, text), pattern_id


def test_block_stops_the_stream_before_the_secret():
    jwt = EXAMPLES["builtin.jwt"]
    text = f"Use {EXAMPLES['builtin.email']} and {jwt} then more"
    hb = HoldbackScanner(BLOCKING, 2048)
    out = []
    for ch in text:
        released, blocked = hb.feed(ch)
        out.append(released)
        if blocked:
            break
    assert blocked and "".join(out) == "Use [REDACTED:builtin.email] and "
    assert hb.feed("more") == ("", True) and hb.finish() == ("", True)


def test_block_found_at_the_end_of_the_stream():
    hb = HoldbackScanner(BLOCKING, 2048)
    assert hb.feed("code ACME-123456") == ("code ", False)
    assert hb.finish() == ("", True)


KEY_LINES = [base64.b64encode(hashlib.sha512(b"k%d" % i).digest()).decode()[:64] for i in range(60)]
LONG_KEY = "-----BEGIN PRIVATE KEY-----\n" + "\n".join(KEY_LINES) + "\n-----END PRIVATE KEY-----"


@pytest.mark.parametrize("delta, window", [(1, 256), (1, 2048), (7, 2048), (64, 256), (500, 2048)])
def test_private_key_longer_than_the_window_is_carried_not_cut(delta, window):
    assert len(LONG_KEY) > window
    text = "Here it is:\n" + LONG_KEY + "\nKeep it safe. ACME-123456 done"
    out, blocked = run(SCANNER, text, range(delta, len(text), delta), window)
    assert not blocked
    assert not [line for line in KEY_LINES if line[:12] in out or line[-12:] in out]
    assert out == "Here it is:\n[REDACTED:builtin.private-key]\nKeep it safe. [REDACTED:acme] done"


def test_private_key_longer_than_the_window_blocks_when_it_is_a_block_pattern():
    text = "Here it is:\n" + LONG_KEY + "\nKeep it safe."
    assert run(BLOCKING, text, range(5, len(text), 5), 256) == ("Here it is:\n", True)


def test_stream_ending_inside_a_long_key():
    text = "Key:\n" + LONG_KEY[:1500]
    out, blocked = run(SCANNER, text, range(3, len(text), 3), 256)
    assert (out, blocked) == ("Key:\n[REDACTED:builtin.private-key]", False)


def test_pattern_that_cannot_be_analysed_holds_the_window_and_stays_correct():
    scanner = compile_scanner(False, [{"id": "digits", "regex": r"[[:digit:]]{6}"}])
    hb = HoldbackScanner(scanner, 64)
    assert hb.feed("hello world ") == ("", False) and hb.held == 12
    released = hb.feed("code 123456 " + "z" * 60)[0]
    assert hb.held <= 64 and released.startswith("hello world code [REDACTED:digits]")
    assert released + hb.finish()[0] == "hello world code [REDACTED:digits] " + "z" * 60


def test_target_without_patterns_passes_text_through():
    scanner = compile_scanner(False, [{"id": "p", "regex": r"P-\d+", "applies_to": ["prompt"]}])
    hb = HoldbackScanner(scanner, 256)
    assert hb.feed("P-1 AKIAQ3EGRT5YZ2MXN7PL") == ("P-1 AKIAQ3EGRT5YZ2MXN7PL", False)
    assert hb.finish() == ("", False)


def test_misuse_is_an_error():
    hb = HoldbackScanner(SCANNER, 256)
    hb.finish()
    with pytest.raises(RuntimeError):
        hb.feed("x")
    with pytest.raises(ValueError):
        HoldbackScanner(SCANNER, 0)
    with pytest.raises(ValueError):
        HoldbackScanner(SCANNER, 256, "headers")
