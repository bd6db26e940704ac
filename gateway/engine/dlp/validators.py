"""Checks that turn a regex hit into a finding.

A built-in pattern may name a validator: a pure function that gets the matched
text (of the pattern's capture group) and says whether it really is what the
pattern is about: a card number whose Luhn checksum holds, an IBAN whose mod-97
check holds, an SSN with a possible area/group/serial. A failed check means no
finding. Validators look only at the matched text (never at its surroundings),
so a match and its verdict are decided together; the streaming holdback relies
on that. They use plain string operations (no regex engine), and every input is
bounded by the pattern that produced it.
"""

DIGITS = frozenset("0123456789")

# ISO 13616 IBAN length per country (SWIFT IBAN registry).
IBAN_LENGTHS = {
    "AD": 24, "AE": 23, "AL": 28, "AT": 20, "AZ": 28, "BA": 20, "BE": 16, "BG": 22, "BH": 22, "BI": 27,
    "BR": 29, "BY": 28, "CH": 21, "CR": 22, "CY": 28, "CZ": 24, "DE": 22, "DJ": 27, "DK": 18, "DO": 28,
    "EE": 20, "EG": 29, "ES": 24, "FI": 18, "FK": 18, "FO": 18, "FR": 27, "GB": 22, "GE": 22, "GI": 23,
    "GL": 18, "GR": 27, "GT": 28, "HN": 28, "HR": 21, "HU": 28, "IE": 22, "IL": 23, "IQ": 23, "IS": 26,
    "IT": 27, "JO": 30, "KW": 30, "KZ": 20, "LB": 28, "LC": 32, "LI": 21, "LT": 20, "LU": 20, "LV": 21,
    "LY": 25, "MC": 27, "MD": 24, "ME": 22, "MK": 19, "MN": 20, "MR": 27, "MT": 31, "MU": 30, "NI": 28,
    "NL": 18, "NO": 15, "OM": 23, "PK": 24, "PL": 28, "PS": 29, "PT": 25, "QA": 29, "RO": 24, "RS": 22,
    "RU": 33, "SA": 24, "SC": 31, "SD": 18, "SE": 24, "SI": 19, "SK": 24, "SM": 27, "SO": 23, "ST": 25,
    "SV": 28, "TL": 23, "TN": 24, "TR": 26, "UA": 29, "VA": 22, "VG": 24, "XK": 20, "YE": 30,
}

# Values a `password = ...` style assignment holds when it is not a literal
# secret: type names, language constants, placeholders.
NOT_SECRETS = frozenset("""
    none null nil true false undefined string str bytes int integer number bool boolean object any
    optional required empty self this your_password yourpassword your_token your_api_key redacted
""".split())
# How a value starts when it is a reference, a template or a path, not a literal.
NOT_LITERAL_STARTS = ("$", "%", "{", "<", "&lt;", "#{", "/", "~/", "arn:", "+", ".", ",", ";", ":")


def shape(prefix_len, marker, total=None):
    """A validator: ``marker`` right after the first ``prefix_len`` characters
    (and ``total`` characters in all, when given). Lets a pattern say
    ``[a-z0-9]+NRAL`` (cheap for the combined DFA) and still mean exactly 36."""
    def check(text):
        return text[prefix_len:prefix_len + len(marker)] == marker and (total is None or len(text) == total)
    check.__name__ = f"shape_{prefix_len}_{marker}"
    return check


def _groups(text, separators):
    """Split on any of ``separators``; return (groups, separators used)."""
    groups, used, current = [], set(), []
    for ch in text:
        if ch in separators:
            used.add(ch)
            groups.append("".join(current))
            current = []
        else:
            current.append(ch)
    groups.append("".join(current))
    return groups, used


def luhn(digits):
    total, double = 0, False
    for ch in reversed(digits):
        d = ord(ch) - 48
        if double:
            d = d * 2 - 9 if d > 4 else d * 2
        total += d
        double = not double
    return total % 10 == 0


def _card_brand_length_ok(d):
    n = len(d)
    p2, p4 = int(d[:2]), int(d[:4])
    if d[0] == "4":                                   # Visa
        return n in (13, 16, 19)
    if 51 <= p2 <= 55 or 2221 <= p4 <= 2720:          # Mastercard
        return n == 16
    if p2 in (34, 37):                                # American Express
        return n == 15
    if p2 in (30, 36, 38, 39):                        # Diners Club
        return 14 <= n <= 19
    if p2 == 35:                                      # JCB
        return 16 <= n <= 19
    if p4 in (1800, 2131):                            # JCB, 15 digits
        return n == 15
    if d[0] == "6" or p2 in (50, 56, 57, 58):         # Discover, UnionPay, Maestro
        return 12 <= n <= 19
    return False


def card_number(text):
    """A payment card number: 12-19 digits, plain or in groups of 3-6 split by
    one kind of separator, a known issuer prefix for its length, and Luhn."""
    groups, used = _groups(text, " -")
    if len(used) > 1 or (used and any(not 3 <= len(g) <= 6 for g in groups)):
        return False
    digits = "".join(groups)
    return (12 <= len(digits) <= 19 and set(digits) <= DIGITS
            and _card_brand_length_ok(digits) and luhn(digits))


def iban(text):
    """An IBAN: known country, that country's length, and ISO 7064 mod 97-10."""
    compact = text.replace(" ", "").upper()
    if IBAN_LENGTHS.get(compact[:2]) != len(compact) or not compact.isalnum() or not compact.isascii():
        return False
    rearranged = compact[4:] + compact[:4]
    number = "".join(str(int(ch, 36)) for ch in rearranged)
    return int(number) % 97 == 1


def us_ssn(text):
    """A US Social Security number in the 3-2-4 form, with the SSA's rules:
    area not 000, 666 or 9xx; group not 00; serial not 0000."""
    groups, used = _groups(text, " -")
    if len(used) != 1 or [len(g) for g in groups] != [3, 2, 4] or not set("".join(groups)) <= DIGITS:
        return False
    area, group, serial = groups
    if area in ("000", "666") or area[0] == "9" or group == "00" or serial == "0000":
        return False
    return len(set(area + group + serial)) > 1


def _looks_like_date(groups, separators):
    if len(groups) != 3 or not separators <= set("-/."):
        return False
    sizes = [len(g) for g in groups]
    if sizes == [4, 2, 2] or sizes == [4, 1, 2] or sizes == [4, 2, 1]:
        year, a, b = groups
    elif sizes[2] == 4 and sizes[0] <= 2 and sizes[1] <= 2:
        a, b, year = groups
    else:
        return False
    return year[:2] in ("19", "20") and 1 <= int(a) <= 31 and 1 <= int(b) <= 31


def phone_number(text):
    """A phone number: 7-15 digits (E.164 allows 15; without a ``+``/``00``
    international prefix at most 12), not a date, an IP address or the 3-2-4
    shape of an SSN; bare digit groups need a shape that phone numbers use."""
    body = text
    for marker in ("ext.", "ext", "x"):
        cut = body.lower().rfind(marker)
        if cut > 0 and body[cut + len(marker):].strip().isdigit():
            body = body[:cut].rstrip()
            break
    international = body.startswith("+") or (body.startswith("00") and not body.startswith("000"))
    parens = "(" in body
    stripped = body.lstrip("+").replace("(", " ").replace(")", " ")
    groups, used = _groups(stripped, " .-")
    groups = [g for g in groups if g]
    digits = "".join(groups)
    if not set(digits) <= DIGITS or not (8 if international else 7) <= len(digits) <= (15 if international else 12):
        return False
    if [len(g) for g in groups] == [3, 2, 4]:
        return False                  # the shape of a US SSN
    if not international and not parens:
        if len(used) > 1 or _looks_like_date(groups, used):
            return False
        sizes = [len(g) for g in groups]
        if used == {"."} and len(groups) == 4 and all(int(g) <= 255 for g in groups):
            return False
        if len(groups) == 2 and not (digits[0] == "0" or sizes in ([3, 4], [4, 4], [2, 6], [3, 5])):
            return False
        if any(size > 4 for size in sizes[1:]) and digits[0] != "0" and sizes != [2, 6]:
            return False
    return len(set(digits)) > 2


def secret_value(text):
    """The value of a ``password = ...`` style assignment is a literal secret:
    at least 4 characters, not a placeholder, a type name, a reference, a
    template, a path, or code concatenating strings (``" + f() + "``)."""
    value = text.strip().strip("\"'`\\").strip()
    if len(value) < 4 or value.lower() in NOT_SECRETS or len(set(value)) == 1:
        return False
    if value.startswith(NOT_LITERAL_STARTS) or value.endswith("+") or "{{" in value or "${" in value:
        return False
    return not (value.startswith("[") and value.endswith("]"))
