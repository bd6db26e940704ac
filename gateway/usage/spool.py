"""The worker side of the usage hand-off: append-only spool files in a local directory.

Theory of operation
-------------------
A worker never writes the SQLite store. It appends each usage record as one
line of compact JSON to a spool file that only it writes, and the one
collector process (``gateway.usage.collector``) reads the lines and stores
them. On the request path the hand-off is one ``os.write()`` of one complete
line to a file opened once with ``O_APPEND``: no database, no lock, no
network, no fsync.

Files: ``<directory>/<worker_id>-<pid>-<start_ns>.spool``. A writer owns its
files alone; when the current one reaches ``rotate_bytes`` it opens a new one
(a larger ``start_ns``) and never writes the old one again, which is how the
collector knows that a fully read file may be deleted. A file whose writer pid
is gone is finished too.

Atomic lines: one ``write()`` of a small buffer to a regular file either
happens whole or not at all when the process is killed (SIGKILL acts between
system calls), so a killed worker leaves only complete lines. The collector
treats a partial last line as a write in progress, and only in a finished file
as a torn tail (possible after a short write on a full disk). After a failed or
short write this writer switches to a new file, so a torn line is never
followed by good lines in the same file.

Durability: a line is in the page cache when ``write()`` returns, so it
survives the death of the worker and of the collector, which is what the
hand-off promises. It is not fsynced: a machine crash or power cut may lose the
last seconds of records (fsync per record would put a disk flush on every
request). The collector's store commits have the same horizon (SQLite WAL,
``synchronous=NORMAL``).

Bounds: a line is at most ``MAX_RECORD_BYTES``; the records in the directory's
``*.spool`` files that the collector has not read yet (file sizes minus the
offsets it saved in ``STATE_NAME``) are kept under ``max_bytes``. Read bytes do
not count: a writer's current file is deleted only after it rotates, so with
many workers the read bytes alone could reach the cap while nothing waits.
Disk use is therefore at most ``max_bytes`` plus one ``rotate_bytes`` file per
writer. Summing the directory on every write would
put a directory scan on the request path, so each writer re-scans at most every
``SCAN_EVERY_BYTES`` it writes or every ``SCAN_EVERY_S`` (and at rotation) and
adds its own writes in between: with W writers the directory may pass the cap by
at most W * SCAN_EVERY_BYTES. A record that would pass the cap is dropped, never
queued: ``dropped`` counts every dropped record (the metric), and a log line
(with counts, never content) is written at the first drop and every
``DROP_LOG_EVERY`` drops after it.

Threads: a SpoolWriter belongs to one process and is used by one thread at a
time; gevent greenlets share it safely because nothing in write() yields. A
writer used after a fork notices the new pid and opens its own file.
"""

import json
import logging
import os
import re
import time

log = logging.getLogger("mitrity.usage")

SPOOL_SUFFIX = ".spool"
STATE_NAME = ".collector-state.json"   # the collector's saved read offsets (gateway.usage.collector)
MAX_SPOOL_BYTES = 64 * 1024 * 1024     # default cap on the directory's spool files
ROTATE_BYTES = 4 * 1024 * 1024         # a writer starts a new file past this size
MAX_RECORD_BYTES = 64 * 1024           # one line, newline included (a record is ~500 bytes)
SCAN_EVERY_BYTES = 256 * 1024          # re-measure the directory after this many bytes written...
SCAN_EVERY_S = 1.0                     # ...or after this long
DROP_LOG_EVERY = 1000                  # one log line per this many drops
FILE_MODE = 0o600

_WORKER_ID = re.compile(r"[A-Za-z0-9_.-]{1,64}")
_OPEN_FLAGS = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_APPEND | os.O_CLOEXEC


def parse_spool_name(name):
    """``<worker_id>-<pid>-<start_ns>.spool`` -> (worker_id, pid, start_ns), or None for any other name."""
    if not name.endswith(SPOOL_SUFFIX):
        return None
    parts = name[:-len(SPOOL_SUFFIX)].rsplit("-", 2)
    if len(parts) != 3 or not _WORKER_ID.fullmatch(parts[0]) or not parts[1].isdigit() or not parts[2].isdigit():
        return None
    return parts[0], int(parts[1]), int(parts[2])


def spool_bytes(directory):
    """The total size of the spool files in ``directory`` (files vanishing meanwhile count as 0)."""
    total = 0
    with os.scandir(directory) as entries:
        for entry in entries:
            if entry.name.endswith(SPOOL_SUFFIX):
                try:
                    total += entry.stat(follow_symlinks=False).st_size
                except FileNotFoundError:
                    pass          # consumed and deleted by the collector
    return total


_ENCODER = json.JSONEncoder(separators=(",", ":"), allow_nan=False)  # built once: encode() is per call


def spool_backlog(directory):
    """(files, bytes the collector has not read yet) of the spool files in ``directory``."""
    try:
        with open(os.path.join(directory, STATE_NAME), "rb") as state:
            offsets = json.load(state).get("offsets", {})
    except (OSError, ValueError, AttributeError):
        offsets = {}
    files = backlog = 0
    try:
        with os.scandir(directory) as entries:
            for entry in entries:
                if not entry.name.endswith(SPOOL_SUFFIX):
                    continue
                try:
                    size = entry.stat(follow_symlinks=False).st_size
                except FileNotFoundError:
                    continue          # consumed and deleted by the collector
                offset = offsets.get(entry.name, 0)
                files += 1
                backlog += max(0, size - (offset if isinstance(offset, int) else 0))
    except FileNotFoundError:
        pass
    return files, backlog


def encode(record):
    """A record dict -> one line of compact ASCII JSON (string escapes keep newlines out of it)."""
    return (_ENCODER.encode(record) + "\n").encode("ascii")


class SpoolWriter:
    """Appends usage records to this process's spool files; see the module docstring."""

    def __init__(self, directory, worker_id, max_bytes=MAX_SPOOL_BYTES, rotate_bytes=ROTATE_BYTES):
        if not isinstance(worker_id, str) or not _WORKER_ID.fullmatch(worker_id):
            raise ValueError("worker_id must be 1-64 characters of A-Z a-z 0-9 _ . -")
        if max_bytes <= 0 or rotate_bytes <= 0:
            raise ValueError("max_bytes and rotate_bytes must be positive")
        self.directory = os.path.abspath(directory)
        self.worker_id = worker_id
        self.max_bytes = max_bytes
        self.rotate_bytes = rotate_bytes
        self.written = 0                # records handed off
        self.dropped = 0                # records dropped (cap, oversize, unserializable, I/O error)
        self._fd = None
        self._pid = None
        self._path = None
        self._file_bytes = 0
        self._start_ns = 0
        self._dir_bytes = 0             # the directory's unread spool bytes at the last scan...
        self._since_scan = 0            # ...plus what this writer wrote after it
        self._scanned_at = 0.0
        os.makedirs(self.directory, mode=0o700, exist_ok=True)
        self._open()

    @property
    def path(self):
        """The file being appended to now."""
        return self._path

    def write(self, record) -> bool:
        """Hand one record to the collector; False when it was dropped (counted and logged)."""
        try:
            line = encode(record)
        except (TypeError, ValueError) as exc:
            return self._drop(f"record not serializable ({type(exc).__name__})")
        if len(line) > MAX_RECORD_BYTES:
            return self._drop(f"record larger than {MAX_RECORD_BYTES} bytes")
        if self._fd is None or self._pid != os.getpid():
            if not self._reopen():
                return self._drop("no spool file could be opened")
        if self._over_cap(len(line)):
            return self._drop(f"spool directory at its cap of {self.max_bytes} bytes")
        try:
            done = os.write(self._fd, line)
        except OSError as exc:
            self._abandon()
            return self._drop(f"spool write failed ({exc.strerror})")
        self._file_bytes += done
        self._since_scan += done
        if done != len(line):
            # A short write (disk full) left a torn line: never append after it.
            self._abandon()
            return self._drop("short spool write")
        self.written += 1
        if self._file_bytes >= self.rotate_bytes:
            self._reopen()
        return True

    def close(self):
        if self._fd is not None and self._pid == os.getpid():
            os.close(self._fd)
        self._fd = None

    # -- internals -----------------------------------------------------------

    def _open(self):
        """Create this writer's next file; its start_ns always grows, so names sort in write order."""
        self._pid = os.getpid()
        self._start_ns = max(time.time_ns(), self._start_ns + 1)
        path = os.path.join(self.directory, f"{self.worker_id}-{self._pid}-{self._start_ns}{SPOOL_SUFFIX}")
        self._fd = os.open(path, _OPEN_FLAGS, FILE_MODE)
        self._path = path
        self._file_bytes = 0
        self._scan()

    def _reopen(self) -> bool:
        """Switch to a new file. The old one is closed first: once the new file exists, the
        collector may delete the old one as soon as it has read it to the end."""
        if self._pid == os.getpid():
            self.close()
        self._fd = None           # after a fork the parent's descriptor is left to the parent
        try:
            self._open()
        except OSError as exc:
            log.error("usage spool: cannot create a file in %s: %s", self.directory, exc.strerror)
            return False
        return True

    def _abandon(self):
        """Stop writing the current file; the next write opens a new one."""
        self.close()

    def _scan(self):
        try:
            self._dir_bytes = spool_backlog(self.directory)[1]
        except OSError as exc:
            log.error("usage spool: cannot measure %s: %s", self.directory, exc.strerror)
        self._since_scan = 0
        self._scanned_at = time.monotonic()

    def _over_cap(self, size) -> bool:
        if self._since_scan >= SCAN_EVERY_BYTES or time.monotonic() - self._scanned_at >= SCAN_EVERY_S:
            self._scan()
        return self._dir_bytes + self._since_scan + size > self.max_bytes

    def _drop(self, reason) -> bool:
        self.dropped += 1
        if self.dropped == 1 or self.dropped % DROP_LOG_EVERY == 0:
            log.error("usage spool: dropped a usage record: %s; %d dropped by this worker so far",
                      reason, self.dropped)
        return False
