"""policy-sync: keep the published policy equal to the last good bundle.

The loop polls the policy file (cheap ``stat`` every ``POLL_INTERVAL_S``, a
full re-read every ``FULL_READ_INTERVAL_S`` in case a change kept size and
mtime), validates and compiles a changed bundle, and publishes it to the
shared-memory segment. A bundle that fails is logged with its reason and the
last good one stays published. Between changes it stamps the segment's
heartbeat, so the gateway can tell a live policy-sync from a dead one.

It runs as a child of the gunicorn master, which restarts it if it dies
(``policy_sync.supervisor``). If the master itself goes away, policy-sync
removes the segment and exits rather than outlive the gateway.
"""

import hashlib
import logging
import os
import signal
import time

from gateway import metrics

from . import bundle
from .shm import SegmentWriter

log = logging.getLogger("mitrity.policy_sync")
POLL_INTERVAL_S = 0.25
FULL_READ_INTERVAL_S = 5.0


class FileSource:
    """The policy file; ``poll()`` returns its bytes when they may have changed."""

    def __init__(self, path):
        self.path = path
        self._stat = None
        self._next_full_read = 0.0

    def poll(self):
        try:
            st = os.stat(self.path)
        except OSError as exc:
            if self._stat != "missing":
                log.error("policy file %s unreadable: %s", self.path, exc.strerror)
            self._stat = "missing"
            return None
        signature = (st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns)
        now = time.monotonic()
        if signature == self._stat and now < self._next_full_read:
            return None
        self._stat, self._next_full_read = signature, now + FULL_READ_INTERVAL_S
        if st.st_size > bundle.MAX_BUNDLE_BYTES:
            return b"\0" * (bundle.MAX_BUNDLE_BYTES + 1)  # rejected by bundle.parse with its reason
        try:
            with open(self.path, "rb") as f:
                return f.read(bundle.MAX_BUNDLE_BYTES + 1)
        except OSError as exc:
            log.error("policy file %s unreadable: %s", self.path, exc.strerror)
            return None


class PolicySync:
    def __init__(self, source, segment_name, parent_pid=None):
        self.source = source
        self.segment_name = segment_name
        self.parent_pid = parent_pid
        self.writer = SegmentWriter(segment_name)
        self._digest = None
        self._rejected = None
        self.running = True

    def step(self):
        raw = self.source.poll()
        if raw is not None:
            digest = hashlib.sha256(raw).digest()
            if digest not in (self._digest, self._rejected):
                self._apply(raw, digest)
        self.writer.heartbeat()

    def _apply(self, raw, digest):
        try:
            document, payload = bundle.prepare(raw)
            generation = self.writer.publish(payload)
        except Exception as exc:  # any failure rejects the bundle whole
            self._rejected = digest
            metrics.POLICY_REJECTED.inc()
            reason = str(exc) if isinstance(exc, (bundle.BundleError, ValueError)) else type(exc).__name__
            log.error("policy bundle rejected, keeping generation %s: %s", self.writer.generation, reason)
            return
        self._digest, self._rejected = digest, None
        log.info("policy revision %s published as generation %s", document["revision"], generation)

    def run(self):
        signal.signal(signal.SIGTERM, self._stop)
        signal.signal(signal.SIGINT, self._stop)
        # SIGHUP is the master's; policy-sync is restarted with new arguments instead.
        signal.signal(signal.SIGHUP, signal.SIG_IGN)
        while self.running:
            if self.parent_pid and os.getppid() != self.parent_pid:
                log.warning("gateway master %s is gone; removing the policy segment", self.parent_pid)
                SegmentWriter.unlink(self.segment_name)
                break
            self.step()
            time.sleep(POLL_INTERVAL_S)
        self.writer.close()

    def _stop(self, signum, frame):
        self.running = False
