"""The DLP pattern catalog: the built-in patterns and the policy's additions.

A pattern is an RE2 regular expression with an id, an action (``redact`` or
``block``), the texts it applies to (``prompt``, ``response``), an optional
validator (validators.py) and the capture group that is the secret itself
(``password = "hunter22"`` redacts only the value). Built-in ids are
``builtin.<name>``; every built-in redacts by default and applies to prompts
and responses.

Writing patterns for this engine:
- RE2 syntax, which the scanner compiles; the holdback window also reads each
  pattern with Python's regex parser (analysis only), so built-ins stay in the
  common subset (no ``\\z``: ``$`` is end of text without ``(?m)``).
- Matching is leftmost-first, as in Perl, per pattern; patterns do not see
  each other's matches. ``\\b``, ``\\d``, ``\\w``, ``\\s`` are ASCII in RE2.
- Prefer ``+``/``*`` to large counted repetitions, above all at the start of
  a pattern (``[a-z0-9]{36}NRAL`` counts inside every word of every text):
  counters multiply the states of the combined prefilter DFA. Check the
  length in a validator instead (validators.shape).
- Validators see only the matched text, never its surroundings.
- A secret that can be longer than the stream's holdback window should be a
  match while it is still arriving (the PEM pattern's unterminated form):
  the window then carries it past the window instead of cutting it.

merge_patterns() applies the policy's ``dlp_patterns``: an entry whose id is a
built-in id overrides that built-in (its action and applies_to; a regex, when
given, replaces the built-in's regex, group and validator); any other entry is
appended. An entry naming a built-in id brings that built-in in even when the
built-in catalog is switched off: the policy asked for it by name.
"""

from dataclasses import dataclass, replace
from typing import Callable

from . import validators

ACTIONS = ("redact", "block")
TARGETS = frozenset({"prompt", "response"})
BUILTIN_PREFIX = "builtin."


@dataclass(frozen=True)
class Pattern:
    id: str
    regex: str                  # RE2 syntax
    action: str = "redact"      # redact | block
    applies_to: frozenset = TARGETS
    validator: Callable[[str], bool] | None = None   # gets the matched text (of `group`)
    group: int = 0              # which capture group is the secret span (if it did not take part
                                # in the match, the next group that did: one per alternative)


# Fragments shared by several patterns.
_ASSIGN = r"""["']?\s*(?::=|=>|==|!=|=|:)\s*"""          # key, then = : := => == !=
_END = r"""(?:[\s,;"'`)}\]&]|$)"""                        # what may follow a bare literal value
# A quoted literal: the secret is the text inside the quotes, one capture
# group per quote style (Pattern.group falls through to the one that took part).
_QUOTED = r"""\\?"([^"\r\n]+?)\\?"|'([^'\r\n]+)'|`([^`\r\n]+)`"""
_PEM_HEAD = r"-----BEGIN[A-Z0-9 ]{0,40}PRIVATE KEY(?: BLOCK)?-----"
_PEM_TAIL = r"-----END[A-Z0-9 ]{0,40}PRIVATE KEY(?: BLOCK)?-----"
# A PEM body: base64, headers (Proc-Type: 4,ENCRYPTED), line breaks real or
# escaped, quotes and + of a string split over lines; never "--", so a body
# cannot run past its END line.
_PEM_BODY = r"""(?:[A-Za-z0-9+/=\s"'\\,:.]|-[A-Za-z0-9])*"""
_PEM_SEP = r"""(?:\s|\\[nrt]|["'+,])*"""
# "PRIVATE KEY" base64-encoded at each of the three byte alignments.
_B64_PRIVATE_KEY = r"(?:UFJJVkFURSBLRV|SSVZBVEUgS0VZ|QUklWQVRFIEtFW)"

_SECRET_KEYS = (r"password|passwd|passphrase|pwd|secret|token|api[_.-]?key|apikey|access[_.-]?key"
                r"|auth[_.-]?key|private[_.-]?key|client[_.-]?secret|license[_.-]?key|credentials?|[_.-]pat")


def _p(name, regex, validator=None, group=0):
    return Pattern(BUILTIN_PREFIX + name, regex, validator=validator, group=group)


BUILTIN = (
    # --- cloud and platform credentials -----------------------------------
    _p("aws-access-key-id",
       r"\b(?:A3T[A-Z0-9]|AKIA|ASIA|ABIA|ACCA|AGPA|AIDA|AIPA|ANPA|ANVA|AROA|APKA)[A-Z0-9]{16}\b"),
    _p("aws-secret-access-key",
       r"(?i:(?:aws_?)?secret_?access_?key|aws_?secret(?:_?key)?)" + _ASSIGN
       + r"""["']?([A-Za-z0-9/+]{40})(?:[^A-Za-z0-9/+=]|$)""", group=1),
    _p("github-token",
       r"\b(?:(?:ghp|gho|ghu|ghs|ghr)_[A-Za-z0-9]{36,}|github_pat_[A-Za-z0-9_]{40,})\b"),
    _p("gitlab-token",
       r"\b(?:(?:glpat|gldt|glrt|glptt|glft|glsoat|glcbt|glimt|glagent|gloas|glffct)-[A-Za-z0-9_-]{20,80}"
       r"|GR1348941[A-Za-z0-9_-]{20,80})"),
    _p("slack-token", r"\b(?:xox[abposre]|xapp)-[0-9A-Za-z][0-9A-Za-z/_-]{8,}"),
    _p("slack-webhook",
       r"\b(?:https?://)?hooks\.slack\.com/(?:services|workflows|triggers)/[A-Za-z0-9/_+-]{16,}"),
    _p("stripe-key", r"\b(?:(?:sk|rk)_(?:live|test)_[0-9A-Za-z]{10,}|whsec_[A-Za-z0-9]{24,64})\b"),
    _p("anthropic-api-key", r"\bsk-ant-(?:api|admin|sid|oat|ort)[0-9]{2}-[A-Za-z0-9_-]{20,}"),
    _p("openai-api-key",
       r"\bsk-(?:(?:proj|svcacct|admin|None)-[A-Za-z0-9_-]{20,}|[A-Za-z0-9]{32,64}\b)"),
    _p("google-api-key", r"\bAIza[0-9A-Za-z_-]{35}"),
    _p("google-oauth-secret", r"\b(?:GOCSPX-[A-Za-z0-9_-]{28}|ya29\.[0-9A-Za-z_-]{20,})"),
    _p("huggingface-token", r"\b(?:hf_|api_org_)[A-Za-z0-9]{30,40}\b"),
    _p("npm-token", r"\bnpm_[A-Za-z0-9]{36}\b"),
    _p("pypi-token", r"\bpypi-(?:AgEIcHlwaS5vcmc|AgENdGVzdC5weXBpLm9yZw)[A-Za-z0-9_-]{50,}"),
    _p("sendgrid-api-key", r"\bSG\.[A-Za-z0-9_-]{22}\.[A-Za-z0-9_-]{43}"),
    _p("twilio-api-key", r"\b(?:SK|AC)[0-9a-f]{32}\b"),
    _p("azure-storage-key",
       r"(?i:\b(?:AccountKey|SharedAccessKey|PrimaryKey|SecondaryKey))\s*=\s*([A-Za-z0-9+/]{20,100}={0,2})",
       group=1),
    _p("azure-sas-token",
       r"\b(?:(?:sv|se|sp|sr|spr|srt|ss|st|skoid|sktid)=[^\s&\"'<>]+(?:&[A-Za-z]{1,10}=[^\s&\"'<>]*)*"
       r"&sig=[A-Za-z0-9%+/]{20,}={0,2}"
       r"|sig=[A-Za-z0-9%+/]{20,}={0,2}(?:&(?:sv|se|sp|sr|spr|st)=[^\s&\"'<>]+)+)"),
    _p("databricks-token", r"\bdapi[0-9a-f]{32}(?:-[0-9])?\b"),
    _p("digitalocean-token", r"\bdo[opr]_v1_[a-f0-9]{64}\b"),
    _p("shopify-token", r"\bshp(?:at|ca|pa|ss)_[a-fA-F0-9]{32}\b"),
    _p("atlassian-api-token", r"\bATATT3[A-Za-z0-9_=-]{150,}"),
    _p("doppler-token", r"\bdp\.(?:ct|pt|st|sa|scim|audit)\.(?:[A-Za-z0-9_-]{1,40}\.)?[A-Za-z0-9]{40,44}\b"),
    _p("age-secret-key", r"\bAGE-SECRET-KEY-1[0-9A-Z]{58}\b"),
    _p("postman-api-key", r"\bPMAK-[a-f0-9]{24}-[a-f0-9]{34}\b"),
    _p("grafana-token",
       r"\b(?:glc_[A-Za-z0-9+/]{32,}={0,2}|glsa_[A-Za-z0-9]{32}_[A-Fa-f0-9]{8}\b|eyJrIjoi[A-Za-z0-9+/]{40,}={0,2})"),
    _p("groq-api-key", r"\bgsk_[A-Za-z0-9]{52}\b"),
    _p("telegram-bot-token", r"\b[0-9]{8,10}:AA[A-Za-z0-9_-]{32,33}"),
    _p("vault-token", r"\bhv[sbr]\.[A-Za-z0-9_-]{24,}"),
    _p("vault-unseal-key", r"(?i:\bunseal key(?: [0-9]{1,2})?:|\boperator unseal)\s+([A-Za-z0-9+/]{40,}={0,2})",
       group=1),
    _p("azure-devops-pat", r"\b[A-Za-z0-9]+JQQJ9[0-9A-Za-z]+AZDO[A-Za-z0-9]{4}\b",
       validator=validators.shape(52, "JQQJ9", 84)),
    _p("dockerhub-token", r"\bdckr_pat_[A-Za-z0-9_-]{27,}"),
    _p("sourcegraph-token", r"\bsgp_(?:(?:[a-fA-F0-9]{16}|local)_)?[a-fA-F0-9]{40}\b"),
    _p("tavily-api-key", r"\btvly-(?:dev-|prod-)?[A-Za-z0-9]{32}\b"),
    _p("square-token", r"\b(?:sq0atp|sq0csp)-[0-9A-Za-z_-]{22,43}"),
    _p("mailgun-api-key", r"\bkey-[0-9a-f]{32}\b"),
    _p("mailchimp-api-key", r"\b[0-9a-f]+-us[0-9]{1,2}\b", validator=validators.shape(32, "-us")),
    _p("newrelic-key", r"\b(?:NRAK-[A-Z0-9]{27}|NRAA-[a-f0-9]{27}|NRI[IQ]-[A-Za-z0-9_-]{32}|NRJS-[a-f0-9]{19})\b"),
    _p("newrelic-license-key", r"\b[a-z0-9]+NRAL\b", validator=validators.shape(36, "NRAL")),
    _p("rubygems-api-key", r"\brubygems_[a-f0-9]{48}\b"),
    _p("artifactory-api-key", r"\bAKCp[A-Za-z0-9]{69}\b"),
    _p("nuget-api-key", r"\boy2[a-z0-9]{43}\b"),
    # --- keys and tokens by structure -------------------------------------
    _p("private-key",
       # The whole block; or, with no END line (a truncated key, or one still
       # arriving in a stream), the header and every base64 chunk after it,
       # so that a key in progress is a match up to its last character.
       _PEM_HEAD + r"(?:" + _PEM_BODY + _PEM_TAIL
       + r"|" + _PEM_SEP + r"[A-Za-z0-9+/]{16,}(?:" + _PEM_SEP + r"[A-Za-z0-9+/=]+)*" + _PEM_SEP + r")"
       r"|\bLS0tLS1CRUdJTi[A-Za-z0-9+/]{0,60}?" + _B64_PRIVATE_KEY + r"[A-Za-z0-9+/]{32,}={0,2}"),
    _p("jwt", r"\beyJ[A-Za-z0-9_-]{8,}\.eyJ[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]*"),
    _p("url-credentials",
       r"""\b[A-Za-z][A-Za-z0-9+.-]{1,30}://([^\s:/?#@"'<>\[\]]*:[^\s/?#@"'<>]+)@""", group=1),
    _p("authorization-header",
       r"""(?i:\bauthorization\b["']?\s*[:=]\s*["']?(?:bearer|basic|token|bot)\s+)([A-Za-z0-9._~+/=-]{8,})""",
       group=1),
    _p("secret-assignment",
       r"(?i:" + _SECRET_KEYS + ")" + _ASSIGN
       + r"(?:" + _QUOTED + r"""|([^\s"'`,;(){}\[\]<>$.]{4,})""" + _END + ")",
       validator=validators.secret_value, group=1),
    _p("password-phrase",
       r"""(?i:\b(?:password|passphrase|passcode)\b[^\n.!?]{0,40}?\s(?:is|was)\s+)(?:"""
       + _QUOTED + r"""|([A-Za-z0-9!@#$%^&*_+=~|\\/-]*[0-9!@#$%^&*_+=~|\\/-][A-Za-z0-9!@#$%^&*_+=~|\\/-]*))""",
       validator=validators.secret_value, group=1),
    # --- personal data ------------------------------------------------------
    _p("email", r"\b[A-Za-z0-9][A-Za-z0-9._%+-]*@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*\.[A-Za-z]{2,24}\b"),
    _p("credit-card", r"\b[0-9](?:[ -]?[0-9]){11,18}\b", validator=validators.card_number),
    _p("iban",
       r"\b[A-Za-z]{2}[0-9]{2}(?:[A-Za-z0-9]{11,30}|(?: [A-Za-z0-9]{4}){2,7}(?: [0-9A-Z]{1,3})?)\b",
       validator=validators.iban),
    _p("us-ssn", r"\b[0-9]{3}-[0-9]{2}-[0-9]{4}\b|\b[0-9]{3} [0-9]{2} [0-9]{4}\b", validator=validators.us_ssn),
    _p("phone-number",
       r"(?:\+[1-9][0-9]{0,2}[ .-]?(?:\(0\)[ .-]?)?(?:\([0-9]{1,4}\)[ .-]?)?[0-9]{1,4}(?:[ .-]?[0-9]{1,4}){1,5}"
       r"|\b00[1-9][0-9]{0,2}[ .-][0-9]{1,4}(?:[ .-][0-9]{1,4}){1,5}"
       r"|\([0-9]{2,4}\)[ .-]?[0-9]{2,4}(?:[ .-]?[0-9]{2,4}){1,3}"
       r"|\b[0-9]{2,5}(?:[ .-][0-9]{2,8}){1,4})"
       r"(?:[ ]?(?:x|ext\.?)[ ]?[0-9]{1,5})?\b",
       validator=validators.phone_number),
)

BUILTIN_IDS = frozenset(p.id for p in BUILTIN)


class PatternError(ValueError):
    """A pattern that cannot be used, and why; the caller rejects the whole
    bundle. (Re-exported by scanner.py, which raises it for regexes RE2
    refuses.)"""

    def __init__(self, pattern_id, reason):
        super().__init__(f"dlp pattern {pattern_id!r}: {reason}")
        self.pattern_id = pattern_id
        self.reason = reason


def _applies_to(entry, pattern_id, default):
    value = entry.get("applies_to")
    if value is None:
        return default
    targets = frozenset(value)
    if not targets or not targets <= TARGETS:
        raise PatternError(pattern_id, "applies_to must list prompt and/or response")
    return targets


def merge_patterns(builtin_enabled: bool, bundle_patterns: list[dict]) -> list[Pattern]:
    """The effective pattern list: built-ins (when enabled) in catalog order,
    overridden in place by bundle entries with their id, then the bundle's own
    patterns in bundle order."""
    by_id = {p.id: p for p in BUILTIN}
    chosen = dict(by_id) if builtin_enabled else {}
    added, seen = [], set()
    for entry in bundle_patterns:
        pattern_id = entry.get("id")
        if not isinstance(pattern_id, str) or not pattern_id:
            raise PatternError(str(pattern_id), "id must be a non-empty string")
        if pattern_id in seen:
            raise PatternError(pattern_id, "duplicate pattern id")
        seen.add(pattern_id)
        action = entry.get("action") or "redact"
        if action not in ACTIONS:
            raise PatternError(pattern_id, "action must be redact or block")
        regex = entry.get("regex")
        if regex is not None and (not isinstance(regex, str) or not regex):
            raise PatternError(pattern_id, "regex must be a non-empty string")
        base = by_id.get(pattern_id)
        if base is not None:
            changes = {"action": action, "applies_to": _applies_to(entry, pattern_id, base.applies_to)}
            if regex is not None:
                changes.update(regex=regex, group=0, validator=None)
            chosen[pattern_id] = replace(base, **changes)
        elif regex is None:
            raise PatternError(pattern_id, "regex is required (only a built-in id may omit it)")
        else:
            added.append(Pattern(pattern_id, regex, action, _applies_to(entry, pattern_id, TARGETS)))
    builtins = [chosen[p.id] for p in BUILTIN if p.id in chosen]
    return builtins + added
