"""Tests for gateway.usage.store: real SQLite files, one writer and read-only readers."""

import sqlite3

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.usage.store import (DAY_US, HOUR_US, RECORD_FIELDS, SCHEMA_VERSION, TS_END_US, StoreUnavailable,
                                 UsageStore, format_day, format_rfc3339, parse_rfc3339, plan_intervals)


def record(n, ts="2025-03-01T12:00:00Z", **fields):
    base = {
        "id": f"rec-{n}", "ts": ts, "agent_id": "agent-a", "provider": "anthropic",
        "model": "claude-sonnet-4-5", "decision": "allowed", "reason": None, "status": 200, "stream": False,
        "input_tokens": 100, "output_tokens": 20, "total_tokens": 120, "cache_read_input_tokens": 0,
        "cache_creation_input_tokens": 0, "redaction_count": 0, "estimated_cost_usd": 0.001,
        "latency_ms": 250, "forwarded": True,
    }
    base.update(fields)
    return base


@pytest.fixture
def path(tmp_path):
    return str(tmp_path / "usage.db")


@pytest.fixture
def store(path):
    store = UsageStore(path)
    yield store
    store.close()


def count(store, table):
    return store.connection.execute(f"SELECT count(*) FROM {table}").fetchone()[0]


def snapshot(store):
    conn = store.connection
    return {table: sorted(conn.execute(f"SELECT * FROM {table}").fetchall())
            for table in ("records", "rollup_day", "rollup_hour", "bom")}


# ---------------------------------------------------------------------------
# Schema and pragmas
# ---------------------------------------------------------------------------

def test_writer_creates_a_wal_database_with_the_schema(store, path):
    conn = store.connection
    assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert conn.execute("PRAGMA synchronous").fetchone()[0] == 1          # NORMAL
    assert conn.execute("PRAGMA busy_timeout").fetchone()[0] > 0
    assert conn.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
    names = {row[0] for row in conn.execute("SELECT name FROM sqlite_master")}
    assert {"records", "rollup_day", "rollup_hour", "bom", "records_ts", "records_agent",
            "records_provider", "records_model", "records_decision"} <= names
    columns = [row[1] for row in conn.execute("PRAGMA table_info(records)")]
    assert columns == ["id", "ts_us", *RECORD_FIELDS[2:], "forwarded"]


def test_reopening_keeps_the_data(path):
    store = UsageStore(path)
    store.insert_many([record(1)])
    store.close()
    store = UsageStore(path)
    assert count(store, "records") == 1
    assert store.insert_many([record(1)]) == 0
    store.close()


def test_another_schema_version_is_refused(path):
    store = UsageStore(path)
    store.connection.execute("PRAGMA user_version = 99")
    store.close()
    with pytest.raises(sqlite3.DatabaseError, match="schema 99"):
        UsageStore(path)
    with pytest.raises(StoreUnavailable):
        UsageStore(path, readonly=True).connection


def test_the_writer_creates_the_directory(tmp_path):
    store = UsageStore(str(tmp_path / "var" / "nested" / "usage.db"))
    assert store.insert_many([record(1)]) == 1
    store.close()


# ---------------------------------------------------------------------------
# insert_many: idempotent, atomic, validated
# ---------------------------------------------------------------------------

def test_insert_returns_the_number_of_new_records(store):
    assert store.insert_many([record(1), record(2), record(3)]) == 3
    assert store.insert_many([]) == 0
    assert count(store, "records") == 3


def test_redelivered_records_are_stored_exactly_once(store):
    batch = [record(1, "2025-03-01T10:00:00Z"), record(2, "2025-03-02T11:30:00Z", estimated_cost_usd=None),
             record(3, "2025-03-02T11:45:00Z", decision="blocked", reason="dlp_blocked", forwarded=False)]
    assert store.insert_many(batch) == 3
    before = snapshot(store)
    assert store.insert_many(batch) == 0
    assert store.insert_many(list(reversed(batch))) == 0
    assert snapshot(store) == before


def test_a_partly_redelivered_batch_adds_only_the_new_records(store):
    store.insert_many([record(1), record(2)])
    assert store.insert_many([record(2), record(3), record(4)]) == 2
    row = store.connection.execute("SELECT calls, input_tokens FROM bom").fetchone()
    assert row == (4, 400)
    assert store.connection.execute("SELECT sum(calls) FROM rollup_day").fetchone()[0] == 4
    assert store.connection.execute("SELECT sum(calls) FROM rollup_hour").fetchone()[0] == 4


def test_a_repeated_id_within_a_batch_keeps_the_first_copy(store):
    assert store.insert_many([record(1, input_tokens=5), record(1, input_tokens=7)]) == 1
    assert store.connection.execute("SELECT input_tokens FROM records").fetchone()[0] == 5
    assert store.connection.execute("SELECT input_tokens, calls FROM bom").fetchone() == (5, 1)


def test_a_duplicate_with_other_content_changes_nothing(store):
    store.insert_many([record(1, model="m1")])
    before = snapshot(store)
    assert store.insert_many([record(1, model="m2", input_tokens=999)]) == 0
    assert snapshot(store) == before


@pytest.mark.parametrize("change, message", [
    ({"decision": "denied"}, "decision"),
    ({"ts": "2025-03-01 12:00:00"}, "ts"),
    ({"ts": "2025-02-30T12:00:00Z"}, "ts"),
    ({"ts": "1969-12-31T23:59:59Z"}, "ts"),
    ({"ts": 1735689600}, "ts"),
    ({"status": "200"}, "status"),
    ({"status": True}, "status"),
    ({"stream": "yes"}, "stream"),
    ({"stream": 2}, "stream"),
    ({"input_tokens": -1}, "input_tokens"),
    ({"output_tokens": 1.0}, "output_tokens"),
    ({"total_tokens": None}, "total_tokens"),
    ({"redaction_count": False}, "redaction_count"),
    ({"estimated_cost_usd": float("nan")}, "estimated_cost_usd"),
    ({"estimated_cost_usd": -0.5}, "estimated_cost_usd"),
    ({"estimated_cost_usd": "0.1"}, "estimated_cost_usd"),
    ({"latency_ms": float("inf")}, "latency_ms"),
    ({"forwarded": 1}, "forwarded"),
    ({"forwared": True}, "unknown fields"),
    ({"id": ""}, "id"),
    ({"id": "x" * 257}, "id"),
    ({"agent_id": None}, "agent_id"),
    ({"reason": 5}, "reason"),
])
def test_a_bad_record_fails_the_whole_batch(store, change, message):
    with pytest.raises(ValueError, match=message):
        store.insert_many([record(1), record(2, **change)])
    assert snapshot(store) == {"records": [], "rollup_day": [], "rollup_hour": [], "bom": []}


def test_a_missing_field_is_named(store):
    bad = record(1)
    del bad["latency_ms"]
    with pytest.raises(ValueError, match="latency_ms"):
        store.insert_many([bad])


def test_timestamps_are_stored_in_utc_microseconds(store):
    store.insert_many([record(1, "2025-03-01T14:00:00.1234567+02:00"), record(2, "2025-03-01t12:00:00z")])
    rows = dict(store.connection.execute("SELECT id, ts_us FROM records"))
    assert format_rfc3339(rows["rec-1"]) == "2025-03-01T12:00:00.123456Z"
    assert format_rfc3339(rows["rec-2"]) == "2025-03-01T12:00:00.000000Z"


def test_stream_and_forwarded_are_stored_as_0_and_1(store):
    store.insert_many([record(1, stream=True), record(2, stream=0, forwarded=False), record(3)])
    rows = store.connection.execute("SELECT id, stream, forwarded FROM records ORDER BY id").fetchall()
    assert rows == [("rec-1", 1, 1), ("rec-2", 0, 0), ("rec-3", 0, 1)]


def test_a_record_without_forwarded_is_not_forwarded(store):
    bare = record(1)
    del bare["forwarded"]
    assert store.insert_many([bare]) == 1
    assert count(store, "bom") == 0


# ---------------------------------------------------------------------------
# BOM and rollups are maintained with the records
# ---------------------------------------------------------------------------

def test_bom_counts_forwarded_calls_only_with_first_and_last_seen(store):
    store.insert_many([
        record(1, "2025-03-05T08:00:00Z", input_tokens=10, output_tokens=1, total_tokens=11),
        record(2, "2025-03-01T09:00:00Z", input_tokens=20, output_tokens=2, total_tokens=22),
        record(3, "2025-03-09T10:00:00Z", decision="blocked", reason="dlp_blocked", status=403,
               input_tokens=0, output_tokens=0, total_tokens=0, forwarded=False),
        record(4, "2025-03-02T10:00:00Z", decision="blocked", reason="response_blocked", status=502,
               input_tokens=5, output_tokens=5, total_tokens=10, forwarded=True),
        record(5, "2025-03-03T10:00:00Z", agent_id="agent-b", model="gpt-4o", provider="openai"),
    ])
    # Arriving out of order: first_seen / last_seen are min / max, not first / last inserted.
    store.insert_many([record(6, "2025-02-27T00:00:00Z", input_tokens=1, output_tokens=1, total_tokens=2),
                       record(7, "2025-03-07T00:00:00Z", input_tokens=1, output_tokens=1, total_tokens=2)])
    rows = store.connection.execute("SELECT * FROM bom ORDER BY agent_id").fetchall()
    assert rows == [
        ("agent-a", "anthropic", "claude-sonnet-4-5", parse_rfc3339("2025-02-27T00:00:00Z"),
         parse_rfc3339("2025-03-07T00:00:00Z"), 5, 37, 10, 47),
        ("agent-b", "openai", "gpt-4o", parse_rfc3339("2025-03-03T10:00:00Z"),
         parse_rfc3339("2025-03-03T10:00:00Z"), 1, 100, 20, 120),
    ]


def test_rollups_bucket_by_utc_hour_and_day(store):
    store.insert_many([record(1, "2025-03-01T23:59:59.999999Z", estimated_cost_usd=0.1),
                       record(2, "2025-03-02T00:00:00Z", estimated_cost_usd=0.2),
                       record(3, "2025-03-02T00:30:00+01:00", estimated_cost_usd=None)])
    day = parse_rfc3339("2025-03-01T00:00:00Z") // DAY_US
    assert store.connection.execute(
        "SELECT bucket, calls, cost_nanos, uncosted_calls FROM rollup_day ORDER BY bucket").fetchall() == [
        (day, 2, 100_000_000, 1), (day + 1, 1, 200_000_000, 0)]
    hour = parse_rfc3339("2025-03-01T23:00:00Z") // HOUR_US
    assert store.connection.execute(
        "SELECT bucket, calls FROM rollup_hour ORDER BY bucket").fetchall() == [(hour, 2), (hour + 1, 1)]


# ---------------------------------------------------------------------------
# Readers
# ---------------------------------------------------------------------------

def test_a_reader_sees_writes_made_after_it_opened(store, path):
    reader = UsageStore(path, readonly=True)
    assert count(reader, "records") == 0
    store.insert_many([record(1)])
    assert count(reader, "records") == 1
    store.insert_many([record(2), record(3)])
    assert count(reader, "records") == 3
    reader.close()


def test_a_reader_cannot_write(store, path):
    reader = UsageStore(path, readonly=True)
    with pytest.raises(PermissionError):
        reader.insert_many([record(1)])
    with pytest.raises(sqlite3.OperationalError, match="readonly"):
        reader.connection.execute("DELETE FROM records")
    reader.close()


def test_a_reader_started_before_the_writer_waits_for_the_database(path):
    reader = UsageStore(path, readonly=True)
    with pytest.raises(StoreUnavailable):
        reader.connection
    writer = UsageStore(path)
    writer.insert_many([record(1)])
    assert count(reader, "records") == 1
    writer.close()
    reader.close()


def test_a_reader_opens_after_the_writer_closed(path):
    writer = UsageStore(path)
    writer.insert_many([record(1)])
    writer.close()
    reader = UsageStore(path, readonly=True)
    assert count(reader, "records") == 1
    reader.close()


# ---------------------------------------------------------------------------
# Time and interval plans
# ---------------------------------------------------------------------------

@pytest.mark.parametrize("text, expected", [
    ("1970-01-01T00:00:00Z", 0),
    ("1970-01-01T00:00:01.5Z", 1_500_000),
    ("1970-01-01T01:00:00+01:00", 0),
    ("1969-12-31T23:00:00-01:00", 0),
    ("1970-01-01T00:00:00.0000019Z", 1),
    ("2024-02-29T12:00:00z", parse_rfc3339("2024-02-29T12:00:00Z")),
    ("9999-12-31T23:59:59.999999Z", TS_END_US - 1),
])
def test_parse_rfc3339(text, expected):
    assert parse_rfc3339(text) == expected


def test_parse_rfc3339_rounds_up_when_asked():
    assert parse_rfc3339("1970-01-01T00:00:00.0000001Z", ceil=True) == 1
    assert parse_rfc3339("1970-01-01T00:00:00.0000010Z", ceil=True) == 1
    assert parse_rfc3339("1970-01-01T00:00:00.000001000Z", ceil=True) == 1


@pytest.mark.parametrize("text", [
    "2025-01-01", "2025-01-01T00:00:00", "2025-01-01 00:00:00Z", "2025-13-01T00:00:00Z",
    "2025-02-29T00:00:00Z", "2025-01-01T24:00:00Z", "2025-01-01T23:59:60Z", "2025-01-01T00:00:00+24:00",
    "2025-01-01T00:00:00+0100", "2025-01-01T00:00:00.Z", "0000-01-01T00:00:00Z", "２０２５-01-01T00:00:00Z",
    "2025-01-01T00:00:00Z\n", "2025-01-01T00:00:00." + "0" * 60 + "Z", "",
])
def test_parse_rfc3339_refuses(text):
    with pytest.raises(ValueError):
        parse_rfc3339(text)


@given(st.integers(0, TS_END_US - 1))
def test_format_and_parse_round_trip(ts_us):
    text = format_rfc3339(ts_us)
    assert text.endswith("Z") and len(text) == 27
    assert parse_rfc3339(text) == ts_us
    assert format_day(ts_us // DAY_US) == text[:10]


bounds = st.integers(0, 40 * DAY_US) | st.integers(0, 40 * 24).map(lambda h: h * HOUR_US)


@settings(max_examples=500)
@given(bounds, bounds)
def test_plan_intervals_covers_the_interval_exactly(lo, hi):
    pieces = plan_intervals(lo, hi)
    position, raw = lo, 0
    for source, first, end in pieces:
        assert first < end
        if source == "records":
            assert first == position
            position, raw = end, raw + end - first
        else:
            width = {"rollup_day": DAY_US, "rollup_hour": HOUR_US}[source]
            assert first * width == position
            position = end * width
    if lo < hi:
        assert position == hi
    else:
        assert pieces == []
    assert sum(source == "rollup_day" for source, _, _ in pieces) <= 1
    assert sum(source == "records" for source, _, _ in pieces) <= 2
    assert raw < 2 * HOUR_US          # at most the partial hours at both ends are read from records
