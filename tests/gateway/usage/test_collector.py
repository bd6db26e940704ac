"""Tests for gateway.usage.collector: real spool files, a real SQLite store, real processes killed for real."""

import fcntl
import json
import logging
import os
import random
import shutil
import signal
import sqlite3
import subprocess
import sys
import time

import pytest

from gateway.usage.collector import LOCK_NAME, STATE_NAME, Collector, CollectorBusy
from gateway.usage.spool import SpoolWriter, encode, parse_spool_name
from gateway.usage.store import StoreUnavailable, UsageStore
from tests.gateway.usage.test_store import record

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))

# A worker stand-in: spools records first..first+count-1 and prints each id once write() returned.
WRITER_SOURCE = '''
from tests.gateway.usage.test_store import record
import sys, time
from gateway.usage.spool import SpoolWriter
directory, worker_id, first, count, rotate, pause = sys.argv[1:]
writer = SpoolWriter(directory, worker_id, rotate_bytes=int(rotate))
for n in range(int(first), int(first) + int(count)):
    assert writer.write(record(n))
    print(n, flush=True)
    time.sleep(float(pause))
'''


def env():
    return dict(os.environ, PYTHONPATH=ROOT)


def start_writer(directory, worker_id, first, count, rotate=16 * 1024, pause=0.0):
    return subprocess.Popen([sys.executable, "-c", WRITER_SOURCE, directory, worker_id, str(first), str(count),
                             str(rotate), str(pause)], cwd=ROOT, env=env(), stdout=subprocess.PIPE, text=True)


def start_collector(directory, database, *extra):
    return subprocess.Popen([sys.executable, "-m", "gateway.usage.collector", "--spool", directory,
                             "--database", database, *extra], cwd=ROOT, env=env(), stderr=subprocess.PIPE)


def stored_ids(database):
    store = UsageStore(database, readonly=True)
    try:
        return [row[0] for row in store.connection.execute("SELECT id FROM records")]
    finally:
        store.close()


def totals(database):
    """(records, calls in each rollup, calls in the BOM): all equal when nothing was counted twice."""
    store = UsageStore(database, readonly=True)
    try:
        conn = store.connection
        return tuple(conn.execute(sql).fetchone()[0] or 0 for sql in (
            "SELECT count(*) FROM records", "SELECT sum(calls) FROM rollup_day",
            "SELECT sum(calls) FROM rollup_hour", "SELECT sum(calls) FROM bom"))
    finally:
        store.close()


def spool_files(directory):
    return sorted(name for name in os.listdir(directory) if parse_spool_name(name))


def drain(collector):
    while collector.step():
        pass


@pytest.fixture
def directory(tmp_path):
    return str(tmp_path / "spool")


@pytest.fixture
def database(tmp_path):
    return str(tmp_path / "usage.db")


@pytest.fixture
def collector(directory, database):
    collector = Collector(directory, database)
    yield collector
    collector.close()


def dead_writer_file(directory, lines):
    """A spool file whose writer (a process already reaped) is gone."""
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    path = os.path.join(directory, f"gone-{child.pid}-{time.time_ns()}.spool")
    with open(path, "wb") as spool:
        spool.write(b"".join(lines))
    return path


# ---------------------------------------------------------------------------
# One collector, driven pass by pass
# ---------------------------------------------------------------------------

def test_round_trip(directory, database, collector):
    writer = SpoolWriter(directory, "w1")
    records = [record(n, agent_id=f"agent-{n % 3}") for n in range(100)]
    for item in records:
        writer.write(item)
    drain(collector)
    assert sorted(stored_ids(database)) == sorted(item["id"] for item in records)
    assert totals(database) == (100, 100, 100, 100)
    assert collector.stored == 100 and collector.corrupt == 0
    row = UsageStore(database, readonly=True).connection.execute(
        "SELECT agent_id, input_tokens, forwarded FROM records WHERE id = 'rec-4'").fetchone()
    assert row == ("agent-1", 100, 1)
    # The live writer's file is kept; its offset is remembered.
    assert spool_files(directory) == [os.path.basename(writer.path)]
    assert collector.offsets[os.path.basename(writer.path)] == os.path.getsize(writer.path)
    writer.close()


def test_a_partial_last_line_waits_for_its_end(directory, database, collector):
    writer = SpoolWriter(directory, "w1")
    writer.write(record(1))
    line = encode(record(2))
    with open(writer.path, "ab") as spool:        # a write in progress, seen half done
        spool.write(line[:40])
    drain(collector)
    assert stored_ids(database) == ["rec-1"]
    assert collector.offsets[os.path.basename(writer.path)] == len(encode(record(1)))
    with open(writer.path, "ab") as spool:
        spool.write(line[40:])
    drain(collector)
    assert sorted(stored_ids(database)) == ["rec-1", "rec-2"]
    assert collector.corrupt == 0
    writer.close()


def test_rotated_and_dead_writers_files_are_deleted_once_stored(directory, database, collector):
    writer = SpoolWriter(directory, "w1", rotate_bytes=2000)
    for n in range(40):
        writer.write(record(n))
    assert len(spool_files(directory)) > 5
    child = start_writer(directory, "w2", 1000, 30, rotate=10**9)
    assert child.wait(timeout=10) == 0
    drain(collector)
    assert len(stored_ids(database)) == 70
    assert spool_files(directory) == [os.path.basename(writer.path)]     # only the live, current file
    assert set(collector.offsets) == {os.path.basename(writer.path)}
    writer.write(record(99))                     # the next saved state forgets the deleted files
    drain(collector)
    with open(os.path.join(directory, STATE_NAME)) as state:
        assert set(json.load(state)["offsets"]) == {os.path.basename(writer.path)}
    writer.close()


def test_a_torn_tail_in_a_finished_file_is_skipped_and_counted(directory, database, collector, caplog):
    caplog.set_level(logging.ERROR, logger="mitrity.usage")
    path = dead_writer_file(directory, [encode(record(1)), encode(record(2))[:30]])
    drain(collector)
    assert stored_ids(database) == ["rec-1"]
    assert collector.corrupt == 1 and not os.path.exists(path)
    assert any("torn" in r.getMessage() for r in caplog.records)


def test_corrupt_lines_are_skipped_counted_and_logged_without_content(directory, database, collector, caplog):
    caplog.set_level(logging.ERROR, logger="mitrity.usage")
    bad = [b"{not json SECRET\n", b"[1,2]\n", b"\xff\xfe\n", b"[" * 100000 + b"\n",
           encode(record(3, decision="maybe")), encode({"id": "rec-4"})]
    lines = [encode(record(1))] + bad + [encode(record(2))]
    path = dead_writer_file(directory, lines)
    drain(collector)
    assert sorted(stored_ids(database)) == ["rec-1", "rec-2"]
    assert collector.corrupt == len(bad)
    assert not os.path.exists(path)
    messages = [r.getMessage() for r in caplog.records]
    assert len(messages) == len(bad)
    assert not any("SECRET" in m or "maybe" in m or "rec-" in m for m in messages)


def test_state_is_persisted_and_a_restart_resumes(directory, database, collector):
    writer = SpoolWriter(directory, "w1")
    for n in range(10):
        writer.write(record(n))
    drain(collector)
    collector.close()
    for n in range(10, 15):
        writer.write(record(n))
    again = Collector(directory, database)
    assert again.offsets == {os.path.basename(writer.path): 10 * len(encode(record(0)))}
    drain(again)
    assert again.stored == 5
    again.close()
    writer.close()


def test_a_crash_after_the_commit_re_reads_but_stores_once(directory, database, collector):
    # The state as it was before a pass, restored: what a crash between commit and state write leaves.
    writer = SpoolWriter(directory, "w1", rotate_bytes=3000)
    for n in range(20):
        writer.write(record(n))
    drain(collector)
    state = os.path.join(directory, STATE_NAME)
    shutil.copy(state, state + ".before")
    for n in range(20, 50):
        writer.write(record(n))
    drain(collector)
    collector.close()
    shutil.copy(state + ".before", state)
    again = Collector(directory, database)
    drain(again)
    assert again.stored == 0
    assert totals(database) == (50, 50, 50, 50)
    again.close()
    writer.close()


def test_a_second_collector_is_refused(directory, database, collector):
    with pytest.raises(CollectorBusy):
        Collector(directory, database)


# ---------------------------------------------------------------------------
# The collector process
# ---------------------------------------------------------------------------

def test_records_are_visible_within_two_seconds_and_sigterm_stops(directory, database):
    process = start_collector(directory, database)
    try:
        deadline = time.monotonic() + 10
        while True:                              # until the collector has created the store
            try:
                stored_ids(database)
                break
            except StoreUnavailable:
                assert time.monotonic() < deadline and process.poll() is None
                time.sleep(0.02)
        writer = SpoolWriter(directory, "w1")
        for round_ in range(3):
            spooled = time.monotonic()
            writer.write(record(round_))
            while f"rec-{round_}" not in stored_ids(database):
                assert time.monotonic() - spooled < 2.0
                time.sleep(0.02)
        writer.close()
    finally:
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=5) == 0


def test_a_sigterm_while_the_store_opens_is_a_clean_stop(directory, database):
    os.makedirs(directory)
    UsageStore(database).close()
    blocker = sqlite3.connect(database, isolation_level=None)
    blocker.execute("BEGIN IMMEDIATE")           # the collector will wait for this lock while opening
    process = start_collector(directory, database)
    try:
        lock = os.open(os.path.join(directory, LOCK_NAME), os.O_RDWR | os.O_CREAT)
        deadline = time.monotonic() + 10
        while True:                              # until the collector holds the spool lock
            try:
                fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
                fcntl.flock(lock, fcntl.LOCK_UN)
            except BlockingIOError:
                break
            assert time.monotonic() < deadline
            time.sleep(0.01)
        os.close(lock)
        process.send_signal(signal.SIGTERM)
        time.sleep(0.2)
        assert process.poll() is None            # held, not fatal
    finally:
        blocker.execute("ROLLBACK")
        blocker.close()
    assert process.wait(timeout=10) == 0


def test_the_collector_exits_when_its_parent_is_gone(directory, database):
    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait()
    process = start_collector(directory, database, "--parent-pid", str(gone.pid))   # not (any more) its parent
    assert process.wait(timeout=10) == 0
    assert b"is gone" in process.stderr.read()


def test_collector_killed_repeatedly_during_a_burst_loses_and_duplicates_nothing(directory, database):
    os.makedirs(directory)
    counts = (1667, 1667, 1666)
    firsts = (0, 1667, 3334)
    writers = [start_writer(directory, f"w{i}", first, count, rotate=24 * 1024, pause=0.001)
               for i, (first, count) in enumerate(zip(firsts, counts))]
    rng = random.Random(7)
    kills = 0
    while any(w.poll() is None for w in writers) or kills < 6:
        process = start_collector(directory, database)
        time.sleep(rng.uniform(0.05, 0.5))
        process.send_signal(signal.SIGKILL)
        process.wait(timeout=5)
        kills += 1
    assert [w.wait(timeout=30) for w in writers] == [0, 0, 0]
    for w in writers:
        w.stdout.close()
    before_final = len(stored_ids(database))
    final = Collector(directory, database)       # the final clean run
    drain(final)
    final.close()
    ids = stored_ids(database)
    assert len(ids) == 5000 and set(ids) == {f"rec-{n}" for n in range(5000)}
    assert totals(database) == (5000, 5000, 5000, 5000)
    assert final.corrupt == 0
    assert before_final > 1000                   # the killed collectors did most of the work
    assert spool_files(directory) == []          # every writer is gone: every file consumed and deleted


def test_a_writer_killed_mid_burst_loses_nothing_it_wrote(directory, database, collector):
    writer = start_writer(directory, "w1", 0, 10**6, rotate=8 * 1024, pause=0.0002)
    acknowledged = []
    while len(acknowledged) < 800:
        acknowledged.append(int(writer.stdout.readline()))
    collector.step()                         # a collector at work while the writer dies
    writer.send_signal(signal.SIGKILL)
    writer.wait(timeout=5)
    acknowledged.extend(int(line) for line in writer.stdout.read().split())
    writer.stdout.close()
    drain(collector)
    stored = {int(rec_id.split("-")[1]) for rec_id in stored_ids(database)}
    assert set(acknowledged) <= stored
    assert stored == set(range(len(stored)))     # a prefix of what it meant to write, without holes
    assert collector.corrupt == 0
    assert spool_files(directory) == []
