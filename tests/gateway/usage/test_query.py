"""Tests for gateway.usage.query: the /llm-usage API over a real SQLite store."""

import base64
import json
import os
import tempfile
import urllib.parse

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gateway.usage import query
from gateway.usage.store import (DAY_US, HOUR_US, RECORD_FIELDS, UsageStore, format_rfc3339, parse_rfc3339,
                                 plan_intervals)

T0 = parse_rfc3339("2025-03-01T00:00:00Z")


def record(n, ts="2025-03-01T12:00:00Z", **fields):
    base = {
        "id": f"rec-{n:04d}" if isinstance(n, int) else n, "ts": ts, "agent_id": "agent-a",
        "provider": "anthropic", "model": "claude-sonnet-4-5", "decision": "allowed", "reason": None,
        "status": 200, "stream": False, "input_tokens": 100, "output_tokens": 20, "total_tokens": 120,
        "cache_read_input_tokens": 0, "cache_creation_input_tokens": 0, "redaction_count": 0,
        "estimated_cost_usd": 0.001, "latency_ms": 250, "forwarded": True,
    }
    base.update(fields)
    return base


@pytest.fixture
def stores(tmp_path):
    """(writer, read-only reader) on one file; the API always reads through the reader."""
    path = str(tmp_path / "usage.db")
    writer = UsageStore(path)
    reader = UsageStore(path, readonly=True)
    yield writer, reader
    reader.close()
    writer.close()


def ok(answer):
    status, document = answer
    assert status == 200, document
    return document


def bad(answer, param):
    status, document = answer
    assert status == 400, document
    assert set(document) == {"error"} and set(document["error"]) == {"message", "param"}
    assert document["error"]["param"] == param
    assert document["error"]["message"]
    return document["error"]["message"]


def ids(document):
    return [r["id"] for r in document["records"]]


def all_pages(reader, params, limits):
    """Follow next_cursor to the end, one limit per page (cycled); returns ids in the order received."""
    seen, cursor, page = [], None, 0
    while True:
        assert page < 5000, "pagination does not end"
        page_params = dict(params, limit=str(limits[page % len(limits)]))
        if cursor:
            page_params["cursor"] = cursor
        document = ok(query.records(reader, page_params))
        assert len(document["records"]) <= limits[page % len(limits)]
        seen.extend(ids(document))
        cursor = document["next_cursor"]
        page += 1
        if cursor is None:
            return seen
        assert document["records"], "a page with a next_cursor is never empty"


# ---------------------------------------------------------------------------
# /llm-usage/records
# ---------------------------------------------------------------------------

def test_records_carry_exactly_the_spec_fields(stores):
    writer, reader = stores
    writer.insert_many([record(1, "2025-03-01T14:30:00.25+02:00", stream=True, estimated_cost_usd=None,
                               decision="redacted", redaction_count=2, cache_read_input_tokens=40)])
    document = ok(query.records(reader, {}))
    assert document["next_cursor"] is None
    (only,) = document["records"]
    assert list(only) == list(RECORD_FIELDS)
    assert only == {
        "id": "rec-0001", "ts": "2025-03-01T12:30:00.250000Z", "agent_id": "agent-a", "provider": "anthropic",
        "model": "claude-sonnet-4-5", "decision": "redacted", "reason": None, "status": 200, "stream": True,
        "input_tokens": 100, "output_tokens": 20, "total_tokens": 120, "cache_read_input_tokens": 40,
        "cache_creation_input_tokens": 0, "redaction_count": 2, "estimated_cost_usd": None, "latency_ms": 250,
    }
    json.dumps(document, allow_nan=False)


def test_records_are_newest_first_with_id_breaking_ties(stores):
    writer, reader = stores
    writer.insert_many([record("b", "2025-03-01T12:00:00Z"), record("a", "2025-03-01T12:00:00Z"),
                        record("c", "2025-03-01T11:00:00Z"), record("d", "2025-03-01T13:00:00Z")])
    assert ids(ok(query.records(reader, {}))) == ["d", "b", "a", "c"]


def test_records_filters(stores):
    writer, reader = stores
    writer.insert_many([
        record(1, agent_id="a1", provider="anthropic", model="claude", decision="allowed"),
        record(2, agent_id="a1", provider="openai", model="gpt-4o", decision="redacted"),
        record(3, agent_id="a2", provider="openai", model="gpt-4o", decision="blocked", reason="dlp_blocked"),
        record(4, agent_id="a2", provider="openai", model="claude", decision="allowed"),
    ])
    def matching(**params):
        return sorted(ids(ok(query.records(reader, params))))
    assert matching(agent="a1") == ["rec-0001", "rec-0002"]
    assert matching(provider="openai") == ["rec-0002", "rec-0003", "rec-0004"]
    assert matching(model="claude") == ["rec-0001", "rec-0004"]
    assert matching(provider="openai", model="claude") == ["rec-0004"]
    assert matching(decision="blocked") == ["rec-0003"]
    assert matching(agent="a2", decision="allowed", provider="openai", model="claude") == ["rec-0004"]
    assert matching(agent="nobody") == []
    assert matching(agent="A1") == []


def test_since_is_inclusive_and_until_exclusive(stores):
    writer, reader = stores
    writer.insert_many([record(n, format_rfc3339(T0 + n * HOUR_US)) for n in range(5)])
    params = {"since": "2025-03-01T01:00:00Z", "until": "2025-03-01T03:00:00Z"}
    assert ids(ok(query.records(reader, params))) == ["rec-0002", "rec-0001"]
    # The same instants written with offsets, a '+' decoded to a space, and sub-microsecond bounds.
    params = {"since": "2025-03-01T02:00:00+01:00", "until": "2025-03-01T04:00:00 01:00"}
    assert ids(ok(query.records(reader, params))) == ["rec-0002", "rec-0001"]
    assert ids(ok(query.records(reader, {"since": "2025-03-01T00:59:59.9999999Z",
                                         "until": "2025-03-01T01:00:00.0000001Z"}))) == ["rec-0001"]
    assert ids(ok(query.records(reader, {"since": "2025-03-01T01:00:00.0000001Z",
                                         "until": "2025-03-01T02:00:00Z"}))) == []
    assert ids(ok(query.records(reader, {"since": "2025-03-01T03:00:00Z", "until": "2025-03-01T01:00:00Z"}))) == []
    everything = [f"rec-{n:04d}" for n in (4, 3, 2, 1, 0)]
    assert ids(ok(query.records(reader, {"since": "1900-01-01T00:00:00Z"}))) == everything


def test_limit_defaults_to_100_and_allows_1000(stores):
    writer, reader = stores
    writer.insert_many([record(n, format_rfc3339(T0 + n)) for n in range(1200)])
    first = ok(query.records(reader, {}))
    assert len(first["records"]) == 100 and first["next_cursor"]
    assert len(ok(query.records(reader, {"limit": "1000"}))["records"]) == 1000
    assert len(ok(query.records(reader, {"limit": "1"}))["records"]) == 1
    assert len(ok(query.records(reader, {"limit": "007"}))["records"]) == 7


def test_pages_over_equal_timestamps_have_no_duplicates_and_no_gaps(stores):
    writer, reader = stores
    stamps = ["2025-03-01T12:00:00Z", "2025-03-01T12:00:00.000001Z", "2025-03-01T11:59:59.999999Z"]
    writer.insert_many([record(f"id-{n:03d}", stamps[n % 3]) for n in range(101)])
    expected = ids(ok(query.records(reader, {"limit": "1000"})))
    assert len(expected) == 101
    for limits in ([1], [7], [10], [33, 1, 50], [100], [101], [1000]):
        assert all_pages(reader, {}, limits) == expected


def test_the_last_page_has_no_cursor_even_when_it_is_full(stores):
    writer, reader = stores
    writer.insert_many([record(n) for n in range(10)])
    first = ok(query.records(reader, {"limit": "5"}))
    second = ok(query.records(reader, {"limit": "5", "cursor": first["next_cursor"]}))
    assert len(second["records"]) == 5 and second["next_cursor"] is None


def test_a_cursor_is_a_position_so_new_records_do_not_shift_pages(stores):
    writer, reader = stores
    writer.insert_many([record(n, format_rfc3339(T0 + n)) for n in range(10)])
    first = ok(query.records(reader, {"limit": "4"}))
    writer.insert_many([record(n, format_rfc3339(T0 + n)) for n in range(10, 20)])   # newer
    second = ok(query.records(reader, {"limit": "4", "cursor": first["next_cursor"]}))
    assert ids(second) == ["rec-0005", "rec-0004", "rec-0003", "rec-0002"]


def test_filtered_pages_follow_the_filter(stores):
    writer, reader = stores
    writer.insert_many([record(n, format_rfc3339(T0 + (n // 2) * 1000), agent_id=f"a{n % 3}") for n in range(60)])
    expected = [f"rec-{n:04d}" for n in sorted((n for n in range(60) if n % 3 == 1),
                                               key=lambda n: (n // 2, n), reverse=True)]
    assert all_pages(reader, {"agent": "a1"}, [3]) == expected
    assert all_pages(reader, {"agent": "a1", "decision": "allowed"}, [4, 1]) == expected
    assert all_pages(reader, {"agent": "a1", "decision": "blocked"}, [4]) == []


def test_empty_values_mean_not_given(stores):
    writer, reader = stores
    writer.insert_many([record(1)])
    params = {"agent": "", "provider": "", "model": "", "decision": "", "since": "", "until": "", "limit": "",
              "cursor": ""}
    assert ids(ok(query.records(reader, params))) == ["rec-0001"]


def test_parse_qs_output_is_accepted(stores):
    writer, reader = stores
    writer.insert_many([record(1, agent_id="a b+c")])
    params = urllib.parse.parse_qs("agent=a%20b%2Bc&limit=5&since=2025-03-01T13:00:00+01:00",
                                   keep_blank_values=True)
    assert ids(ok(query.records(reader, params))) == ["rec-0001"]


@pytest.mark.parametrize("params, param", [
    ({"limit": "1001"}, "limit"),
    ({"limit": "0"}, "limit"),
    ({"limit": "-1"}, "limit"),
    ({"limit": "1.5"}, "limit"),
    ({"limit": "ten"}, "limit"),
    ({"limit": " 10"}, "limit"),
    ({"limit": "1_0"}, "limit"),
    ({"limit": "١٠"}, "limit"),
    ({"limit": "99999999999999999999999"}, "limit"),
    ({"decision": "denied"}, "decision"),
    ({"decision": "Allowed"}, "decision"),
    ({"since": "yesterday"}, "since"),
    ({"since": "2025-03-01"}, "since"),
    ({"since": "2025-03-01T00:00:00"}, "since"),
    ({"until": "2025-02-30T00:00:00Z"}, "until"),
    ({"until": "2025-03-01T00:00:60Z"}, "until"),
    ({"until": "2025-03-01T00:00:00+25:00"}, "until"),
    ({"agnet": "a1"}, "agnet"),
    ({"group_by": "model"}, "group_by"),
    ({"agent": ["a1", "a2"]}, "agent"),
    ({"cursor": "not a cursor"}, "cursor"),
    ({"cursor": "WzEsInIiXQ=="}, "cursor"),
    ({"cursor": base64.urlsafe_b64encode(b"not json").decode().rstrip("=")}, "cursor"),
    ({"cursor": base64.urlsafe_b64encode(b'{"ts": 1}').decode().rstrip("=")}, "cursor"),
    ({"cursor": base64.urlsafe_b64encode(b'[1, 2]').decode().rstrip("=")}, "cursor"),
    ({"cursor": base64.urlsafe_b64encode(b'[true, "x"]').decode().rstrip("=")}, "cursor"),
    ({"cursor": base64.urlsafe_b64encode(b'[1.5, "x"]').decode().rstrip("=")}, "cursor"),
    ({"cursor": base64.urlsafe_b64encode(b'[-1, "x"]').decode().rstrip("=")}, "cursor"),
    ({"cursor": base64.urlsafe_b64encode(b'[1, ""]').decode().rstrip("=")}, "cursor"),
    ({"cursor": base64.urlsafe_b64encode(b'[1, "x", 3]').decode().rstrip("=")}, "cursor"),
    ({"cursor": base64.urlsafe_b64encode(b'\xff\xfe').decode().rstrip("=")}, "cursor"),
    ({"cursor": "A"}, "cursor"),
    ({"cursor": "W" * 2000}, "cursor"),
])
def test_records_bad_parameters_are_400(stores, params, param):
    bad(query.records(stores[1], params), param)


def test_the_first_bad_parameter_named_is_stable(stores):
    assert bad(query.records(stores[1], {"zeta": "1", "alpha": "2"}), "alpha")


def test_a_cursor_round_trips(stores):
    cursor = query.encode_cursor(T0, "id with ü and \"quotes\"")
    assert set(cursor) <= set("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_")
    assert ok(query.records(stores[1], {"cursor": cursor}))["records"] == []


@pytest.mark.parametrize("params, index", [
    ({}, "records_ts"),
    ({"since": "2025-01-01T00:00:00Z"}, "records_ts"),
    ({"agent": "a"}, "records_agent"),
    ({"provider": "p"}, "records_provider"),
    ({"model": "m"}, "records_model"),
    ({"decision": "blocked"}, "records_decision"),
    ({"provider": "p", "model": "m"}, "records_model"),
    ({"agent": "a", "decision": "redacted"}, "records_agent"),
    ({"decision": "redacted", "provider": "p"}, "records_decision"),
    ({"agent": "a", "model": "m", "decision": "allowed", "provider": "p", "since": "2025-01-01T00:00:00Z",
      "until": "2025-02-01T00:00:00Z", "cursor": query.encode_cursor(T0, "x")}, "records_agent"),
])
def test_every_page_is_an_index_walk_without_a_sort(stores, params, index):
    sql, args, _ = query.records_query(params)
    plan = " ".join(row[3] for row in stores[1].connection.execute("EXPLAIN QUERY PLAN " + sql, args))
    assert f"USING INDEX {index}" in plan and "TEMP B-TREE" not in plan, plan


# ---------------------------------------------------------------------------
# /llm-usage/summary
# ---------------------------------------------------------------------------

SUMMARY_RECORDS = [
    record(1, "2025-03-01T10:00:00Z", agent_id="a1", model="claude", input_tokens=10, output_tokens=1,
           total_tokens=11, estimated_cost_usd=0.1),
    record(2, "2025-03-01T23:30:00-02:00", agent_id="a1", model="claude", input_tokens=20, output_tokens=2,
           total_tokens=22, estimated_cost_usd=0.2),
    record(3, "2025-03-02T05:00:00Z", agent_id="a2", model="claude", input_tokens=30, output_tokens=3,
           total_tokens=33, estimated_cost_usd=None),
    record(4, "2025-03-02T06:00:00Z", agent_id="a2", provider="openai", model="ft:custom", input_tokens=40,
           output_tokens=4, total_tokens=44, estimated_cost_usd=None),
    record(5, "2025-03-03T00:00:00Z", agent_id="a3", provider="openai", model="ft:custom", decision="blocked",
           reason="dlp_blocked", status=403, input_tokens=0, output_tokens=0, total_tokens=0,
           estimated_cost_usd=None, forwarded=False),
    record(6, "2025-03-03T01:00:00Z", agent_id="a3", provider="openai", model="gpt-4o", input_tokens=5,
           output_tokens=5, total_tokens=10, estimated_cost_usd=0.0),
]


def group(calls, input_tokens, output_tokens, cost, uncosted, **keys):
    return {**keys, "calls": calls, "input_tokens": input_tokens, "output_tokens": output_tokens,
            "total_tokens": input_tokens + output_tokens, "estimated_cost_usd": cost, "uncosted_calls": uncosted}


def test_summary_by_model(stores):
    writer, reader = stores
    writer.insert_many(SUMMARY_RECORDS)
    assert ok(query.summary(reader, {"group_by": "model"})) == {"group_by": "model", "groups": [
        group(3, 60, 6, 0.3, 1, provider="anthropic", model="claude"),        # 0.1 + 0.2, exactly 0.3
        group(2, 40, 4, None, 2, provider="openai", model="ft:custom"),       # no cost at all: null
        group(1, 5, 5, 0.0, 0, provider="openai", model="gpt-4o"),            # a known zero is not null
    ]}
    assert ok(query.summary(reader, {})) == ok(query.summary(reader, {"group_by": "model"}))


def test_summary_by_agent(stores):
    writer, reader = stores
    writer.insert_many(SUMMARY_RECORDS)
    assert ok(query.summary(reader, {"group_by": "agent"}))["groups"] == [
        group(2, 30, 3, 0.3, 0, agent_id="a1"),
        group(2, 70, 7, None, 2, agent_id="a2"),
        group(2, 5, 5, 0.0, 1, agent_id="a3"),
    ]


def test_summary_by_utc_day(stores):
    writer, reader = stores
    writer.insert_many(SUMMARY_RECORDS)
    assert ok(query.summary(reader, {"group_by": "day"}))["groups"] == [
        group(1, 10, 1, 0.1, 0, day="2025-03-01"),
        group(3, 90, 9, 0.2, 2, day="2025-03-02"),    # 23:30-02:00 is 01:30 UTC on the 2nd
        group(2, 5, 5, 0.0, 1, day="2025-03-03"),
    ]


def test_summary_filters(stores):
    writer, reader = stores
    writer.insert_many(SUMMARY_RECORDS)
    assert ok(query.summary(reader, {"group_by": "agent", "provider": "openai"}))["groups"] == [
        group(1, 40, 4, None, 1, agent_id="a2"), group(2, 5, 5, 0.0, 1, agent_id="a3")]
    assert ok(query.summary(reader, {"group_by": "model", "decision": "blocked"}))["groups"] == [
        group(1, 0, 0, None, 1, provider="openai", model="ft:custom")]
    assert ok(query.summary(reader, {"group_by": "day", "agent": "a1", "model": "claude"}))["groups"] == [
        group(1, 10, 1, 0.1, 0, day="2025-03-01"), group(1, 20, 2, 0.2, 0, day="2025-03-02")]
    assert ok(query.summary(reader, {"group_by": "model", "since": "2025-03-01T10:00:00.000001Z",
                                     "until": "2025-03-02T06:00:00Z"}))["groups"] == [
        group(2, 50, 5, 0.2, 1, provider="anthropic", model="claude")]
    assert ok(query.summary(reader, {"since": "2025-04-01T00:00:00Z"}))["groups"] == []
    assert ok(query.summary(reader, {"agent": "nobody"}))["groups"] == []


def test_summary_costs_are_exact_sums_of_nano_dollars(stores):
    writer, reader = stores
    writer.insert_many([record(n, format_rfc3339(T0 + n * HOUR_US * 5), estimated_cost_usd=0.1) for n in range(10)])
    (only,) = ok(query.summary(reader, {}))["groups"]
    assert only["estimated_cost_usd"] == 1.0           # the float sum would be 0.9999999999999999
    (only,) = ok(query.summary(reader, {"since": format_rfc3339(T0 + 1)}))["groups"]
    assert only["estimated_cost_usd"] == 0.9


def test_summary_over_unaligned_bounds_reads_days_hours_and_records(stores):
    writer, reader = stores
    # One call every 20 minutes for three days, 1 token and 1 nano-dollar each.
    writer.insert_many([record(n, format_rfc3339(T0 + n * 20 * 60 * 10**6), input_tokens=1, output_tokens=0,
                               total_tokens=1, estimated_cost_usd=1e-9) for n in range(3 * 72)])
    since, until = T0 + 23 * HOUR_US + 10 * 60 * 10**6, T0 + 2 * DAY_US + 5 * HOUR_US + 30 * 60 * 10**6
    assert {source for source, _, _ in plan_intervals(since, until)} == {"records", "rollup_hour", "rollup_day"}
    params = {"since": format_rfc3339(since), "until": format_rfc3339(until)}
    # 2025-03-01 23:20 and 23:40; all of the 2nd; the 3rd from 00:00 to 05:20.
    assert ok(query.summary(reader, {**params, "group_by": "day"}))["groups"] == [
        group(2, 2, 0, 2e-9, 0, day="2025-03-01"), group(72, 72, 0, 72e-9, 0, day="2025-03-02"),
        group(17, 17, 0, 17e-9, 0, day="2025-03-03")]
    assert ok(query.summary(reader, params))["groups"] == [
        group(91, 91, 0, 91e-9, 0, provider="anthropic", model="claude-sonnet-4-5")]


@pytest.mark.parametrize("params, param", [
    ({"group_by": "hour"}, "group_by"),
    ({"group_by": "Model"}, "group_by"),
    ({"limit": "10"}, "limit"),
    ({"cursor": "x"}, "cursor"),
    ({"decision": "nope"}, "decision"),
    ({"since": "2025-03-01T00:00Z"}, "since"),
    ({"until": "now"}, "until"),
    ({"group_by": ["model", "agent"]}, "group_by"),
    ({"extra": ""}, "extra"),
])
def test_summary_bad_parameters_are_400(stores, params, param):
    bad(query.summary(stores[1], params), param)


# ---------------------------------------------------------------------------
# /llm-usage/bom
# ---------------------------------------------------------------------------

def test_bom_lists_every_forwarded_agent_provider_model(stores):
    writer, reader = stores
    writer.insert_many(SUMMARY_RECORDS)
    entries = ok(query.bom(reader, {}))["entries"]
    assert [(e["agent_id"], e["provider"], e["model"]) for e in entries] == [
        ("a1", "anthropic", "claude"), ("a2", "anthropic", "claude"), ("a2", "openai", "ft:custom"),
        ("a3", "openai", "gpt-4o")]                   # a3's blocked ft:custom call was never forwarded
    assert entries[0] == {"agent_id": "a1", "provider": "anthropic", "model": "claude",
                          "first_seen": "2025-03-01T10:00:00.000000Z", "last_seen": "2025-03-02T01:30:00.000000Z",
                          "calls": 2, "input_tokens": 30, "output_tokens": 3, "total_tokens": 33}
    assert ok(query.bom(reader, {"agent": "a2"}))["entries"] == entries[1:3]
    assert ok(query.bom(reader, {"agent": "nobody"}))["entries"] == []


@pytest.mark.parametrize("params, param", [
    ({"provider": "openai"}, "provider"), ({"since": "2025-03-01T00:00:00Z"}, "since"),
    ({"agent": ["a", "b"]}, "agent"), ({"limit": "5"}, "limit"),
])
def test_bom_bad_parameters_are_400(stores, params, param):
    bad(query.bom(stores[1], params), param)


# ---------------------------------------------------------------------------
# No database yet
# ---------------------------------------------------------------------------

def test_routes_answer_503_until_the_database_exists(tmp_path):
    path = str(tmp_path / "usage.db")
    reader = UsageStore(path, readonly=True)
    for route in (query.records, query.summary, query.bom):
        status, document = route(reader, {})
        assert status == 503 and document["error"]["message"]
    bad(query.records(reader, {"limit": "0"}), "limit")            # a bad request is still a 400
    writer = UsageStore(path)
    writer.insert_many([record(1)])
    assert ids(ok(query.records(reader, {}))) == ["rec-0001"]
    writer.close()
    reader.close()


# ---------------------------------------------------------------------------
# Properties: random record sets against a brute-force model
# ---------------------------------------------------------------------------

AGENTS, MODELS, DECISIONS = ["a1", "a2", "a3"], [("anthropic", "claude"), ("openai", "gpt"), ("openai", "o3")], \
    ["allowed", "redacted", "blocked"]
# Few distinct instants (many ties), spread over hour and day boundaries.
instants = st.one_of(
    st.sampled_from([T0, T0 + 1, T0 + HOUR_US - 1, T0 + HOUR_US, T0 + DAY_US - 1, T0 + DAY_US,
                     T0 + DAY_US + 5 * HOUR_US + 17]),
    st.integers(T0 - 2 * DAY_US, T0 + 3 * DAY_US),
)
random_records = st.lists(
    st.tuples(instants, st.sampled_from(AGENTS), st.sampled_from(MODELS), st.sampled_from(DECISIONS),
              st.integers(0, 1000), st.integers(0, 1000), st.none() | st.integers(0, 10**9), st.booleans()),
    max_size=60,
)


def build(rows):
    built = []
    for n, (ts_us, agent, (provider, model), decision, tokens_in, tokens_out, cost_nanos, forwarded) in enumerate(rows):
        built.append(record(f"r{n:03d}", format_rfc3339(ts_us), agent_id=agent, provider=provider, model=model,
                            decision=decision, input_tokens=tokens_in, output_tokens=tokens_out,
                            total_tokens=tokens_in + tokens_out, forwarded=forwarded,
                            estimated_cost_usd=None if cost_nanos is None else cost_nanos / 1e9))
    return built


filters = st.fixed_dictionaries({}, optional={
    "agent": st.sampled_from(AGENTS), "provider": st.sampled_from(["anthropic", "openai"]),
    "model": st.sampled_from(["claude", "gpt", "o3"]), "decision": st.sampled_from(DECISIONS),
    "since": instants, "until": instants,
})


def matches(r, params):
    ts_us = parse_rfc3339(r["ts"])
    return (params.get("agent", r["agent_id"]) == r["agent_id"]
            and params.get("provider", r["provider"]) == r["provider"]
            and params.get("model", r["model"]) == r["model"]
            and params.get("decision", r["decision"]) == r["decision"]
            and ts_us >= params.get("since", ts_us) and ts_us < params.get("until", ts_us + 1))


def as_query(params):
    return {k: format_rfc3339(v) if k in ("since", "until") else v for k, v in params.items()}


def with_store(function):
    directory = tempfile.mkdtemp()
    path = os.path.join(directory, "usage.db")
    writer = UsageStore(path)
    reader = UsageStore(path, readonly=True)
    try:
        function(writer, reader)
    finally:
        reader.close()
        writer.close()
        for suffix in ("", "-wal", "-shm"):
            if os.path.exists(path + suffix):
                os.unlink(path + suffix)
        os.rmdir(directory)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(random_records, filters, st.lists(st.integers(1, 12), min_size=1, max_size=5), st.integers(1, 4))
def test_paging_yields_exactly_the_filtered_set_newest_first(rows, params, limits, batches):
    records = build(rows)

    def check(writer, reader):
        for k in range(batches):                     # several batches, one of them re-delivered
            writer.insert_many(records[k::batches])
        writer.insert_many(records[: len(records) // 2])
        expected = [r["id"] for r in sorted((r for r in records if matches(r, params)),
                                            key=lambda r: (parse_rfc3339(r["ts"]), r["id"]), reverse=True)]
        assert all_pages(reader, as_query(params), limits) == expected

    with_store(check)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(random_records, filters, st.sampled_from(["model", "agent", "day"]))
def test_summary_equals_a_brute_force_sum(rows, params, group_by):
    records = build(rows)

    def check(writer, reader):
        writer.insert_many(records)
        expected = {}
        for r in filter(lambda r: matches(r, params), records):
            key = {"model": lambda: (("provider", r["provider"]), ("model", r["model"])),
                   "agent": lambda: (("agent_id", r["agent_id"]),),
                   "day": lambda: (("day", r["ts"][:10]),)}[group_by]()
            g = expected.setdefault(key, [0, 0, 0, 0, 0, 0])
            cost = r["estimated_cost_usd"]
            g[0] += 1
            g[1] += r["input_tokens"]
            g[2] += r["output_tokens"]
            g[3] += r["total_tokens"]
            g[4] += 0 if cost is None else round(cost * 1e9)
            g[5] += cost is None
        groups = [{**dict(key), "calls": g[0], "input_tokens": g[1], "output_tokens": g[2], "total_tokens": g[3],
                   "estimated_cost_usd": None if g[5] == g[0] else g[4] / 1e9, "uncosted_calls": g[5]}
                  for key, g in sorted(expected.items())]
        assert ok(query.summary(reader, {**as_query(params), "group_by": group_by})) == {
            "group_by": group_by, "groups": groups}

    with_store(check)


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(random_records, st.none() | st.sampled_from(AGENTS))
def test_bom_equals_a_brute_force_fold(rows, agent):
    records = build(rows)

    def check(writer, reader):
        writer.insert_many(records)
        writer.insert_many(records)
        expected = {}
        for r in records:
            if not r["forwarded"] or agent not in (None, r["agent_id"]):
                continue
            ts_us = parse_rfc3339(r["ts"])
            e = expected.setdefault((r["agent_id"], r["provider"], r["model"]), [ts_us, ts_us, 0, 0, 0, 0])
            e[0], e[1] = min(e[0], ts_us), max(e[1], ts_us)
            e[2] += 1
            e[3] += r["input_tokens"]
            e[4] += r["output_tokens"]
            e[5] += r["total_tokens"]
        entries = [{"agent_id": k[0], "provider": k[1], "model": k[2], "first_seen": format_rfc3339(e[0]),
                    "last_seen": format_rfc3339(e[1]), "calls": e[2], "input_tokens": e[3],
                    "output_tokens": e[4], "total_tokens": e[5]} for k, e in sorted(expected.items())]
        assert ok(query.bom(reader, {} if agent is None else {"agent": agent})) == {"entries": entries}

    with_store(check)
