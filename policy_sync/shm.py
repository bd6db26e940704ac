"""The policy bundle in POSIX shared memory: one writer, many lock-free readers.

Theory of operation
-------------------
Who writes: exactly one policy-sync process holds a SegmentWriter. It publishes
whole, already-serialised bundles (opaque bytes) and stamps a heartbeat. Two
writers on one name is a deployment bug this module does not detect.

Who reads: every gateway worker holds a SegmentReader. Per request it calls
generation() (one 8-byte load) and only when that differs from the generation
it has compiled does it call read() to copy the bundle out. Readers open the
segment O_RDONLY and map it PROT_READ, take no lock and never write, so a
buggy or stuck worker can neither corrupt the bundle nor block the writer.

Layout: [header page, HEADER_BYTES][payload area, capacity bytes]. The header
is little-endian uint64 words, each at an 8-byte aligned offset:

    word  field             meaning
    0     magic             MAGIC, else this is not our segment
    1     layout_version    LAYOUT_VERSION, bumped on any incompatible change
    2     capacity          payload area size in bytes, fixed for the segment's life
    3     seq               seqlock counter: odd while a publish is in progress
    4     generation        publishes so far; 0 = nothing published yet
    5     payload_len       payload bytes at offset HEADER_BYTES
    6     payload_checksum  blake2b(payload, digest_size=8) as a little-endian int
    7     published_ns      time.time_ns() when this generation was published
    8     heartbeat_ns      time.time_ns() of the writer's last heartbeat or publish
    9     writer_pid        pid of the writer that last opened the segment

Publish (writer): compute the checksum first (keeps the odd window short);
seq += 1 (odd); copy the payload; store length, checksum, published_ns;
generation += 1; seq += 1 (even). Read: s1 = seq, retry if odd; load the
fields and copy the payload; retry if seq != s1; verify the checksum of the
copy. A copy that starts and ends on the same even seq did not overlap a
publish, so it is one whole payload, never a torn mix of two.

Why one seqlocked buffer and not a double buffer: publishes are rare (policy
changes, seconds to minutes apart) and readers copy only when the generation
changes, so a read rarely overlaps a publish and then just retries for the
few milliseconds a copy takes. A double buffer would save that retry but costs
twice the shared memory and still needs a seqlock per slot (a slow reader can
be lapped twice), i.e. more states to get wrong for no gain at this rate.

Atomicity and memory ordering (CPython on x86-64 and aarch64): header words are
only touched through memoryview(mmap).cast('Q'). Getting or setting one item
is a single memcpy of 8 bytes (CPython's PACK_SINGLE/UNPACK_SINGLE), which the
compiler emits as one 64-bit load or store; aligned 64-bit accesses are
single-copy atomic on both architectures, so nobody sees half a counter.
struct.pack_into must not be used on live words: it zeroes the target and then
writes byte by byte, so a reader could see 0 or a mix. On x86-64 (TSO) stores
become visible in program order and loads are not reordered with each other,
and each step above is a separate opaque C call the compiler cannot reorder,
so the seqlock is sound. aarch64 is weakly ordered and CPython issues no
barriers here; thousands of interpreter instructions separate the steps, but
that is not a guarantee. The checksum is the second line of defence: a torn
copy that slipped past the seq check fails it and is retried; only a mismatch
that repeats on the same stable, even seq is reported as SegmentCorrupt.

Failure modes:
- A writer that dies mid-publish leaves seq odd; read() then raises
  SegmentCorrupt after its bounded retries (workers keep the policy they have).
  A restarted writer finishes that publish if the payload matches its checksum
  (bumping the generation so readers re-fetch); otherwise seq stays odd until
  its first publish.
- A restarted writer keeps generation and payload: generation never goes back.
- If the name is unlinked and recreated, existing readers keep mapping the old,
  orphaned object and never see the new one; they must reopen (e.g. when
  heartbeat_ns goes stale). This module does not detect that.
- A segment is never shrunk: touching a mapped page past the end of the
  object is SIGBUS in every process that maps it.
- read() backs off with time.sleep, which yields to other greenlets when gevent
  has monkey-patched time.
"""

import hashlib
import mmap
import os
import sys
import time
from dataclasses import dataclass

import posix_ipc

# cast('Q') uses native byte order; the layout is little-endian by definition.
if sys.byteorder != "little":
    raise ImportError("policy_sync.shm needs a little-endian machine")

HEADER_BYTES = 4096  # one page; the payload starts page-aligned after it
DEFAULT_CAPACITY_BYTES = 64 * 1024 * 1024
SEGMENT_MODE = 0o600  # only the gateway's own user may open it

MAGIC = int.from_bytes(b"MTRYPOL\x01", "little")
LAYOUT_VERSION = 1

# Header word indexes (multiply by 8 for the byte offset).
_MAGIC = 0
_LAYOUT_VERSION = 1
_CAPACITY = 2
_SEQ = 3
_GENERATION = 4
_PAYLOAD_LEN = 5
_PAYLOAD_CHECKSUM = 6
_PUBLISHED_NS = 7
_HEARTBEAT_NS = 8
_WRITER_PID = 9
_HEADER_WORDS = HEADER_BYTES // 8

# read() retry budget: spin first (a publish of a small bundle takes
# microseconds), then sleep so a long publish or a dead writer costs little CPU.
# Worst case about MAX_READ_ATTEMPTS * READ_RETRY_SLEEP_S = 0.5 s.
MAX_READ_ATTEMPTS = 1000
READ_SPIN_ATTEMPTS = 50
READ_RETRY_SLEEP_S = 0.0005


class SegmentError(Exception):
    """The policy segment cannot be used."""


class SegmentMissing(SegmentError):
    """The segment does not exist (yet), or its writer has not initialised it."""


class SegmentCorrupt(SegmentError):
    """Bad magic or layout, impossible length, or a checksum that stays wrong."""


@dataclass(frozen=True)
class Snapshot:
    generation: int
    payload: bytes
    published_ns: int


def _checksum(data) -> int:
    return int.from_bytes(hashlib.blake2b(data, digest_size=8).digest(), "little")


def _header_problem(words, segment_bytes: int) -> str | None:
    """Why a header (any sequence of uint64 words) is unusable, or None if fine."""
    if words[_MAGIC] != MAGIC:
        return f"bad magic {words[_MAGIC]:#018x}"
    if words[_LAYOUT_VERSION] != LAYOUT_VERSION:
        return f"layout version {words[_LAYOUT_VERSION]}, expected {LAYOUT_VERSION}"
    capacity = words[_CAPACITY]
    if HEADER_BYTES + capacity > segment_bytes:
        return f"capacity {capacity} does not fit a segment of {segment_bytes} bytes"
    if words[_PAYLOAD_LEN] > capacity:
        return f"payload length {words[_PAYLOAD_LEN]} > capacity {capacity}"
    return None


class SegmentWriter:
    """The single writer of a policy segment (the policy-sync process)."""

    def __init__(self, name: str, capacity: int = DEFAULT_CAPACITY_BYTES):
        """Create the segment, or continue an existing valid one.

        An existing segment with a valid header keeps its generation, payload
        and capacity (the `capacity` argument then only applies if the header
        is bad and the segment has to be initialised afresh).
        """
        if capacity <= 0:
            raise ValueError(f"capacity must be positive, got {capacity}")
        shm = posix_ipc.SharedMemory(name, posix_ipc.O_CREAT, mode=SEGMENT_MODE)
        try:
            segment_bytes = os.fstat(shm.fd).st_size
            # Inspect a private copy of the header before mapping: whether to
            # grow the object depends on what is in it.
            old = os.pread(shm.fd, HEADER_BYTES, 0) if segment_bytes >= HEADER_BYTES else b""
            old_words = memoryview(old).cast("Q") if len(old) == HEADER_BYTES else None
            keep = old_words is not None and _header_problem(old_words, segment_bytes) is None
            if keep:
                capacity = old_words[_CAPACITY]
            elif segment_bytes < HEADER_BYTES + capacity:
                os.ftruncate(shm.fd, HEADER_BYTES + capacity)  # grow only, never shrink
                segment_bytes = HEADER_BYTES + capacity
            self._map = mmap.mmap(shm.fd, segment_bytes)  # MAP_SHARED, read-write
        finally:
            shm.close_fd()  # the mapping keeps the object alive
        self._words = memoryview(self._map)[:HEADER_BYTES].cast("Q")
        self._capacity = capacity
        if keep:
            self._finish_interrupted_publish()
        else:
            self._initialise()
        self._words[_WRITER_PID] = os.getpid()
        self.heartbeat()

    def _initialise(self) -> None:
        words = self._words
        words[_MAGIC] = 0  # readers reject the segment until the header is whole
        for index in range(1, _HEADER_WORDS):
            words[index] = 0
        words[_LAYOUT_VERSION] = LAYOUT_VERSION
        words[_CAPACITY] = self._capacity
        words[_PAYLOAD_CHECKSUM] = _checksum(b"")
        words[_MAGIC] = MAGIC

    def _finish_interrupted_publish(self) -> None:
        """Repair a seq left odd by a writer that died mid-publish."""
        words = self._words
        seq = words[_SEQ]
        if seq % 2 == 0:
            return
        length = words[_PAYLOAD_LEN]
        if _checksum(self._map[HEADER_BYTES:HEADER_BYTES + length]) != words[_PAYLOAD_CHECKSUM]:
            return  # torn payload: leave seq odd so nobody reads it; the next publish fixes it
        # The payload is whole but may be newer than the generation readers
        # have cached: bump the generation so they re-fetch.
        words[_PUBLISHED_NS] = time.time_ns()
        words[_GENERATION] = words[_GENERATION] + 1
        words[_SEQ] = seq + 1

    def publish(self, payload: bytes) -> int:
        """Make `payload` the current bundle; returns its generation."""
        length = len(payload)
        if length > self._capacity:
            raise ValueError(f"payload of {length} bytes exceeds capacity {self._capacity}")
        checksum = _checksum(payload)
        words = self._words
        seq = words[_SEQ]
        writing = seq + 1 if seq % 2 == 0 else seq + 2  # odd; still odd after a crashed publish
        words[_SEQ] = writing
        self._map[HEADER_BYTES:HEADER_BYTES + length] = payload
        words[_PAYLOAD_LEN] = length
        words[_PAYLOAD_CHECKSUM] = checksum
        now = time.time_ns()
        words[_PUBLISHED_NS] = now
        generation = words[_GENERATION] + 1
        words[_GENERATION] = generation
        words[_SEQ] = writing + 1
        words[_HEARTBEAT_NS] = now  # a publish also proves the writer is alive
        return generation

    def heartbeat(self) -> None:
        self._words[_HEARTBEAT_NS] = time.time_ns()

    @property
    def generation(self) -> int:
        return self._words[_GENERATION]

    def close(self) -> None:
        """Unmap; the segment and its bundle stay for readers and the next writer."""
        if self._map.closed:
            return
        self._words.release()  # mmap refuses to close while views exist
        self._map.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc_info):
        self.close()

    @staticmethod
    def unlink(name: str) -> None:
        """Remove the name; mappings that exist stay valid until closed."""
        try:
            posix_ipc.unlink_shared_memory(name)
        except posix_ipc.ExistentialError:
            pass


class SegmentReader:
    """A read-only, lock-free view of a policy segment (one per worker)."""

    def __init__(self, name: str):
        try:
            shm = posix_ipc.SharedMemory(name, read_only=True)
        except posix_ipc.ExistentialError:
            raise SegmentMissing(f"no shared memory segment {name}") from None
        try:
            segment_bytes = os.fstat(shm.fd).st_size
            if segment_bytes < HEADER_BYTES:
                # Created by a writer that has not sized it yet.
                raise SegmentMissing(f"segment {name} is not initialised yet")
            self._map = mmap.mmap(shm.fd, segment_bytes, access=mmap.ACCESS_READ)
        finally:
            shm.close_fd()
        self._words = memoryview(self._map)[:HEADER_BYTES].cast("Q")
        if self._words[_MAGIC] == 0:
            self.close()
            raise SegmentMissing(f"segment {name} is not initialised yet")
        problem = _header_problem(self._words, segment_bytes)
        if problem:
            self.close()
            raise SegmentCorrupt(f"segment {name}: {problem}")
        self._name = name
        self._capacity = self._words[_CAPACITY]  # fixed for the life of the segment

    def generation(self) -> int:
        """The current generation: one aligned 8-byte load, cheap enough per request."""
        return self._words[_GENERATION]

    def read(self) -> Snapshot | None:
        """A consistent copy of the current bundle, or None if nothing is published."""
        words = self._words
        suspect_seq = None  # even seq at which the copy last failed its checks
        for attempt in range(MAX_READ_ATTEMPTS):
            seq = words[_SEQ]
            if seq % 2 == 0:
                generation = words[_GENERATION]
                length = words[_PAYLOAD_LEN]
                checksum = words[_PAYLOAD_CHECKSUM]
                published_ns = words[_PUBLISHED_NS]
                payload = self._map[HEADER_BYTES:HEADER_BYTES + length] if length <= self._capacity else None
                if words[_SEQ] == seq:
                    if generation == 0:
                        return None
                    if payload is not None and _checksum(payload) == checksum:
                        return Snapshot(generation, payload, published_ns)
                    # Stable seq yet bad data: a torn copy the seq check missed
                    # (see weak ordering above) or real damage. Damage repeats.
                    if seq == suspect_seq:
                        raise SegmentCorrupt(
                            f"segment {self._name} generation {generation}: "
                            + ("checksum mismatch" if payload is not None
                               else f"payload length {length} > capacity {self._capacity}"))
                    suspect_seq = seq
                    continue
            if attempt >= READ_SPIN_ATTEMPTS:
                time.sleep(READ_RETRY_SLEEP_S)
        raise SegmentCorrupt(
            f"segment {self._name}: no stable copy in {MAX_READ_ATTEMPTS} attempts "
            "(writer stuck or died mid-publish)")

    def heartbeat_ns(self) -> int:
        return self._words[_HEARTBEAT_NS]

    def writer_pid(self) -> int:
        return self._words[_WRITER_PID]

    def close(self) -> None:
        if self._map.closed:
            return
        self._words.release()  # mmap refuses to close while views exist
        self._map.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc_info):
        self.close()
