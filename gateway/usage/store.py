"""The SQLite usage store: one writer process, many read-only readers (SPEC section 6).

Theory of operation
-------------------
Who writes: exactly one process (the usage collector) holds a writable
UsageStore and calls insert_many() with batches of records. Every batch is one
``BEGIN IMMEDIATE`` transaction, so a batch is stored whole or not at all, and
a second writer opened by mistake waits on the lock instead of interleaving.

Who reads: admin workers open the file read-only (``mode=ro`` URI). The
database is in WAL mode, so readers never block the writer and the writer never
blocks readers; every query is one SELECT statement in autocommit mode, i.e.
one consistent snapshot that includes every batch committed before it began.

Idempotence: the collector may re-deliver a batch after a crash. Records are
keyed by ``id`` and a record whose id is already stored (or repeated within the
batch: the first copy wins) is ignored, together with its contribution to the
rollups and the BOM. insert_many() stages the batch in a TEMP table, deletes
the staged ids that are already stored, and then derives everything from what
is left, so ``records``, the rollups and ``bom`` always agree.

Timestamps: ``ts_us`` is an INTEGER, microseconds since 1970-01-01T00:00:00Z.
It is compact (8 bytes against ~27 for the text), compares and orders as a
number (range filters and ``ORDER BY ts_us DESC, id DESC`` walk the indexes),
and bucketing into hours and days is integer division. The RFC 3339 text is
not stored: the API renders ``ts_us`` as ``YYYY-MM-DDTHH:MM:SS.ffffffZ``, so a
record written as ``...+02:00`` comes back in UTC (SPEC: RFC 3339 UTC).
Precision below a microsecond is truncated. Stored times are limited to
[1970-01-01, 10000-01-01) so that integer division is a floor.

Rollups (why summary stays fast): ``rollup_day`` and ``rollup_hour`` hold, per
(bucket, agent, provider, model, decision), the calls, token sums, the sum of
known costs and the count of uncosted calls, upserted in the same transaction
as the records. A summary over [since, until) reads whole days from
``rollup_day``, whole hours at the edges from ``rollup_hour`` and only the
partial hours at the very edges from ``records`` (see plan_intervals()). All
filters the API offers are rollup key columns, so every summary is answered
exactly, from at most five index range scans.

Costs in rollups are integer nano-dollars (COST_NANOS_SQL, rounded per call):
float sums depend on the order of addition, and a rollup adds in another order
than a scan of the records would, so an integer sum is the only way every
split of the interval gives the same, exact answer. The API divides by 1e9.

The BOM (``bom``) has one row per (agent, provider, model) ever *forwarded*:
a record counts when its optional ``forwarded`` key is true. ``forwarded`` is
stored in ``records`` but is not part of the API's record (RECORD_FIELDS); the
producer sets it because only it knows whether the call reached the provider
(a call blocked before forwarding is not in the BOM; a call whose answer was
blocked is). A record without the key counts as not forwarded.
"""

import os
import re
import sqlite3
import urllib.parse
from datetime import date, datetime, timedelta, timezone

RECORD_FIELDS = ("id", "ts", "agent_id", "provider", "model", "decision", "reason", "status", "stream",
                 "input_tokens", "output_tokens", "total_tokens", "cache_read_input_tokens",
                 "cache_creation_input_tokens", "redaction_count", "estimated_cost_usd", "latency_ms")
OPTIONAL_FIELDS = ("forwarded",)
DECISIONS = ("allowed", "redacted", "blocked")
TOKEN_FIELDS = ("input_tokens", "output_tokens", "total_tokens", "cache_read_input_tokens",
                "cache_creation_input_tokens", "redaction_count")

SCHEMA_VERSION = 1
BUSY_TIMEOUT_MS = 10_000           # how long a statement waits for a lock before failing
MAX_ID_CHARS = 256                 # a record id (UUIDs are 36)
MAX_NAME_CHARS = 1024              # agent_id, provider, model, reason
MAX_TIME_CHARS = 64                # an RFC 3339 string, fraction included

US_PER_S = 1_000_000
HOUR_US = 3600 * US_PER_S
DAY_US = 24 * HOUR_US
TS_MIN_US = 0                                  # 1970-01-01T00:00:00Z, inclusive
TS_END_US = 2_932_897 * DAY_US                 # 10000-01-01T00:00:00Z, exclusive
ROLLUPS = (("rollup_day", DAY_US), ("rollup_hour", HOUR_US))   # coarsest first

# One expression for a call's cost in integer nano-dollars, used both when
# rollups are built and when partial hours are read from records.
COST_NANOS_SQL = "CASE WHEN estimated_cost_usd IS NULL THEN 0 ELSE CAST(round(estimated_cost_usd * 1e9) AS INTEGER) END"

_COLUMNS = ("id", "ts_us", "agent_id", "provider", "model", "decision", "reason", "status", "stream",
            "input_tokens", "output_tokens", "total_tokens", "cache_read_input_tokens",
            "cache_creation_input_tokens", "redaction_count", "estimated_cost_usd", "latency_ms", "forwarded")
_COLUMN_DEFS = """
    id TEXT NOT NULL PRIMARY KEY,
    ts_us INTEGER NOT NULL,
    agent_id TEXT NOT NULL,
    provider TEXT NOT NULL,
    model TEXT NOT NULL,
    decision TEXT NOT NULL CHECK (decision IN ('allowed', 'redacted', 'blocked')),
    reason TEXT,
    status INTEGER NOT NULL,
    stream INTEGER NOT NULL CHECK (stream IN (0, 1)),
    input_tokens INTEGER NOT NULL,
    output_tokens INTEGER NOT NULL,
    total_tokens INTEGER NOT NULL,
    cache_read_input_tokens INTEGER NOT NULL,
    cache_creation_input_tokens INTEGER NOT NULL,
    redaction_count INTEGER NOT NULL,
    estimated_cost_usd REAL,
    latency_ms INTEGER NOT NULL,
    forwarded INTEGER NOT NULL CHECK (forwarded IN (0, 1))
"""
_ROLLUP_DEFS = """
    bucket INTEGER NOT NULL,
    agent_id TEXT NOT NULL,
    provider TEXT NOT NULL,
    model TEXT NOT NULL,
    decision TEXT NOT NULL,
    calls INTEGER NOT NULL,
    input_tokens INTEGER NOT NULL,
    output_tokens INTEGER NOT NULL,
    total_tokens INTEGER NOT NULL,
    cost_nanos INTEGER NOT NULL,
    uncosted_calls INTEGER NOT NULL,
    PRIMARY KEY (bucket, agent_id, provider, model, decision)
"""
# Every filter column leads one index, followed by the keyset order, so a
# filtered page is an index range walked backwards from the cursor.
_SCHEMA = [
    f"CREATE TABLE records ({_COLUMN_DEFS})",
    "CREATE INDEX records_ts ON records (ts_us, id)",
    "CREATE INDEX records_agent ON records (agent_id, ts_us, id)",
    "CREATE INDEX records_provider ON records (provider, ts_us, id)",
    "CREATE INDEX records_model ON records (model, ts_us, id)",
    "CREATE INDEX records_decision ON records (decision, ts_us, id)",
    *(f"CREATE TABLE {table} ({_ROLLUP_DEFS}) WITHOUT ROWID" for table, _ in ROLLUPS),
    """CREATE TABLE bom (
        agent_id TEXT NOT NULL,
        provider TEXT NOT NULL,
        model TEXT NOT NULL,
        first_seen_us INTEGER NOT NULL,
        last_seen_us INTEGER NOT NULL,
        calls INTEGER NOT NULL,
        input_tokens INTEGER NOT NULL,
        output_tokens INTEGER NOT NULL,
        total_tokens INTEGER NOT NULL,
        PRIMARY KEY (agent_id, provider, model)
    ) WITHOUT ROWID""",
]
_STAGING = f"CREATE TEMP TABLE IF NOT EXISTS staging ({_COLUMN_DEFS})"
_SUMS = "sum(input_tokens), sum(output_tokens), sum(total_tokens)"
_ROLLUP_UPSERT = """
    INSERT INTO main.{table}
    SELECT ts_us / {width}, agent_id, provider, model, decision, count(*), """ + _SUMS + f""",
           sum({COST_NANOS_SQL}), sum(estimated_cost_usd IS NULL)
    FROM temp.staging WHERE true GROUP BY 1, 2, 3, 4, 5
    ON CONFLICT DO UPDATE SET
        calls = calls + excluded.calls,
        input_tokens = input_tokens + excluded.input_tokens,
        output_tokens = output_tokens + excluded.output_tokens,
        total_tokens = total_tokens + excluded.total_tokens,
        cost_nanos = cost_nanos + excluded.cost_nanos,
        uncosted_calls = uncosted_calls + excluded.uncosted_calls
"""
_BOM_UPSERT = """
    INSERT INTO main.bom
    SELECT agent_id, provider, model, min(ts_us), max(ts_us), count(*), """ + _SUMS + """
    FROM temp.staging WHERE forwarded GROUP BY 1, 2, 3
    ON CONFLICT DO UPDATE SET
        first_seen_us = min(first_seen_us, excluded.first_seen_us),
        last_seen_us = max(last_seen_us, excluded.last_seen_us),
        calls = calls + excluded.calls,
        input_tokens = input_tokens + excluded.input_tokens,
        output_tokens = output_tokens + excluded.output_tokens,
        total_tokens = total_tokens + excluded.total_tokens
"""


class StoreUnavailable(Exception):
    """The database cannot be read yet (no file, or no schema): the collector has not created it."""


# ---------------------------------------------------------------------------
# Time: RFC 3339 <-> integer microseconds since the epoch
# ---------------------------------------------------------------------------

_RFC3339 = re.compile(r"([0-9]{4})-([0-9]{2})-([0-9]{2})[Tt]([0-9]{2}):([0-9]{2}):([0-9]{2})"
                      r"(?:\.([0-9]+))?(?:[Zz]|([+-])([0-9]{2}):([0-9]{2}))")
_EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)
_EPOCH_ORDINAL = date(1970, 1, 1).toordinal()


def parse_rfc3339(text, ceil=False):
    """RFC 3339 date-time -> microseconds since the epoch (UTC); ValueError says what is wrong.

    A fraction finer than a microsecond is truncated, or rounded up when
    ``ceil`` (a bound compared with microsecond timestamps keeps its meaning).
    Leap seconds (``:60``) are refused: they have no place on this time line.
    """
    if not isinstance(text, str) or len(text) > MAX_TIME_CHARS:
        raise ValueError("not an RFC 3339 date-time")
    match = _RFC3339.fullmatch(text)
    if match is None:
        raise ValueError("not an RFC 3339 date-time (like 2025-01-31T23:59:59Z or 2025-01-31T23:59:59.5+02:00)")
    year, month, day, hour, minute, second = (int(match.group(i)) for i in range(1, 7))
    fraction, sign, off_hour, off_minute = match.group(7, 8, 9, 10)
    try:
        days = date(year, month, day).toordinal() - _EPOCH_ORDINAL
    except ValueError:
        raise ValueError("not a valid calendar date") from None
    if hour > 23 or minute > 59 or second > 59:
        raise ValueError("time of day out of range (leap seconds are not supported)")
    micros = 0
    if fraction:
        micros = int(fraction[:6].ljust(6, "0"))
        if ceil and fraction[6:].strip("0"):
            micros += 1
    offset_s = 0
    if sign:
        if int(off_hour) > 23 or int(off_minute) > 59:
            raise ValueError("UTC offset out of range")
        offset_s = (int(off_hour) * 3600 + int(off_minute) * 60) * (1 if sign == "+" else -1)
    seconds = days * 86400 + hour * 3600 + minute * 60 + second - offset_s
    return seconds * US_PER_S + micros


def format_rfc3339(ts_us):
    """Microseconds since the epoch -> ``YYYY-MM-DDTHH:MM:SS.ffffffZ`` (fixed width, sorts as text)."""
    moment = _EPOCH + timedelta(microseconds=ts_us)
    return f"{moment:%Y-%m-%dT%H:%M:%S}.{moment.microsecond:06d}Z"


def format_day(day_number):
    """Days since the epoch -> ``YYYY-MM-DD`` (UTC)."""
    return date.fromordinal(_EPOCH_ORDINAL + day_number).isoformat()


def plan_intervals(lo_us, hi_us):
    """Split [lo_us, hi_us) into pieces: (rollup table, first bucket, end bucket) or ("records", lo, hi).

    Each piece is answered by the coarsest rollup whose whole buckets fit; what
    is left at the edges goes to the next finer rollup and finally to the raw
    records (less than an hour at each end).
    """
    def split(lo, hi, levels):
        if lo >= hi:
            return []
        if not levels:
            return [("records", lo, hi)]
        (table, width), finer = levels[0], levels[1:]
        first, end = -(-lo // width), hi // width
        if first >= end:
            return split(lo, hi, finer)
        return split(lo, first * width, finer) + [(table, first, end)] + split(end * width, hi, finer)
    return split(lo_us, hi_us, ROLLUPS)


# ---------------------------------------------------------------------------
# Record validation: a bad record fails the whole batch before anything is written
# ---------------------------------------------------------------------------

_REQUIRED = frozenset(RECORD_FIELDS)
_ALLOWED = _REQUIRED | frozenset(OPTIONAL_FIELDS)
_INF = float("inf")
# Exact types: JSON gives exactly int, float, str and bool, and bool is not a count.
_NUMBER = (int, float)


def _text(record, name, max_chars, nullable=False):
    value = record[name]
    if value is None and nullable:
        return None
    if type(value) is not str or len(value) > max_chars:
        raise ValueError(f"{name} must be a string of at most {max_chars} characters")
    return value


def _row(record):
    """One validated record dict -> the tuple of _COLUMNS; ValueError names the field.

    The collector runs this once per record, so the checks are written for speed."""
    if not isinstance(record, dict):
        raise ValueError("a record must be a dict")
    keys = record.keys()
    if not (_REQUIRED <= keys and keys <= _ALLOWED):
        missing = [name for name in RECORD_FIELDS if name not in record]
        unknown = [name for name in record if name not in _ALLOWED]
        raise ValueError(f"missing fields {missing}, unknown fields {unknown}")
    record_id = _text(record, "id", MAX_ID_CHARS)
    if not record_id:
        raise ValueError("id must not be empty")
    try:
        ts_us = parse_rfc3339(record["ts"])
    except ValueError as exc:
        raise ValueError(f"ts: {exc}") from None
    if not TS_MIN_US <= ts_us < TS_END_US:
        raise ValueError("ts must be in [1970-01-01, 10000-01-01)")
    if record["decision"] not in DECISIONS:
        raise ValueError(f"decision must be one of {DECISIONS}")
    if type(record["status"]) is not int:
        raise ValueError("status must be an integer")
    stream = record["stream"]
    if not (type(stream) is bool or (type(stream) is int and stream in (0, 1))):
        raise ValueError("stream must be a boolean")
    tokens = tuple(record[name] for name in TOKEN_FIELDS)
    for name, count in zip(TOKEN_FIELDS, tokens):
        if type(count) is not int or count < 0:
            raise ValueError(f"{name} must be a non-negative integer")
    cost = record["estimated_cost_usd"]
    if cost is not None:
        if type(cost) not in _NUMBER or not 0 <= cost < _INF:
            raise ValueError("estimated_cost_usd must be null or a finite non-negative number")
        cost = float(cost)
    latency = record["latency_ms"]
    if type(latency) not in _NUMBER or not 0 <= latency < _INF:
        raise ValueError("latency_ms must be a finite non-negative number")
    forwarded = record.get("forwarded", False)
    if type(forwarded) is not bool:
        raise ValueError("forwarded must be a boolean")
    return (record_id, ts_us, _text(record, "agent_id", MAX_NAME_CHARS),
            _text(record, "provider", MAX_NAME_CHARS), _text(record, "model", MAX_NAME_CHARS),
            record["decision"], _text(record, "reason", MAX_NAME_CHARS, nullable=True), record["status"],
            int(stream), *tokens, cost, latency, int(forwarded))


# ---------------------------------------------------------------------------
# The store
# ---------------------------------------------------------------------------

class UsageStore:
    """The usage database. ``readonly=False``: the one writer (creates file and schema);
    ``readonly=True``: a reader, opened lazily so that it may start before the writer."""

    def __init__(self, path: str, readonly: bool = False):
        self.path = path
        self.readonly = readonly
        self._conn = None
        if readonly:
            try:
                self._open_reader()
            except StoreUnavailable:
                pass          # retried at the first query
        else:
            self._open_writer()

    @property
    def connection(self) -> sqlite3.Connection:
        """The open connection; a reader (re)tries to open here and raises StoreUnavailable."""
        if self._conn is None:
            if not self.readonly:
                raise StoreUnavailable("the store is closed")
            self._open_reader()
        return self._conn

    def _open_writer(self):
        directory = os.path.dirname(os.path.abspath(self.path))
        os.makedirs(directory, exist_ok=True)
        conn = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
        try:
            conn.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
            mode = conn.execute("PRAGMA journal_mode = WAL").fetchone()[0]
            if mode.lower() != "wal":
                raise sqlite3.OperationalError(f"cannot put {self.path} in WAL mode (got {mode})")
            # NORMAL in WAL mode: a commit survives a process crash; a power
            # cut may lose the last commits, which the collector re-delivers.
            conn.execute("PRAGMA synchronous = NORMAL")
            conn.execute("PRAGMA temp_store = MEMORY")
            conn.execute("BEGIN IMMEDIATE")
            version = conn.execute("PRAGMA user_version").fetchone()[0]
            if version == 0:
                for statement in _SCHEMA:
                    conn.execute(statement)
                conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
            elif version != SCHEMA_VERSION:
                raise sqlite3.DatabaseError(f"{self.path} has usage schema {version}, expected {SCHEMA_VERSION}")
            conn.execute("COMMIT")
            conn.execute(_STAGING)
        except BaseException:
            conn.close()
            raise
        self._conn = conn

    def _open_reader(self):
        uri = "file:" + urllib.parse.quote(os.path.abspath(self.path)) + "?mode=ro"
        try:
            conn = sqlite3.connect(uri, uri=True, isolation_level=None, check_same_thread=False)
        except sqlite3.OperationalError as exc:
            raise StoreUnavailable(f"cannot open {self.path} read-only: {exc}") from None
        try:
            conn.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
            version = conn.execute("PRAGMA user_version").fetchone()[0]
        except sqlite3.DatabaseError as exc:
            conn.close()
            raise StoreUnavailable(f"cannot read {self.path}: {exc}") from None
        if version != SCHEMA_VERSION:
            conn.close()
            raise StoreUnavailable(f"{self.path} has usage schema {version}, expected {SCHEMA_VERSION}")
        self._conn = conn

    def insert_many(self, records: list[dict]) -> int:
        """Store a batch atomically; records whose id is already stored are ignored. Returns how many were new."""
        if self.readonly:
            raise PermissionError("a read-only usage store cannot insert")
        rows = [_row(record) for record in records]
        if not rows:
            return 0
        conn = self.connection
        placeholders = ", ".join("?" * len(_COLUMNS))
        conn.execute("BEGIN IMMEDIATE")
        try:
            conn.execute("DELETE FROM temp.staging")
            conn.executemany(f"INSERT OR IGNORE INTO temp.staging VALUES ({placeholders})", rows)
            conn.execute("DELETE FROM temp.staging WHERE EXISTS "
                         "(SELECT 1 FROM main.records AS r WHERE r.id = staging.id)")
            new = conn.execute("INSERT INTO main.records SELECT * FROM temp.staging").rowcount
            if new:
                for table, width in ROLLUPS:
                    conn.execute(_ROLLUP_UPSERT.format(table=table, width=width))
                conn.execute(_BOM_UPSERT)
            conn.execute("DELETE FROM temp.staging")
            conn.execute("COMMIT")
        except BaseException:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            raise
        return new

    def close(self):
        conn, self._conn = self._conn, None
        if conn is None:
            return
        conn.close()
