"""The built-in catalog finds each type it names, and not its near misses;
policy patterns add to it and override it by id."""

import pytest

from gateway.engine.dlp.catalog import BUILTIN, BUILTIN_IDS, Pattern, PatternError, merge_patterns
from gateway.engine.dlp.scanner import compile_scanner

from .samples import EXAMPLES

SCANNER = compile_scanner(True, [])


def test_catalog_ids_defaults_and_examples_cover_every_builtin():
    assert len(BUILTIN_IDS) == len(BUILTIN)
    for p in BUILTIN:
        assert p.id.startswith("builtin.")
        assert p.action == "redact" and p.applies_to == {"prompt", "response"}
    assert set(EXAMPLES) == BUILTIN_IDS


@pytest.mark.parametrize("pattern_id", sorted(EXAMPLES))
def test_builtin_example_is_found_and_redacted(pattern_id):
    secret = EXAMPLES[pattern_id]
    text = f"Context before: {secret} and after."
    hits = [h for h in SCANNER.hits(text, "prompt") if h.valid and h.entry.pattern.id == pattern_id]
    assert hits
    redacted = SCANNER.redact(text, SCANNER.scan(text, "response"))
    assert redacted.startswith("Context before: ") and redacted.endswith(" and after.")
    assert "[REDACTED:" in redacted
    assert text[hits[0].start:hits[0].end] not in redacted


@pytest.mark.parametrize("text", [
    "AKIAQ3EGRT5YZ2MXN7P is one short",                      # AWS key id too short
    "AKIAq3egrt5yz2mxn7pl lowercase",
    "card 4539 1488 0343 6468 fails Luhn",                    # Luhn
    "card 4539148803436468 fails Luhn",
    "card 1234 5678 9012 3452 no issuer",                      # Luhn-valid, no issuer prefix
    "IBAN GB83 WEST 1234 5698 7654 32 has bad check digits",  # mod-97
    "IBAN GB82WEST1234569876543 is one digit short",
    "ssn 000-12-3456", "ssn 666-12-3456", "ssn 912-34-5678", "ssn 123-00-4567", "ssn 123-45-0000",
    "password=", "password = ''", 'password: ""', "password = None", "password: string",
    "password = os.environ['DB_PASSWORD']", "token: ${{ secrets.TOKEN }}", "api_key = getenv('API_KEY')",
    "password = request.form['password']", "max_tokens: 1024", "the password is stored in a vault",
    "ghp_tooShort123", "sk-ant-api03-short", "xoxb-12", "AIzaShort",
    "mail me at user@localhost", "eyJhbGciOiJIUzI1NiJ9.not-a-jwt",
    "-----BEGIN CERTIFICATE-----\nMIIBszCCAVmgAwIBAgIUZ3\n-----END CERTIFICATE-----",
    "released on 2024-01-15 at 10.0.0.1 in version 1.22.3", "call 192.168.100.200 now",
    "https://example.com/path?user=a", "ftp://ftp.example.org/pub",
])
def test_near_misses_are_not_findings(text):
    assert SCANNER.scan(text, "prompt") == []


def test_private_key_is_redacted_as_one_block():
    key = EXAMPLES["builtin.private-key"]
    text = f"key:\n{key}\nthat was it"
    assert SCANNER.redact(text, SCANNER.scan(text, "prompt")) == "key:\n[REDACTED:builtin.private-key]\nthat was it"


def test_truncated_private_key_is_still_redacted():
    text = ("-----BEGIN OPENSSH PRIVATE KEY-----\n"
            "b3BlbnNzaC1rZXktdjEAAAAABG5vbmUAAAAEbm9uZQAAAAAAAAABAAAAMwAAAAtz\n(cut)")
    assert SCANNER.redact(text, SCANNER.scan(text, "prompt")) == "[REDACTED:builtin.private-key](cut)"


def test_url_credentials_redact_the_userinfo():
    text = "DATABASE_URL=postgres://app:Zq9xW2vK@localhost:5432/app"
    assert SCANNER.redact(text, SCANNER.scan(text, "prompt")) == \
        "DATABASE_URL=postgres://[REDACTED:builtin.url-credentials]@localhost:5432/app"
    # A password followed by a host with a TLD also reads as an e-mail
    # address: the overlap merges and the host goes too; no fragment is left.
    text = "git clone https://bob:hunter22@git.example.com/repo.git"
    assert SCANNER.redact(text, SCANNER.scan(text, "prompt")) == \
        "git clone https://[REDACTED:builtin.url-credentials]/repo.git"


@pytest.mark.parametrize("text, expected", [
    ('password = "Tr0ub4dor&3"', 'password = "[REDACTED:builtin.secret-assignment]"'),
    ("DB_PASSWORD=s3cr3t-Value;", "DB_PASSWORD=[REDACTED:builtin.secret-assignment];"),
    ("'api_key': 'k-12345678'", "'api_key': '[REDACTED:builtin.secret-assignment]'"),
    ("if password == \"team10\":", 'if password == "[REDACTED:builtin.secret-assignment]":'),
    ("Server=db;User Id=app;Password=secret;", "Server=db;User Id=app;Password=[REDACTED:builtin.secret-assignment];"),
    ("my password is hunter22.", "my password is [REDACTED:builtin.password-phrase]."),
    ("aws_secret_access_key = wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY",
     "aws_secret_access_key = [REDACTED:builtin.aws-secret-access-key]"),
])
def test_assignments_redact_only_the_value(text, expected):
    assert SCANNER.redact(text, SCANNER.scan(text, "prompt")) == expected


def test_bundle_pattern_is_added_after_the_builtins():
    patterns = merge_patterns(True, [{"id": "acme-employee-id", "regex": r"ACME-\d{6}", "action": "redact",
                                      "applies_to": ["prompt", "response"]}])
    assert [p.id for p in patterns[:len(BUILTIN)]] == [p.id for p in BUILTIN]
    assert patterns[-1] == Pattern("acme-employee-id", r"ACME-\d{6}")


def test_builtin_override_changes_action_and_targets_keeping_the_regex():
    patterns = {p.id: p for p in merge_patterns(True, [{"id": "builtin.private-key", "action": "block"},
                                                       {"id": "builtin.email", "applies_to": ["prompt"]}])}
    builtin = {p.id: p for p in BUILTIN}
    assert patterns["builtin.private-key"].action == "block"
    assert patterns["builtin.private-key"].regex == builtin["builtin.private-key"].regex
    assert patterns["builtin.email"].applies_to == {"prompt"}
    assert patterns["builtin.email"].action == "redact"


def test_builtin_override_with_a_regex_replaces_regex_group_and_validator():
    patterns = {p.id: p for p in merge_patterns(True, [{"id": "builtin.credit-card", "regex": r"\bCARD-\d{4}\b"}])}
    card = patterns["builtin.credit-card"]
    assert (card.regex, card.group, card.validator) == (r"\bCARD-\d{4}\b", 0, None)


def test_builtins_off_keeps_only_what_the_bundle_names():
    patterns = merge_patterns(False, [{"id": "builtin.jwt", "action": "block"}, {"id": "x", "regex": "x-\\d+"}])
    assert [(p.id, p.action) for p in patterns] == [("builtin.jwt", "block"), ("x", "redact")]
    assert merge_patterns(False, []) == []


@pytest.mark.parametrize("entry, reason", [
    ({"id": "custom"}, "regex is required"),
    ({"id": "builtin.no-such-thing"}, "regex is required"),
    ({"id": "x", "regex": "x", "action": "drop"}, "action"),
    ({"id": "x", "regex": "x", "applies_to": ["headers"]}, "applies_to"),
    ({"id": "x", "regex": "x", "applies_to": []}, "applies_to"),
    ({"id": "", "regex": "x"}, "id"),
])
def test_bad_bundle_entries_raise_pattern_error(entry, reason):
    with pytest.raises(PatternError) as exc:
        merge_patterns(True, [entry])
    assert reason in exc.value.reason


def test_duplicate_bundle_ids_raise():
    with pytest.raises(PatternError) as exc:
        merge_patterns(True, [{"id": "a", "regex": "a1"}, {"id": "a", "regex": "a2"}])
    assert exc.value.pattern_id == "a"


def test_applies_to_filters_by_target():
    scanner = compile_scanner(False, [{"id": "prompt-only", "regex": r"\bPROMPT-\d{3}\b", "applies_to": ["prompt"]},
                                      {"id": "answer-only", "regex": r"\bANSWER-\d{3}\b", "applies_to": ["response"]}])
    text = "PROMPT-123 ANSWER-456"
    assert [f.pattern_id for f in scanner.scan(text, "prompt")] == ["prompt-only"]
    assert [f.pattern_id for f in scanner.scan(text, "response")] == ["answer-only"]
    assert scanner.has_patterns("prompt") and scanner.has_patterns("response")
    only_prompt = compile_scanner(False, [{"id": "p", "regex": "p-\\d", "applies_to": ["prompt"]}])
    assert not only_prompt.has_patterns("response")
