"""The usage collector: the one process that moves spooled records into the SQLite store.

Theory of operation
-------------------
Workers append records as JSON lines to their own spool files
(``gateway.usage.spool``). Every ``POLL_INTERVAL_S`` the collector makes a
pass over the spool directory:

1. List the ``*.spool`` files, oldest first, and decide *before reading* which
   are finished: a newer file of the same writer (worker id and pid) exists, or
   the writer's pid is gone. A finished file gets no more bytes, so reading it
   to the end afterwards sees everything it will ever hold.
2. Read each file from its remembered offset (at most ``READ_BYTES`` per file,
   ``PASS_BYTES`` per pass) and keep only complete lines; a partial last line
   is a write in progress and is read next time (in a finished file it is a
   torn tail: skipped and counted).
3. Parse the lines (a line that is not a JSON object is skipped, counted and
   logged without its content) and store them with one ``insert_many()``: one
   transaction, idempotent by record id.
4. Only after the commit, persist the new offsets in ``STATE_NAME`` (write a
   temp file, fsync, rename, fsync the directory).
5. Delete the finished files that are now read to the end.

Exactly once: a crash anywhere in 2-5 leaves the persisted offsets at or
before the committed records, so the next collector re-reads some lines and
re-inserts them; the store ignores ids it already holds. A crash between 4 and
5 leaves a consumed file, deleted at the next pass. Offsets are never ahead of
the store, so nothing spooled is skipped; ids make re-delivery harmless.

A record that the store refuses (a missing or malformed field) would make the
whole batch fail; the batch is then stored record by record and the refused
ones are skipped, counted and logged (field names, never values).

One collector: the collector holds an exclusive ``flock`` on ``LOCK_NAME`` in
the spool directory for its lifetime, so a second one refuses to start
(``CollectorBusy``); the lock goes with the process, even on SIGKILL.

If the store cannot be written (disk full, locked), the pass is abandoned, the
offsets stay, and the next pass tries again; the spool then grows until the
writers' cap, where they drop and count (see spool.py).
"""

import argparse
import fcntl
import json
import logging
import os
import signal
import sqlite3
import sys
import time

from gateway import metrics
from gateway.logs import setup_helper_logging
from gateway.usage.spool import STATE_NAME, parse_spool_name
from gateway.usage.store import UsageStore

log = logging.getLogger("mitrity.usage")

# Records are in the store well within SPEC's 2 s; each pass has a fixed cost
# (a transaction, the rollups, a state file fsync), so passes are not too frequent.
POLL_INTERVAL_S = 0.5
READ_BYTES = 1024 * 1024               # read from one file per pass
PASS_BYTES = 4 * 1024 * 1024           # read in one pass: bounds one transaction and the memory it takes
LOCK_NAME = ".collector.lock"
STATE_VERSION = 1
STOP_SIGNALS = {signal.SIGTERM, signal.SIGINT}


class CollectorBusy(Exception):
    """Another collector holds the spool directory."""


def _pid_alive(pid):
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True               # alive, owned by someone else
    return True


class Collector:
    """Moves records from ``spool_dir`` into the store at ``store_path``; see the module docstring."""

    def __init__(self, spool_dir, store_path, interval_s=POLL_INTERVAL_S):
        self.spool_dir = os.path.abspath(spool_dir)
        self.interval_s = interval_s
        self.running = True
        self.stored = 0           # new records committed by this collector
        self.corrupt = 0          # lines skipped: not a JSON object, torn, or refused by the store
        os.makedirs(self.spool_dir, mode=0o700, exist_ok=True)
        self._lock_fd = os.open(os.path.join(self.spool_dir, LOCK_NAME),
                                os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        try:
            fcntl.flock(self._lock_fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(self._lock_fd)
            raise CollectorBusy(f"another usage collector holds {self.spool_dir}") from None
        try:
            self.store = UsageStore(store_path)
        except BaseException:
            os.close(self._lock_fd)
            raise
        self._state_path = os.path.join(self.spool_dir, STATE_NAME)
        self.offsets = self._load_state()

    # -- one pass --------------------------------------------------------------

    def step(self) -> bool:
        """One pass; True when a file had more to read than the pass took (call again at once)."""
        files = self._list()
        batch, advanced, consumed, more, budget = [], {}, [], False, PASS_BYTES
        for name, finished in files:
            if budget <= 0:
                more = True
                break
            offset = self.offsets.get(name, 0)
            try:
                with open(os.path.join(self.spool_dir, name), "rb") as spool:
                    size = os.fstat(spool.fileno()).st_size
                    if offset > size:
                        log.error("usage spool file %s is shorter than its offset %d; reading it again",
                                  name, offset)
                        offset = 0
                    spool.seek(offset)
                    chunk = spool.read(min(READ_BYTES, budget))
            except FileNotFoundError:
                continue
            budget -= len(chunk)
            end = chunk.rfind(b"\n") + 1
            if end == 0 and len(chunk) == READ_BYTES:
                end = len(chunk)    # no line is this long: garbage, skipped as one corrupt line below
            new_offset = offset + end
            self._parse(name, offset, chunk[:end], batch)
            at_eof = offset + len(chunk) >= size
            if not at_eof:
                more = True
            elif finished and end < len(chunk):
                self._skip(name, new_offset, "torn last line")
                new_offset = offset + len(chunk)
            if new_offset != self.offsets.get(name):
                advanced[name] = new_offset
            if finished and at_eof and new_offset >= size:
                consumed.append(name)
        self._store(batch)
        if advanced or consumed:
            self.offsets.update(advanced)
            self._save_state()        # only after the commit: offsets never run ahead of the store
        for name in consumed:
            try:
                os.unlink(os.path.join(self.spool_dir, name))
            except FileNotFoundError:
                pass
            self.offsets.pop(name, None)
        return more

    def _list(self):
        """[(name, finished)] for the spool files, oldest first."""
        parsed = []
        with os.scandir(self.spool_dir) as entries:
            for entry in entries:
                key = parse_spool_name(entry.name)
                if key is not None:
                    parsed.append((key, entry.name))
        parsed.sort(key=lambda item: (item[0][2], item[1]))
        newest = {}
        for (worker_id, pid, start_ns), _ in parsed:
            newest[worker_id, pid] = max(start_ns, newest.get((worker_id, pid), 0))
        alive = {pid: _pid_alive(pid) for (_, pid, _), _ in parsed}
        present = {name for _, name in parsed}
        for name in list(self.offsets):
            if name not in present:
                del self.offsets[name]   # deleted after a crash before the state was saved
        return [(name, start_ns < newest[worker_id, pid] or not alive[pid])
                for (worker_id, pid, start_ns), name in parsed]

    def _parse(self, name, offset, data, batch):
        position = offset
        for line in data.splitlines(keepends=True):
            try:
                record = json.loads(line)
            except (ValueError, RecursionError):      # RecursionError: absurdly deep nesting
                record = None
            if isinstance(record, dict):
                batch.append((name, position, record))
            else:
                self._skip(name, position, "not a JSON object")
            position += len(line)

    def _store(self, batch):
        if not batch:
            return
        try:
            self._stored(self.store.insert_many([record for _, _, record in batch]))
            return
        except ValueError:
            pass                       # a refused record: store the others one by one
        for name, position, record in batch:
            try:
                self._stored(self.store.insert_many([record]))
            except ValueError as exc:
                self._skip(name, position, f"refused by the store: {exc}")

    def _stored(self, count):
        self.stored += count
        metrics.USAGE_STORED.inc(count)

    def _skip(self, name, position, why):
        self.corrupt += 1
        metrics.USAGE_SKIPPED.inc()
        log.error("usage spool file %s: skipped the line at byte %d: %s; %d skipped so far",
                  name, position, why, self.corrupt)

    # -- state -----------------------------------------------------------------

    def _load_state(self):
        try:
            with open(self._state_path, "rb") as state:
                document = json.load(state)
        except FileNotFoundError:
            return {}
        except ValueError:
            # Cannot happen with the atomic rename; re-reading everything is safe (ids).
            log.error("usage collector state %s unreadable; reading every spool file from its start",
                      self._state_path)
            return {}
        offsets = document.get("offsets") if isinstance(document, dict) else None
        if not isinstance(offsets, dict) or document.get("version") != STATE_VERSION:
            log.error("usage collector state %s has an unknown shape; reading every spool file from its start",
                      self._state_path)
            return {}
        return {name: offset for name, offset in offsets.items()
                if parse_spool_name(name) and isinstance(offset, int) and offset >= 0}

    def _save_state(self):
        temp = self._state_path + ".tmp"
        data = json.dumps({"version": STATE_VERSION, "offsets": self.offsets}, separators=(",", ":"))
        fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o600)
        try:
            os.write(fd, data.encode())
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(temp, self._state_path)
        dir_fd = os.open(self.spool_dir, os.O_RDONLY | os.O_CLOEXEC)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)

    # -- the process -------------------------------------------------------------

    def run(self, parent_pid=None):
        """Pass after pass until SIGTERM/SIGINT (the current pass finishes) or the parent is gone."""
        signal.signal(signal.SIGTERM, self._stop)
        signal.signal(signal.SIGINT, self._stop)
        signal.signal(signal.SIGHUP, signal.SIG_IGN)   # the master's; we are restarted instead
        # main() holds the stop signals while the store opens; one sent meanwhile arrives now.
        signal.pthread_sigmask(signal.SIG_UNBLOCK, STOP_SIGNALS)
        while self.running:
            if parent_pid and os.getppid() != parent_pid:
                log.warning("gateway master %s is gone; usage collector exiting", parent_pid)
                break
            try:
                more = self.step()
            except (sqlite3.Error, OSError) as exc:
                # Nothing was acknowledged: the offsets stay and the next pass retries.
                log.error("usage collector pass failed, retrying: %s: %s", type(exc).__name__, exc)
                more = False
            if not more and self.running:
                time.sleep(self.interval_s)
        self.close()

    def _stop(self, signum, frame):
        self.running = False

    def close(self):
        self.store.close()
        if self._lock_fd is not None:
            os.close(self._lock_fd)
            self._lock_fd = None


def main(argv=None):
    parser = argparse.ArgumentParser(prog="gateway.usage.collector", description=__doc__.splitlines()[0])
    parser.add_argument("--spool", required=True, help="the spool directory the workers write")
    parser.add_argument("--database", required=True, help="the SQLite usage store")
    parser.add_argument("--parent-pid", type=int, default=None, help="exit when this process is gone")
    parser.add_argument("--log-level", default="info")
    args = parser.parse_args(argv)
    setup_helper_logging("usage-collector", args.log_level)
    # Held until run() has its handlers: a SIGTERM while the store opens is not lost, and
    # does not kill the process half-way either.
    signal.pthread_sigmask(signal.SIG_BLOCK, STOP_SIGNALS)
    try:
        collector = Collector(args.spool, args.database)
    except CollectorBusy as exc:
        log.error("%s", exc)
        return 3
    collector.run(args.parent_pid)
    return 0


if __name__ == "__main__":
    sys.exit(main())
