"""Tests for gateway.usage.prices: the built-in catalog, bundle overrides, lookup and the cost estimate
(SPEC section 4 "prices", section 6 "Cost")."""

import math
from fractions import Fraction
from importlib import resources

import pytest
import yaml
from hypothesis import given
from hypothesis import strategies as st

from gateway.usage.prices import (
    PRICE_FIELDS,
    Price,
    PriceCatalog,
    PriceCatalogError,
    estimate_cost_usd,
    parse_catalog,
    strip_date_suffix,
)
from policy_sync.bundle import validate

SONNET = Price("anthropic", "claude-sonnet-4-5", 3.0, 15.0, 3.75, 0.30)
GPT4O_MINI = Price("openai", "gpt-4o-mini", 0.15, 0.60, None, 0.075)
NO_CACHE_RATES = Price("openai", "plain", 2.0, 8.0)


def catalog(*prices):
    return PriceCatalog(prices)


def bundle_prices(*entries):
    """``prices`` exactly as the policy validator normalizes them."""
    return validate({"revision": "r1", "prices": list(entries)})["prices"]


# --------------------------------------------------------------------------- lookup

def test_exact_match():
    prices = catalog(SONNET, GPT4O_MINI)
    assert prices.lookup("anthropic", "claude-sonnet-4-5") is SONNET
    assert prices.lookup("openai", "gpt-4o-mini") is GPT4O_MINI


@pytest.mark.parametrize("provider, model, expected", [
    ("anthropic", "claude-sonnet-4-5-20250929", SONNET),     # -YYYYMMDD
    ("openai", "gpt-4o-mini-2024-07-18", GPT4O_MINI),          # -YYYY-MM-DD
    ("anthropic", "claude-sonnet-4-5-20240229", SONNET),     # a leap day is a date
])
def test_date_suffix_is_removed(provider, model, expected):
    assert catalog(SONNET, GPT4O_MINI).lookup(provider, model) is expected


@pytest.mark.parametrize("model", [
    "gpt-4o-mini-0718",            # a four-digit snapshot tag is not a date (decided: not removed)
    "gpt-4o-mini-20241399",        # not a calendar date
    "gpt-4o-mini-2024-13-01",
    "gpt-4o-mini-2023-02-29",      # not a leap year
    "gpt-4o-mini-2024-07-18x",     # the date must end the name
    "gpt-4o-mini20240718",         # no separator
    "gpt-4o-mini-2024_07_18",
    "gpt-4o-mini-240718",          # six digits
    "gpt-4o-mini-202407180",       # nine digits
    "gpt-4o-mini-٢٠٢٤٠٧١٨",        # non-ASCII digits
    "GPT-4O-MINI",                 # case-sensitive
    "gpt-4o-mini ",
    "gpt-4o",                      # a prefix is not a match
    "gpt-4o-mini-2024-07-18-2024-07-18",   # only one suffix is removed
])
def test_no_match(model):
    assert catalog(GPT4O_MINI).lookup("openai", model) is None


def test_four_digit_snapshot_tag_needs_its_own_entry():
    gpt4 = Price("openai", "gpt-4", 30.0, 60.0)
    assert catalog(gpt4).lookup("openai", "gpt-4-0613") is None
    snapshot = Price("openai", "gpt-4-0613", 30.0, 60.0)
    assert catalog(gpt4, snapshot).lookup("openai", "gpt-4-0613") is snapshot


def test_exact_dated_entry_wins_over_its_alias():
    alias = Price("openai", "gpt-4o", 2.5, 10.0, None, 1.25)
    old_snapshot = Price("openai", "gpt-4o-2024-05-13", 5.0, 15.0)
    prices = catalog(alias, old_snapshot)
    assert prices.lookup("openai", "gpt-4o-2024-05-13") is old_snapshot
    assert prices.lookup("openai", "gpt-4o-2024-08-06") is alias


def test_provider_must_match():
    prices = catalog(SONNET)
    assert prices.lookup("openai", "claude-sonnet-4-5") is None
    assert prices.lookup("Anthropic", "claude-sonnet-4-5") is None


@pytest.mark.parametrize("provider, model", [
    ("openai", "gpt-unknown"), ("openai", ""), ("anthropic", "-20250929"), ("openai", None), (None, "gpt-4o-mini"),
    ("openai", ["gpt-4o-mini"]),
])
def test_unknown_or_malformed_names_are_uncosted(provider, model):
    assert catalog(GPT4O_MINI).lookup(provider, model) is None


@pytest.mark.parametrize("model, base", [
    ("claude-sonnet-4-5-20250929", "claude-sonnet-4-5"),
    ("gpt-4o-2024-08-06", "gpt-4o"),
    ("gpt-4.1-2025-04-14", "gpt-4.1"),
    ("a-20000101", "a"),
    ("gpt-4-0613", None),
    ("-20250929", None),
    ("gpt-4o", None),
])
def test_strip_date_suffix(model, base):
    assert strip_date_suffix(model) == base


# --------------------------------------------------------------------------- overrides

def test_override_replaces_builtin_by_exact_key_and_keeps_the_rest():
    base = catalog(SONNET, GPT4O_MINI)
    overridden = base.with_overrides(bundle_prices(
        {"provider": "anthropic", "model": "claude-sonnet-4-5", "input_usd_per_mtok": 1.0,
         "output_usd_per_mtok": 2.0, "cache_write_usd_per_mtok": 1.5, "cache_read_usd_per_mtok": 0.1}))
    assert overridden.lookup("anthropic", "claude-sonnet-4-5") == Price("anthropic", "claude-sonnet-4-5",
                                                                         1.0, 2.0, 1.5, 0.1)
    assert overridden.lookup("anthropic", "claude-sonnet-4-5-20250929").input_usd_per_mtok == 1.0
    assert overridden.lookup("openai", "gpt-4o-mini") is GPT4O_MINI
    assert len(overridden) == 2
    # the catalog overridden is unchanged
    assert base.lookup("anthropic", "claude-sonnet-4-5") is SONNET


def test_override_adds_a_model_and_missing_cache_rates_are_none():
    overridden = catalog(SONNET).with_overrides(bundle_prices(
        {"provider": "openai", "model": "ft:gpt-4o-mini:acme", "input_usd_per_mtok": 0.3,
         "output_usd_per_mtok": 1.2}))
    price = overridden.lookup("openai", "ft:gpt-4o-mini:acme")
    assert price == Price("openai", "ft:gpt-4o-mini:acme", 0.3, 1.2, None, None)
    assert price.effective_cache_read_usd_per_mtok == 0.3
    assert price.effective_cache_write_usd_per_mtok == 0.3
    assert len(overridden) == 2


def test_override_of_a_dated_snapshot_only():
    overridden = catalog(SONNET).with_overrides(bundle_prices(
        {"provider": "anthropic", "model": "claude-sonnet-4-5-20250929", "input_usd_per_mtok": 9.0,
         "output_usd_per_mtok": 9.0}))
    assert overridden.lookup("anthropic", "claude-sonnet-4-5-20250929").input_usd_per_mtok == 9.0
    assert overridden.lookup("anthropic", "claude-sonnet-4-5") is SONNET


def test_last_bundle_entry_for_a_key_wins():
    entry = {"provider": "openai", "model": "gpt-4o-mini", "output_usd_per_mtok": 1.0}
    overridden = catalog(GPT4O_MINI).with_overrides(bundle_prices(
        {**entry, "input_usd_per_mtok": 1.0}, {**entry, "input_usd_per_mtok": 2.0}))
    assert overridden.lookup("openai", "gpt-4o-mini").input_usd_per_mtok == 2.0


def test_no_overrides_returns_the_same_catalog():
    base = catalog(SONNET)
    assert base.with_overrides([]) is base
    assert base.with_overrides(bundle_prices()) is base


def test_overrides_of_the_builtin_catalog():
    builtin = PriceCatalog.builtin()
    overridden = builtin.with_overrides(bundle_prices(
        {"provider": "anthropic", "model": "claude-sonnet-4-5", "input_usd_per_mtok": 3.0,
         "output_usd_per_mtok": 15.0, "cache_write_usd_per_mtok": 3.75, "cache_read_usd_per_mtok": 0.30},
        {"provider": "openai", "model": "gpt-acme-internal", "input_usd_per_mtok": 1.0, "output_usd_per_mtok": 1.0}))
    assert len(overridden) == len(builtin) + 1
    assert builtin.lookup("openai", "gpt-acme-internal") is None


@pytest.mark.parametrize("entry, message", [
    ({"provider": "openai", "model": "m", "input_usd_per_mtok": -1.0, "output_usd_per_mtok": 1.0}, "input_usd"),
    ({"provider": "openai", "model": "m", "input_usd_per_mtok": float("nan"), "output_usd_per_mtok": 1.0},
     "input_usd"),
    ({"provider": "openai", "model": "m", "input_usd_per_mtok": 1.0, "output_usd_per_mtok": float("inf")},
     "output_usd"),
    ({"provider": "openai", "model": "m", "input_usd_per_mtok": True, "output_usd_per_mtok": 1.0}, "input_usd"),
    ({"provider": "openai", "model": "m", "input_usd_per_mtok": "1", "output_usd_per_mtok": 1.0}, "input_usd"),
    ({"provider": "openai", "model": "m", "input_usd_per_mtok": 1.0}, "missing output_usd_per_mtok"),
    ({"provider": "", "model": "m", "input_usd_per_mtok": 1.0, "output_usd_per_mtok": 1.0}, "provider"),
    ({"provider": "openai", "model": "m", "input_usd_per_mtok": 1.0, "output_usd_per_mtok": 1.0,
      "cache_read_usd_per_mtok": -0.1}, "cache_read"),
    ({"provider": "openai", "model": "m", "input_usd_per_mtok": 1.0, "output_usd_per_mtok": 1.0, "x": 1},
     "unknown key"),
    ("not a mapping", "mapping"),
])
def test_bad_override_entries_are_refused_with_their_index(entry, message):
    with pytest.raises(PriceCatalogError, match=r"prices\[1\].*" + message):
        catalog(SONNET).with_overrides([{"provider": "openai", "model": "ok", "input_usd_per_mtok": 1,
                                         "output_usd_per_mtok": 1}, entry])


def test_catalog_takes_only_prices():
    with pytest.raises(TypeError):
        PriceCatalog([{"provider": "openai"}])


# --------------------------------------------------------------------------- cost

def test_none_price_is_uncosted():
    assert estimate_cost_usd(None, 1000, 1000, 10, 10) is None


def test_cost_with_cache_reads_and_writes():
    # 1,200,000 prompt tokens of which 800,000 were cache reads and 100,000 cache writes:
    #   uncached   300,000 x $3.00/M = $0.900
    #   reads      800,000 x $0.30/M = $0.240
    #   writes     100,000 x $3.75/M = $0.375
    #   output      50,000 x $15.0/M = $0.750
    cost = estimate_cost_usd(SONNET, 1_200_000, 50_000, 800_000, 100_000)
    assert cost == 2.265
    assert round(cost, 2) == 2.27


def test_cost_openai_cached_input_and_no_cache_write_rate():
    # 10,000 prompt tokens, 4,000 of them cached; 2,000 output.
    #   uncached 6,000 x $0.15/M = $0.0009; cached 4,000 x $0.075/M = $0.0003; output 2,000 x $0.60/M = $0.0012
    assert estimate_cost_usd(GPT4O_MINI, 10_000, 2_000, 4_000, 0) == 0.0024


def test_missing_cache_write_rate_defaults_to_input():
    # 1,000,000 prompt tokens, 200,000 written to the cache: all of it at $0.15/M = $0.15
    assert estimate_cost_usd(GPT4O_MINI, 1_000_000, 0, 0, 200_000) == 0.15


def test_missing_cache_rates_default_to_input():
    # every prompt token at $2/M whatever the cache did: 1,000,000 x $2/M = $2; 250,000 output x $8/M = $2
    assert estimate_cost_usd(NO_CACHE_RATES, 1_000_000, 250_000, 400_000, 100_000) == 4.0
    assert estimate_cost_usd(NO_CACHE_RATES, 1_000_000, 250_000) == 4.0


def test_uncached_input_never_below_zero():
    # the provider reported more cached tokens than prompt tokens: reads and writes are charged as reported
    #   reads 80 x $0.30/M = $0.000024; writes 50 x $3.75/M = $0.0001875
    assert estimate_cost_usd(SONNET, 100, 0, 80, 50) == 0.0002115


def test_zero_tokens_cost_zero():
    assert estimate_cost_usd(SONNET, 0, 0, 0, 0) == 0.0
    assert estimate_cost_usd(SONNET, None, None, None, None) == 0.0


def test_cost_is_exact_in_decimal_then_rounded_to_a_nano_dollar():
    # 0.1 + 0.2 in binary floats is not 0.3; the estimate is
    price = Price("openai", "m", 0.1, 0.2)
    assert estimate_cost_usd(price, 1_000_000, 1_000_000) == 0.3
    # one token at $0.10/M is 1e-7 USD; at $0.0004/M it is 4e-10, rounded (half-even) to 0
    assert estimate_cost_usd(price, 1, 0) == 1e-7
    assert estimate_cost_usd(Price("openai", "m", 0.0004, 0.0), 1, 0) == 0.0
    assert estimate_cost_usd(Price("openai", "m", 0.0015, 0.0), 1, 0) == 2e-9    # 1.5e-9 -> 2e-9 (half-even)
    assert estimate_cost_usd(Price("openai", "m", 0.0025, 0.0), 1, 0) == 2e-9    # 2.5e-9 -> 2e-9 (half-even)


def test_builtin_prices_to_the_cent():
    builtin = PriceCatalog.builtin()
    # claude-opus-4-8 ($5 / $25, 5m cache write $6.25, cache read $0.50), dated id as an agent may send it:
    #   100,000 prompt tokens, 60,000 read + 20,000 written; 10,000 output
    #   uncached 20,000 x 5 = 0.10; reads 60,000 x 0.5 = 0.03; writes 20,000 x 6.25 = 0.125; output 10,000 x 25 = 0.25
    opus = builtin.lookup("anthropic", "claude-opus-4-8-20260528")
    assert opus is not None and opus.model == "claude-opus-4-8"
    assert round(estimate_cost_usd(opus, 100_000, 10_000, 60_000, 20_000), 2) == 0.51
    assert estimate_cost_usd(opus, 100_000, 10_000, 60_000, 20_000) == pytest.approx(0.505, abs=1e-9)
    # gpt-4.1 ($2 / $8, cached $0.50, no cache-write rate): 500,000 prompt tokens, 300,000 cached; 40,000 output
    #   uncached 200,000 x 2 = 0.40; cached 300,000 x 0.5 = 0.15; output 40,000 x 8 = 0.32
    gpt41 = builtin.lookup("openai", "gpt-4.1-2025-04-14")
    assert gpt41 is not None and gpt41.model == "gpt-4.1"
    assert estimate_cost_usd(gpt41, 500_000, 40_000, 300_000, 0) == 0.87


@pytest.mark.parametrize("counts", [
    (-1, 0, 0, 0), (0, -1, 0, 0), (0, 0, -1, 0), (0, 0, 0, -1), (1.5, 0, 0, 0), (True, 0, 0, 0), ("10", 0, 0, 0),
])
def test_bad_token_counts_are_refused(counts):
    with pytest.raises(ValueError):
        estimate_cost_usd(SONNET, *counts)


rates = st.floats(min_value=0, max_value=1000, allow_nan=False, allow_infinity=False)
counts = st.integers(min_value=0, max_value=10**12)


@given(rates, rates, st.none() | rates, st.none() | rates, counts, counts, counts, counts)
def test_cost_matches_an_exact_oracle(rate_in, rate_out, rate_write, rate_read, prompt, output, read, write):
    price = Price("openai", "m", rate_in, rate_out, rate_write, rate_read)
    cost = estimate_cost_usd(price, prompt, output, read, write)
    assert math.isfinite(cost) and cost >= 0

    def exact(rate):
        return Fraction(str(rate))   # the decimal the catalog author wrote

    expected = (max(0, prompt - read - write) * exact(rate_in)
                + read * exact(rate_in if rate_read is None else rate_read)
                + write * exact(rate_in if rate_write is None else rate_write)
                + output * exact(rate_out)) / 10**6
    # rounded half-even to a nano-dollar, then to the nearest float
    assert cost == float(Fraction(round(expected * 10**9), 10**9))


# --------------------------------------------------------------------------- the built-in catalog

def builtin_document():
    text = resources.files("gateway.usage").joinpath("prices.yaml").read_text(encoding="utf-8")
    return yaml.safe_load(text)


def test_builtin_catalog_loads_once_and_covers_both_providers():
    builtin = PriceCatalog.builtin()
    assert builtin is PriceCatalog.builtin()
    providers = {price.provider for price in builtin}
    assert providers == {"anthropic", "openai"}
    assert len(builtin) == len(builtin_document()["prices"])


def test_every_builtin_entry_is_complete_non_negative_and_sourced():
    document = builtin_document()
    seen = set()
    for entry in document["prices"]:
        for field in ("provider", "model", *PRICE_FIELDS, "source"):
            assert field in entry, (entry.get("model"), field)
        assert entry["provider"] in ("anthropic", "openai")
        assert entry["source"] in document["sources"]
        for field in ("input_usd_per_mtok", "output_usd_per_mtok"):
            assert isinstance(entry[field], (int, float)) and not isinstance(entry[field], bool)
            assert math.isfinite(entry[field]) and entry[field] > 0, (entry["model"], field)
        for field in ("cache_write_usd_per_mtok", "cache_read_usd_per_mtok"):
            value = entry[field]
            assert value is None or (math.isfinite(value) and value >= 0), (entry["model"], field)
        if entry["provider"] == "anthropic":
            # Anthropic publishes both cache rates; the write is the 5-minute one, 1.25x input
            assert entry["cache_read_usd_per_mtok"] is not None
            assert entry["cache_write_usd_per_mtok"] == pytest.approx(1.25 * entry["input_usd_per_mtok"])
        if entry["cache_read_usd_per_mtok"] is not None:
            assert entry["cache_read_usd_per_mtok"] <= entry["input_usd_per_mtok"], entry["model"]
        # catalog keys are aliases: a dated snapshot id is found by removing its date
        assert strip_date_suffix(entry["model"]) is None, entry["model"]
        key = (entry["provider"], entry["model"])
        assert key not in seen, key
        seen.add(key)
    for name, source in document["sources"].items():
        assert source["url"].startswith("https://"), name


@pytest.mark.parametrize("provider, model, expected", [
    ("anthropic", "claude-sonnet-4-5-20250929", (3.0, 15.0, 3.75, 0.30)),
    ("anthropic", "claude-haiku-4-5-20251001", (1.0, 5.0, 1.25, 0.10)),
    ("anthropic", "claude-opus-4-5-20251101", (5.0, 25.0, 6.25, 0.50)),
    ("openai", "gpt-4o-2024-08-06", (2.5, 10.0, None, 1.25)),
    ("openai", "gpt-4o-mini-2024-07-18", (0.15, 0.60, None, 0.075)),
])
def test_builtin_spot_checks(provider, model, expected):
    price = PriceCatalog.builtin().lookup(provider, model)
    assert price is not None
    assert (price.input_usd_per_mtok, price.output_usd_per_mtok, price.cache_write_usd_per_mtok,
            price.cache_read_usd_per_mtok) == expected


# --------------------------------------------------------------------------- the catalog document's checks

GOOD = """
sources:
  s: {url: "https://example.com/pricing"}
prices:
  - {provider: openai, model: m, input_usd_per_mtok: 1.0, output_usd_per_mtok: 2.0,
     cache_write_usd_per_mtok: null, cache_read_usd_per_mtok: 0.5, source: s, note: "n"}
"""


def test_parse_catalog():
    parsed = parse_catalog(GOOD)
    assert list(parsed) == [Price("openai", "m", 1.0, 2.0, None, 0.5)]


@pytest.mark.parametrize("replace, message", [
    (("source: s", "source: t"), "source must be one of"),
    ((", note: \"n\"", ", colour: red"), "unknown key"),
    (("cache_write_usd_per_mtok: null, ", ""), "missing cache_write_usd_per_mtok"),
    ((", source: s", ""), "missing source"),
    (("input_usd_per_mtok: 1.0", "input_usd_per_mtok: -1.0"), "input_usd_per_mtok"),
    (("input_usd_per_mtok: 1.0", "input_usd_per_mtok: .nan"), "input_usd_per_mtok"),
    (("output_usd_per_mtok: 2.0", "output_usd_per_mtok: two"), "output_usd_per_mtok"),
    (("url: \"https://example.com/pricing\"", "page: x"), "url"),
    (("sources:", "origins:"), "exactly the keys"),
    (("prices:\n", "prices: []\nx:\n"), "exactly the keys"),
])
def test_parse_catalog_refuses_bad_documents(replace, message):
    with pytest.raises(PriceCatalogError, match=message):
        parse_catalog(GOOD.replace(*replace))


def test_parse_catalog_refuses_duplicates_and_empty_lists():
    entry = GOOD.split("prices:\n")[1]
    with pytest.raises(PriceCatalogError, match="duplicate entry for openai m"):
        parse_catalog(GOOD + entry)
    with pytest.raises(PriceCatalogError, match="non-empty list"):
        parse_catalog(GOOD.split("prices:")[0] + "prices: []\n")
    with pytest.raises(PriceCatalogError, match="not valid YAML"):
        parse_catalog("prices: [")
