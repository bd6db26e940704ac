"""Fake secrets and personal data, one Hypothesis strategy per built-in type.

Every value is generated (random characters in the real format, checksums
computed), so none of them is a real credential. ``EXAMPLES`` holds one fixed
draw per type for readable unit tests.
"""

import string

from hypothesis import strategies as st

UPPER_DIGITS = string.ascii_uppercase + string.digits
ALNUM = string.ascii_letters + string.digits
HEX = "0123456789abcdef"
B64 = ALNUM + "+/"
URLSAFE = ALNUM + "_-"


def chars(alphabet, n, m=None):
    return st.text(alphabet, min_size=n, max_size=n if m is None else m)


def luhn_complete(body):
    """``body`` plus the Luhn check digit."""
    total = 0
    for i, ch in enumerate(reversed(body)):
        d = int(ch)
        if i % 2 == 0:
            d = d * 2 - 9 if d > 4 else d * 2
        total += d
    return body + str((10 - total % 10) % 10)


def iban_complete(country, bban):
    digits = "".join(str(int(ch, 36)) for ch in bban + country + "00")
    return f"{country}{98 - int(digits) % 97:02d}{bban}"


@st.composite
def card(draw):
    prefix, length = draw(st.sampled_from([("4", 16), ("51", 16), ("55", 16), ("2221", 16), ("34", 15),
                                            ("37", 15), ("6011", 16), ("35", 16), ("4", 13)]))
    number = luhn_complete(prefix + draw(chars(string.digits, length - len(prefix) - 1)))
    sep = draw(st.sampled_from(["", " ", "-"]))
    if sep and length == 16:
        return sep.join(number[i:i + 4] for i in range(0, 16, 4))
    if sep and length == 15:
        return sep.join([number[:4], number[4:10], number[10:]])
    return number


@st.composite
def iban(draw):
    country, length = draw(st.sampled_from([("GB", 22), ("DE", 22), ("FR", 27), ("NL", 18), ("ES", 24)]))
    if country == "GB" or country == "NL":
        bban = draw(chars(string.ascii_uppercase, 4)) + draw(chars(string.digits, length - 8))
    else:
        bban = draw(chars(string.digits, length - 4))
    value = iban_complete(country, bban)
    if draw(st.booleans()):
        value = " ".join(value[i:i + 4] for i in range(0, len(value), 4))
    return value


@st.composite
def ssn(draw):
    area = draw(st.integers(1, 899).filter(lambda a: a != 666))
    return f"{area:03d}-{draw(st.integers(1, 99)):02d}-{draw(st.integers(1, 9999)):04d}"


@st.composite
def phone(draw):
    d = lambda n: draw(chars("23456789", 1)) + draw(chars(string.digits, n - 1))  # noqa: E731
    return draw(st.sampled_from([
        f"({d(3)}) {d(3)}-{d(4)}", f"{d(3)}-{d(3)}-{d(4)}", f"+1 {d(3)} {d(3)} {d(4)}",
        f"+44 20 {d(4)} {d(4)}", f"+49 30 {d(8)}", f"0{d(3)} {d(6)}", f"{d(3)}.{d(3)}.{d(4)}",
    ]))


@st.composite
def pem(draw):
    kind = draw(st.sampled_from(["RSA ", "EC ", "OPENSSH ", ""]))
    lines = draw(st.lists(chars(B64, 64), min_size=1, max_size=3))
    return f"-----BEGIN {kind}PRIVATE KEY-----\n" + "\n".join(lines) + f"\n-----END {kind}PRIVATE KEY-----"


@st.composite
def jwt(draw):
    payload = draw(chars(URLSAFE, 20, 60))
    return f"eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.eyJ{payload}.{draw(chars(URLSAFE, 43))}"


def context(prefix, value, suffix=""):
    return st.builds(lambda v: prefix + v + suffix, value)


def literal(*parts):
    """Concatenate fixed strings and strategies."""
    return st.tuples(*[p if isinstance(p, st.SearchStrategy) else st.just(p) for p in parts]).map("".join)


word = chars(string.ascii_lowercase, 3, 10)

STRATEGIES = {
    "builtin.aws-access-key-id": literal(st.sampled_from(["AKIA", "ASIA"]), chars(UPPER_DIGITS, 16)),
    "builtin.aws-secret-access-key": literal(st.sampled_from(["aws_secret_access_key = ", "AWS_SECRET_ACCESS_KEY=",
                                                              '"SecretAccessKey": "']), chars(B64, 40), " "),
    "builtin.github-token": st.one_of(literal(st.sampled_from(["ghp_", "gho_", "ghu_", "ghs_", "ghr_"]),
                                              chars(ALNUM, 36)),
                                      literal("github_pat_11", chars(UPPER_DIGITS, 20), "_", chars(ALNUM, 59))),
    "builtin.gitlab-token": literal(st.sampled_from(["glpat-", "glptt-", "gldt-"]), chars(URLSAFE, 20)),
    "builtin.slack-token": literal(st.sampled_from(["xoxb-", "xoxp-", "xapp-"]), chars(string.digits, 12), "-",
                                   chars(string.digits, 12), "-", chars(ALNUM, 24)),
    "builtin.slack-webhook": literal("https://hooks.slack.com/services/T", chars(UPPER_DIGITS, 8), "/B",
                                     chars(UPPER_DIGITS, 8), "/", chars(ALNUM, 24)),
    "builtin.stripe-key": literal(st.sampled_from(["sk_live_", "rk_live_", "sk_test_"]), chars(ALNUM, 24)),
    "builtin.anthropic-api-key": literal("sk-ant-api03-", chars(URLSAFE, 93), "AA"),
    "builtin.openai-api-key": st.one_of(literal("sk-proj-", chars(URLSAFE, 60)),
                                        literal("sk-svcacct-", chars(URLSAFE, 60)),
                                        literal("sk-", chars(ALNUM, 20), "T3BlbkFJ", chars(ALNUM, 20))),
    "builtin.google-api-key": literal("AIza", chars(URLSAFE, 35)),
    "builtin.google-oauth-secret": literal("GOCSPX-", chars(URLSAFE, 28)),
    "builtin.huggingface-token": literal("hf_", chars(string.ascii_letters, 34)),
    "builtin.npm-token": literal("npm_", chars(ALNUM, 36)),
    "builtin.pypi-token": literal("pypi-AgEIcHlwaS5vcmc", chars(URLSAFE, 70)),
    "builtin.sendgrid-api-key": literal("SG.", chars(URLSAFE, 22), ".", chars(URLSAFE, 43)),
    "builtin.twilio-api-key": literal(st.sampled_from(["SK", "AC"]), chars(HEX, 32)),
    "builtin.azure-storage-key": literal("DefaultEndpointsProtocol=https;AccountName=", word, ";AccountKey=",
                                         chars(B64, 86), "==;EndpointSuffix=core.windows.net"),
    "builtin.azure-sas-token": literal("?sv=2022-11-02&ss=b&srt=co&sp=rl&se=2026-01-01T00:00:00Z&spr=https&sig=",
                                       chars(ALNUM, 40), "%3D"),
    "builtin.databricks-token": literal("dapi", chars(HEX, 32)),
    "builtin.digitalocean-token": literal("dop_v1_", chars(HEX, 64)),
    "builtin.shopify-token": literal(st.sampled_from(["shpat_", "shpss_"]), chars(HEX, 32)),
    "builtin.atlassian-api-token": literal("ATATT3xFfGF0", chars(URLSAFE, 170), "=", chars(HEX.upper(), 8)),
    "builtin.doppler-token": literal("dp.pt.", chars(ALNUM, 43)),
    "builtin.age-secret-key": literal("AGE-SECRET-KEY-1", chars(UPPER_DIGITS, 58)),
    "builtin.postman-api-key": literal("PMAK-", chars(HEX, 24), "-", chars(HEX, 34)),
    "builtin.grafana-token": literal("glsa_", chars(ALNUM, 32), "_", chars(HEX, 8)),
    "builtin.groq-api-key": literal("gsk_", chars(ALNUM, 52)),
    "builtin.telegram-bot-token": literal(chars(string.digits, 10), ":AA", chars(ALNUM, 33)),
    "builtin.vault-token": literal("hvs.", chars(URLSAFE, 90)),
    "builtin.vault-unseal-key": literal("Unseal Key 1: ", chars(B64, 44)),
    "builtin.azure-devops-pat": literal(chars(ALNUM, 52), "JQQJ99", chars(UPPER_DIGITS, 18), "AZDO",
                                        chars(ALNUM, 4)),
    "builtin.dockerhub-token": literal("dckr_pat_", chars(URLSAFE, 27)),
    "builtin.sourcegraph-token": literal("sgp_", chars(HEX, 16), "_", chars(HEX, 40)),
    "builtin.tavily-api-key": literal("tvly-", chars(ALNUM, 32)),
    "builtin.square-token": literal("sq0atp-", chars(URLSAFE, 22)),
    "builtin.mailgun-api-key": literal("key-", chars(HEX, 32)),
    "builtin.mailchimp-api-key": literal(chars(HEX, 32), "-us", chars(string.digits, 1, 2)),
    "builtin.newrelic-key": literal("NRAK-", chars(UPPER_DIGITS, 27)),
    "builtin.newrelic-license-key": literal(chars(HEX, 36), "NRAL"),
    "builtin.rubygems-api-key": literal("rubygems_", chars(HEX, 48)),
    "builtin.artifactory-api-key": literal("AKCp", chars(ALNUM, 69)),
    "builtin.nuget-api-key": literal("oy2", chars(string.ascii_lowercase + string.digits, 43)),
    "builtin.private-key": pem(),
    "builtin.jwt": jwt(),
    "builtin.url-credentials": literal(st.sampled_from(["postgres://", "https://", "mongodb+srv://"]), word, ":",
                                       chars(ALNUM, 8, 16), "@", word, ".example.com/db"),
    "builtin.authorization-header": literal("Authorization: Bearer ", chars(URLSAFE, 24, 40)),
    "builtin.secret-assignment": st.one_of(
        literal(st.sampled_from(["password = ", "DB_PASSWORD=", "api_key: ", "client_secret := "]),
                chars(string.digits, 1), chars(string.ascii_letters, 2), chars(ALNUM + "!#%", 5, 13), " "),
        literal('password = "', chars(string.digits, 1), chars(string.ascii_letters, 2),
                chars(ALNUM + " !#", 5, 13), '"'),
        literal("'token': '", chars(string.digits, 1), chars(string.ascii_letters, 2),
                chars(ALNUM + " !#", 5, 13), "'")),
    "builtin.password-phrase": literal("my password is ", chars(string.ascii_lowercase, 4, 8),
                                       chars(string.digits, 1, 3), " "),
    "builtin.email": literal(word, st.sampled_from([".", "_", ""]), word, "@", word, ".",
                             st.sampled_from(["com", "org", "io", "co.uk"])),
    "builtin.credit-card": card(),
    "builtin.iban": iban(),
    "builtin.us-ssn": ssn(),
    "builtin.phone-number": phone().filter(lambda p: len({c for c in p if c.isdigit()}) > 2),
}


def example(pattern_id):
    """One fixed draw, for readable unit tests."""
    return EXAMPLES[pattern_id]


_FILL = "Xk3mQ9vB7nL2pR5tW8yZ1cF6gJ0hA2sD"
EXAMPLES = {
    "builtin.aws-access-key-id": "AKIAQ3EGRT5YZ2MXN7PL",
    "builtin.aws-secret-access-key": "aws_secret_access_key = Zx8Hq2LmN4pR7tV9wY1bC3dF5gJ6kM0nP2rS4uW6 ",
    "builtin.github-token": "ghp_R8fLq2VxN5tKw9PzH3mYc7DjB1sAe4GuT6oI",
    "builtin.gitlab-token": "glpat-Xk3mQ9vB7nL2pR5tW8yZ",
    "builtin.slack-token": "xoxb-204816324200-502139847600-Zk3LmN8pQ2rS5tV7wX9yB1cD",
    "builtin.slack-webhook": "https://hooks.slack.com/services/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",
    "builtin.stripe-key": "sk_live_4eC39HqLyjWDarjtT1zdp7dc",
    "builtin.anthropic-api-key": "sk-ant-api03-" + "Xk3mQ9vB7nL2pR5tW8yZ" * 4 + "Hq2LmN4pR7tV9" + "AA",
    "builtin.openai-api-key": "sk-proj-" + "Xk3mQ9vB7nL2pR5tW8yZ_-" * 3,
    "builtin.google-api-key": "AIzaSyD3xK9mQ2vB7nL4pR5tW8yZ1cF6gJ0hA2s",
    "builtin.google-oauth-secret": "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",
    "builtin.huggingface-token": "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",
    "builtin.npm-token": "npm_Xk3mQ9vB7nL2pR5tW8yZ1cF6gJ0hA2sD4fG6",
    "builtin.pypi-token": "pypi-AgEIcHlwaS5vcmc" + "Xk3mQ9vB7nL2pR5tW8yZ" * 4,
    "builtin.sendgrid-api-key": "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",
    "builtin.twilio-api-key": "SK0123456789abcdef0123456789abcdef",
    "builtin.azure-storage-key": "DefaultEndpointsProtocol=https;AccountName=acme;AccountKey="
                                 + "Xk3mQ9vB7nL2pR5tW8yZ1cF6gJ0hA2sD4fG6hJ8kL0z+/" * 2 + "==;",
    "builtin.azure-sas-token": "?sv=2022-11-02&ss=b&srt=co&sp=rl&se=2026-01-01T00:00:00Z&spr=https"
                               "&sig=Xk3mQ9vB7nL2pR5tW8yZ1cF6gJ0hA2sD4fG6hJ8k%3D",
    "builtin.databricks-token": "dapi0123456789abcdef0123456789abcdef",
    "builtin.digitalocean-token": "dop_v1_" + "0123456789abcdef" * 4,
    "builtin.shopify-token": "shpat_0123456789abcdef0123456789abcdef",
    "builtin.atlassian-api-token": "ATATT3xFfGF0" + "Xk3mQ9vB7nL2pR5tW8yZ" * 9 + "=D46B49A1",
    "builtin.doppler-token": "dp.pt.Xk3mQ9vB7nL2pR5tW8yZ1cF6gJ0hA2sD4fG6hJ8kL0z",
    "builtin.age-secret-key": "AGE-SECRET-KEY-1" + "QZ3XK9MQ2VB7NL4PR5TW8YZ1CF6GJ0HA2SD4FG6HJ8KL0ZQ3XK9MQ2VB7N",
    "builtin.postman-api-key": "PMAK-0123456789abcdef01234567-0123456789abcdef0123456789abcdef01",
    "builtin.grafana-token": "glsa_Xk3mQ9vB7nL2pR5tW8yZ1cF6gJ0hA2sD_0123abcd",
    "builtin.groq-api-key": "gsk_" + (_FILL * 3)[:52],
    "builtin.telegram-bot-token": "4839574813:AAXk3mQ9vB7nL2pR5tW8yZ1cF6gJ0hA2sD4",
    "builtin.vault-token": "hvs.CAESIXk3mQ9vB7nL2pR5tW8yZ1cF6gJ0hA2sD4fG6hJ8kL0zGh4KHGh2cy5Xk3mQ9vB7nL2pR5tW8yZ",
    "builtin.vault-unseal-key": "Unseal Key 1: Xk3mQ9vB7nL2pR5tW8yZ1cF6gJ0hA2sD4fG6hJ8kL0z+",
    "builtin.azure-devops-pat": (_FILL * 3)[:52] + "JQQJ99BFACAAAAALGcqjAAASAZDO3eqU",
    "builtin.dockerhub-token": "dckr_pat_Xk3mQ9vB7nL2pR5tW8yZ1cF6gJ0",
    "builtin.sourcegraph-token": "sgp_0123456789abcdef_0123456789abcdef0123456789abcdef01234567",
    "builtin.tavily-api-key": "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",
    "builtin.square-token": "sq0atp-Xk3mQ9vB7nL2pR5tW8yZ1c",
    "builtin.mailgun-api-key": "key-0123456789abcdef0123456789abcdef",
    "builtin.mailchimp-api-key": "0123456789abcdef0123456789abcdef-us14",
    "builtin.newrelic-key": "NRAK-QZ3XK9MQ2VB7NL4PR5TW8YZ1CF6",
    "builtin.newrelic-license-key": "0123456789abcdef0123456789abcdef0123NRAL",
    "builtin.rubygems-api-key": "rubygems_" + "0123456789abcdef" * 3,
    "builtin.artifactory-api-key": "AKCp" + (_FILL * 4)[:69],
    "builtin.nuget-api-key": "oy2xk3mq9vb7nl2pr5tw8yz1cf6gj0ha2sd4fg6hj8kl0z",
    "builtin.private-key": "-----BEGIN RSA PRIVATE KEY-----\nMIIEowIBAAKCAQEAx" + _FILL + "Xk3mQ9\n"
                           + _FILL + "==\n-----END RSA PRIVATE KEY-----",
    "builtin.jwt": "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.eyJzdWIiOiIxMjM0NTY3ODkwIiwibmFtZSI6IkpvaG4ifQ"
                   ".SflKxwRJSMeKKF2QT4fwpMeJf36POk6yJV_adQssw5c",
    "builtin.url-credentials": "postgres://app:Zq9xW2vK@db.internal:5432/app",
    "builtin.authorization-header": "Authorization: Bearer Xk3mQ9vB7nL2pR5tW8yZ1cF6",
    "builtin.secret-assignment": 'password = "Tr0ub4dor&3"',
    "builtin.password-phrase": "my password is hunter22 ",
    "builtin.email": "jane.roe@example.org",
    "builtin.credit-card": "4539 1488 0343 6467",
    "builtin.iban": "GB82 WEST 1234 5698 7654 32",
    "builtin.us-ssn": "078-05-1121",
    "builtin.phone-number": "(415) 555-0134",
}
