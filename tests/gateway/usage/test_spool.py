"""Tests for gateway.usage.spool: real files in a temporary directory."""

import json
import logging
import os
import time

import pytest

from gateway.usage import spool as spool_module
from gateway.usage.spool import MAX_RECORD_BYTES, SpoolWriter, encode, parse_spool_name, spool_bytes
from tests.gateway.usage.test_store import record  # one record builder for the usage tests


def spool_files(directory):
    return sorted((name for name in os.listdir(directory) if parse_spool_name(name)),
                  key=lambda name: parse_spool_name(name)[2])


def read_lines(directory):
    lines = []
    for name in spool_files(directory):
        with open(os.path.join(directory, name), "rb") as spool:
            lines.extend(spool.read().splitlines(keepends=True))
    return lines


@pytest.fixture
def directory(tmp_path):
    return str(tmp_path / "spool")


def test_records_round_trip_as_one_compact_line_each(directory):
    writer = SpoolWriter(directory, "w1")
    records = [record(n) for n in range(10)] + [record(10, reason="line\nbreak \u00e9")]
    assert all(writer.write(item) for item in records)
    writer.close()
    lines = read_lines(directory)
    assert len(lines) == len(records) and all(line.endswith(b"\n") for line in lines)
    assert all(line.count(b"\n") == 1 and b", " not in line for line in lines)
    assert [json.loads(line) for line in lines] == records
    assert writer.written == len(records) and writer.dropped == 0


def test_file_name_names_the_worker_and_the_pid(directory):
    writer = SpoolWriter(directory, "worker-3")
    worker_id, pid, start_ns = parse_spool_name(os.path.basename(writer.path))
    assert (worker_id, pid) == ("worker-3", os.getpid())
    assert abs(start_ns - time.time_ns()) < 60 * 10**9
    assert os.stat(writer.path).st_mode & 0o777 == 0o600
    writer.close()


@pytest.mark.parametrize("name", ["x.spool", "a-1.spool", "a-b-1.spool", "a-1-2.tmp", ".collector-state.json",
                                  "a/b-1-2.spool", "-1-2.spool"])
def test_other_names_are_not_spool_files(name):
    assert parse_spool_name(name) is None


@pytest.mark.parametrize("worker_id", ["", "a/b", "x" * 65, "a b", 3])
def test_bad_worker_ids_are_refused(directory, worker_id):
    with pytest.raises(ValueError):
        SpoolWriter(directory, worker_id)


def test_rotation_starts_new_files_in_write_order(directory):
    writer = SpoolWriter(directory, "w1", rotate_bytes=2000)
    records = [record(n) for n in range(40)]
    for item in records:
        writer.write(item)
    writer.close()
    names = spool_files(directory)
    assert len(names) > 5
    for name in names[:-1]:
        size = os.path.getsize(os.path.join(directory, name))
        assert 2000 <= size < 2000 + len(encode(records[0]))
    assert [json.loads(line) for line in read_lines(directory)] == records


def test_cap_drops_counts_and_logs(directory, caplog):
    caplog.set_level(logging.ERROR, logger="mitrity.usage")
    line_bytes = len(encode(record(0)))
    writer = SpoolWriter(directory, "w1", max_bytes=20 * line_bytes + line_bytes // 2, rotate_bytes=3 * line_bytes)
    results = [writer.write(record(n)) for n in range(50)]
    assert results == [True] * 20 + [False] * 30
    assert (writer.written, writer.dropped) == (20, 30)
    assert spool_bytes(directory) <= writer.max_bytes
    drops = [r.getMessage() for r in caplog.records if "dropped" in r.getMessage()]
    assert len(drops) == 1 and "cap" in drops[0] and "rec-" not in drops[0]
    # Space freed (as the collector does) is seen at the next scan, at most SCAN_EVERY_S later.
    for name in spool_files(directory)[:-1]:
        os.unlink(os.path.join(directory, name))
    time.sleep(spool_module.SCAN_EVERY_S + 0.05)
    assert writer.write(record(50))
    writer.close()


def test_records_the_collector_has_read_do_not_count_toward_the_cap(directory, tmp_path):
    """Many workers' current files, read to the end but not yet rotated, must not fill the cap."""
    from gateway.usage.collector import Collector
    line_bytes = len(encode(record(0)))
    writers = [SpoolWriter(directory, f"w{i}", max_bytes=30 * line_bytes, rotate_bytes=1000 * line_bytes)
               for i in range(3)]
    for i, writer in enumerate(writers):
        assert all(writer.write(record(i * 100 + n)) for n in range(9))
    collector = Collector(directory, str(tmp_path / "usage.db"))
    try:
        collector.step()
    finally:
        collector.close()
    assert spool_module.spool_backlog(directory) == (3, 0)
    assert spool_bytes(directory) >= 27 * line_bytes           # still on disk, all of it read
    time.sleep(spool_module.SCAN_EVERY_S + 0.05)               # the writers measure again
    assert all(writer.write(record(i * 100 + 50 + n)) for i, writer in enumerate(writers) for n in range(9))
    assert sum(writer.dropped for writer in writers) == 0
    for writer in writers:
        writer.close()


def test_drop_log_lines_are_rate_limited(directory, caplog):
    caplog.set_level(logging.ERROR, logger="mitrity.usage")
    writer = SpoolWriter(directory, "w1", max_bytes=1)
    for n in range(2 * spool_module.DROP_LOG_EVERY + 5):
        assert not writer.write(record(n))
    assert writer.dropped == 2 * spool_module.DROP_LOG_EVERY + 5
    assert len([r for r in caplog.records if "dropped" in r.getMessage()]) == 3
    assert spool_bytes(directory) == 0
    writer.close()


def test_oversized_and_unserializable_records_are_dropped(directory):
    writer = SpoolWriter(directory, "w1")
    assert not writer.write(record(1, agent_id="a" * MAX_RECORD_BYTES))
    assert not writer.write(record(2, estimated_cost_usd=float("nan")))
    assert not writer.write(record(3, latency_ms=object()))
    assert writer.write(record(4))
    assert (writer.written, writer.dropped) == (1, 3)
    assert [json.loads(line)["id"] for line in read_lines(directory)] == ["rec-4"]
    writer.close()


def test_a_forked_child_writes_its_own_file(directory):
    writer = SpoolWriter(directory, "w1")
    writer.write(record(0))
    pid = os.fork()
    if pid == 0:
        code = 0 if writer.write(record(1)) else 1
        os._exit(code)
    assert os.waitpid(pid, 0)[1] == 0
    writer.write(record(2))
    writer.close()
    by_pid = {}
    for name in spool_files(directory):
        with open(os.path.join(directory, name), "rb") as spool:
            by_pid[parse_spool_name(name)[1]] = [json.loads(line)["id"] for line in spool]
    assert by_pid == {os.getpid(): ["rec-0", "rec-2"], pid: ["rec-1"]}
