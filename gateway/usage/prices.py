"""The price catalog and the cost estimate of a call (SPEC sections 4 and 6).

Theory of operation
-------------------
A ``Price`` is one model's USD rates per million tokens: uncached input,
output, cache writes and cache reads. The gateway ships a built-in catalog
(``prices.yaml`` next to this module, package data read with
``importlib.resources``, parsed once per process) and a policy bundle's
``prices`` entries override it: ``PriceCatalog.builtin().with_overrides(
document["prices"])`` replaces built-ins with the same ``(provider, model)`` and
adds the others. Catalogs are immutable, so a worker can build one per policy
generation and share it freely.

``lookup(provider, model)`` matches case-sensitively: first the exact
``(provider, model)``, then, if the model ends in a date suffix, the model with
that suffix removed. SPEC names two suffix forms, ``-YYYYMMDD``
(``claude-sonnet-4-5-20250929``) and ``-YYYY-MM-DD`` (``gpt-4o-2024-08-06``);
only those are removed, only one of them, and only when the digits are a real
calendar date. Four-digit snapshot tags such as ``gpt-4-0613`` are not dates and
are not removed: they would land on an alias whose price may differ, so such a
snapshot is priced only by an exact entry. For the same reason an exact entry
for a dated snapshot always wins over its undated alias.

``estimate_cost_usd`` follows SPEC section 6: ``input_tokens`` counts every
prompt token, cache reads and cache writes included, so the uncached input is
``input - cache_read - cache_creation`` (never below zero, should a provider
report more cached tokens than prompt tokens). Uncached input, cache reads,
cache writes and output are each charged at their rate; a missing cache rate
is the input rate. The sum is computed exactly (each rate is its shortest
decimal, held as an integer over a power of ten once per ``Price``; the sum is
integer arithmetic) and rounded half-even to a nano-dollar (``NANOS_PER_USD``),
so the result is deterministic, finite and never NaN; it is ``None`` when there
is no price (an uncosted call).

The catalog holds one flat rate per model. Tiered prices (long-prompt
surcharges, fast modes, 1-hour cache writes, regional uplifts) are not
modelled; prices.yaml lists which models that under-estimates.
"""

import math
import re
from dataclasses import dataclass
from datetime import date
from fractions import Fraction
from functools import lru_cache
from importlib import resources
from typing import Iterable, Iterator

import yaml

TOKENS_PER_MTOK = 1_000_000
NANOS_PER_USD = 1_000_000_000   # estimates are rounded to a nano-dollar (1e-9 USD)
CATALOG_RESOURCE = "prices.yaml"            # the built-in catalog, package data of gateway.usage

PRICE_FIELDS = ("input_usd_per_mtok", "output_usd_per_mtok", "cache_write_usd_per_mtok", "cache_read_usd_per_mtok")
BUNDLE_ENTRY_KEYS = frozenset(("provider", "model") + PRICE_FIELDS)
_CATALOG_ENTRY_KEYS = BUNDLE_ENTRY_KEYS | {"source", "note"}

# ASCII digits only ("\d" would also accept other scripts' digits).
_DATE_SUFFIX = re.compile(r"-(?:([0-9]{4})([0-9]{2})([0-9]{2})|([0-9]{4})-([0-9]{2})-([0-9]{2}))\Z")


class PriceCatalogError(ValueError):
    """A price entry or catalog document that cannot be used; the message names the entry."""


def _rate(value, name, optional):
    if value is None and optional:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value < 0:
        raise PriceCatalogError(f"{name} must be a finite number >= 0" + (" or null" if optional else ""))
    return float(value)


@dataclass(frozen=True)
class Price:
    """One model's rates in USD per million tokens; a cache rate of ``None`` means "the input rate"."""

    provider: str
    model: str
    input_usd_per_mtok: float
    output_usd_per_mtok: float
    cache_write_usd_per_mtok: float | None = None
    cache_read_usd_per_mtok: float | None = None

    def __post_init__(self):
        for name in ("provider", "model"):
            if not isinstance(getattr(self, name), str) or not getattr(self, name):
                raise PriceCatalogError(f"{name} must be a non-empty string")
        for name in PRICE_FIELDS:
            optional = name.startswith("cache_")
            object.__setattr__(self, name, _rate(getattr(self, name), name, optional))
        # The rates, exactly: str(float) is the shortest repr, so 0.075 is 75/1000.
        # Over one power-of-ten denominator they are integers (uncached, cache
        # read, cache write, output), which keeps the per-call estimate to
        # integer arithmetic.
        rates = [Fraction(str(rate)) for rate in (self.input_usd_per_mtok, self.effective_cache_read_usd_per_mtok,
                                                  self.effective_cache_write_usd_per_mtok, self.output_usd_per_mtok)]
        denominator = math.lcm(*(rate.denominator for rate in rates))
        object.__setattr__(self, "_scaled", (denominator, tuple(int(rate * denominator) for rate in rates)))

    @property
    def effective_cache_write_usd_per_mtok(self) -> float:
        return self.input_usd_per_mtok if self.cache_write_usd_per_mtok is None else self.cache_write_usd_per_mtok

    @property
    def effective_cache_read_usd_per_mtok(self) -> float:
        return self.input_usd_per_mtok if self.cache_read_usd_per_mtok is None else self.cache_read_usd_per_mtok


def strip_date_suffix(model: str) -> str | None:
    """``model`` without a trailing ``-YYYYMMDD`` or ``-YYYY-MM-DD`` date, or None if it has none."""
    match = _DATE_SUFFIX.search(model)
    if match is None or match.start() == 0:
        return None
    year, month, day = (int(group) for group in match.groups() if group is not None)
    try:
        date(year, month, day)
    except ValueError:
        return None
    return model[:match.start()]


def price_from_entry(entry, where="price") -> Price:
    """A ``Price`` from a bundle ``prices`` entry as the policy validator normalizes it.

    Keys: provider, model, input_usd_per_mtok, output_usd_per_mtok and, optionally
    (absent or null: the input rate), cache_write_usd_per_mtok and cache_read_usd_per_mtok.
    """
    if not isinstance(entry, dict):
        raise PriceCatalogError(f"{where}: must be a mapping")
    unknown = sorted(str(key) for key in entry if key not in BUNDLE_ENTRY_KEYS)
    if unknown:
        raise PriceCatalogError(f"{where}: unknown key(s) {', '.join(unknown)}")
    missing = [key for key in ("provider", "model", "input_usd_per_mtok", "output_usd_per_mtok") if key not in entry]
    if missing:
        raise PriceCatalogError(f"{where}: missing {', '.join(missing)}")
    try:
        return Price(entry["provider"], entry["model"], entry["input_usd_per_mtok"], entry["output_usd_per_mtok"],
                     entry.get("cache_write_usd_per_mtok"), entry.get("cache_read_usd_per_mtok"))
    except PriceCatalogError as exc:
        raise PriceCatalogError(f"{where}: {exc}") from None


class PriceCatalog:
    """Prices by exact ``(provider, model)``; immutable."""

    __slots__ = ("_prices",)

    def __init__(self, entries: Iterable[Price] = ()):
        prices = {}
        for price in entries:
            if not isinstance(price, Price):
                raise TypeError(f"PriceCatalog entries must be Price, not {type(price).__name__}")
            prices[(price.provider, price.model)] = price   # a later entry replaces an earlier one
        self._prices = prices

    @classmethod
    def builtin(cls) -> "PriceCatalog":
        """The catalog shipped in prices.yaml, parsed once per process."""
        return _builtin_catalog()

    def with_overrides(self, bundle_prices: list[dict]) -> "PriceCatalog":
        """A new catalog: this one with the bundle's ``prices`` entries replacing or adding by exact
        ``(provider, model)``; among the bundle's own entries the last one for a key wins."""
        overrides = [price_from_entry(entry, f"prices[{i}]") for i, entry in enumerate(bundle_prices or ())]
        if not overrides:
            return self
        return PriceCatalog([*self._prices.values(), *overrides])

    def lookup(self, provider, model) -> Price | None:
        """The price for ``model``: exact match first, then without a date suffix; None if uncosted."""
        if not isinstance(provider, str) or not isinstance(model, str):
            return None
        price = self._prices.get((provider, model))
        if price is None:
            base = strip_date_suffix(model)
            if base is not None:
                price = self._prices.get((provider, base))
        return price

    def __len__(self) -> int:
        return len(self._prices)

    def __iter__(self) -> Iterator[Price]:
        return iter(tuple(self._prices.values()))

    def __repr__(self) -> str:
        return f"PriceCatalog({len(self._prices)} prices)"


def parse_catalog(text: str) -> PriceCatalog:
    """The catalog in a prices.yaml document, checked whole: every entry names its four rates
    (cache rates may be null) and a ``source`` listed under ``sources``; no duplicates, no unknown keys."""
    try:
        document = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise PriceCatalogError(f"not valid YAML: {exc}") from None
    if not isinstance(document, dict) or set(document) != {"sources", "prices"}:
        raise PriceCatalogError("the document must be a mapping with exactly the keys sources and prices")
    sources = document["sources"]
    if not isinstance(sources, dict) or not sources:
        raise PriceCatalogError("sources must be a non-empty mapping")
    for name, source in sources.items():
        if not isinstance(source, dict) or not isinstance(source.get("url"), str) or not source["url"]:
            raise PriceCatalogError(f"sources.{name}: must be a mapping with a url")
    entries = document["prices"]
    if not isinstance(entries, list) or not entries:
        raise PriceCatalogError("prices must be a non-empty list")
    prices, seen = [], set()
    for i, entry in enumerate(entries):
        where = f"prices[{i}]"
        if not isinstance(entry, dict):
            raise PriceCatalogError(f"{where}: must be a mapping")
        unknown = sorted(str(key) for key in entry if key not in _CATALOG_ENTRY_KEYS)
        if unknown:
            raise PriceCatalogError(f"{where}: unknown key(s) {', '.join(unknown)}")
        missing = [key for key in ("provider", "model", *PRICE_FIELDS, "source") if key not in entry]
        if missing:
            raise PriceCatalogError(f"{where}: missing {', '.join(missing)}")
        if not isinstance(entry["source"], str) or entry["source"] not in sources:
            raise PriceCatalogError(f"{where}: source must be one of {', '.join(map(str, sources))}")
        if "note" in entry and not isinstance(entry["note"], str):
            raise PriceCatalogError(f"{where}: note must be a string")
        price = price_from_entry({key: entry[key] for key in BUNDLE_ENTRY_KEYS}, where)
        key = (price.provider, price.model)
        if key in seen:
            raise PriceCatalogError(f"{where}: duplicate entry for {price.provider} {price.model}")
        seen.add(key)
        prices.append(price)
    return PriceCatalog(prices)


@lru_cache(maxsize=1)
def _builtin_catalog() -> PriceCatalog:
    text = resources.files(__package__).joinpath(CATALOG_RESOURCE).read_text(encoding="utf-8")
    return parse_catalog(text)


def _tokens(value, name) -> int:
    if value is None:
        return 0
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ValueError(f"{name} must be an integer >= 0, not {value!r}")
    return value


def estimate_cost_usd(price: Price | None, input_tokens, output_tokens, cache_read_input_tokens=0,
                      cache_creation_input_tokens=0) -> float | None:
    """Estimated USD cost of one call (SPEC section 6), rounded to 1e-9 USD; None when ``price`` is None.

    ``input_tokens`` counts all prompt tokens, cache reads and writes included. A token count of
    ``None`` counts as 0; a negative or non-integer count is a ``ValueError`` (an adapter bug).
    """
    if price is None:
        return None
    prompt = _tokens(input_tokens, "input_tokens")
    output = _tokens(output_tokens, "output_tokens")
    cache_read = _tokens(cache_read_input_tokens, "cache_read_input_tokens")
    cache_write = _tokens(cache_creation_input_tokens, "cache_creation_input_tokens")
    uncached = max(0, prompt - cache_read - cache_write)
    denominator, (input_rate, read_rate, write_rate, output_rate) = price._scaled
    # Exact: USD = sum(count * rate) / (denominator * TOKENS_PER_MTOK), rounded
    # once, half-even, to whole nano-dollars.
    numerator = (uncached * input_rate + cache_read * read_rate + cache_write * write_rate
                 + output * output_rate) * NANOS_PER_USD
    nanos, remainder = divmod(numerator, denominator * TOKENS_PER_MTOK)
    twice = 2 * remainder
    if twice > denominator * TOKENS_PER_MTOK or (twice == denominator * TOKENS_PER_MTOK and nanos % 2):
        nanos += 1
    return nanos / NANOS_PER_USD  # int / int is correctly rounded, as float(Fraction) is
