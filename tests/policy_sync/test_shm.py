"""policy_sync.shm against real POSIX shared memory, including a cross-process stress test."""

import mmap
import multiprocessing
import os
import struct
import time
from uuid import uuid4

import posix_ipc
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from policy_sync import shm
from policy_sync.shm import (
    HEADER_BYTES,
    SegmentCorrupt,
    SegmentMissing,
    SegmentReader,
    SegmentWriter,
    Snapshot,
)

SMALL_CAPACITY_BYTES = 64 * 1024
STRESS_SECONDS = 2.0
STRESS_MAX_WORDS = 4096  # payloads up to 32 KiB, so a copy takes long enough to race


def _unique_name():
    return f"/mitrity-test-{os.getpid()}-{uuid4().hex[:8]}"


@pytest.fixture
def name():
    segment = _unique_name()
    yield segment
    SegmentWriter.unlink(segment)


@pytest.fixture
def writer(name):
    with SegmentWriter(name, capacity=SMALL_CAPACITY_BYTES) as w:
        yield w


class _RawSegment:
    """A read-write mapping of a segment, to damage it the way a bug or crash would."""

    def __init__(self, name):
        memory = posix_ipc.SharedMemory(name)
        self.map = mmap.mmap(memory.fd, os.fstat(memory.fd).st_size)
        memory.close_fd()
        self.words = memoryview(self.map)[:HEADER_BYTES].cast("Q")

    def close(self):
        self.words.release()
        self.map.close()


# -- round trips -------------------------------------------------------------

def test_nothing_published_reads_none(writer, name):
    with SegmentReader(name) as reader:
        assert writer.generation == 0
        assert reader.generation() == 0
        assert reader.read() is None


def test_publish_read_round_trip_and_generation_increments(writer, name):
    with SegmentReader(name) as reader:
        before = time.time_ns()
        assert writer.publish(b"first") == 1
        after = time.time_ns()
        snapshot = reader.read()
        assert snapshot.generation == 1 and snapshot.payload == b"first"
        assert before <= snapshot.published_ns <= after

        assert writer.publish(b"second, longer") == 2
        assert writer.publish(b"") == 3
        assert writer.generation == 3
        assert reader.generation() == 3
        assert reader.read() == Snapshot(3, b"", reader.read().published_ns)


def test_reader_opened_before_first_publish_sees_it(writer, name):
    with SegmentReader(name) as reader:
        assert reader.read() is None
        writer.publish(b"late policy")
        assert reader.generation() == 1
        assert reader.read().payload == b"late policy"


def test_reopened_writer_continues_generation_and_keeps_payload(name):
    with SegmentWriter(name, capacity=SMALL_CAPACITY_BYTES) as first:
        first.publish(b"v1")
        first.publish(b"v2")
    with SegmentWriter(name, capacity=SMALL_CAPACITY_BYTES) as restarted, SegmentReader(name) as reader:
        assert restarted.generation == 2
        assert reader.read().payload == b"v2"
        assert restarted.publish(b"v3") == 3
        assert reader.read() == Snapshot(3, b"v3", reader.read().published_ns)


def test_reopened_writer_keeps_the_existing_capacity(name):
    with SegmentWriter(name, capacity=16):
        pass
    with SegmentWriter(name, capacity=SMALL_CAPACITY_BYTES) as reopened:
        reopened.publish(b"x" * 16)
        with pytest.raises(ValueError):
            reopened.publish(b"x" * 17)


def test_payload_larger_than_capacity_is_refused_and_old_payload_stays(name):
    with SegmentWriter(name, capacity=1024) as writer, SegmentReader(name) as reader:
        writer.publish(b"keep me")
        with pytest.raises(ValueError):
            writer.publish(b"x" * 1025)
        assert writer.generation == 1
        snapshot = reader.read()
        assert (snapshot.generation, snapshot.payload) == (1, b"keep me")
        assert writer.publish(b"y" * 1024) == 2  # exactly capacity fits


def test_default_capacity(name):
    with SegmentWriter(name) as writer, SegmentReader(name) as reader:
        payload = os.urandom(1024 * 1024)
        writer.publish(payload)
        assert reader.read().payload == payload
        with pytest.raises(ValueError):
            writer.publish(b"\0" * (shm.DEFAULT_CAPACITY_BYTES + 1))


def test_reader_outlives_writer_close_and_unlink(writer, name):
    with SegmentReader(name) as reader:
        writer.publish(b"still here")
        writer.close()
        SegmentWriter.unlink(name)
        SegmentWriter.unlink(name)  # already gone: no error
        assert reader.read().payload == b"still here"
        with pytest.raises(SegmentMissing):
            SegmentReader(name)


# -- bad segments ------------------------------------------------------------

def test_missing_segment():
    with pytest.raises(SegmentMissing):
        SegmentReader(_unique_name())


def test_created_but_not_initialised_segment_is_missing(name):
    posix_ipc.SharedMemory(name, posix_ipc.O_CREX, size=0).close_fd()
    with pytest.raises(SegmentMissing):
        SegmentReader(name)


def test_garbage_segment_is_corrupt_until_a_writer_initialises_it(name):
    memory = posix_ipc.SharedMemory(name, posix_ipc.O_CREX, size=2 * HEADER_BYTES)
    with mmap.mmap(memory.fd, 2 * HEADER_BYTES) as raw:
        raw[:] = b"not a policy segment, just junk!" * (2 * HEADER_BYTES // 32)
    memory.close_fd()
    with pytest.raises(SegmentCorrupt):
        SegmentReader(name)

    with SegmentWriter(name, capacity=SMALL_CAPACITY_BYTES) as writer, SegmentReader(name) as reader:
        assert writer.generation == 0
        assert reader.read() is None
        writer.publish(b"fresh")
        assert reader.read().payload == b"fresh"


def test_wrong_layout_version_is_corrupt(writer, name):
    raw = _RawSegment(name)
    raw.words[shm._LAYOUT_VERSION] = shm.LAYOUT_VERSION + 1
    raw.close()
    with pytest.raises(SegmentCorrupt):
        SegmentReader(name)


def test_damaged_payload_is_corrupt(writer, name):
    writer.publish(b"a" * 100)
    with SegmentReader(name) as reader:
        raw = _RawSegment(name)
        raw.map[HEADER_BYTES + 50] = ord("b")
        raw.close()
        with pytest.raises(SegmentCorrupt, match="checksum"):
            reader.read()


def test_length_beyond_capacity_is_corrupt(writer, name):
    writer.publish(b"ok")
    with SegmentReader(name) as reader:
        raw = _RawSegment(name)
        raw.words[shm._PAYLOAD_LEN] = SMALL_CAPACITY_BYTES + 1
        raw.close()
        with pytest.raises(SegmentCorrupt, match="capacity"):
            reader.read()
        with pytest.raises(SegmentCorrupt):
            SegmentReader(name)


def test_writer_that_died_mid_publish_with_whole_payload_is_repaired(writer, name):
    writer.publish(b"whole")
    writer.close()
    raw = _RawSegment(name)
    raw.words[shm._SEQ] += 1  # odd: as if the writer died between its two seq stores
    raw.close()
    with SegmentReader(name) as reader:
        started = time.monotonic()
        with pytest.raises(SegmentCorrupt, match="attempts"):
            reader.read()
        assert time.monotonic() - started < 5  # bounded

        with SegmentWriter(name) as restarted:
            assert restarted.generation == 2  # bumped so readers re-fetch
            assert reader.read() == Snapshot(2, b"whole", reader.read().published_ns)


def test_writer_that_died_mid_publish_with_torn_payload_stays_closed_until_publish(writer, name):
    writer.publish(b"whole")
    writer.close()
    raw = _RawSegment(name)
    raw.words[shm._SEQ] += 1
    raw.map[HEADER_BYTES] = ord("W")  # half-copied payload
    seq = raw.words[shm._SEQ]
    with SegmentWriter(name) as restarted, SegmentReader(name) as reader:
        assert restarted.generation == 1
        assert raw.words[shm._SEQ] == seq  # still odd: nobody may read the torn bytes
        assert restarted.publish(b"next") == 2
        assert raw.words[shm._SEQ] % 2 == 0
        assert reader.read().payload == b"next"
    raw.close()


# -- reader mapping, heartbeat, pid ------------------------------------------

def test_reader_mapping_is_read_only(writer, name):
    writer.publish(b"policy")
    with SegmentReader(name) as reader:
        with pytest.raises(TypeError):
            reader._words[shm._GENERATION] = 99
        with pytest.raises(TypeError):
            reader._map[HEADER_BYTES] = 0
        writer.close()  # leave only the reader's mapping of this segment
        maps_path = "/proc/self/maps"
        if not os.path.exists(maps_path):
            pytest.skip("no /proc/self/maps on this platform")
        with open(maps_path) as maps:
            ours = [line.split() for line in maps if line.rstrip().endswith("/dev/shm" + name)]
        assert ours, "reader mapping not found in /proc/self/maps"
        assert all(fields[1] == "r--s" for fields in ours)  # PROT_READ, MAP_SHARED
        assert reader.read().payload == b"policy"


def test_heartbeat_and_writer_pid(writer, name):
    with SegmentReader(name) as reader:
        assert reader.writer_pid() == os.getpid()
        first = reader.heartbeat_ns()
        assert first > 0
        time.sleep(0.002)
        writer.heartbeat()
        second = reader.heartbeat_ns()
        assert second > first
        time.sleep(0.002)
        writer.publish(b"x")
        assert reader.heartbeat_ns() > second


def test_closed_reader_refuses_use(writer, name):
    reader = SegmentReader(name)
    reader.close()
    reader.close()  # idempotent
    with pytest.raises(ValueError):
        reader.generation()


# -- stress: a writer process publishing flat out against a reading test -----

def _stress_words(n):
    return 1 + (n * 2654435761) % STRESS_MAX_WORDS


def _stress_payload(n):
    # Every 8-byte word is n and the length depends on n, so a mix of two
    # publishes (or a copy of the wrong length) cannot pass _check_stress.
    return struct.pack("<Q", n) * _stress_words(n)


def _check_stress(snapshot):
    payload = snapshot.payload
    n = snapshot.generation  # the writer publishes payload n as generation n
    assert len(payload) == 8 * _stress_words(n), f"generation {n}: length {len(payload)}"
    assert payload == struct.pack("<Q", n) * _stress_words(n), f"generation {n}: mixed content"


def _publish_flat_out(name, seconds, ready, published):
    with SegmentWriter(name) as writer:  # reopens the segment the test created
        ready.set()
        deadline = time.monotonic() + seconds
        n = 0
        while time.monotonic() < deadline:
            n += 1
            if writer.publish(_stress_payload(n)) != n:
                raise SystemExit(f"publish {n} returned generation {writer.generation}")
        published.value = n


def test_stress_concurrent_writer_never_yields_a_torn_read(name):
    with SegmentWriter(name, capacity=8 * STRESS_MAX_WORDS):
        pass
    context = multiprocessing.get_context("spawn")
    ready = context.Event()
    published = context.Value("Q", 0)
    process = context.Process(target=_publish_flat_out, args=(name, STRESS_SECONDS, ready, published))
    with SegmentReader(name) as reader:
        process.start()
        try:
            assert ready.wait(30), "writer process did not start"
            reads = 0
            generations = set()
            last = 0
            while process.is_alive():
                for _ in range(64):
                    cheap = reader.generation()
                    assert cheap >= last
                    snapshot = reader.read()
                    reads += 1
                    if snapshot is None:
                        assert last == 0
                        continue
                    assert snapshot.generation >= cheap >= last
                    _check_stress(snapshot)
                    last = snapshot.generation
                    generations.add(last)
        finally:
            process.join(10)
            if process.is_alive():
                process.kill()
        assert process.exitcode == 0
        assert reader.writer_pid() == process.pid
        final = reader.read()
        _check_stress(final)
        assert final.generation == published.value
    assert reads >= 2000, f"only {reads} reads"
    assert len(generations) >= 200, f"only {len(generations)} distinct generations"
    print(f"\nstress: {published.value} publishes, {reads} reads, {len(generations)} generations seen")


# -- property: any sequence of payloads reads back exactly --------------------

PROPERTY_CAPACITY_BYTES = 8 * 1024


@settings(max_examples=60, deadline=None)
@given(payloads=st.lists(st.binary(max_size=PROPERTY_CAPACITY_BYTES), min_size=1, max_size=8))
def test_any_sequence_of_payloads_reads_back_exactly(payloads):
    segment = _unique_name()
    try:
        with SegmentWriter(segment, capacity=PROPERTY_CAPACITY_BYTES) as writer, \
                SegmentReader(segment) as reader:
            for generation, payload in enumerate(payloads, start=1):
                assert writer.publish(payload) == generation
                assert reader.generation() == generation
                snapshot = reader.read()
                assert (snapshot.generation, snapshot.payload) == (generation, payload)
    finally:
        SegmentWriter.unlink(segment)
