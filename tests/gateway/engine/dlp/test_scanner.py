"""Whole-text scanning: merging, redaction, offsets, context, policy patterns
and the linear-time guarantee."""

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.engine.dlp.catalog import Pattern
from gateway.engine.dlp.scanner import Finding, PatternError, Scanner, compile_scanner

from .samples import EXAMPLES, STRATEGIES

SCANNER = compile_scanner(True, [])
KEY = EXAMPLES["builtin.aws-access-key-id"]


def custom(*entries):
    return Scanner([Pattern(pid, regex, action) for pid, regex, action in entries])


def test_overlapping_findings_merge_into_one_replacement():
    scanner = custom(("left", r"abc-\d+", "redact"), ("right", r"\d+-xyz", "redact"))
    text = "id abc-123-xyz end"
    assert scanner.scan(text, "prompt") == [Finding("left", "redact", 3, 14)]
    assert scanner.redact(text, scanner.scan(text, "prompt")) == "id [REDACTED:left] end"


def test_merged_finding_takes_the_longest_at_the_same_start_and_block_wins():
    scanner = custom(("short", r"abc", "redact"), ("long", r"abc-\d+", "redact"), ("blocker", r"\d+", "block"))
    assert scanner.scan("abc-123", "prompt") == [Finding("blocker", "block", 0, 7)]
    scanner = custom(("short", r"abc", "redact"), ("long", r"abc-\d+", "redact"))
    assert scanner.scan("abc-123", "prompt") == [Finding("long", "redact", 0, 7)]


def test_secret_inside_a_secret_leaves_no_fragment():
    text = f'aws_access_key_id = "{KEY}"; api_key = "{KEY}xyz"'
    redacted = SCANNER.redact(text, SCANNER.scan(text, "prompt"))
    assert KEY not in redacted and "xyz" not in redacted


def test_touching_findings_stay_separate():
    scanner = custom(("a", r"AAA", "redact"), ("b", r"BBB", "redact"))
    assert scanner.redact("AAABBB", scanner.scan("AAABBB", "prompt")) == "[REDACTED:a][REDACTED:b]"


@given(st.text(max_size=40), st.sampled_from(sorted(EXAMPLES)), st.text(max_size=40))
@settings(max_examples=100, deadline=None)
def test_redact_keeps_the_surrounding_text(before, pattern_id, after):
    before, after = before + "\n ", " \n" + after
    text = before + EXAMPLES[pattern_id] + after
    findings = SCANNER.scan(text, "prompt")
    redacted = SCANNER.redact(text, findings)
    pos = 0
    for f in findings:            # everything outside the findings is unchanged, in order
        assert text[pos:f.start] in redacted
        pos = f.end
    assert redacted.endswith(text[pos:])
    assert all(a.end <= b.start for a, b in zip(findings, findings[1:]))


def test_offsets_are_code_points():
    text = f"héllo 中文 😀 {KEY} ünïcødé jane.roe@example.org 🎉"
    findings = SCANNER.scan(text, "prompt")
    assert [(f.pattern_id, text[f.start:f.end]) for f in findings] == [
        ("builtin.aws-access-key-id", KEY), ("builtin.email", "jane.roe@example.org")]
    assert SCANNER.redact(text, findings) == \
        "héllo 中文 😀 [REDACTED:builtin.aws-access-key-id] ünïcødé [REDACTED:builtin.email] 🎉"


def test_lone_surrogates_do_not_break_scanning():
    text = f"\ud800 {KEY} \udfff"
    assert [text[f.start:f.end] for f in SCANNER.scan(text, "prompt")] == [KEY]


def test_scan_range_sees_the_text_around_it():
    text = f"x{KEY} {KEY}"
    assert SCANNER.scan(text, "prompt") == [Finding("builtin.aws-access-key-id", "redact", 22, 42)]
    # Starting inside the word does not make a word boundary.
    assert SCANNER.scan(text, "prompt", 1, 21) == []
    assert SCANNER.scan(f" {KEY} ", "prompt", 1, 21) == [Finding("builtin.aws-access-key-id", "redact", 1, 21)]
    # A match must lie inside the range, and $ only holds at the end of the text.
    dollar = custom(("end", r"END$", "redact"))
    assert dollar.scan("xEND", "prompt", 0, 4) and not dollar.scan("xENDx", "prompt", 0, 4)


@given(st.lists(st.one_of(st.sampled_from(["the ", "a ", "12 ", "\n", "é ", "x@", ": "]),
                          st.sampled_from(sorted(STRATEGIES)).flatmap(lambda k: STRATEGIES[k])), max_size=12))
@settings(max_examples=40, deadline=None)
def test_prefilter_paths_agree_with_running_every_pattern(parts):
    text = "".join(parts)
    reference = compile_scanner(True, [])
    for target in reference._targets.values():   # no alternation, no Set: every pattern over the text
        target.combined = target.set = None
    assert SCANNER.scan(text, "prompt") == reference.scan(text, "prompt")


@pytest.mark.parametrize("regex", [r"(a)\1", r"(?=x)abc", r"(?<=x)abc", r"(?!x)abc", r"a++", r"(?>ab)",
                                   r"(?P<n>a)(?P=n)", r"abc\Z", r"(?x) a b"])
def test_regex_re2_cannot_compile_is_a_pattern_error_naming_the_id(regex):
    with pytest.raises(PatternError) as exc:
        compile_scanner(True, [{"id": "bad-one", "regex": regex}])
    assert exc.value.pattern_id == "bad-one" and "bad-one" in str(exc.value)
    assert "RE2" in exc.value.reason


@pytest.mark.parametrize("regex, reason", [(r"x*", "empty"), (r"\b", "empty"), (r"a|", "empty"),
                                           (r"\C+", r"\C")])
def test_patterns_that_would_misbehave_are_rejected(regex, reason):
    with pytest.raises(PatternError) as exc:
        compile_scanner(False, [{"id": "p", "regex": regex}])
    assert reason in exc.value.reason


def test_group_must_exist():
    with pytest.raises(PatternError):
        Scanner([Pattern("g", r"a(b)", group=2)])
    assert Scanner([Pattern("g", r"a(b)c", group=1)]).scan("abc", "prompt") == [Finding("g", "redact", 1, 2)]


def test_group_falls_through_to_the_alternative_that_matched():
    scanner = Scanner([Pattern("kv", r"""key=(?:"([^"]+)"|(\w+))""", group=1)])
    assert scanner.redact('key="a b" key=cd', scanner.scan('key="a b" key=cd', "prompt")) == \
        'key="[REDACTED:kv]" key=[REDACTED:kv]'


def test_unknown_target_is_an_error():
    with pytest.raises(ValueError):
        SCANNER.scan("text", "headers")


def test_pathological_pattern_runs_in_linear_time():
    # Python's re needs about 2**n steps here; RE2 is linear. Completing at
    # all within pytest's run is the assertion (no timing thresholds).
    scanner = compile_scanner(True, [{"id": "evil", "regex": r"(a+)+$"}, {"id": "evil2", "regex": r"(x|x)*y"}])
    assert scanner.scan("a" * 100_000 + "!", "prompt") == []
    assert scanner.scan("x" * 100_000, "prompt") == []
    assert scanner.scan("a" * 100_000, "prompt") == [Finding("evil", "redact", 0, 100_000)]


def test_dense_text_of_secrets_is_all_redacted():
    text = "".join(f"{EXAMPLES[k]} word " for k in sorted(EXAMPLES)) * 3
    redacted = SCANNER.redact(text, SCANNER.scan(text, "prompt"))
    for k, secret in EXAMPLES.items():
        hits = [h for h in SCANNER.hits(secret, "prompt") if h.valid and h.entry.pattern.id == k]
        assert secret[hits[0].start:hits[0].end] not in redacted, k
