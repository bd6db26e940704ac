"""The /llm-usage API, sans I/O: query parameters in, (status, JSON-able document) out (SPEC section 6).

The admin listener parses the query string and passes a dict whose values are
strings, or lists of strings as ``urllib.parse.parse_qs`` returns them (a
parameter given more than once is a 400). It serialises the document as JSON
with the returned status. Nothing here touches a socket.

Parameters, common to the three routes where they apply:
- ``agent``, ``provider``, ``model``: exact match. ``decision``: allowed,
  redacted or blocked.
- ``since`` (inclusive) and ``until`` (exclusive): RFC 3339 date-times, ``Z``
  or an offset. A ``+`` that arrives as a space (an unencoded ``+02:00`` in a
  query string decodes to `` 02:00``) is read as ``+``. ``until <= since`` is
  an empty result, not an error.
- An empty value (``agent=``) means the parameter is not given, so the SPEC's
  URL template works as written. Any parameter a route does not know is a 400.
- Errors: ``400 {"error": {"message": ..., "param": <name>}}``; 503 (param
  null) while the collector has not created the database yet.

Routes:
- records: newest first by (ts, id), ``limit`` 1..1000 (default 100),
  ``cursor`` = next_cursor of the previous page. The cursor is the base64url
  of ``[ts_us, id]`` of the last record returned (keyset pagination: a page is
  an index range scan below that key, as fast on page 1000 as on page 1, and
  records added meanwhile never shift it: no duplicates, no gaps). next_cursor
  is null when there is nothing after the page (one extra row is read to know).
- summary: ``group_by`` model (the default: "what does each model cost"), agent
  or day (UTC). Groups are sorted by their key. ``estimated_cost_usd`` is null
  when no call in the group has a cost, otherwise the sum of the known costs,
  each rounded to the nano-dollar and summed as integers (exact, and the same
  whichever rollups answer it); ``uncosted_calls`` counts calls without cost.
- bom: ``agent`` only; entries sorted by (agent_id, provider, model).
"""

import base64
import binascii
import json
import re

from .store import (COST_NANOS_SQL, DAY_US, DECISIONS, MAX_ID_CHARS, RECORD_FIELDS, TS_END_US, TS_MIN_US,
                    StoreUnavailable, format_day, format_rfc3339, parse_rfc3339, plan_intervals)

DEFAULT_LIMIT = 100
MAX_LIMIT = 1000
MAX_CURSOR_CHARS = 1024
GROUP_BYS = ("model", "agent", "day")
DEFAULT_GROUP_BY = "model"
FILTER_PARAMS = ("agent", "provider", "model", "decision", "since", "until")
RECORDS_PARAMS = FILTER_PARAMS + ("limit", "cursor")
SUMMARY_PARAMS = FILTER_PARAMS + ("group_by",)
BOM_PARAMS = ("agent",)

_FILTER_COLUMNS = (("agent", "agent_id"), ("model", "model"), ("decision", "decision"), ("provider", "provider"))
_SELECT_RECORD = ("id, ts_us, agent_id, provider, model, decision, reason, status, stream, input_tokens, "
                  "output_tokens, total_tokens, cache_read_input_tokens, cache_creation_input_tokens, "
                  "redaction_count, estimated_cost_usd, latency_ms")
_CURSOR_ALPHABET = re.compile(r"[A-Za-z0-9_-]+")


class BadParam(Exception):
    def __init__(self, param, message):
        super().__init__(message)
        self.param = param
        self.message = message


def _error(status, message, param=None):
    return status, {"error": {"message": message, "param": param}}


def _answer(route, store, params):
    """Run a route; its BadParam becomes a 400, a missing database a 503."""
    try:
        return 200, route(store, params)
    except BadParam as exc:
        return _error(400, exc.message, exc.param)
    except StoreUnavailable:
        return _error(503, "the usage store is not available yet")


def _params(raw, allowed):
    """Normalise to {name: str}, empty values dropped; a repeated or unknown parameter is a BadParam."""
    params = {}
    for name in sorted(raw):
        value = raw[name]
        if isinstance(value, (list, tuple)):
            if len(value) > 1:
                raise BadParam(name, f"parameter {name!r} is given more than once")
            value = value[0] if value else ""
        if name not in allowed:
            raise BadParam(name, f"unknown parameter {name!r} (this route takes {', '.join(allowed)})")
        if not isinstance(value, str):
            raise BadParam(name, f"parameter {name!r} must be a string")
        if value:
            params[name] = value
    return params


def _time(params, name):
    value = params.get(name)
    if value is None:
        return None
    if len(value) >= 6 and value[-6] == " ":
        value = value[:-6] + "+" + value[-5:]
    try:
        # Rounded up: "ts >= since" and "ts < until" then mean the same on
        # whole microseconds as on the finer time the client wrote.
        return parse_rfc3339(value, ceil=True)
    except ValueError as exc:
        raise BadParam(name, f"{name}: {exc}") from None


def _filters(params, one_index=False):
    """Equality filters as SQL conditions over columns that records, rollups and bom share.

    ``one_index``: only the first filter in _FILTER_COLUMNS order (most
    selective first, as usage data goes: 100s of agents, tens of models, three
    decisions, a few providers) may pick an index; the others are written
    ``+column`` so SQLite checks them row by row instead. Without statistics
    (the store runs no ANALYZE) the planner cannot tell ``agent_id`` from
    ``decision``, and walking 'redacted' newest-first to find one agent's calls
    is a hundred times slower than the other way round.
    """
    decision = params.get("decision")
    if decision is not None and decision not in DECISIONS:
        raise BadParam("decision", f"decision must be one of {', '.join(DECISIONS)}")
    conditions, args = [], []
    for param, column in _FILTER_COLUMNS:
        if param in params:
            prefix = "+" if one_index and conditions else ""
            conditions.append(f"{prefix}{column} = ?")
            args.append(params[param])
    return conditions, args


def _where(conditions):
    return (" WHERE " + " AND ".join(conditions)) if conditions else ""


def _limit(params):
    value = params.get("limit")
    if value is None:
        return DEFAULT_LIMIT
    if not value.isascii() or not value.isdigit() or not 1 <= int(value) <= MAX_LIMIT:
        raise BadParam("limit", f"limit must be an integer from 1 to {MAX_LIMIT}")
    return int(value)


def encode_cursor(ts_us, record_id):
    text = json.dumps([ts_us, record_id], separators=(",", ":"), ensure_ascii=False)
    return base64.urlsafe_b64encode(text.encode()).decode("ascii").rstrip("=")


def _cursor(params):
    value = params.get("cursor")
    if value is None:
        return None
    bad = BadParam("cursor", "cursor is not a next_cursor returned by this API")
    if len(value) > MAX_CURSOR_CHARS or not _CURSOR_ALPHABET.fullmatch(value):
        raise bad
    try:
        decoded = base64.b64decode(value + "=" * (-len(value) % 4), altchars=b"-_", validate=True)
        ts_us, record_id = json.loads(decoded.decode("utf-8"))
    except (binascii.Error, UnicodeDecodeError, ValueError, TypeError):
        raise bad from None
    if (type(ts_us) is not int or not TS_MIN_US <= ts_us < TS_END_US
            or not isinstance(record_id, str) or not 0 < len(record_id) <= MAX_ID_CHARS):
        raise bad
    return ts_us, record_id


# ---------------------------------------------------------------------------
# GET /llm-usage/records
# ---------------------------------------------------------------------------

def _record(row):
    record = dict(zip(RECORD_FIELDS, row))
    record["ts"] = format_rfc3339(row[1])
    record["stream"] = bool(row[8])
    return record


def records_query(raw):
    """Validated parameters -> (SQL, arguments, limit) of one page; BadParam when they are not valid."""
    params = _params(raw, RECORDS_PARAMS)
    conditions, args = _filters(params, one_index=True)
    since, until = _time(params, "since"), _time(params, "until")
    limit = _limit(params)
    cursor = _cursor(params)
    if since is not None:
        conditions.append("ts_us >= ?")
        args.append(since)
    if until is not None:
        conditions.append("ts_us < ?")
        args.append(until)
    if cursor is not None:
        conditions.append("(ts_us, id) < (?, ?)")
        args.extend(cursor)
    sql = (f"SELECT {_SELECT_RECORD} FROM records{_where(conditions)} "
           "ORDER BY ts_us DESC, id DESC LIMIT ?")
    return sql, [*args, limit + 1], limit


def _records(store, raw):
    sql, args, limit = records_query(raw)
    rows = store.connection.execute(sql, args).fetchall()
    next_cursor = encode_cursor(rows[limit - 1][1], rows[limit - 1][0]) if len(rows) > limit else None
    return {"records": [_record(row) for row in rows[:limit]], "next_cursor": next_cursor}


def records(store, params: dict) -> tuple[int, dict]:
    """GET /llm-usage/records -> (status, {"records": [...], "next_cursor": null | str})."""
    return _answer(_records, store, params)


# ---------------------------------------------------------------------------
# GET /llm-usage/summary
# ---------------------------------------------------------------------------

_ROLLUP_MEASURES = "calls, input_tokens, output_tokens, total_tokens, cost_nanos, uncosted_calls"
_RECORD_MEASURES = (f"1 AS calls, input_tokens, output_tokens, total_tokens, {COST_NANOS_SQL} AS cost_nanos, "
                    "estimated_cost_usd IS NULL AS uncosted_calls")
_DAY_OF = {"rollup_day": "bucket", "rollup_hour": "bucket / 24", "records": f"ts_us / {DAY_US}"}
_KEYS = {"model": ("provider", "model"), "agent": ("agent_id",), "day": ("day",)}


def _piece(source, lo, hi, group_by, conditions):
    """One interval of the plan as a SELECT of (keys..., six measures)."""
    if group_by == "day":
        keys = f"{_DAY_OF[source]} AS day"
    else:
        keys = ", ".join(_KEYS[group_by])
    if source == "records":
        measures, span = _RECORD_MEASURES, "ts_us >= ? AND ts_us < ?"
    else:
        measures, span = _ROLLUP_MEASURES, "bucket >= ? AND bucket < ?"
    sql = f"SELECT {keys}, {measures} FROM {source}{_where([span, *conditions])}"
    return sql, [lo, hi]


def _summary(store, raw):
    params = _params(raw, SUMMARY_PARAMS)
    group_by = params.get("group_by", DEFAULT_GROUP_BY)
    if group_by not in GROUP_BYS:
        raise BadParam("group_by", f"group_by must be one of {', '.join(GROUP_BYS)}")
    conditions, args = _filters(params)
    since, until = _time(params, "since"), _time(params, "until")
    lo = TS_MIN_US if since is None else max(since, TS_MIN_US)
    hi = TS_END_US if until is None else min(until, TS_END_US)
    pieces, piece_args = [], []
    for source, first, end in plan_intervals(lo, hi):
        sql, span_args = _piece(source, first, end, group_by, conditions)
        pieces.append(sql)
        piece_args.extend([*span_args, *args])
    conn = store.connection          # a missing database is a 503 even for an empty interval
    groups = []
    if pieces:
        keys = ", ".join(_KEYS[group_by])
        sql = (f"SELECT {keys}, sum(calls), sum(input_tokens), sum(output_tokens), sum(total_tokens), "
               f"sum(cost_nanos), sum(uncosted_calls) FROM ("
               + " UNION ALL ".join(pieces) + f") GROUP BY {keys} ORDER BY {keys}")
        width = len(_KEYS[group_by])
        for row in conn.execute(sql, piece_args):
            group = dict(zip(_KEYS[group_by], row[:width]))
            if group_by == "day":
                group["day"] = format_day(group["day"])
            calls, input_tokens, output_tokens, total_tokens, cost_nanos, uncosted = row[width:]
            group.update(calls=calls, input_tokens=input_tokens, output_tokens=output_tokens,
                         total_tokens=total_tokens,
                         estimated_cost_usd=None if uncosted == calls else cost_nanos / 1e9,
                         uncosted_calls=uncosted)
            groups.append(group)
    return {"group_by": group_by, "groups": groups}


def summary(store, params: dict) -> tuple[int, dict]:
    """GET /llm-usage/summary -> (status, {"group_by": G, "groups": [...]})."""
    return _answer(_summary, store, params)


# ---------------------------------------------------------------------------
# GET /llm-usage/bom
# ---------------------------------------------------------------------------

def _bom(store, raw):
    params = _params(raw, BOM_PARAMS)
    conditions, args = _filters(params)
    sql = ("SELECT agent_id, provider, model, first_seen_us, last_seen_us, calls, input_tokens, "
           f"output_tokens, total_tokens FROM bom{_where(conditions)} ORDER BY agent_id, provider, model")
    entries = []
    for row in store.connection.execute(sql, args):
        agent_id, provider, model, first_us, last_us, calls, input_tokens, output_tokens, total_tokens = row
        entries.append({"agent_id": agent_id, "provider": provider, "model": model,
                        "first_seen": format_rfc3339(first_us), "last_seen": format_rfc3339(last_us),
                        "calls": calls, "input_tokens": input_tokens, "output_tokens": output_tokens,
                        "total_tokens": total_tokens})
    return {"entries": entries}


def bom(store, params: dict) -> tuple[int, dict]:
    """GET /llm-usage/bom -> (status, {"entries": [...]})."""
    return _answer(_bom, store, params)
